"""The Enter key as the shutter, when stdin is a terminal.

A daemon thread waits on the stream's file descriptor; every line read (every Enter)
is one press, stamped with ``time.monotonic_ns()`` as soon as the read returns. End of
input (Ctrl-D, or the terminal closing) ends the thread quietly. When the stream is not
a terminal (under systemd stdin is ``/dev/null``) ``start()`` logs that and does nothing.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import sys
import threading
import time
from typing import TextIO

from deblurd.service.triggers.base import TriggerCallback, deliver

log = logging.getLogger(__name__)

_POLL_S = 0.2  # how often the reader checks for stop(), s


class TerminalTrigger:
    """Each line on ``stream`` (a tty) is a press; ``name`` = ``"terminal"``."""

    def __init__(self, on_press: TriggerCallback, stream: TextIO | None = None) -> None:
        self._on_press = on_press
        self._stream = sys.stdin if stream is None else stream
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return "terminal"

    @property
    def running(self) -> bool:
        """True while the reader thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start reading lines, if the stream is a terminal; otherwise a logged no-op."""
        if self.running:
            return
        try:
            is_tty = self._stream.isatty()
            fd = self._stream.fileno()
        except (OSError, ValueError, AttributeError):
            is_tty, fd = False, -1
        if not is_tty:
            log.info("stdin is not a terminal: the Enter key trigger is off")
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(fd,), name="deblurd-terminal-trigger", daemon=True
        )
        self._thread.start()
        log.debug("terminal trigger: reading lines from fd %d", fd)

    def stop(self) -> None:
        """Stop reading (returns within about 0.2 s)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)

    def _run(self, fd: int) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([fd], [], [], _POLL_S)
                if not readable:
                    continue
                chunk = os.read(fd, 4096)
            except OSError as exc:
                # EIO: the terminal went away (pty master closed); EBADF: stream closed.
                if exc.errno not in (errno.EIO, errno.EBADF):
                    log.warning("terminal trigger: reading stdin failed: %s", exc)
                break
            except ValueError:  # fd closed under us
                break
            now = time.monotonic_ns()
            if not chunk:
                log.info("end of input on stdin: the Enter key trigger is off")
                break
            # Canonical mode turns Enter into "\n"; a raw-mode terminal sends "\r".
            for _ in range(chunk.count(b"\n") or chunk.count(b"\r")):
                if self._stop.is_set():
                    break
                deliver(self._on_press, now, self.name)
