"""CURVE on TCP with the real ``deblurd run`` process (issue 7), 127.0.0.1 only.

* a TCP endpoint without keys refuses to start: exit 78 naming ``service.curve_keys_dir``;
* ``service.insecure = true`` starts, in the clear, and says so loudly;
* with keys passed the way systemd's ``LoadCredential=`` passes them
  (``$CREDENTIALS_DIRECTORY``, flat): ``deblurctl --server-key --client-key`` triggers and
  gets its result over TCP, while clients without a key or with another key get no reply
  and no result message, and the good client is served meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from daemon_harness import (
    DaemonProc,
    daemon_env,
    free_port,
    run_until_exit,
    sim_daemon_doc,
    write_config,
)

from deblurd.client import main as deblurctl
from deblurd.imaging import read_rgb8
from deblurd.service.auth import ClientKeys, apply_client, load_client_keys, make_keys


def config(folder: Path, control: str, results: str, **service: Any) -> Path:
    """The config of a daemon on these endpoints (plus ``service`` keys), in ``folder``."""
    service |= {"control_endpoint": control, "results_endpoint": results}
    doc = sim_daemon_doc(160, 120, 30.0, 16, folder, service=service)
    return write_config(folder / "deblurd.toml", doc)


def env(**extra: str) -> dict[str, str]:
    return daemon_env(drop=("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY"), **extra)


def run(cfg: Path, environment: dict[str, str]) -> DaemonProc:
    """The daemon on ``cfg``, ready."""
    daemon = DaemonProc(cfg, environment)
    daemon.wait_ready()
    return daemon


def stop(daemon: DaemonProc) -> str:
    """Stop ``daemon`` (it must exit 0); its whole output."""
    rc = daemon.stop()
    out = "\n".join(daemon.lines)
    assert rc == 0, out
    return out


def test_tcp_without_keys_exits_78_naming_the_key(tmp_path: Path) -> None:
    tcp = f"tcp://127.0.0.1:{free_port()}"
    cfg = config(tmp_path, tcp, f"ipc://{tmp_path}/results.sock")
    # No curve_keys_dir, no credentials: the default <state dir>/curve does not exist.
    p = run_until_exit(cfg, env=env(STATE_DIRECTORY=str(tmp_path / "state")))
    assert p.returncode == 78, p.stderr
    assert "service.curve_keys_dir" in p.stderr and "deblurd keys" in p.stderr, p.stderr


def test_insecure_true_starts_in_the_clear_with_a_warning(tmp_path: Path) -> None:
    tcp = f"tcp://127.0.0.1:{free_port()}"
    cfg = config(tmp_path, tcp, f"ipc://{tmp_path}/results.sock", insecure=True)
    daemon = run(cfg, env(STATE_DIRECTORY=str(tmp_path / "state")))
    try:
        assert deblurctl(["--control", tcp, "ping"]) == 0
    finally:
        out = stop(daemon)
    assert "service.insecure = true" in out and "WITHOUT authentication" in out


class Curved:
    def __init__(self, folder: Path) -> None:
        keys = folder / "keys"
        make_keys(keys, ["good"])
        make_keys(folder / "other", ["bad"])
        # What LoadCredential=server.key_secret:... and LoadCredential=clients:DIR give.
        creds = folder / "creds"
        creds.mkdir(mode=0o700)
        (creds / "server.key_secret").write_bytes((keys / "server.key_secret").read_bytes())
        os.chmod(creds / "server.key_secret", 0o400)
        (creds / "clients_good.key").write_bytes((keys / "clients/good.key").read_bytes())
        self.keys, self.other = keys, folder / "other"
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.results = f"tcp://127.0.0.1:{free_port()}"
        cfg = config(folder, self.control, self.results, results_hwm=10000)
        self.daemon = run(cfg, env(CREDENTIALS_DIRECTORY=str(creds)))
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.good = load_client_keys(keys / "server.key", keys / "private/good.key_secret")
        self.bad = load_client_keys(keys / "server.key", self.other / "private/bad.key_secret")

    def ask(self, curve: ClientKeys | None, msg: bytes, timeout_ms: int = 3000) -> Any:
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        apply_client(req, curve, self.control)
        req.connect(self.control)
        try:
            req.send(msg)
            return json.loads(req.recv()) if req.poll(timeout_ms) else None
        finally:
            req.close(0)

    def sub(self, curve: ClientKeys | None) -> zmq.Socket[Any]:
        s: zmq.Socket[Any] = self.ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        apply_client(s, curve, self.results)
        s.connect(self.results)
        return s


@pytest.fixture(scope="module")
def curved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Curved]:
    c = Curved(tmp_path_factory.mktemp("curve"))
    yield c
    c.ctx.destroy(0)
    out = stop(c.daemon)
    for secret_file in (c.keys / "server.key_secret", c.keys / "private/good.key_secret"):
        secret = [ln for ln in secret_file.read_text().splitlines() if "secret-key" in ln]
        assert secret and secret[0].split('"')[1] not in out


def test_good_key_triggers_and_gets_the_result(
    curved: Curved, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = ["--server-key", str(curved.keys / "server.key"),
            "--client-key", str(curved.keys / "private/good.key_secret")]  # fmt: skip
    ends = ["--control", curved.control, "--results", curved.results]
    out = tmp_path / "shot.png"
    assert deblurctl([*ends, *keys, "trigger", "--wait", "-o", str(out)]) == 0
    assert read_rgb8(out).shape == (120, 160, 3)
    assert "result:" in capsys.readouterr().out


def test_no_key_or_wrong_key_gets_nothing_and_good_client_served(curved: Curved) -> None:
    ping = b'{"cmd": "ping"}'
    subs = {"none": curved.sub(None), "bad": curved.sub(curved.bad),
            "good": curved.sub(curved.good)}  # fmt: skip
    for curve in (None, curved.bad):
        assert curved.ask(curve, ping, timeout_ms=800) is None
        assert curved.ask(curved.good, ping) == {"ok": True}
    # deblurctl without keys, or with a client key the daemon does not know: no reply.
    bad_keys = ["--server-key", str(curved.keys / "server.key"),
                "--client-key", str(curved.other / "private/bad.key_secret")]  # fmt: skip
    assert deblurctl(["--control", curved.control, "--timeout", "0.8", "ping"]) == 1
    assert deblurctl(["--control", curved.control, "--timeout", "0.8", *bad_keys, "ping"]) == 1
    time.sleep(0.3)
    reply = curved.ask(curved.good, b'{"cmd": "trigger"}')
    assert reply is not None and reply["ok"], reply
    cid = reply["capture_id"]
    seen: list[bytes] = []
    deadline = time.monotonic() + 30
    while b"result" not in seen and subs["good"].poll(
        int(max(0, deadline - time.monotonic()) * 1000)
    ):
        parts = subs["good"].recv_multipart()
        if json.loads(parts[1])["capture_id"] == cid:
            seen.append(parts[0])
    assert seen[0] == b"event" and seen[-1] == b"result"
    for name in ("none", "bad"):
        assert not subs[name].poll(200), f"{name} received a result message"
    for s in subs.values():
        s.close(0)
