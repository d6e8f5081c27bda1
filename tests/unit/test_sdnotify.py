"""sd_notify over a real unix datagram socket (a path and the abstract namespace)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblurd.service.sdnotify import SystemdNotifier, under_systemd


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = str(tmp_path / "notify.sock")
    sock.bind(name)
    sock.settimeout(2.0)
    yield sock, name
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"deblurd-test-{uuid.uuid4().hex}"
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    yield sock, "@" + name
    sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(65536).decode("utf-8").split("\n")


def test_disabled_without_notify_socket() -> None:
    n = SystemdNotifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.watchdog_interval_s() is None


def test_path_socket_messages(path_socket: tuple[socket.socket, str]) -> None:
    sock, name = path_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": name})
    assert n.enabled
    assert n.ready() is True
    assert _recv(sock) == ["READY=1"]
    assert n.ready("warm") is True
    assert _recv(sock) == ["READY=1", "STATUS=warm"]
    assert n.status("camera: 30 fps\nqueue: 0")
    assert _recv(sock) == ["STATUS=camera: 30 fps queue: 0"]  # one line, one field
    assert n.watchdog()
    assert _recv(sock) == ["WATCHDOG=1"]
    assert n.stopping()
    assert _recv(sock) == ["STOPPING=1"]
    assert n.notify("A=1", "B=2")
    assert _recv(sock) == ["A=1", "B=2"]  # several fields, one datagram
    n.close()


def test_reloading_carries_monotonic_usec(path_socket: tuple[socket.socket, str]) -> None:
    import time

    sock, name = path_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": name})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    fields = _recv(sock)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert fields[0] == "RELOADING=1"
    key, value = fields[1].split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, name = abstract_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": name})
    assert n.enabled
    assert n.ready()
    assert _recv(sock) == ["READY=1"]


def test_send_failure_never_raises_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.enabled
    with caplog.at_level(logging.DEBUG, logger="deblurd.service.sdnotify"):
        assert n.ready() is False
        assert n.watchdog() is False
        assert n.status("x") is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "gone.sock" in warnings[0].getMessage()


def test_recovers_when_socket_appears_later(tmp_path: Path) -> None:
    name = str(tmp_path / "late.sock")
    n = SystemdNotifier({"NOTIFY_SOCKET": name})
    assert n.watchdog() is False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(name)
    sock.settimeout(2.0)
    try:
        assert n.watchdog() is True
        assert _recv(sock) == ["WATCHDOG=1"]
    finally:
        sock.close()


def test_unsupported_address_is_disabled() -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert n.ready() is False


def test_watchdog_interval() -> None:
    pid = str(os.getpid())
    assert SystemdNotifier({"WATCHDOG_USEC": "20000000"}).watchdog_interval_s() == 10.0
    env = {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": pid}
    assert SystemdNotifier(env).watchdog_interval_s() == 1.5
    other = {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert SystemdNotifier(other).watchdog_interval_s() is None
    assert SystemdNotifier({"WATCHDOG_USEC": "0"}).watchdog_interval_s() is None
    assert SystemdNotifier({"WATCHDOG_USEC": "soon"}).watchdog_interval_s() is None


def test_reads_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch, path_socket: tuple[socket.socket, str]
) -> None:
    sock, name = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert SystemdNotifier().ready()
    assert _recv(sock) == ["READY=1"]


def test_under_systemd() -> None:
    assert under_systemd({"JOURNAL_STREAM": "8:12345"})
    assert under_systemd({"INVOCATION_ID": "abc"})
    assert not under_systemd({})
    assert not under_systemd({"JOURNAL_STREAM": ""})


def test_notify_never_blocks_when_nobody_reads(tmp_path: Path) -> None:
    """A full datagram queue makes notify return False at once instead of hanging."""
    import socket as socket_mod
    import time as time_mod

    from deblurd.service.sdnotify import SystemdNotifier

    path = tmp_path / "full.sock"
    server = socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_DGRAM)
    server.bind(str(path))
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        t0 = time_mod.monotonic()
        results = [notifier.notify("STATUS=" + "x" * 1000) for _ in range(2000)]
        assert time_mod.monotonic() - t0 < 5.0
        assert results[0] is True and results[-1] is False
    finally:
        server.close()
