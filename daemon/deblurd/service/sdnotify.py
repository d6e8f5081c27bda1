"""systemd's notify protocol (``sd_notify(3)``) without libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a unix datagram socket: a path,
or ``@name`` for the abstract namespace) and, with ``WatchdogSec=``, ``WATCHDOG_USEC``
(and ``WATCHDOG_PID``, the process it is meant for). Each notification is one datagram
of newline-separated ``KEY=value`` fields: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``,
``STOPPING=1``, ``RELOADING=1`` (with ``MONOTONIC_USEC=``).

Without ``NOTIFY_SOCKET`` every call is a no-op returning ``False``; a send that fails
is logged once and never raises (the daemon must not die because systemd went away).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def under_systemd(env: Mapping[str, str] | None = None) -> bool:
    """True when started by systemd (``JOURNAL_STREAM`` or ``INVOCATION_ID`` set).

    Used to pick a log format without timestamps of our own (journald adds them).
    """
    e = os.environ if env is None else env
    return bool(e.get("JOURNAL_STREAM") or e.get("INVOCATION_ID"))


def _socket_address(value: str) -> str | None:
    """``NOTIFY_SOCKET`` as a ``socket.sendto`` address, or None when unsupported."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. systemd 256's "vsock:" addresses: not supported here


class SystemdNotifier:
    """Sends ``sd_notify`` datagrams to the socket named by ``NOTIFY_SOCKET``.

    ``env`` defaults to ``os.environ`` (read once, at construction). Thread-safe.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        e = os.environ if env is None else env
        raw = e.get("NOTIFY_SOCKET") or ""
        self._socket_name = raw
        self._address = _socket_address(raw) if raw else None
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path or @name: not notifying", raw)
        self._watchdog_usec = _positive_int(e.get("WATCHDOG_USEC"))
        self._watchdog_pid = _positive_int(e.get("WATCHDOG_PID"))
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to talk to."""
        return self._address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (``"KEY=value"`` strings) as one datagram.

        Returns True when it was sent; False when disabled or when the send failed (the
        first failure is logged as a warning, later ones at debug level).
        """
        if self._address is None or not fields:
            return False
        payload = "\n".join(fields).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                # Never block: a notify socket nobody reads must not stall the watchdog
                # thread (a full queue is a failed send, logged once, like any other).
                self._sock.sendto(payload, socket.MSG_DONTWAIT, self._address)
            except OSError as exc:
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                level = logging.DEBUG if self._warned else logging.WARNING
                self._warned = True
                log.log(level, "sd_notify to %s failed: %s", self._socket_name, exc)
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (and ``STATUS=``): startup finished, systemd may start dependants."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(_status_field(status))
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status`` (newlines become spaces)."""
        return self.notify(_status_field(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: keep-alive; send every :meth:`watchdog_interval_s` seconds."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=`` (required by ``Type=notify-reload``)."""
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={now_us}")

    def watchdog_interval_s(self) -> float | None:
        """How often to send ``WATCHDOG=1``, s: half of ``WATCHDOG_USEC``.

        None when no watchdog is configured, or ``WATCHDOG_PID`` names another process.
        """
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2e6

    def close(self) -> None:
        """Close the socket (a later notify opens a new one)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _status_field(text: str) -> str:
    return "STATUS=" + " ".join(text.splitlines())


def _positive_int(value: str | None) -> int | None:
    if not value:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        log.warning("ignoring a malformed systemd variable value %r", value)
        return None
    return number if number > 0 else None
