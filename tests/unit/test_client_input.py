"""deblurctl against bad arguments and no daemon (issue 14): checked before anything is
sent, one error line, never a hang or a traceback."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from deblurd import client
from deblurd.client import _image_for, main


class StubDaemon:
    """A REP socket that answers ``{"ok": true}`` and records every request."""

    def __init__(self, endpoint: str) -> None:
        self.requests: list[Any] = []
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.bind(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self._sock.poll(20):
                self.requests.append(self._sock.recv_json())
                self._sock.send_json({"ok": True, "capture_id": "x"})

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close(0)
        self._ctx.term()


@pytest.fixture
def stub(tmp_path: Path) -> Any:
    d = StubDaemon(f"ipc://{tmp_path}/control.sock")
    yield d
    d.close()


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("deblurctl: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{tmp}", "is a folder; give a file name"),
        ("{tmp}/x.txt", "output must end in .png, .jpg or .jpeg"),
        ("/proc/x.png", "cannot write there"),
        ("{tmp}/" + "x" * 300 + ".png", "File name too long"),
        ("{tmp}/no/x.png", "does not exist"),
    ],
)
def test_trigger_output_checked_before_the_capture(
    stub: StubDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str, message: str
) -> None:
    out = output.format(tmp=tmp_path)
    code = main(["--control", f"ipc://{tmp_path}/control.sock", "trigger", "-o", out])
    assert code == 1
    assert message in error_line(capsys)
    time.sleep(0.05)
    assert stub.requests == []  # no capture was taken


def test_ping_reaches_the_stub(stub: StubDaemon, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/control.sock"
    assert main(["--control", endpoint, "ping"]) == 0
    assert stub.requests == [{"cmd": "ping"}]


@pytest.mark.parametrize("value", ["-1", "0", "1e12", "nan", "inf", "soon"])
def test_timeouts_are_bounded(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as info:
        main([f"--timeout={value}", "ping"])
    assert info.value.code == 2
    assert time.monotonic() - t0 < 2.0
    err = capsys.readouterr().err
    assert "argument --timeout" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["trigger", f"--wait-timeout={value}"])


def test_no_daemon_fails_fast_for_ping_and_watch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"ipc://{tmp_path}/control.sock"
    for command in ("ping", "watch"):
        t0 = time.monotonic()
        assert main(["--control", endpoint, "--timeout", "30", command]) == 1
        assert time.monotonic() - t0 < 5.0
        assert error_line(capsys).endswith(
            f"nothing answers at {endpoint}: {tmp_path}/control.sock does not exist "
            "(is the daemon running?)"
        )


def test_watch_with_a_silent_socket_gives_up_after_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)  # bound, never answers
    silent.bind(f"ipc://{tmp_path}/control.sock")
    try:
        t0 = time.monotonic()
        code = main(["--control", f"ipc://{tmp_path}/control.sock", "--timeout", "0.3", "watch"])
        assert code == 1
        assert time.monotonic() - t0 < 5.0
        assert "no reply from" in error_line(capsys)
    finally:
        silent.close(0)
        ctx.term()


def test_watch_forever_subscribes_without_a_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class StopWatchingError(Exception):
        pass

    class Sock:
        def recv_multipart(self) -> list[bytes]:
            raise StopWatchingError

    monkeypatch.setattr(client, "_subscribe", lambda endpoint, curve: Sock())
    with pytest.raises(StopWatchingError):
        main(["--control", f"ipc://{tmp_path}/c.sock", "watch", "--forever"])
    assert "deblurctl: watching ipc://" in capsys.readouterr().err


def test_result_bytes_follow_the_file_name() -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    png = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
    assert _image_for("x.png", png) == png
    jpeg = _image_for("x.JPG", png)
    assert jpeg.startswith(b"\xff\xd8")
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None
    back = bgr[..., ::-1]
    assert abs(int(back[..., 0].mean()) - 200) < 8  # still red: RGB order kept
    assert _image_for("x.png", jpeg).startswith(b"\x89PNG")
