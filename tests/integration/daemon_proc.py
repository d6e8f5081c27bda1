"""The real ``deblurd run`` process for integration tests: started on a config, its output
collected line by line, ready when it prints ``deblurd: ready``, stopped by a signal.

Used by ``test_daemon.py`` and ``test_observability.py`` (imported by name: pytest puts
this folder on ``sys.path`` for the test modules in it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path


def daemon_env(drop: Iterable[str] = ("NOTIFY_SOCKET",), **extra: str) -> dict[str, str]:
    """This process's environment without ``DEBLURD_*`` and the variables ``drop``, plus
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBLURD_")}
    for name in drop:
        env.pop(name, None)
    env.update(extra)
    return env


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
            [sys.executable, "-m", "deblurd.cli", "run", "--config", str(config)],
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
