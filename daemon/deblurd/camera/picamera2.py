"""The picamera2 camera backend (Raspberry Pi, libcamera).

Written against picamera2's own source (``picamera2/picamera2.py``, ``request.py``,
``job.py``, ``controls.py``):

- ``Picamera2(camera_num=N, tuning=T)`` opens the camera. Failures surface as
  ``RuntimeError("Camera __init__ sequence did not complete.")`` (device busy, no
  permission, driver trouble) or ``IndexError`` (no camera number N); both become
  :class:`CameraError` with the usual causes and fixes.
- ``create_video_configuration`` / ``create_preview_configuration(main={"format", "size"},
  buffer_count=, controls=, queue=True, display=None, encode=None)``, ``configure``,
  ``start()`` (``show_preview=False``: picamera2's NullPreview thread runs the event
  loop that completes requests), ``stop()``, ``close()``.
- The capture thread (:class:`ThreadedCamera`'s): ``job = capture_request(wait=False)``
  then ``picam2.wait(job, timeout=0.1)`` in a loop (a timeout keeps the *same* job, so no
  request is ever orphaned; the thread can notice ``stop`` within 0.1 s). For each
  request: ``get_metadata()``, then ``with MappedArray(request, "main", write=False)``
  (``picamera2.request.MappedArray``: the stream's buffer mapped, no copy; ``write=False``:
  we only read it, so the buffer's sync skips the write-back) ``on_frame`` gets a view
  of the mapped buffer, and ``request.release()`` follows in a ``finally`` -- at once,
  even when ``on_frame`` raises: a held request stalls the camera (DESIGN §5). The view
  is valid during ``on_frame`` only (the frame contract); the daemon's ``on_frame``
  copies it into the ring, so the request is held for that one pass over the pixels.
- Pixel order: in libcamera's naming ``RGB888`` is **B, G, R bytes in memory** (picamera2's
  ``make_image`` maps it to PIL's raw mode "BGR") and ``BGR888`` is R, G, B. With the
  default ``RGB888`` the backend hands over ``bgr[..., ::-1]``, the RGB view of the mapped
  B, G, R bytes, which :meth:`FrameRing.push <deblurd.camera.ring.FrameRing.push>` swaps
  with ``cv2.cvtColor(dst=slot)`` straight into the ring; with ``BGR888`` the mapped
  array is RGB already. Rows keep the stream's stride (padding is skipped by the view).
  So each frame is copied once, by that conversion into the ring, where it used to be
  copied three times (``make_array``'s copy, a channel swap into a buffer of ours, the
  ring's copy; four with a padded stride, which ``make_array`` copies once more): at
  12 MP each pass spared is 36 MB read and 36 MB written per frame.
- ``request_exposure(us, gain)`` → ``set_controls({"AeEnable": False, "ExposureTime": us,
  "AnalogueGain": gain, "FrameDurationLimits": (period, max(period, us + 1000))})``: the
  frame rate drops only for exposures beyond the frame period. Cameras whose libcamera
  has ``ExposureTimeMode``/``AnalogueGainMode`` instead of ``AeEnable`` get those (1 =
  manual, 0 = auto). Only controls the camera advertises (``camera_controls``) are sent;
  values are clamped to its limits. ``restore_preview`` → ``AeEnable: True`` with the
  preview frame limits (``picamera2.auto_exposure_preview``), else the preview exposure.
  Changes land several frames later; each :class:`FrameMeta` is built from that frame's
  own metadata (``ExposureTime`` µs, ``AnalogueGain``), never from what was asked.
- Timestamps: ``SensorTimestamp`` (ns). On the Pi the drivers stamp buffers with
  CLOCK_MONOTONIC at the start-of-frame interrupt, i.e. when readout starts; picamera2's
  ``wait_for_timestamp_`` computes a frame's start of exposure as ``SensorTimestamp -
  1000 * ExposureTime`` and compares it with ``time.monotonic_ns()``. We do the same
  (``picamera2.sensor_timestamp_is``, ``picamera2.sensor_clock`` for other setups;
  ``boottime`` stamps are shifted by CLOCK_BOOTTIME − CLOCK_MONOTONIC, sampled per frame).
- Drops: picamera2 recycles requests nobody took (and the sensor skips frames when no
  buffer is free). The gap between consecutive ``SensorTimestamp``s over the frame's
  ``FrameDuration`` (µs, metadata; else the nominal period) tells how many frames went
  missing; ``frame_number`` skips that many and ``dropped_frames`` counts them.
- Metadata without ``ExposureTime``/``AnalogueGain`` (not seen on Pi cameras) is reported
  as 0 = unknown, with a warning once; never as the requested value.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from deblurd.camera.base import CameraError, FrameCallback, FrameMeta
from deblurd.camera.thread import ThreadedCamera
from deblurd.settings.camera import Picamera2CameraSection

log = logging.getLogger(__name__)

Picamera2Factory = Callable[..., Any]
"""Makes the camera object: called as ``factory(camera_num=N, tuning=T)`` like the
``Picamera2`` class itself (tests pass a stand-in with picamera2's API)."""

MappedArrayFactory = Callable[..., Any]
"""Maps a request's stream: called as ``MappedArray(request, "main", write=False)`` like
``picamera2.request.MappedArray``, a context manager whose ``.array`` is the mapped
buffer as ``uint8 (H, W, 3)`` (tests pass a stand-in)."""

FRAME_MARGIN_US = 1000
"""Frame time allowed beyond a long exposure (blanking), µs."""
_POLL_S = 0.1

INSTALL_HINT = (
    "on Raspberry Pi OS install it with `sudo apt install python3-picamera2` and run "
    "deblurd from a venv created with --system-site-packages (python3 -m venv "
    "--system-site-packages VENV), so the OS's picamera2 and libcamera bindings are "
    "visible; pip's picamera2 lacks the libcamera bindings"
)
OPEN_HINT = (
    "likely causes: another process holds the camera (find it with "
    "`sudo fuser -v /dev/media* /dev/video*` and stop it: rpicam-*, libcamera-*, another "
    "deblurd); this user is not in the 'video' group (`sudo usermod -aG video $USER`, "
    "then log in again); the camera is not detected (`rpicam-hello --list-cameras`, "
    "check the ribbon cable and camera_auto_detect/dtoverlay in /boot/firmware/config.txt)"
)


def import_picamera2() -> Picamera2Factory:
    """The ``Picamera2`` class, imported now; :class:`CameraError` with the fix if it can't."""
    try:
        from picamera2 import Picamera2
    except Exception as exc:  # ImportError, or libcamera bindings failing to load
        raise CameraError(f"picamera2 cannot be imported ({exc}); {INSTALL_HINT}") from exc
    factory: Picamera2Factory = Picamera2
    return factory


def import_mapped_array() -> MappedArrayFactory:
    """picamera2's ``MappedArray``, imported now; :class:`CameraError` if it can't."""
    try:
        from picamera2 import MappedArray
    except Exception as exc:
        raise CameraError(f"picamera2 cannot be imported ({exc}); {INSTALL_HINT}") from exc
    mapped: MappedArrayFactory = MappedArray
    return mapped


class Picamera2Camera(ThreadedCamera):
    """A Raspberry Pi camera through picamera2; see the module doc for the API it uses.
    ``picamera2_factory`` and ``mapped_array`` stand in for picamera2's ``Picamera2`` and
    ``MappedArray`` (tests); None: picamera2's own, imported by :meth:`start`."""

    name = "picamera2"
    settings: Picamera2CameraSection

    def __init__(
        self,
        settings: Picamera2CameraSection,
        *,
        picamera2_factory: Picamera2Factory | None = None,
        mapped_array: MappedArrayFactory | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self._hw = settings.picamera2
        self._factory = picamera2_factory
        self._mapped_array = mapped_array
        self._size = (settings.height - settings.height % 2, settings.width - settings.width % 2)
        self._period_us = max(1, round(1e6 / settings.fps))
        self._picam2: Any = None
        self._controls: Mapping[str, Any] = {}
        self._first = threading.Event()
        self._frame_number = -1
        self._last_sensor_ns: int | None = None
        self._last_frame_at = 0.0
        self._warned_missing: set[str] = set()
        self.dropped_frames = 0
        self.callback_errors = 0
        self.last_error: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    # -- lifecycle --

    def start(self, on_frame: FrameCallback) -> None:
        self._refuse_if_started()
        factory = self._factory if self._factory is not None else import_picamera2()
        if self._mapped_array is None:
            self._mapped_array = import_mapped_array()
        num = self._hw.camera_num
        try:
            picam2 = factory(camera_num=num, tuning=self._hw.tuning_file)
        except IndexError as exc:
            raise CameraError(
                f"no camera number {num}: libcamera does not list it ({exc}); " + OPEN_HINT
            ) from exc
        except Exception as exc:
            raise CameraError(
                f"cannot open camera {num} with picamera2: {exc}; {OPEN_HINT}"
            ) from exc
        try:
            self._configure(picam2)
            picam2.start()
        except Exception as exc:
            _close_quietly(picam2)
            if isinstance(exc, CameraError):
                raise
            raise CameraError(f"cannot configure/start camera {num}: {exc}") from exc
        self._picam2 = picam2
        self._last_sensor_ns = None  # a new stream: no gap to the previous one
        self._first.clear()
        self._start_thread(on_frame)
        if not self._first.wait(self._hw.frame_timeout_s + self.settings.exposure_us / 1e6):
            self.stop()
            raise CameraError(
                f"camera {num} started but delivered no frame within {self._hw.frame_timeout_s:g} s"
            )

    def stop(self) -> None:
        self._stop_thread()
        picam2, self._picam2 = self._picam2, None
        if picam2 is not None:
            _close_quietly(picam2)

    def alive(self) -> bool:
        if self._thread is None:
            return False
        return time.monotonic() - self._last_frame_at <= self._hw.frame_timeout_s

    # -- exposure --

    def request_exposure(self, exposure_us: int, analogue_gain: float) -> None:
        picam2 = self._require_started()
        try:
            picam2.set_controls(self._manual_controls(exposure_us, analogue_gain))
        except Exception as exc:
            raise CameraError(f"picamera2 rejected the exposure controls: {exc}") from exc

    def restore_preview(self) -> None:
        picam2 = self._require_started()
        try:
            picam2.set_controls(self._preview_controls())
        except Exception as exc:
            raise CameraError(f"picamera2 rejected the preview controls: {exc}") from exc

    def _require_started(self) -> Any:
        picam2 = self._picam2
        if picam2 is None:
            raise CameraError("picamera2 camera is not started")
        return picam2

    def _configure(self, picam2: Any) -> None:
        self._controls = dict(picam2.camera_controls)
        make = (
            picam2.create_video_configuration
            if self._hw.configuration == "video"
            else picam2.create_preview_configuration
        )
        height, width = self._size
        config = make(
            main={"format": self._hw.main_format, "size": (width, height)},
            buffer_count=self._hw.buffer_count,
            controls=self._preview_controls(),
            queue=True,
            display=None,
            encode=None,
        )
        picam2.configure(config)
        self._controls = dict(picam2.camera_controls)  # limits can change with the mode
        actual = picam2.camera_configuration()["main"]
        got_w, got_h = actual["size"]
        if (got_h, got_w) != self._size:
            log.warning(
                "picamera2: asked for %dx%d, the camera gives %dx%d", width, height, got_w, got_h
            )
            self._size = (int(got_h), int(got_w))
        if actual["format"] != self._hw.main_format:
            raise CameraError(
                f"camera gives {actual['format']} frames, expected {self._hw.main_format}"
            )

    def _preview_controls(self) -> dict[str, Any]:
        if not self._hw.auto_exposure_preview:
            return self._manual_controls(self.settings.exposure_us, self.settings.analogue_gain)
        controls = self._auto_exposure(True)
        self._add_frame_limits(controls, (self._period_us, self._period_us))
        return controls

    def _manual_controls(self, exposure_us: int, analogue_gain: float) -> dict[str, Any]:
        exposure = int(_clamp(int(exposure_us), self._controls.get("ExposureTime")))
        gain = float(_clamp(float(analogue_gain), self._controls.get("AnalogueGain")))
        if exposure != int(exposure_us) or gain != float(analogue_gain):
            log.warning(
                "picamera2: exposure %d µs / gain %.3g clamped to the camera's limits: "
                "%d µs / %.3g",
                exposure_us,
                analogue_gain,
                exposure,
                gain,
            )
        controls = self._auto_exposure(False)
        controls["ExposureTime"] = exposure
        controls["AnalogueGain"] = gain
        longest = max(self._period_us, exposure + FRAME_MARGIN_US)
        self._add_frame_limits(controls, (self._period_us, longest))
        return controls

    def _auto_exposure(self, on: bool) -> dict[str, Any]:
        """The controls that turn the camera's auto exposure ``on`` or off: ``AeEnable``
        where it has it, else libcamera's ``ExposureTimeMode`` and ``AnalogueGainMode``
        (0 auto, 1 manual) as far as it has them."""
        controls: dict[str, Any] = {}
        if "AeEnable" in self._controls:
            controls["AeEnable"] = on
        elif "ExposureTimeMode" in self._controls:
            controls["ExposureTimeMode"] = 0 if on else 1
            if "AnalogueGainMode" in self._controls:
                controls["AnalogueGainMode"] = 0 if on else 1
        return controls

    def _add_frame_limits(self, controls: dict[str, Any], limits: tuple[int, int]) -> None:
        if "FrameDurationLimits" not in self._controls:
            return
        lo, hi = limits
        bounds = self._controls["FrameDurationLimits"]
        if isinstance(bounds, tuple) and len(bounds) >= 2:
            cap_lo, cap_hi = bounds[0], bounds[1]
            if isinstance(cap_lo, int | float) and cap_lo > 0:
                lo, hi = max(lo, int(cap_lo)), max(hi, int(cap_lo))
            if isinstance(cap_hi, int | float) and cap_hi > 0:
                lo, hi = min(lo, int(cap_hi)), min(hi, int(cap_hi))
        controls["FrameDurationLimits"] = (lo, hi)

    # -- capture thread --

    def _run(self, on_frame: FrameCallback) -> None:
        picam2 = self._picam2
        job: Any = None
        while not self._stop.is_set():
            if job is None:
                try:
                    job = picam2.capture_request(wait=False)
                except Exception as exc:
                    self._record_error(f"capture_request failed: {exc}")
                    self._stop.wait(_POLL_S)
                    continue
            try:
                request = picam2.wait(job, timeout=_POLL_S)
            except TimeoutError:
                continue  # same job, waited on again
            except Exception as exc:
                job = None
                self._record_error(f"capture failed: {exc}")
                self._stop.wait(_POLL_S)
                continue
            job = None
            if request is not None:
                self._deliver(request, on_frame)
        if job is not None:
            self._abandon(picam2, job)

    def _deliver(self, request: Any, on_frame: FrameCallback) -> None:
        """Hand one completed request to ``on_frame`` as a view of its mapped buffer (no
        copy; module doc) and release it as soon as ``on_frame`` returns."""
        mapped_array = self._mapped_array
        assert mapped_array is not None  # set by start()
        try:
            meta = self._meta(request.get_metadata())
            with mapped_array(request, "main", write=False) as mapped:
                on_frame(self._rgb_view(mapped.array), meta)
        except Exception:
            self.callback_errors += 1
            if self.callback_errors <= 3 or self.callback_errors % 100 == 0:
                log.exception("picamera2: frame handling failed (%d so far)", self.callback_errors)
        finally:
            request.release()
        self._last_frame_at = time.monotonic()
        self._first.set()

    @staticmethod
    def _abandon(picam2: Any, job: Any) -> None:
        """Cancel a pending capture job; release its request if it completed meanwhile."""
        try:
            picam2.cancel_all_and_flush()
        except Exception as exc:
            log.warning("picamera2: cancel_all_and_flush failed: %s", exc)
        try:
            request = picam2.wait(job, timeout=0.5)
        except Exception:  # CancelledError (it never completed), TimeoutError
            return
        if request is not None:
            request.release()

    def _record_error(self, message: str) -> None:
        if message != self.last_error:
            log.error("picamera2: %s", message)
        self.last_error = message

    def _rgb_view(self, array: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """The mapped main stream as RGB, still a view of the buffer (module doc)."""
        if array.ndim != 3 or array.shape[2] != 3:
            raise CameraError(f"main stream array has shape {array.shape}, expected (H, W, 3)")
        if self._hw.main_format == "BGR888":  # R, G, B bytes: already RGB
            return array
        return array[..., ::-1]  # B, G, R bytes: the ring swaps them as it copies

    def _meta(self, metadata: Mapping[str, Any]) -> FrameMeta:
        exposure = metadata.get("ExposureTime")
        gain = metadata.get("AnalogueGain")
        sensor_ns = metadata.get("SensorTimestamp")
        for key, value in (
            ("ExposureTime", exposure),
            ("AnalogueGain", gain),
            ("SensorTimestamp", sensor_ns),
        ):
            if value is None and key not in self._warned_missing:
                self._warned_missing.add(key)
                log.warning("picamera2: frame metadata has no %s", key)
        exposure_us = int(exposure) if exposure is not None else 0
        if sensor_ns is None:
            ts = time.monotonic_ns()
        else:
            sensor_ns = int(sensor_ns)
            duration_us = metadata.get("FrameDuration") or self._period_us
            if self._last_sensor_ns is not None:
                gap = sensor_ns - self._last_sensor_ns
                missing = max(0, round(gap / (float(duration_us) * 1000.0)) - 1)
                self.dropped_frames += missing
                self._frame_number += missing
            self._last_sensor_ns = sensor_ns
            ts = sensor_ns
            if self._hw.sensor_clock == "boottime":
                ts -= time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()
            if self._hw.sensor_timestamp_is == "readout_start":
                ts -= exposure_us * 1000
        self._frame_number += 1
        return FrameMeta(
            frame_number=self._frame_number,
            timestamp_ns=ts,
            exposure_us=exposure_us,
            analogue_gain=float(gain) if gain is not None else 0.0,
        )


def _clamp(value: float, limits: Any) -> float:
    """``value`` within a ``camera_controls`` entry ``(min, max, default)``; bounds that are
    missing or not positive numbers are ignored."""
    if not isinstance(limits, tuple) or len(limits) < 2:
        return value
    lo, hi = limits[0], limits[1]
    if isinstance(lo, int | float) and not isinstance(lo, bool) and lo > 0:
        value = max(value, lo)
    if isinstance(hi, int | float) and not isinstance(hi, bool) and hi > 0:
        value = min(value, hi)
    return value


def _close_quietly(picam2: Any) -> None:
    for step in ("stop", "close"):
        try:
            getattr(picam2, step)()
        except Exception as exc:
            log.warning("picamera2: %s() failed: %s", step, exc)
