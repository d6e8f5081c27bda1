"""Log set-up of the daemon: one line per record on stdout.

Under systemd (``JOURNAL_STREAM`` / ``INVOCATION_ID``) journald stamps each line itself,
so records carry no time of their own, and a ``<N>`` syslog priority prefix
(``sd-daemon(3)``) lets ``journalctl -p`` filter by level. Elsewhere each line starts with
the local time.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    """``<priority>name: message`` (journald strips the prefix into PRIORITY=)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _PRIORITY.get(record.levelno, 6)
        # Every line of a multi-line record (a traceback) keeps the priority.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(
    journal: bool, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send the ``deblurd`` loggers' records to ``stream`` (stdout); returns the handler."""
    handler = logging.StreamHandler(stream or sys.stdout)
    if journal:
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger("deblurd")
    for old in list(root.handlers):
        if getattr(old, "_deblurd", False):
            root.removeHandler(old)
    handler._deblurd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return handler
