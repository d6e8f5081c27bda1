"""CURVE on network endpoints: key files, refusal without keys, and the handshake itself
over real ControlServer/Publisher sockets on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from deblurd.errors import ConfigError, DeblurdError
from deblurd.service.auth import (
    ClientKeys,
    SocketSecurity,
    apply_client,
    default_keys_dir,
    is_network,
    load_client_keys,
    load_server_keys,
    make_keys,
)
from deblurd.service.control import ControlServer
from deblurd.service.publisher import Publisher
from deblurd.settings.service import ServiceSettings


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "curve"
    make_keys(folder, ["alice", "bob"])
    return folder


def test_make_keys_layout_and_modes(keys: Path) -> None:
    for name in ("server.key_secret", "server.key", "clients/alice.key", "clients/bob.key",
                 "private/alice.key_secret", "private/bob.key_secret"):  # fmt: skip
        assert (keys / name).is_file(), name
    for name in ("server.key_secret", "private/alice.key_secret"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600
    for folder in (keys, keys / "clients", keys / "private"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not list((keys / "private").glob("*.key"))  # the public halves moved to clients/
    pub, sec = zmq.auth.load_certificate(keys / "server.key_secret")
    assert sec is not None and zmq.auth.load_certificate(keys / "server.key")[0] == pub
    # The server pair is kept; a client name cannot be reused.
    before = (keys / "server.key_secret").read_bytes()
    assert make_keys(keys, ["carol"]) and (keys / "server.key_secret").read_bytes() == before
    with pytest.raises(DeblurdError, match="exists already"):
        make_keys(keys, ["alice"])
    with pytest.raises(DeblurdError, match="client name"):
        make_keys(keys, ["../x"])


def test_load_server_keys(keys: Path) -> None:
    loaded = load_server_keys(keys)
    assert loaded.clients == 2 and loaded.clients_dir == keys / "clients"
    assert len(loaded.secret) == 40 and loaded.secret.decode() not in repr(loaded)


@pytest.mark.parametrize("fault", ["no_folder", "no_secret", "readable", "no_clients", "junk"])
def test_bad_key_folders_are_config_errors_naming_the_key(keys: Path, fault: str) -> None:
    folder = keys
    if fault == "no_folder":
        folder = keys / "nope"
    elif fault == "no_secret":
        (keys / "server.key_secret").unlink()
    elif fault == "readable":
        os.chmod(keys / "server.key_secret", 0o640)
    elif fault == "no_clients":
        for f in (keys / "clients").iterdir():
            f.unlink()
    else:
        (keys / "server.key_secret").write_text("hello\n")
        os.chmod(keys / "server.key_secret", 0o600)
    with pytest.raises(ConfigError) as info:
        load_server_keys(folder)
    assert info.value.problems[0][0] == "service.curve_keys_dir"
    assert "deblurd keys" in str(info.value) or "chmod 600" in str(info.value) or fault == "junk"


def test_flat_credentials_folder(tmp_path: Path, keys: Path) -> None:
    # What systemd makes of LoadCredential=server.key_secret:... and clients:DIR.
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    (creds / "server.key_secret").write_bytes((keys / "server.key_secret").read_bytes())
    os.chmod(creds / "server.key_secret", 0o400)
    (creds / "clients_alice.key").write_bytes((keys / "clients/alice.key").read_bytes())
    loaded = load_server_keys(creds)
    assert loaded.clients == 1 and loaded.clients_dir == creds


def test_default_keys_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "c"))
    assert default_keys_dir() == tmp_path / "c"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/s:/other")
    assert default_keys_dir() == tmp_path / "s" / "curve"


def test_security_for_service(keys: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tcp = ("tcp://127.0.0.1:5555", "ipc:///x/results.sock")
    assert is_network(tcp[0]) and not is_network(tcp[1]) and not is_network("inproc://a")
    ipc_only = SocketSecurity.for_service(ServiceSettings(), ("ipc:///a", "ipc:///b"))
    assert not ipc_only.enabled
    with pytest.raises(ConfigError) as info:
        SocketSecurity.for_service(ServiceSettings(curve_keys_dir=str(tmp_path / "none")), tcp)
    assert info.value.problems[0][0] == "service.curve_keys_dir"
    with caplog.at_level(logging.WARNING):
        insecure = SocketSecurity.for_service(ServiceSettings(insecure=True), tcp)
    assert not insecure.enabled
    assert "WITHOUT authentication" in caplog.text and "tcp://127.0.0.1:5555" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        secure = SocketSecurity.for_service(ServiceSettings(curve_keys_dir=str(keys)), tcp)
    assert secure.enabled
    secret = zmq.auth.load_certificate(keys / "server.key_secret")[1]
    assert secret is not None and secret.decode() not in caplog.text  # never logged


# -- the handshake over real sockets ----------------------------------------------------


class CurveServer:
    """ControlServer + Publisher on tcp://127.0.0.1:* with CURVE, served by a thread."""

    def __init__(self, keys: Path) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.security = SocketSecurity(load_server_keys(keys))
        self.security.start(self.ctx)
        self.pub = Publisher(self.ctx, "tcp://127.0.0.1:*", 1000, self.security)
        self.control = ControlServer(
            self.ctx, "tcp://127.0.0.1:*", 4096, {"ping": lambda r, t: {}}, self.security
        )
        assert self.pub.curve and self.control.curve
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.control.serve, args=(self.stop.is_set,))
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.control.close()
        self.pub.close()
        self.security.stop()
        self.ctx.term()


@pytest.fixture
def server(keys: Path) -> Iterator[CurveServer]:
    s = CurveServer(keys)
    yield s
    s.close()


def ask(s: CurveServer, curve: ClientKeys | None, timeout_ms: int = 1500) -> Any:
    req = s.ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    apply_client(req, curve, s.control.endpoint)
    req.connect(s.control.endpoint)
    try:
        req.send_json({"cmd": "ping"})  # queued until the handshake succeeds (or never)
        return json.loads(req.recv()) if req.poll(timeout_ms) else None
    finally:
        req.close(0)


def subscriber(s: CurveServer, curve: ClientKeys | None) -> zmq.Socket[Any]:
    sub: zmq.Socket[Any] = s.ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    apply_client(sub, curve, s.pub.endpoint)
    sub.connect(s.pub.endpoint)
    return sub


def test_right_key_works_others_get_nothing(server: CurveServer, keys: Path) -> None:
    alice = load_client_keys(keys / "server.key", keys / "private/alice.key_secret")
    # A key pair the daemon never saw, and a client that knows the server key but has
    # no key of its own allowed (a fresh random pair).
    stranger_dir = keys.parent / "stranger"
    make_keys(stranger_dir, ["eve"])
    eve = load_client_keys(keys / "server.key", stranger_dir / "private/eve.key_secret")
    pub, sec = zmq.curve_keypair()
    random_pair = ClientKeys(alice.server_public, pub, sec)
    # A key pair for the wrong server: the handshake fails on the client side.
    wrong_server = load_client_keys(stranger_dir / "server.key", keys / "private/alice.key_secret")

    assert ask(server, alice) == {"ok": True}
    subs = {name: subscriber(server, c) for name, c in
            [("alice", alice), ("none", None), ("eve", eve), ("random", random_pair),
             ("wrong_server", wrong_server)]}  # fmt: skip
    for name, curve in [("none", None), ("eve", eve), ("random", random_pair),
                        ("wrong_server", wrong_server)]:  # fmt: skip
        assert ask(server, curve, timeout_ms=700) is None, name
        assert ask(server, alice) == {"ok": True}  # the good client is served meanwhile
    time.sleep(0.3)  # subscriptions reach the PUB socket
    for i in range(5):
        server.pub.event(f"c{i}", "accepted", source="test")
    got = subs["alice"].poll(3000)
    assert got and json.loads(subs["alice"].recv_multipart()[1])["capture_id"] == "c0"
    for name in ("none", "eve", "random", "wrong_server"):
        assert not subs[name].poll(300), f"{name} received a result message"
    for sub in subs.values():
        sub.close(0)


def test_client_key_files_are_checked(keys: Path) -> None:
    with pytest.raises(DeblurdError, match="no secret key"):
        load_client_keys(keys / "server.key", keys / "clients/alice.key")
    with pytest.raises(DeblurdError, match="not a ZeroMQ"):
        load_client_keys(keys / "missing.key", keys / "private/alice.key_secret")
