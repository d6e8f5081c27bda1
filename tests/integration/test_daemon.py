"""The real ``deblurd run`` process on the sim camera, talked to only over ZeroMQ.

Small frames (320x240 at 20 fps) and the U-Net off keep each job to a few hundred ms on
a shared 2-core machine. One daemon serves most tests (module fixture); tests that
change the config or kill the process start their own.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from daemon_harness import (
    DaemonProc,
    NotifyRecorder,
    daemon_env,
    run_until_exit,
    sim_daemon_doc,
    with_sections,
    write_config,
)

from deblurd.client import main as deblurctl
from deblurd.imaging import read_rgb8

W, H, FPS = 320, 240, 20.0


def write_daemon_config(folder: Path, **sections: dict[str, Any]) -> Path:
    """The config of this module's daemons, in ``folder`` (``sections`` merged in)."""
    sim = {"seed": 4, "shake": 60.0}
    doc = sim_daemon_doc(W, H, FPS, 32, folder, camera={"sim": sim}, service={"results_hwm": 10000})
    return write_config(folder / "deblurd.toml", with_sections(doc, sections))


class DaemonProcess(DaemonProc):
    """``python -m deblurd.cli run`` on :func:`write_daemon_config`'s config in ``folder``
    (``sections`` merged in), with ZeroMQ helpers for its endpoints."""

    ready_timeout_s = 40.0

    def __init__(
        self, folder: Path, env: dict[str, str] | None = None, **sections: dict[str, Any]
    ) -> None:
        self.folder = folder
        self.control = f"ipc://{folder}/control.sock"
        self.results = f"ipc://{folder}/results.sock"
        super().__init__(write_daemon_config(folder, **sections), daemon_env(**(env or {})))
        self.ctx: zmq.Context[Any] = zmq.Context()

    def request(
        self, msg: Any, raw: bytes | list[bytes] | None = None, timeout_ms: int = 5000
    ) -> dict[str, Any] | None:
        """Send one request on a fresh REQ socket; None when no reply came."""
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(self.control)
        try:
            if isinstance(raw, list):
                req.send_multipart(raw)
            elif raw is not None:
                req.send(raw)
            else:
                req.send_json(msg)
            if not req.poll(timeout_ms):
                return None
            reply: dict[str, Any] = json.loads(req.recv())
            return reply
        finally:
            req.close(0)

    def subscribe(self) -> zmq.Socket[Any]:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, 100000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(self.results)
        time.sleep(0.3)  # the subscription reaches the PUB socket
        return sub

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        rc = super().stop(sig, timeout_s)
        self.ctx.destroy(0)
        return rc


def collect(
    sub: zmq.Socket[Any], until: set[str], timeout_s: float = 60.0
) -> dict[str, list[list[bytes]]]:
    """Messages by capture id until every id in ``until`` has its result or error."""
    by_id: dict[str, list[list[bytes]]] = {}
    open_ids = set(until)
    deadline = time.monotonic() + timeout_s
    while open_ids and (left := deadline - time.monotonic()) > 0:
        if not sub.poll(int(left * 1000)):
            break
        parts = sub.recv_multipart()
        cid = json.loads(parts[1]).get("capture_id")
        by_id.setdefault(cid, []).append(parts)
        if parts[0] in (b"result", b"error"):
            open_ids.discard(cid)
    assert not open_ids, f"no result or error for {sorted(open_ids)}"
    return by_id


@pytest.fixture(scope="module")
def notify(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifyRecorder]:
    listener = NotifyRecorder(tmp_path_factory.mktemp("n") / "notify.sock")
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, notify: NotifyRecorder
) -> Iterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("d")
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    d = DaemonProcess(folder / "run", env=env)
    d.wait_ready()
    yield d
    assert d.stop() == 0, "\n".join(d.lines)
    assert "STOPPING=1" in notify.messages


def test_prints_endpoints_and_output_and_notifies_systemd(
    daemon: DaemonProcess, notify: NotifyRecorder
) -> None:
    text = "\n".join(daemon.lines)
    assert f"control endpoint {daemon.control}" in text
    assert f"results endpoint {daemon.results}" in text
    assert f"output folder {daemon.folder / 'out'}" in text
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and "WATCHDOG=1" not in notify.messages:
        time.sleep(0.1)
    got = list(notify.messages)
    assert "READY=1" in got and "WATCHDOG=1" in got, got
    assert got.index("READY=1") < got.index("WATCHDOG=1")
    assert any(line.startswith("STATUS=") for line in got)
    status = daemon.request({"cmd": "status"})
    assert status is not None and status["ok"] and status["state"] == "ready"
    assert status["camera"]["frames_received"] > 0 and status["camera"]["fps"] > 0
    assert status["backends"]["camera"] == "sim"


def test_deblurctl_trigger_wait_saves_the_result(
    daemon: DaemonProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shot.png"
    ends = ["--control", daemon.control, "--results", daemon.results]
    assert deblurctl([*ends, "trigger", "--wait", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "result:" in printed and f"saved {out}" in printed
    image = read_rgb8(out)
    assert image.shape == (H, W, 3)
    # The same image is in the output folder, with its JSON beside it.
    cid = json.loads(printed.splitlines()[0])["capture_id"]
    saved = daemon.folder / "out" / f"{cid}.png"
    assert saved.read_bytes() == out.read_bytes()
    meta = json.loads((daemon.folder / "out" / f"{cid}.json").read_text())
    assert meta["capture_id"] == cid and meta["decision"]["source"] in ("ring", "extra")
    assert deblurctl([*ends, "ping"]) == 0


def test_fifty_triggers_give_results_or_busy_nothing_lost(daemon: DaemonProcess) -> None:
    sub = daemon.subscribe()
    req = daemon.ctx.socket(zmq.REQ)
    req.connect(daemon.control)
    accepted: list[str] = []
    busy = 0
    for _ in range(50):
        req.send_json({"cmd": "trigger"})
        assert req.poll(5000)
        reply = req.recv_json()
        assert isinstance(reply, dict)
        if reply["ok"]:
            accepted.append(reply["capture_id"])
        else:
            assert reply["error"]["code"] == "busy", reply
            busy += 1
    req.close(0)
    assert len(accepted) + busy == 50 and accepted
    by_id = collect(sub, set(accepted), timeout_s=120)
    results = [cid for cid in accepted if by_id[cid][-1][0] == b"result"]
    assert results == accepted, "every accepted trigger gives a result"
    for cid in accepted:
        assert (daemon.folder / "out" / f"{cid}.png").is_file()
    status = daemon.request({"cmd": "status"})
    assert status is not None and status["jobs"]["busy"] >= busy
    sub.close(0)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"not json", "bad_json"),
        (b"\xff\xfe", "bad_encoding"),
        (b"[1, 2]", "not_an_object"),
        (b'{"cmd": "explode"}', "unknown_command"),
        (b'{"cmd": 5}', "bad_request"),
        (b'{"nocmd": 1}', "bad_request"),
        (b'{"cmd": "trigger", "when": "now"}', "bad_request"),
        (b'{"cmd": "ping", "pad": "' + b"x" * 200_000 + b'"}', "too_large"),
        ([b'{"cmd": "ping"}', b"second frame"], "multipart"),
    ],
)
def test_malformed_requests_get_error_replies(daemon: DaemonProcess, raw: Any, code: str) -> None:
    reply = daemon.request(None, raw=raw)
    assert reply is not None and reply["ok"] is False
    assert reply["error"]["code"] == code and reply["error"]["message"]
    assert daemon.request({"cmd": "ping"}) == {"ok": True}


def test_message_over_the_hard_limit_is_dropped_and_daemon_serves_on(
    daemon: DaemonProcess,
) -> None:
    assert daemon.request(None, raw=b"x" * (2 * 1024 * 1024), timeout_ms=1000) is None
    assert daemon.request({"cmd": "ping"}) == {"ok": True}
    status = daemon.request({"cmd": "status"})
    assert status is not None and status["ok"]


def test_extra_exposure_frames_carry_the_long_exposure(tmp_path: Path) -> None:
    # A threshold under every blur score: stage 3 always asks for extra frames.
    d = DaemonProcess(tmp_path, decision={"second_blur_threshold": -100.0})
    try:
        d.wait_ready()
        sub = d.subscribe()
        reply = d.request({"cmd": "trigger"})
        assert reply is not None and reply["ok"]
        msgs = collect(sub, {reply["capture_id"]})[reply["capture_id"]]
        events = [json.loads(m[1])["event"] for m in msgs if m[0] == b"event"]
        assert events[:2] == ["accepted", "selected"]
        assert events.index("extra_capture") < events.index("hold_still") < events.index("done")
        assert msgs[-1][0] == b"result"
        meta = json.loads(msgs[-1][1])
        assert meta["decision"]["source"] == "extra"
        exposure = meta["decision"]["exposure_us"]
        extra = [f for f in meta["frames"] if f["role"] == "extra"]
        ring = [f for f in meta["frames"] if f["role"] == "ring"]
        assert len(extra) == meta["decision"]["frames"]
        assert all(f["exposure_us"] == exposure for f in extra)  # metadata, not the request
        assert all(f["exposure_us"] == 8000 for f in ring)
        assert min(f["timestamp_ns"] for f in extra) > max(f["timestamp_ns"] for f in ring)
        # Brightness kept: exposure x gain of the extra frames matches the preview's.
        assert all(
            abs(f["exposure_us"] * f["analogue_gain"] - 8000 * 4.0) < 0.06 * 32000 for f in extra
        )
    finally:
        assert d.stop() == 0


def test_sigterm_mid_job_exits_cleanly(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, decision={"second_blur_threshold": -100.0})
    d.wait_ready()
    sub = d.subscribe()
    reply = d.request({"cmd": "trigger"})
    assert reply is not None and reply["ok"]
    while sub.poll(10000):  # wait until the job is inside the extra capture
        parts = sub.recv_multipart()
        if parts[0] == b"event" and json.loads(parts[1])["event"] == "hold_still":
            break
    t0 = time.monotonic()
    rc = d.stop(signal.SIGTERM, timeout_s=20)
    assert rc == 0, "\n".join(d.lines)
    assert time.monotonic() - t0 < 12.0  # service.shutdown_timeout_s = 10 s bounds it
    out = tmp_path / "out"
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")] if out.exists() else []
    assert leftovers == []  # no partial files
    assert any("stopped" in line for line in d.lines)


def test_bad_config_and_bad_flags_exit_78_naming_the_key(tmp_path: Path) -> None:
    p = run_until_exit(write_daemon_config(tmp_path, service={"queue_size": 0}))
    assert p.returncode == 78 and "service.queue_size" in p.stderr, p.stderr
    cfg = write_daemon_config(tmp_path)
    p = run_until_exit(cfg, "--camera", "nonsense")
    assert p.returncode == 78 and "camera.backend" in p.stderr, p.stderr
    # A backend whose library is not installed here (picamera2 needs Raspberry Pi OS).
    p = run_until_exit(cfg, "--camera", "picamera2")
    assert p.returncode == 78 and "camera.backend" in p.stderr, p.stderr
