"""The Argus camera backend (NVIDIA Jetson): ``nvarguscamerasrc`` through GStreamer.

Pipeline (``build_pipeline``), frames pulled from an ``appsink``::

    nvarguscamerasrc sensor-id=N [sensor-mode=M] exposuretimerange="E E" gainrange="G G"
        ispdigitalgainrange="D D" aelock=true
      ! video/x-raw(memory:NVMM),width=W,height=H,framerate=F
      ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=RGB
      ! appsink name=sink emit-signals=true max-buffers=2 drop=true sync=false

With ``argus.source = "videotestsrc"`` (CI, any machine with GStreamer) the source and the
NVMM caps/``nvvidconv`` are replaced by ``videotestsrc is-live=true pattern=P !
video/x-raw,width=W,height=H,framerate=F``; everything after, and all the Python code
(appsink, exposure plans, rebuilds, metadata, drops), is the same.

``videoconvert`` outputs RGB directly (the frame convention), so the only per-frame work
in Python is PyGObject's copy of the mapped buffer into ``bytes``; the ``uint8 (H, W, 3)``
array handed to ``on_frame`` is a read-only view valid during the call (GStreamer pads RGB
rows to 4 bytes; the view skips the padding).

**Exposure metadata, honestly.** Argus gives no per-frame exposure/gain through appsink.
So the pipeline is always *locked*: ``exposuretimerange`` and ``gainrange`` are one value
each (ns, and a gain factor), ``aelock=true``, ISP digital gain pinned. A frame's
:class:`FrameMeta` exposure and gain are the values its pipeline was built with. A change
(``request_exposure``/``restore_preview``) tears the pipeline down and builds a new one
(the stream hiccups for a fraction of a second; counted in ``rebuilds``); every frame
from the new pipeline carries the new values, no frame from the old one does. No
auto-exposure mode is offered, because its frames' exposure would be unknown.

**Exposure is capped by the frame duration** of the sensor mode (Argus silently keeps
exposures within the frame time). A request longer than the nominal frame period
(``1/camera.fps`` minus ``argus.frame_overhead_us``) lowers the caps' frame rate to
``1e6 / (exposure + overhead)`` frames/s; below ``argus.min_fps`` the exposure is clamped
and the metadata reports the clamped value (so a waiting caller times out instead of
taking a wrong frame). Gain is clamped to ``[1, camera.max_gain]``.

**Timestamps.** ``timestamp_ns`` = pipeline base time + buffer PTS, moved from the
pipeline clock onto ``time.monotonic_ns``'s clock by sampling both (GStreamer's system
clock is CLOCK_MONOTONIC already; the sample makes this hold for any clock). For
``nvarguscamerasrc`` the applied exposure is subtracted (its buffers are stamped when
they arrive, after exposure), and ``argus.timestamp_latency_us`` for both sources.

**Drops.** ``frame_number`` advances by 1 + the frames missing in PTS gaps within one
pipeline (appsink ``drop=true`` discards frames the callback was too slow for).
A rebuild's hiccup is not counted as drops (the sensor was stopped).

Errors: no PyGObject/GStreamer, no ``nvarguscamerasrc``/``nvvidconv`` element (not a
Jetson, or JetPack's GStreamer plugins missing), a pipeline error on the bus or no frame
within ``argus.start_timeout_s`` at start: :class:`CameraError`. After start, a pipeline
error or a failed rebuild is logged, ``alive()`` turns false, and the pipeline is rebuilt
with a back-off (1 s doubling to 10 s).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from deblurd.camera import gst
from deblurd.camera.base import CameraError, FrameCallback, FrameMeta
from deblurd.camera.thread import ThreadedCamera
from deblurd.settings.camera import ArgusCameraSection

log = logging.getLogger(__name__)

NVIDIA_HINT = (
    "not a Jetson, or JetPack's GStreamer plugins are missing (nvidia-l4t-gstreamer; "
    "check with: gst-inspect-1.0 nvarguscamerasrc)"
)
_POLL_S = 0.02
_BACKOFF_MIN_S = 1.0
_BACKOFF_MAX_S = 10.0


@dataclass(frozen=True)
class ArgusExposure:
    """What one pipeline is built with: exposure (µs), analogue gain (1 = unity) and the
    caps frame rate (frames/s, exact fraction)."""

    exposure_us: int
    analogue_gain: float
    fps: Fraction


def plan_exposure(
    settings: ArgusCameraSection, exposure_us: int, analogue_gain: float
) -> ArgusExposure:
    """The pipeline-level exposure for a request: frame rate lowered for exposures longer
    than the nominal frame period, exposure clamped at ``argus.min_fps``, gain clamped."""
    argus = settings.argus
    overhead = argus.frame_overhead_us
    nominal = Fraction(settings.fps).limit_denominator(1001)
    gain = min(max(float(analogue_gain), 1.0), settings.max_gain)
    exposure = max(1, int(exposure_us))
    if exposure + overhead <= 1e6 / nominal:
        return ArgusExposure(exposure, gain, nominal)
    slowest = min(argus.min_fps, float(nominal))
    longest = max(1, int(1e6 / slowest) - overhead)
    if exposure > longest:
        log.warning(
            "argus: exposure %d µs is beyond what %.3g frames/s allows; clamped to %d µs",
            exposure,
            slowest,
            longest,
        )
        exposure = longest
    fps = min(Fraction(1_000_000, exposure + overhead), nominal)
    return ArgusExposure(exposure, gain, fps)


def build_pipeline(settings: ArgusCameraSection, plan: ArgusExposure) -> str:
    """The ``gst-launch`` description of the capture pipeline for ``plan`` (pure)."""
    argus = settings.argus
    size = f"width={settings.width},height={settings.height}"
    rate = f"framerate={plan.fps.numerator}/{plan.fps.denominator}"
    tail = (
        "videoconvert ! video/x-raw,format=RGB ! "
        f"appsink name=sink emit-signals=true max-buffers={argus.max_buffers} "
        "drop=true sync=false"
    )
    if argus.source == "videotestsrc":
        src = f"videotestsrc name=src is-live=true pattern={argus.test_pattern}"
        return f"{src} ! video/x-raw,{size},{rate} ! {tail}"
    ns = plan.exposure_us * 1000
    gain = f"{plan.analogue_gain:g}"
    digital = f"{argus.isp_digital_gain:g}"
    props = [f"sensor-id={argus.sensor_id}"]
    if argus.sensor_mode >= 0:
        props.append(f"sensor-mode={argus.sensor_mode}")
    props += [
        f"exposuretimerange={gst.quote(f'{ns} {ns}')}",
        f"gainrange={gst.quote(f'{gain} {gain}')}",
        f"ispdigitalgainrange={gst.quote(f'{digital} {digital}')}",
        "aelock=true",
    ]
    src = "nvarguscamerasrc name=src " + " ".join(props)
    return (
        f"{src} ! video/x-raw(memory:NVMM),{size},{rate} ! "
        f"nvvidconv ! video/x-raw,format=BGRx ! {tail}"
    )


def require_source(settings: ArgusCameraSection) -> None:
    """Raise :class:`CameraError` unless PyGObject, GStreamer and every element the
    configured pipeline needs are installed (cheap; opens no device)."""
    gst.import_gst()
    if settings.argus.source == "nvarguscamerasrc":
        gst.require_elements(["nvarguscamerasrc", "nvvidconv"], NVIDIA_HINT)
    else:
        gst.require_elements(["videotestsrc"], "install gstreamer1.0-plugins-base")
    gst.require_elements(["videoconvert", "appsink"], "install gstreamer1.0-plugins-base")


@dataclass
class _Stream:
    """One built pipeline and the exposure its frames carry."""

    pipeline: Any
    plan: ArgusExposure
    first_frame: threading.Event = field(default_factory=threading.Event)
    stale: bool = False
    last_pts: int | None = None


class ArgusCamera(ThreadedCamera):
    """Jetson CSI camera through ``nvarguscamerasrc`` (or ``videotestsrc``); see module doc.

    Its thread (:meth:`_run`) manages the pipeline: rebuilds it for exposure requests and
    after errors. Frames arrive on GStreamer's streaming thread (:meth:`_on_sample`)."""

    name = "argus"
    settings: ArgusCameraSection

    def __init__(self, settings: ArgusCameraSection) -> None:
        super().__init__()
        self.settings = settings
        self._argus = settings.argus
        self._wanted = plan_exposure(settings, settings.exposure_us, settings.analogue_gain)
        self._lock = threading.Lock()  # guards _wanted
        self._wake = threading.Event()
        self._stream: _Stream | None = None
        self._on_frame: FrameCallback | None = None
        self._Gst: Any = None
        self._frame_number = -1
        self._last_frame_at = 0.0
        self._grace_until = 0.0
        self._failed = False
        self.dropped_frames = 0
        self.callback_errors = 0
        self.rebuilds = 0
        self.last_error: str | None = None

    @property
    def applied(self) -> ArgusExposure | None:
        """The exposure plan of the running pipeline (``None`` when not running)."""
        stream = self._stream
        return None if stream is None else stream.plan

    def start(self, on_frame: FrameCallback) -> None:
        self._refuse_if_started()
        self._Gst = gst.import_gst()
        require_source(self.settings)
        self._on_frame = on_frame
        self._stop.clear()  # _launch watches it while it waits for the first frame
        self._failed = False
        with self._lock:
            plan = self._wanted
        self._stream = self._launch(plan)
        self._start_thread(on_frame)

    def stop(self) -> None:
        self._stop.set()  # before the wake-up, so that the woken manager sees it
        self._wake.set()
        self._stop_thread()
        stream, self._stream = self._stream, None
        if stream is not None:
            self._teardown(stream)
        self._on_frame = None

    def request_exposure(self, exposure_us: int, analogue_gain: float) -> None:
        plan = plan_exposure(self.settings, exposure_us, analogue_gain)
        with self._lock:
            self._wanted = plan
        self._wake.set()

    def restore_preview(self) -> None:
        self.request_exposure(self.settings.exposure_us, self.settings.analogue_gain)

    def alive(self) -> bool:
        if self._thread is None or self._failed:
            return False
        now = time.monotonic()
        if now < self._grace_until:
            return True
        return now - self._last_frame_at <= self._argus.frame_timeout_s

    # -- pipeline lifecycle (start: caller's thread; afterwards: the manager thread) --

    def _launch(self, plan: ArgusExposure) -> _Stream:
        """Build ``plan``'s pipeline, play it, wait for its first frame; CameraError if not."""
        Gst = self._Gst
        desc = build_pipeline(self.settings, plan)
        log.info("argus: starting pipeline: %s", desc)
        self._grace_until = time.monotonic() + self._argus.start_timeout_s
        try:
            pipeline = Gst.parse_launch(desc)
        except Exception as exc:  # GLib.Error: no such element, bad syntax
            raise CameraError(f"cannot build the GStreamer pipeline ({exc}): {desc}") from exc
        stream = _Stream(pipeline, plan)
        sink = pipeline.get_by_name("sink")
        sink.connect("new-sample", self._on_sample, stream)
        bus = pipeline.get_bus()
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            failure = self._bus_error(bus) or "state change to PLAYING failed"
            self._teardown(stream)
            raise CameraError(f"{self._what()} did not start: {failure}")
        deadline = time.monotonic() + self._argus.start_timeout_s
        while not stream.first_frame.wait(_POLL_S):
            detail = self._bus_error(bus)
            if detail is None and time.monotonic() > deadline:
                detail = f"no frame within {self._argus.start_timeout_s:g} s"
            if detail is not None:
                self._teardown(stream)
                raise CameraError(f"{self._what()} did not start: {detail}")
            if self._stop.is_set():
                break
        return stream

    def _teardown(self, stream: _Stream) -> None:
        stream.stale = True
        stream.pipeline.set_state(self._Gst.State.NULL)  # waits for the streaming thread

    def _run(self, on_frame: FrameCallback) -> None:
        """The manager loop. ``on_frame`` is called from GStreamer's streaming thread
        (:meth:`_on_sample`, through ``_on_frame``), not from here."""
        retry_at = 0.0
        backoff = _BACKOFF_MIN_S
        while not self._stop.is_set():
            self._wake.wait(_POLL_S)
            self._wake.clear()
            if self._stop.is_set():
                break
            with self._lock:
                wanted = self._wanted
            stream = self._stream
            if stream is not None:
                detail = self._bus_error(stream.pipeline.get_bus())
                if detail is not None:
                    self._fail(f"{self._what()} failed: {detail}")
                    self._teardown(stream)
                    self._stream = stream = None
                    retry_at = time.monotonic() + backoff
                elif stream.plan == wanted:
                    continue
            if stream is None and time.monotonic() < retry_at:
                continue
            if stream is not None:
                self._teardown(stream)
                self._stream = None
            try:
                self._stream = self._launch(wanted)
            except CameraError as exc:
                self._fail(str(exc))
                retry_at = time.monotonic() + backoff
                backoff = min(backoff * 2.0, _BACKOFF_MAX_S)
                continue
            self.rebuilds += 1
            self._failed = False
            backoff = _BACKOFF_MIN_S

    def _fail(self, message: str) -> None:
        log.error("argus: %s", message)
        self.last_error = message
        self._failed = True

    def _bus_error(self, bus: Any) -> str | None:
        Gst = self._Gst
        msg = bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.EOS)
        if msg is None:
            return None
        if msg.type == Gst.MessageType.EOS:
            return "end of stream"
        err, debug = msg.parse_error()
        where = msg.src.get_name() if msg.src is not None else "pipeline"
        return f"{where}: {err.message}" + (f" ({debug})" if debug else "")

    def _what(self) -> str:
        if self._argus.source == "videotestsrc":
            return "videotestsrc pipeline"
        return f"nvarguscamerasrc sensor-id={self._argus.sensor_id}"

    # -- frames (GStreamer streaming thread) --

    def _on_sample(self, sink: Any, stream: _Stream) -> Any:
        Gst = self._Gst
        sample = sink.emit("pull-sample")
        if sample is None or stream.stale or self._on_frame is None:
            return Gst.FlowReturn.OK
        try:
            meta = self._meta(stream, sample.get_buffer().pts)
            with gst.mapped_rgb(sample, Gst) as rgb:
                self._on_frame(rgb, meta)
        except Exception:
            self.callback_errors += 1
            if self.callback_errors <= 3 or self.callback_errors % 100 == 0:
                log.exception("argus: frame handling failed (%d so far)", self.callback_errors)
        self._last_frame_at = time.monotonic()
        stream.first_frame.set()
        return Gst.FlowReturn.OK

    def _meta(self, stream: _Stream, pts: int) -> FrameMeta:
        plan = stream.plan
        dropped = 0
        valid = pts != self._Gst.CLOCK_TIME_NONE
        if valid and stream.last_pts is not None:
            period_ns = 1e9 / float(plan.fps)
            dropped = max(0, round((pts - stream.last_pts) / period_ns) - 1)
        if valid:
            stream.last_pts = pts
        self.dropped_frames += dropped
        self._frame_number += 1 + dropped
        clock = stream.pipeline.get_clock()
        if valid and clock is not None:
            # pipeline clock -> monotonic: sample both clocks now
            offset = clock.get_time() - time.monotonic_ns()
            ts = stream.pipeline.get_base_time() + pts - offset
        else:
            ts = time.monotonic_ns()
        if self._argus.source == "nvarguscamerasrc":
            ts -= plan.exposure_us * 1000
        ts -= self._argus.timestamp_latency_us * 1000
        return FrameMeta(self._frame_number, ts, plan.exposure_us, plan.analogue_gain)
