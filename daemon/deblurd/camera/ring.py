"""The frame ring: a preallocated circular store of the latest preview frames.

One writer (the camera thread, through :meth:`FrameRing.push`) and any number of readers
(capture jobs: :meth:`FrameRing.window`, :meth:`FrameRing.wait_for`, :meth:`FrameRing.latest`).
Pixels live in one ``uint8 (capacity, H, W, 3)`` array allocated (and touched) once;
metadata in small parallel arrays. Pushing a frame never allocates.

A note on locking (a seqlock with a short mutex):

* One :class:`threading.Condition` (``_cond``, over a plain Lock) guards every metadata
  array and the write cursor. Nobody holds it while copying pixels, so the camera thread
  waits at most for a reader's bookkeeping (microseconds), never for a reader's copy.
* Each slot has a sequence number ``_seq``: **odd while the writer is filling the slot**,
  even when it is stable. The writer, under the lock, bumps the slot's number to odd and
  marks it invalid; releases the lock; copies the pixels in; then, under the lock again,
  writes the metadata, bumps the number to even, marks it valid and ``notify_all``\\ s.
* A reader, under the lock, picks the slots it wants from the metadata (valid slots only)
  and notes their sequence numbers; releases the lock; copies the pixels out; then, under
  the lock, checks each slot's number was even (stable) and is unchanged. A changed number
  means the writer came round the ring and began overwriting that slot during the copy
  (an odd one: it was at it already): that copy is thrown away
  (the frame it held is gone for good: the ring was too small for how slow the reader
  was). So a reader never returns a torn frame or a frame with another frame's metadata.
* The writer starts overwriting a slot only after bumping its number under the lock, and
  the reader checks the number under the same lock after its copy has finished: either the
  check sees the bump, or the writer had not started on that slot yet when the copy ended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.camera.base import CameraError, FrameMeta
from deblurd.errors import ConfigError
from deblurd.imaging import U8

Frame = tuple[U8, FrameMeta]
_RETRIES = 3


def _copy_rgb(frame: npt.NDArray[np.uint8], dst: U8) -> None:
    """``dst[...] = frame`` for ``uint8 (H, W, 3)`` arrays, in one pass (see ``push``)."""
    if frame.strides[2] == -1 and frame.strides[1] == 3:  # RGB view of B, G, R bytes
        cv2.cvtColor(frame[..., ::-1], cv2.COLOR_BGR2RGB, dst=dst)
    else:
        np.copyto(dst, frame)


def frame_bytes(height: int, width: int) -> int:
    """Bytes of one ``uint8 (height, width, 3)`` frame."""
    return height * width * 3


def capacity_for_budget(budget_bytes: int, height: int, width: int, minimum: int = 4) -> int:
    """How many ``(height, width, 3)`` frames fit in ``budget_bytes``.

    Raises :class:`ConfigError` (naming ``camera.ring_memory_mb``) when fewer than
    ``minimum`` frames fit.
    """
    if height <= 0 or width <= 0:
        raise ConfigError(f"bad frame size {width}x{height}")
    n = budget_bytes // frame_bytes(height, width)
    if n < minimum:
        need_mb = -(-minimum * frame_bytes(height, width) // (1024 * 1024))
        raise ConfigError(
            f"camera.ring_memory_mb: {budget_bytes / 2**20:.0f} MiB holds {n} frames of "
            f"{width}x{height}; the ring needs at least {minimum} (≥ {need_mb} MiB)",
            [("camera.ring_memory_mb", f"too small for {minimum} frames of {width}x{height}")],
        )
    return int(n)


class FrameRing:
    """A ring of the last ``capacity`` frames ``uint8 (height, width, 3)`` with metadata.

    Frames are ordered by arrival (push order); ``frame_number`` and ``timestamp_ns`` are
    expected to increase with it (backends guarantee that). Thread-safe for one writer and
    many readers (module docstring). Every frame returned is a private copy.
    """

    def __init__(self, capacity: int, height: int, width: int) -> None:
        if capacity < 1 or height < 1 or width < 1:
            raise ValueError(f"bad ring geometry: {capacity} frames of {width}x{height}")
        self.capacity, self.height, self.width = capacity, height, width
        self._frames: U8 = np.zeros((capacity, height, width, 3), np.uint8)
        self._frames.fill(0)  # touch every page now, not in the camera thread later
        self._number = np.zeros(capacity, np.int64)
        self._ts = np.zeros(capacity, np.int64)
        self._exposure = np.zeros(capacity, np.int64)
        self._gain = np.zeros(capacity, np.float64)
        self._seq = np.zeros(capacity, np.int64)
        self._valid = np.zeros(capacity, np.bool_)
        self._cond = threading.Condition(threading.Lock())
        self._written = 0  # frames pushed so far; the next goes to slot _written % capacity
        self._missed = 0  # gaps in frame_number seen by push (frames the backend dropped)
        self._last_number: int | None = None
        self._closed = False

    # -- writer -------------------------------------------------------------------------
    def push(self, frame: npt.NDArray[np.uint8], meta: FrameMeta) -> None:
        """Copy ``frame`` (``uint8 (H, W, 3)``, the ring's size) and its metadata into the
        next slot, overwriting the oldest frame. Called by the camera thread only; returns
        in about one memcpy. Raises :class:`CameraError` on a wrong shape or dtype.

        ``frame`` may be any strided view: rows with padding, and channels reversed in
        memory (a camera's BGR buffer handed over as the RGB view ``bgr[..., ::-1]``,
        picamera2's ``RGB888``): that one is swapped into the slot by OpenCV, as fast as
        a plain copy (numpy's strided copy of the same view is ~12x slower). Either way it
        is the frame's only pass over its pixels on the way into the ring."""
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise CameraError(
                f"frame {frame.dtype} {frame.shape} does not fit the ring "
                f"(uint8 {(self.height, self.width, 3)})"
            )
        # Claim the slot (odd: being written), fill it without the lock, then commit.
        with self._cond:
            slot = self._written % self.capacity
            self._seq[slot] += 1  # odd: being written
            self._valid[slot] = False
        try:
            _copy_rgb(frame, self._frames[slot])
        except BaseException:
            with self._cond:
                self._seq[slot] += 1  # even again, still invalid: the next push reuses it
            raise
        with self._cond:
            self._number[slot] = meta.frame_number
            self._ts[slot] = meta.timestamp_ns
            self._exposure[slot] = meta.exposure_us
            self._gain[slot] = meta.analogue_gain
            self._seq[slot] += 1  # even: stable
            self._valid[slot] = True
            self._written += 1
            last = self._last_number
            if last is not None and meta.frame_number > last + 1:
                self._missed += meta.frame_number - last - 1
            self._last_number = meta.frame_number
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiting reader (they return or raise at once); pushes still work."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- state --------------------------------------------------------------------------
    @property
    def frames_written(self) -> int:
        """Frames pushed since the ring was made."""
        with self._cond:
            return self._written

    @property
    def fill(self) -> int:
        """Frames held now (``min(frames_written, capacity)``)."""
        with self._cond:
            return min(self._written, self.capacity)

    @property
    def frames_missed(self) -> int:
        """Frames the backend skipped (gaps in ``frame_number`` between pushes)."""
        with self._cond:
            return self._missed

    @property
    def nbytes(self) -> int:
        """Bytes of pixel storage."""
        return int(self._frames.nbytes)

    def newest_meta(self) -> FrameMeta | None:
        """Metadata of the newest frame (no pixels copied), or None while empty."""
        with self._cond:
            if self._written == 0:
                return None
            return self._meta((self._written - 1) % self.capacity)

    def metas(self) -> list[FrameMeta]:
        """Metadata of the frames held, oldest first (no pixels copied)."""
        with self._cond:
            return [self._meta(s) for s in self._slots_oldest_first()]

    # -- readers ------------------------------------------------------------------------
    def latest(self) -> Frame | None:
        """A copy of the newest frame and its metadata, or None while the ring is empty."""
        for _ in range(_RETRIES):
            with self._cond:
                if self._written == 0:
                    return None
                slot = (self._written - 1) % self.capacity
                picked = [(slot, int(self._seq[slot]), self._meta(slot))]
            got = self._copy_out(picked)
            if got:
                return got[0]
        return None  # overwritten _RETRIES times in a row: only with a ring of 1-2 frames

    def window(self, center_ns: int, before: int, after: int, timeout_s: float) -> list[Frame]:
        """Frames around the sensor time ``center_ns`` (ns), oldest first: up to ``before``
        frames whose timestamp is at or before ``center_ns`` (the last of them is the frame
        being exposed at that time: the trigger frame), then up to ``after`` frames after it.

        Waits up to ``timeout_s`` (s) for the ``after`` frames to arrive; returns what it
        has then (fewer after-frames when the camera stalled; fewer before-frames when they
        have left the ring). Raises :class:`CameraError` when it has no frame at all.
        """
        if before < 0 or after < 0 or before + after == 0:
            raise ValueError(f"bad window: {before} before, {after} after")
        deadline = time.monotonic() + max(timeout_s, 0.0)
        for _ in range(_RETRIES):
            with self._cond:
                while not self._closed:
                    picked = self._pick_window(center_ns, before, after)
                    n_after = sum(1 for _, _, m in picked if m.timestamp_ns > center_ns)
                    left = deadline - time.monotonic()
                    if n_after >= after or left <= 0:
                        break
                    self._cond.wait(left)
                else:
                    picked = self._pick_window(center_ns, before, after)
            got = self._copy_out(picked)
            if len(got) == len(picked):
                break
            # A slot was overwritten during the copy: pick again from what is there now.
        if not got:
            raise CameraError(
                f"no frames in the ring around t = {center_ns} ns within {timeout_s:.1f} s "
                f"({self.frames_written} frames written so far)"
            )
        return got

    def wait_for(
        self,
        predicate: Callable[[FrameMeta], bool],
        count: int,
        timeout_s: float,
        start_after_frame: int | None = None,
    ) -> list[Frame]:
        """The first ``count`` frames whose metadata satisfy ``predicate``, oldest first,
        among frames with ``frame_number > start_after_frame`` (None: frames pushed after
        this call). Frames are copied as they arrive, so the ring's size does not limit
        ``count``. ``predicate`` runs on the caller's thread, outside the lock.

        Raises :class:`CameraError` when ``timeout_s`` (s) passes first (or on close).
        """
        if count < 1:
            raise ValueError(f"count must be ≥ 1, got {count}")
        deadline = time.monotonic() + max(timeout_s, 0.0)
        got: list[Frame] = []
        with self._cond:
            # Scan from the oldest frame still held when a start frame is given.
            cursor = self._written if start_after_frame is None else self._oldest_index()
        while len(got) < count:
            with self._cond:
                while self._written == cursor and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                cursor = max(cursor, self._oldest_index())  # frames lost to a slow reader
                candidates = [
                    (i % self.capacity, int(self._seq[i % self.capacity]))
                    for i in range(cursor, self._written)
                    if self._valid[i % self.capacity]  # not the slot being overwritten
                ]
                metas = [self._meta(s) for s, _ in candidates]
                cursor = self._written
                closed = self._closed
            picked = [
                (slot, seq, meta)
                for (slot, seq), meta in zip(candidates, metas, strict=True)
                if (start_after_frame is None or meta.frame_number > start_after_frame)
                and predicate(meta)
            ][: count - len(got)]
            got += self._copy_out(picked)
            if len(got) >= count:
                break
            if closed or time.monotonic() >= deadline:
                raise CameraError(
                    f"only {len(got)} of {count} wanted frames arrived within "
                    f"{timeout_s:.1f} s" + (" (ring closed)" if closed else "")
                )
        return got

    # -- internals (callers hold the lock unless noted) -----------------------------------
    def _meta(self, slot: int) -> FrameMeta:
        return FrameMeta(
            frame_number=int(self._number[slot]),
            timestamp_ns=int(self._ts[slot]),
            exposure_us=int(self._exposure[slot]),
            analogue_gain=float(self._gain[slot]),
        )

    def _oldest_index(self) -> int:
        return max(self._written - self.capacity, 0)

    def _slots_oldest_first(self) -> list[int]:
        return [
            i % self.capacity
            for i in range(self._oldest_index(), self._written)
            if self._valid[i % self.capacity]
        ]

    def _pick_window(
        self, center_ns: int, before: int, after: int
    ) -> list[tuple[int, int, FrameMeta]]:
        slots = self._slots_oldest_first()
        ts = self._ts[slots] if slots else np.zeros(0, np.int64)
        split = int(np.searchsorted(ts, center_ns, side="right"))  # ts[:split] <= center
        chosen = slots[max(split - before, 0) : split] + slots[split : split + after]
        return [(s, int(self._seq[s]), self._meta(s)) for s in chosen]

    def _copy_out(self, picked: list[tuple[int, int, FrameMeta]]) -> list[Frame]:
        """Copy the picked slots' pixels (without the lock), keep the ones whose sequence
        number did not change meanwhile. Called without the lock."""
        copies = [self._frames[slot].copy() for slot, _, _ in picked]
        with self._cond:
            return [
                (img, meta)
                for img, (slot, seq, meta) in zip(copies, picked, strict=True)
                if seq % 2 == 0 and int(self._seq[slot]) == seq  # stable then and now
            ]
