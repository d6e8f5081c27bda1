"""Capture jobs: the bounded queue and the one worker thread that runs the method.

A trigger (ZeroMQ, GPIO, terminal) becomes a :class:`CaptureRequest` stamped with the
time of the press (``time.monotonic_ns()``, the sensor timestamps' clock) and goes into
:class:`JobQueue`; a full queue raises :class:`BusyError` at once (the caller answers
``busy``). The :class:`CaptureWorker` thread owns the pipeline (and the GPU where there
is one) and runs each job (DESIGN §2):

1. the ring window around the trigger time (``selection.frames_before`` / ``_after``);
2. stages 1–3 (:func:`deblurd.pipeline.process.plan_burst`): blur scores, first frame,
   first deblur, decision — ``selected`` event;
3. when the decision says ``extra``: the longer exposure (gain keeping the trigger frame's
   brightness), extra frames captured right after (``extra_capture`` event, then the
   capture's own ``hold_still`` … ``done``), appended to the burst with role ``extra``;
4. stages 4–5 (:func:`deblurd.pipeline.process.complete_burst`); encode per
   ``output.format``; the result file written atomically (:class:`ResultStore`); the
   ``result`` message with the image; the burst saved when ``output.save_bursts``.

A failing job publishes ``error`` (code and message) and the worker takes the next one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import count, pairwise
from typing import Any

import numpy as np

from deblurd.burstdir import Burst, FrameInfo
from deblurd.camera.base import CameraBackend, CameraError, FrameMeta
from deblurd.camera.ring import FrameRing
from deblurd.errors import DeblurdError, RemoteInferenceError
from deblurd.gpu.factory import stage4_for
from deblurd.imaging import U8, encode_image
from deblurd.inference.base import Deblurrer, runtime_report
from deblurd.pipeline.decision import exposure_gain
from deblurd.pipeline.process import BurstPlan, complete_burst, plan_burst
from deblurd.pipeline.timing import StageTimer
from deblurd.service.offload import RemotePlan, burst_offload
from deblurd.service.publisher import Publisher
from deblurd.service.results import OutputError, ResultStore
from deblurd.service.status import StatusBoard
from deblurd.settings.models import DeblurdSettings

log = logging.getLogger(__name__)

_ids = count(1)
_ids_lock = threading.Lock()


def new_capture_id(now: datetime | None = None) -> str:
    """A unique, sortable, file-name-safe id: ``YYYYmmdd-HHMMSS-mmm-NNNN`` (local time)."""
    t = now or datetime.now()
    with _ids_lock:
        n = next(_ids)
    return f"{t:%Y%m%d-%H%M%S}-{t.microsecond // 1000:03d}-{n % 10000:04d}"


@dataclass(frozen=True)
class CaptureRequest:
    """One shutter press. ``trigger_ns``: ``time.monotonic_ns()`` at the press;
    ``source``: ``zmq``, ``gpio``, ``terminal``; ``wall_ns``: ``time.time_ns()`` then."""

    capture_id: str
    trigger_ns: int
    source: str
    wall_ns: int


class BusyError(DeblurdError):
    """The job queue is full (or closed for shutdown): the trigger was not queued."""

    def __init__(self, message: str, code: str = "busy") -> None:
        super().__init__(message)
        self.code = code


class JobAbortedError(DeblurdError):
    """The daemon is stopping and the running job was abandoned between stages."""


class JobQueue:
    """A bounded FIFO of capture requests; :meth:`submit` never blocks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._q: queue.Queue[CaptureRequest] = queue.Queue(maxsize=size)
        self._closed = False

    def submit(self, request: CaptureRequest) -> None:
        """Queue ``request`` or raise :class:`BusyError` (queue full, or closed)."""
        if self._closed:
            raise BusyError("the daemon is shutting down", code="shutting_down")
        try:
            self._q.put_nowait(request)
        except queue.Full as exc:
            raise BusyError(f"the capture queue is full ({self.size} waiting)") from exc

    def get(self, timeout_s: float) -> CaptureRequest | None:
        try:
            return self._q.get(timeout=timeout_s)
        except queue.Empty:
            return None

    @property
    def depth(self) -> int:
        return self._q.qsize()

    def close(self) -> list[CaptureRequest]:
        """Refuse new requests; return (and remove) those still waiting."""
        self._closed = True
        left: list[CaptureRequest] = []
        while True:
            try:
                left.append(self._q.get_nowait())
            except queue.Empty:
                return left


CaptureExtra = Callable[..., list[tuple[U8, FrameMeta]]]


def _default_capture_extra() -> CaptureExtra:
    from deblurd.camera.exposure import capture_extra

    return capture_extra


def frame_infos(metas: list[FrameMeta], role: str, start: int) -> list[FrameInfo]:
    """Burst-directory metadata of ``metas`` (files ``NNN.png`` from ``start``)."""
    return [
        FrameInfo(
            f"{start + i:03d}.png",
            m.timestamp_ns,
            max(1, int(m.exposure_us)),
            float(m.analogue_gain),
            "extra" if role == "extra" else "ring",
        )
        for i, m in enumerate(metas)
    ]


def window_report(
    metas: list[FrameMeta], center_ns: int, before: int, after: int
) -> dict[str, Any]:
    """What the ring window around ``center_ns`` (sensor ns) held against what was asked
    (``before`` frames at or before it, ``after`` after): counts, ``frames_missing`` (gaps
    in frame numbers inside the window: frames the camera dropped) and ``complete``. A job
    that ran on less than it wanted says so in its result's metadata (``window``)."""
    n_after = sum(1 for m in metas if m.timestamp_ns > center_ns)
    n_before = len(metas) - n_after
    numbers = [m.frame_number for m in metas]
    missing = sum(b - a - 1 for a, b in pairwise(numbers) if b > a + 1)
    return {
        "before": n_before,
        "after": n_after,
        "wanted_before": before,
        "wanted_after": after,
        "frames_missing": missing,
        "complete": n_before == before and n_after == after and missing == 0,
    }


def trigger_position(metas: list[FrameMeta], trigger_ns: int) -> int:
    """Index of the frame being exposed at ``trigger_ns``: the last one starting at or
    before it (the first frame when all start after it)."""
    before = [i for i, m in enumerate(metas) if m.timestamp_ns <= trigger_ns]
    return before[-1] if before else 0


class CaptureWorker:
    """The worker thread: takes requests off the queue and runs them one at a time."""

    def __init__(
        self,
        settings: DeblurdSettings,
        camera: CameraBackend,
        ring: FrameRing,
        deblurrer: Deblurrer | None,
        publisher: Publisher,
        store: ResultStore,
        status: StatusBoard,
        jobs: JobQueue,
        capture_extra: CaptureExtra | None = None,
    ) -> None:
        self.settings = settings
        self.camera, self.ring, self.deblurrer = camera, ring, deblurrer
        self.publisher, self.store, self.status, self.jobs = publisher, store, status, jobs
        self._capture_extra = capture_extra
        # inference.runtime.offload = "burst": stages 1-5 on a Triton server
        self.offload = burst_offload(settings, deblurrer)
        self._stop = threading.Event()
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deblurd-worker", daemon=True)
        self.last_beat = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float) -> bool:
        """Stop taking jobs; let the running one finish within ``timeout_s``, then abandon
        it (it stops at its next stage boundary). True when the thread ended in time."""
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("the running job did not finish within %.1f s: aborting it", timeout_s)
            self._abort.set()
            self.ring.close()  # wakes a job waiting on frames
            self._thread.join(1.0)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.last_beat = time.monotonic()
            request = self.jobs.get(0.2)
            if request is not None:
                self.run_job(request)

    def _check_abort(self) -> None:
        if self._abort.is_set():
            raise JobAbortedError("the daemon is stopping: job abandoned")

    # -- one job --------------------------------------------------------------------

    def run_job(self, request: CaptureRequest) -> bool:
        """Run one capture; publish its result or its error. True on success."""
        cid = request.capture_id
        self.status.job_started(cid)
        t0 = time.monotonic_ns()
        timing: dict[str, float] = {}
        try:
            meta = self._capture(request, timing)
        except Exception as exc:
            code, message = _error_code(exc), str(exc) or type(exc).__name__
            level = logging.WARNING if isinstance(exc, DeblurdError) else logging.ERROR
            log.log(level, "capture %s failed: %s: %s", cid, code, message,
                    exc_info=not isinstance(exc, DeblurdError))  # fmt: skip
            self.status.error(code, message, cid)
            self.status.job_finished(False)
            self.publisher.error(cid, code, message, source=request.source)
            return False
        done_ns = time.monotonic_ns()
        timing["job"] = (done_ns - t0) / 1e6
        timing["trigger_to_result"] = (done_ns - request.trigger_ns) / 1e6
        self.status.job_finished(True, timing)
        log.info(
            "capture %s (%s): %s in %.0f ms after the trigger",
            cid, request.source, meta["file"], timing["trigger_to_result"],
        )  # fmt: skip
        return True

    def _capture(self, request: CaptureRequest, timing: dict[str, float]) -> dict[str, Any]:
        s = self.settings
        cid = request.capture_id

        stage = StageTimer(timing).lap

        t = time.perf_counter()
        runtime_report(self.deblurrer)  # drops notes of an earlier job that failed
        burst, metas, window_info = self._window(request)
        numbers = [m.frame_number for m in metas]
        t = stage("window", t)
        self._check_abort()

        plan: BurstPlan | RemotePlan
        if self.offload is not None:
            plan = self.offload.plan(burst, s)
        else:
            plan = plan_burst(burst, s, self.deblurrer)
        t = stage("plan", t)
        self._announce_selection(cid, plan, burst, numbers)
        self._check_abort()

        decision = plan.decision
        if decision.source == "extra" and decision.exposure_us is not None and decision.frames:
            self._add_extra(cid, burst, metas, numbers, decision.exposure_us, decision.frames)
            t = stage("extra_capture", t)
            self._check_abort()

        if isinstance(plan, BurstPlan):
            result = complete_burst(burst, s, plan, self.deblurrer, stage4_for(s.registration))
            image, report = result.image, result.report.to_json()
        else:
            image, report = plan.complete(burst, s)
        t = stage("fuse_finish", t)
        data = encode_image(image, s.output.format, s.output.jpeg_quality)
        t = stage("encode", t)
        meta = self._result_meta(request, image, plan, burst, numbers, window_info, report)
        self._check_abort()
        if s.output.save_bursts:
            burst_dir = self.store.save_burst(cid, burst)
            meta["burst_dir"] = str(burst_dir) if burst_dir else None
            t = stage("save_burst", t)
        path = self.store.save(cid, data, "jpg" if s.output.format == "jpeg" else "png", meta)
        meta["file"] = str(path)
        t = stage("save", t)
        meta["stage_ms"] = {**report["stage_ms"], **timing}
        self.publisher.result(cid, meta, data)
        for name, ms in report["stage_ms"].items():
            timing[f"pipeline.{name}"] = ms
        return meta

    def _window(self, request: CaptureRequest) -> tuple[Burst, list[FrameMeta], dict[str, Any]]:
        """The ring's frames around the trigger as a burst, their metadata, and the
        :func:`window_report`. Raises :class:`CameraError` when the camera delivered no
        frame after the trigger and its newest is old (stalled or dead)."""
        s = self.settings
        fps = self.camera.fps or s.camera.fps
        wait_s = (s.selection.frames_after + 1) / fps + s.service.window_margin_s
        # The press on the sensor's clock (the sim camera's may lag the wall clock).
        center_ns = self.camera.sensor_clock_ns(request.trigger_ns)
        window = self.ring.window(
            center_ns, s.selection.frames_before + 1, s.selection.frames_after, wait_s
        )
        metas = [m for _, m in window]
        burst = Burst(
            [f for f, _ in window],
            frame_infos(metas, "ring", 0),
            trigger_position(metas, center_ns),
        )
        window_info = window_report(
            metas, center_ns, s.selection.frames_before + 1, s.selection.frames_after
        )
        if window_info["after"] == 0 and center_ns - metas[-1].timestamp_ns > 3e9 / fps:
            raise CameraError(
                f"no frame from the camera within {wait_s:.1f} s of the trigger (newest frame "
                f"{(center_ns - metas[-1].timestamp_ns) / 1e9:.1f} s before it): camera stalled "
                "or dead"
            )
        if not window_info["complete"]:
            log.warning("capture %s: incomplete window %s", request.capture_id, window_info)
        return burst, metas, window_info

    def _announce_selection(
        self, cid: str, plan: BurstPlan | RemotePlan, burst: Burst, numbers: list[int]
    ) -> None:
        """The ``selected`` event: the frame chosen, its scores, and the decision."""
        decision = plan.decision
        self.publisher.event(
            cid,
            "selected",
            frame=plan.selected,
            frame_number=numbers[plan.selected],
            trigger_frame=burst.trigger_index,
            blur_score=round(plan.scores[plan.selected], 3),
            deblurred_blur_score=round(plan.first_score, 3),
            decision={"source": decision.source, "frames": decision.frames,
                      "exposure_us": decision.exposure_us},
        )  # fmt: skip

    def _add_extra(
        self,
        cid: str,
        burst: Burst,
        metas: list[FrameMeta],
        numbers: list[int],
        exposure_us: int,
        frames: int,
    ) -> None:
        """Capture the decision's extra frames (at the trigger frame's brightness) and
        append them to ``burst`` and their frame numbers to ``numbers``."""
        s = self.settings
        trig = metas[burst.trigger_index]
        gain = exposure_gain(
            trig.exposure_us, trig.analogue_gain, exposure_us,
            min(s.decision.max_analogue_gain, s.camera.max_gain),
        )  # fmt: skip
        self.publisher.event(
            cid, "extra_capture", exposure_us=exposure_us,
            analogue_gain=round(gain, 3), frames=frames,
        )  # fmt: skip
        extra = self._extra(cid, exposure_us, gain, frames)
        extra_metas = [m for _, m in extra]
        burst.frames += [f for f, _ in extra]
        burst.infos += frame_infos(extra_metas, "extra", len(metas))
        numbers += [m.frame_number for m in extra_metas]

    def _result_meta(
        self,
        request: CaptureRequest,
        image: U8,
        plan: BurstPlan | RemotePlan,
        burst: Burst,
        numbers: list[int],
        window_info: dict[str, Any],
        report: dict[str, Any],
    ) -> dict[str, Any]:
        """The result's metadata (``file``, ``burst_dir`` and ``stage_ms`` come later)."""
        s = self.settings
        h, w = image.shape[:2]
        return {
            "source": request.source,
            "trigger_wall_ns": request.wall_ns,
            "format": s.output.format,
            "width": int(w),
            "height": int(h),
            "selected": plan.selected,
            "trigger_index": burst.trigger_index,
            "window": window_info,
            "frames": [
                {**info.to_json(), "frame_number": n, "blur_score": rec["blur_score"]}
                for info, n, rec in zip(burst.infos, numbers, report["frames"], strict=True)
            ],
            "decision": report["decision"],
            "report": report,
            "inference": runtime_report(self.deblurrer),  # e.g. a Triton pass run locally
        }

    def _extra(
        self, cid: str, exposure_us: int, gain: float, frames: int
    ) -> list[tuple[U8, FrameMeta]]:
        s = self.settings.camera
        capture = self._capture_extra or _default_capture_extra()

        def on_event(name: str, fields: dict[str, Any]) -> None:
            self.publisher.event(cid, name, **fields)

        got = capture(
            self.camera, self.ring, exposure_us, gain, frames, s.exposure_timeout_s, on_event,
            tolerance=s.exposure_tolerance,
        )  # fmt: skip
        if not got:
            raise CameraError("the extra capture returned no frames")
        for frame, _ in got:
            if frame.shape != (self.ring.height, self.ring.width, 3) or frame.dtype != np.uint8:
                raise CameraError(f"extra frame {frame.dtype} {frame.shape} is not a ring frame")
        return got


def _error_code(exc: BaseException) -> str:
    """The ``error`` topic's ``code`` for an exception."""
    if isinstance(exc, JobAbortedError):
        return "aborted"
    if isinstance(exc, OutputError):
        return "output"
    if isinstance(exc, CameraError):
        return "camera"
    if isinstance(exc, RemoteInferenceError):
        return "inference_remote"
    if isinstance(exc, DeblurdError):
        return "pipeline"
    return "internal"
