"""The daemon's state, as the ``status`` request and the sd_notify ``STATUS=`` line show it.

One :class:`StatusBoard` is shared by the camera thread (frame counters: cheap, no
lock, plain attribute updates), the worker (job counters, per-stage latencies) and the
control thread (reads a snapshot). Latencies are kept over the last ``window`` jobs per
stage and reported as last / p50 / p95 / max in milliseconds. Listeners added with
:meth:`StatusBoard.on_job_finished` see every job's stage times (the Prometheus
histograms of :mod:`deblurd.service.metrics`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deblurd.camera.base import FrameMeta
from deblurd.pipeline.timing import latency_summary

LATENCY_WINDOW = 100
log = logging.getLogger(__name__)
JobListener = Callable[[bool, dict[str, float]], None]
"""``listener(ok, stage_ms)`` after each job, on the worker thread: must be quick."""


@dataclass
class LastError:
    code: str
    message: str
    capture_id: str | None
    time_ns: int


class FrameCounter:
    """Frames seen by the camera callback: counts, gaps in frame numbers, measured rate.

    ``record`` runs on the camera thread for every frame: a handful of attribute updates,
    no lock, no allocation beyond Python ints and floats.
    """

    def __init__(self) -> None:
        self.received = 0
        self.dropped = 0
        self.rejected = 0  # frames refused for a timestamp going back (FrameGuard)
        self.last_number: int | None = None
        self.last_arrival = 0.0  # time.monotonic() of the last frame, 0 = none yet
        self._last_ts_ns: int | None = None
        self.fps = 0.0  # exponential average over ~30 frames

    def record(self, meta: FrameMeta) -> None:
        if self.last_number is not None and meta.frame_number > self.last_number + 1:
            self.dropped += meta.frame_number - self.last_number - 1
        last_ts, last_number = self._last_ts_ns, self.last_number
        if last_ts is not None and last_number is not None and meta.timestamp_ns > last_ts:
            numbers = max(1, meta.frame_number - last_number)
            inst = 1e9 * numbers / (meta.timestamp_ns - last_ts)
            self.fps = inst if self.fps == 0.0 else self.fps + (inst - self.fps) / 30.0
        self.last_number = meta.frame_number
        self._last_ts_ns = meta.timestamp_ns
        self.received += 1
        self.last_arrival = time.monotonic()

    def age_s(self) -> float | None:
        """Seconds since the last frame arrived; None before the first."""
        return None if self.last_arrival == 0.0 else time.monotonic() - self.last_arrival


class StatusBoard:
    """Counters and state of the running daemon; :meth:`snapshot` is the status reply."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.state = "starting"
        self.frames = FrameCounter()
        self.jobs_accepted = 0
        self.jobs_done = 0
        self.jobs_failed = 0
        self.jobs_busy = 0
        self.running: str | None = None
        self.camera_restarts = 0
        self.last_error: LastError | None = None
        self.info: dict[str, Any] = {}
        self._window = window
        self._latency: dict[str, deque[float]] = {}
        self._listeners: list[JobListener] = []

    def on_job_finished(self, listener: JobListener) -> None:
        """Call ``listener(ok, stage_ms)`` after every finished job (see :data:`JobListener`)."""
        self._listeners.append(listener)

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to a counter (``jobs_accepted``, ``jobs_busy``, ``camera_restarts``)."""
        with self._lock:
            setattr(self, counter, getattr(self, counter) + n)

    def set_state(self, state: str) -> None:
        self.state = state

    def error(self, code: str, message: str, capture_id: str | None = None) -> None:
        with self._lock:
            self.last_error = LastError(code, message, capture_id, time.time_ns())

    def job_started(self, capture_id: str) -> None:
        self.running = capture_id

    def job_finished(self, ok: bool, stage_ms: dict[str, float] | None = None) -> None:
        with self._lock:
            self.running = None
            if ok:
                self.jobs_done += 1
            else:
                self.jobs_failed += 1
            for name, ms in (stage_ms or {}).items():
                self._latency.setdefault(name, deque(maxlen=self._window)).append(float(ms))
        for listener in self._listeners:
            try:
                listener(ok, dict(stage_ms or {}))
            except Exception:
                log.exception("a job listener failed")

    def latency(self) -> dict[str, dict[str, float]]:
        """Per stage: ``last``, ``p50``, ``p95``, ``max`` (ms) and ``count`` over the window."""
        with self._lock:
            items = {k: list(v) for k, v in self._latency.items() if v}
        return {name: latency_summary(values) for name, values in items.items()}

    def snapshot(self, **live: Any) -> dict[str, Any]:
        """The status reply (without ``ok``); ``live`` adds values read at call time."""
        frames = self.frames
        age = frames.age_s()
        with self._lock:
            err = self.last_error
            jobs = {
                "accepted": self.jobs_accepted,
                "done": self.jobs_done,
                "failed": self.jobs_failed,
                "busy": self.jobs_busy,
                "running": self.running,
            }
        return {
            "state": self.state,
            "uptime_s": round(time.monotonic() - self.started, 1),
            **self.info,
            "camera": {
                **self.info.get("camera", {}),
                "fps": round(frames.fps, 2),
                "frames_received": frames.received,
                "frames_dropped": frames.dropped,
                "frames_rejected": frames.rejected,
                "last_frame_age_s": None if age is None else round(age, 3),
                "restarts": self.camera_restarts,
            },
            "jobs": jobs,
            "last_error": None
            if err is None
            else {
                "code": err.code,
                "message": err.message,
                "capture_id": err.capture_id,
                "time_ns": err.time_ns,
            },
            "latency_ms": self.latency(),
            **live,
        }

    def status_line(self, queue_depth: int) -> str:
        """One line for sd_notify ``STATUS=``."""
        f = self.frames
        line = (
            f"{self.state}: {f.fps:.1f} fps, {f.dropped} dropped, queue {queue_depth}, "
            f"{self.jobs_done} done, {self.jobs_failed} failed"
        )
        if self.last_error is not None:
            line += f"; last error: {self.last_error.code}"
        return line
