"""The daemon in integration tests: its settings (:func:`sim_daemon_doc`: the sim camera,
the U-Net off, no terminal trigger), written as a config file (:func:`write_config`); the
real ``deblurd run`` process on it (:class:`DaemonProc`, :func:`run_until_exit`), or the
daemon object in a thread of the test (:class:`InProcessDaemon`); a stand-in for
systemd's notify socket (:class:`NotifyRecorder`).

Imported by name: pytest puts this folder on ``sys.path`` for the test modules in it.
(``tools/soak.py`` and ``tools/fuzz_control.py`` start their daemons themselves: a tool
does not import the tests.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import zmq

from deblurd.camera.base import CameraBackend
from deblurd.camera.sim import SimCamera
from deblurd.service.daemon import Daemon
from deblurd.service.sdnotify import SystemdNotifier
from deblurd.settings.docs import toml_literal
from deblurd.settings.models import DeblurdSettings

# -- settings ------------------------------------------------------------------------------


def sim_daemon_doc(
    width: int,
    height: int,
    fps: float,
    ring_memory_mb: int,
    folder: Path | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """The settings document of a daemon on the sim camera (``width`` x ``height`` at
    ``fps``, a ring of ``ring_memory_mb``), the U-Net off, no terminal trigger; with
    ``folder``, its ipc sockets there and its results in ``folder/out`` (None: the
    defaults, systemd's directories). ``sections`` as :func:`with_sections`."""
    camera = {"backend": "sim", "width": width, "height": height, "fps": fps,
              "ring_memory_mb": ring_memory_mb}  # fmt: skip
    doc: dict[str, Any] = {"camera": camera}
    if folder is not None:
        doc["service"] = {"control_endpoint": f"ipc://{folder}/control.sock",
                          "results_endpoint": f"ipc://{folder}/results.sock"}  # fmt: skip
        doc["output"] = {"directory": str(folder / "out")}
    doc |= {"inference": {"passes": "off"}, "triggers": {"terminal": False}}
    return with_sections(doc, sections)


def with_sections(doc: Mapping[str, Any], sections: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``doc`` with each table of ``sections`` merged into its own, key by key (a key of
    ``sections`` replaces the one in ``doc``; a table of ``doc`` not named stays)."""
    return {**doc, **{name: {**doc.get(name, {}), **table} for name, table in sections.items()}}


def write_config(path: Path, doc: Mapping[str, Mapping[str, Any]]) -> Path:
    """``doc`` as the TOML config ``path`` (a table a section, tables inside them inline;
    the folder made when missing); returns ``path``."""
    lines: list[str] = []
    for name, table in doc.items():
        lines += [f"[{name}]", *(f"{key} = {toml_literal(value)}" for key, value in table.items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the real process ----------------------------------------------------------------------


def daemon_env(drop: Iterable[str] = ("NOTIFY_SOCKET",), **extra: str) -> dict[str, str]:
    """This process's environment without ``DEBLURD_*`` and the variables ``drop``, plus
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBLURD_")}
    for name in drop:
        env.pop(name, None)
    env.update(extra)
    return env


def _run_command(config: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "deblurd.cli", "run", "--config", str(config), *flags]


def run_until_exit(
    config: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``deblurd run --config CONFIG FLAGS`` that is to stop by itself (a start-up
    failure), its output captured; ``env`` None: this process's environment."""
    return subprocess.run(
        _run_command(config, *flags),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


class DaemonProc:
    """``python -m deblurd.cli run --config CONFIG`` with the environment ``env`` and the
    working directory ``cwd`` (None: this one); stdout and stderr collected in ``lines``
    by a reader thread. ``ready_timeout_s``: :meth:`wait_ready`'s default, s."""

    ready_timeout_s = 60.0

    def __init__(self, config: Path, env: dict[str, str], cwd: Path | None = None) -> None:
        self.config = config
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            _run_command(config),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == "deblurd: ready":
                self._ready.set()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait for ``deblurd: ready`` (``timeout_s`` None: ``ready_timeout_s``); stop the
        process and fail with its output when it does not come."""
        if not self._ready.wait(self.ready_timeout_s if timeout_s is None else timeout_s):
            self.stop()
            raise AssertionError("daemon not ready:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Send ``sig`` (when still running), wait ``timeout_s`` for the exit (then kill);
        the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(5)
        self._reader.join(5)
        return rc


# -- the daemon object in a thread ---------------------------------------------------------


class InProcessDaemon:
    """The daemon object on ``settings`` run in a thread of the test, ready (its camera
    from ``camera_factory``, by default the sim camera of ``settings``; ``notifier`` as
    :class:`~deblurd.service.daemon.Daemon`'s), talked to over its real ZeroMQ sockets:
    :meth:`request` on a REQ socket of its own, ``sub`` a SUB socket on its results."""

    def __init__(
        self,
        settings: DeblurdSettings,
        camera_factory: Callable[[], CameraBackend] | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.daemon = Daemon(
            settings,
            notifier=notifier,
            camera_factory=camera_factory or (lambda: SimCamera(settings.camera)),
            terminal=False,
        )
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self.thread.start()
        assert self.daemon.wait_ready(30), "daemon did not become ready"
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, 10000)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(self.daemon.endpoints.results)
        time.sleep(0.3)  # the subscription reaches the PUB socket

    def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The reply to ``msg`` (fails when none comes within 5 s)."""
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(self.daemon.endpoints.control)
        try:
            req.send_json(msg)
            assert req.poll(5000), "no reply"
            reply: Any = req.recv_json()
            assert isinstance(reply, dict)
            return reply
        finally:
            req.close()

    def status(self) -> dict[str, Any]:
        return self.request({"cmd": "status"})

    def trigger(self) -> str:
        """Trigger a capture (it must be accepted); its capture id."""
        reply = self.request({"cmd": "trigger"})
        assert reply["ok"], reply
        return str(reply["capture_id"])

    def wait_for(self, capture_id: str, timeout_s: float = 30.0) -> list[list[bytes]]:
        """Every message on ``sub`` for ``capture_id`` up to its result or error."""
        got: list[list[bytes]] = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0 and self.sub.poll(int(left * 1000)):
            parts = self.sub.recv_multipart()
            if json.loads(parts[1]).get("capture_id") == capture_id:
                got.append(parts)
                if parts[0] in (b"result", b"error"):
                    return got
        raise AssertionError(f"no result for {capture_id}: {[p[:2] for p in got]}")

    def capture(self) -> tuple[str, dict[str, Any]]:
        """Trigger and wait: ``("result" | "error", its document)``."""
        topic, doc = self.wait_for(self.trigger())[-1][:2]
        return topic.decode(), json.loads(doc)

    def close(self) -> None:
        self.daemon.request_stop()
        self.thread.join(20)
        self.ctx.destroy(0)
        assert not self.thread.is_alive()


class NotifyRecorder:
    """A unix datagram socket at ``path`` standing in for systemd's ``NOTIFY_SOCKET``:
    every line in ``lines`` with its arrival time (``time.monotonic()``), drained by a
    thread (a full socket would block the daemon's ``sd_notify`` sends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                data = self._sock.recv(4096).decode()
                now = time.monotonic()
                self.lines += [(now, line) for line in data.splitlines()]

    @property
    def messages(self) -> list[str]:
        """The lines received so far, in order."""
        return [line for _, line in self.lines]

    def feeds(self) -> list[float]:
        """When each ``WATCHDOG=1`` came."""
        return [t for t, line in self.lines if line == "WATCHDOG=1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
