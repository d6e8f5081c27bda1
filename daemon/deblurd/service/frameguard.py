"""Sanity of the camera's frame metadata before a frame enters the ring (issue 7).

The ring and the capture window assume what :class:`~deblurd.camera.base.FrameMeta`
promises: frame numbers and sensor timestamps that increase with arrival. Two things
break that in practice, and :class:`FrameGuard` (on the camera thread, a few integer
compares per frame, no lock) handles both:

* **The camera restarted** (the daemon reopened it after a failure): its counter starts
  again at 0. The guard renumbers: from then on the daemon's ``frame_number`` is the
  backend's plus an offset that keeps the sequence increasing (gaps stay gaps).
* **The sensor clock went backwards** (a timestamp not after the previous frame's): the
  frame is **rejected** (not put in the ring: a window picked around a trigger time needs
  ordered timestamps) and counted. A clock that stays behind therefore looks like a camera
  that delivers nothing: after ``service.camera_stale_s`` the daemon declares the camera
  failed and reopens it, which re-establishes the clock.
"""

from __future__ import annotations

from dataclasses import replace

from deblurd.camera.base import FrameMeta


class FrameGuard:
    """Renumbers frames across camera restarts and rejects timestamps that go back.

    ``rejected``: frames refused so far; ``last_rejected``: the metadata of the latest one
    (as the backend sent it), for the status and the log.
    """

    def __init__(self) -> None:
        self.rejected = 0
        self.last_rejected: FrameMeta | None = None
        self._offset = 0
        self._last_number: int | None = None  # the daemon's numbering
        self._last_ts: int | None = None

    def check(self, meta: FrameMeta) -> FrameMeta | None:
        """The metadata to store for this frame (renumbered when needed), or None when the
        frame must be dropped (its timestamp is not after the last accepted frame's)."""
        if self._last_ts is not None and meta.timestamp_ns <= self._last_ts:
            self.rejected += 1
            self.last_rejected = meta
            return None
        number = meta.frame_number + self._offset
        if self._last_number is not None and number <= self._last_number:
            # A new counter (camera reopened): continue after the last number.
            self._offset += self._last_number + 1 - number
            number = self._last_number + 1
        self._last_number = number
        self._last_ts = meta.timestamp_ns
        return meta if number == meta.frame_number else replace(meta, frame_number=number)

    def backwards_s(self) -> float:
        """How far the latest rejected timestamp was behind the last accepted one, s."""
        if self.last_rejected is None or self._last_ts is None:
            return 0.0
        return (self._last_ts - self.last_rejected.timestamp_ns) / 1e9
