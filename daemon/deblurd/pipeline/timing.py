"""Stage timing: host wall time in milliseconds, as every ``stage_ms`` report holds it.

One helper for the pipeline's stages, the registrars and aligners, and the daemon's
per-job timing. Times are ``time.perf_counter()`` readings. :func:`latency_summary` is how
the status reply sums up a window of such times (the daemon's stages, a Triton server's
requests).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = ["StageTimer", "elapsed_ms", "latency_summary"]


def elapsed_ms(t0: float, t1: float | None = None) -> float:
    """Milliseconds from the ``perf_counter()`` reading ``t0`` to ``t1`` (now when None)."""
    if t1 is None:
        t1 = time.perf_counter()
    return (t1 - t0) * 1000.0


class StageTimer:
    """Adds stage times into ``stage_ms`` (name → ms, each sum rounded to 0.01 ms): a
    stage that runs several times accumulates."""

    def __init__(self, stage_ms: dict[str, float]) -> None:
        self.stage_ms = stage_ms

    def add(self, name: str, ms: float) -> None:
        """Count ``ms`` (measured elsewhere) towards stage ``name``."""
        self.stage_ms[name] = round(self.stage_ms.get(name, 0.0) + ms, 2)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as stage ``name`` (also when it raises)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, elapsed_ms(t0))

    def lap(self, name: str, since: float) -> float:
        """Count the time from ``since`` to now towards ``name``; returns now (the next
        stage's ``since``)."""
        now = time.perf_counter()
        self.add(name, elapsed_ms(since, now))
        return now


def latency_summary(ms: Sequence[float]) -> dict[str, float]:
    """``last``, ``p50``, ``p95`` and ``max`` of the times ``ms`` (oldest first, at least
    one), rounded to 0.1 ms, and their ``count``: a latency entry of the status reply."""
    return {
        "last": round(ms[-1], 1),
        "p50": round(_percentile(ms, 0.5), 1),
        "p95": round(_percentile(ms, 0.95), 1),
        "max": round(max(ms), 1),
        "count": len(ms),
    }


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values``, linear between the two nearest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
