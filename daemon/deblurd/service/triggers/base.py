"""The shape every shutter trigger has (GPIO button, terminal key)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from deblurd.errors import DeblurdError

TriggerCallback = Callable[[int, str], None]
"""``on_press(timestamp_ns, source)``: ``timestamp_ns`` on ``time.monotonic_ns``'s clock,
taken when the press happened (not when a worker got to it); ``source`` = trigger name.
Called on the trigger's own thread: it must be quick (queue a job and return)."""

log = logging.getLogger(__name__)


class TriggerError(DeblurdError):
    """A trigger cannot be armed: device missing, no permission, line busy."""


@runtime_checkable
class Trigger(Protocol):
    """A source of shutter presses. ``start()`` arms it, ``stop()`` disarms it (idempotent)."""

    @property
    def name(self) -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def deliver(on_press: TriggerCallback, timestamp_ns: int, source: str) -> None:
    """Call ``on_press``; an exception it raises is logged, never kills the trigger thread."""
    try:
        on_press(timestamp_ns, source)
    except Exception:
        log.exception("%s trigger: the press handler failed", source)
