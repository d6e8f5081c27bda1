"""USB (UVC) cameras through OpenCV's V4L2 backend: ``cv2.VideoCapture(dev, cv2.CAP_V4L2)``.

What UVC can and cannot tell (so what the metadata means):

* no per-frame exposure metadata: a frame's ``exposure_us``/``analogue_gain`` are the
  control values read back from the driver (``CAP_PROP_EXPOSURE`` × ``exposure_unit_us``,
  ``CAP_PROP_GAIN`` × ``gain_per_unit``). After a change the backend keeps reporting the
  *old* values for ``camera.latency_frames`` more frames, so a frame labelled with the new
  exposure really has it (as long as the driver applies it within that many frames);
* ``timestamp_ns``: the V4L2 buffer timestamp (``CAP_PROP_POS_MSEC``, CLOCK_MONOTONIC on
  uvcvideo) when it is plausible, else the read time minus one frame period;
* ``frame_number`` counts frames read (OpenCV hides V4L2's sequence numbers: no gaps).

Auto exposure: ``CAP_PROP_AUTO_EXPOSURE`` 3 (aperture priority = auto) for the preview
when ``v4l2.auto_exposure_preview``, 1 (manual) for a requested exposure. Controls are
applied by the capture thread between reads (``VideoCapture`` is not thread-safe). A read
failure makes the camera not alive and reopens it with back-off until stopped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np

from deblurd.camera.base import CameraError, FrameCallback, FrameMeta
from deblurd.camera.thread import ThreadedCamera
from deblurd.imaging import U8
from deblurd.settings.camera import V4l2CameraSection

log = logging.getLogger(__name__)

AUTO_EXPOSURE_MANUAL = 1.0  # V4L2_EXPOSURE_MANUAL through OpenCV's V4L2 backend
AUTO_EXPOSURE_AUTO = 3.0  # V4L2_EXPOSURE_APERTURE_PRIORITY
_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` this backend uses."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name
    def read(self, image: Any = None) -> tuple[bool, Any]: ...
    def set(self, prop: int, value: float) -> bool: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


CaptureFactory = Callable[[str | int, int], Capture]


def _open_cv2(device: str | int, api: int) -> Capture:
    cap: Capture = cv2.VideoCapture(device, api)
    return cap


class V4l2Camera(ThreadedCamera):
    """A V4L2 camera (module docstring). ``capture_factory(device, api)`` opens the
    device (default ``cv2.VideoCapture``; tests pass a stand-in)."""

    name = "v4l2"
    settings: V4l2CameraSection

    def __init__(
        self, settings: V4l2CameraSection, capture_factory: CaptureFactory | None = None
    ) -> None:
        super().__init__()
        self.settings = settings
        self.device = settings.v4l2.device
        self._factory = capture_factory or _open_cv2
        self._cap: Capture | None = None
        self._lock = threading.Lock()
        self._pending: tuple[int, float] | str | None = None  # exposure or "preview"
        self._reported = (settings.exposure_us, settings.analogue_gain)
        self._hold = 0  # frames still to report the old settings for
        self._alive = False
        self._number = 0
        self.reopen_count = 0

    def _device_arg(self) -> str | int:
        dev = self.device
        return int(dev) if dev.isdigit() else dev

    def _open(self) -> Capture:
        dev = self.device
        if not dev.isdigit() and not os.path.exists(dev):
            raise CameraError(
                f"v4l2: {dev} does not exist (camera unplugged? see `ls /dev/video*`; set "
                "camera.v4l2.device)"
            )
        cap = self._factory(self._device_arg(), cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"v4l2: cannot open {dev} (busy, or no permission: is the user in the "
                "'video' group?)"
            )
        s, v = self.settings, self.settings.v4l2
        if v.fourcc is not None:
            cap.set(cv2.CAP_PROP_FOURCC, float(cv2.VideoWriter.fourcc(*v.fourcc)))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, float(s.width))
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, float(s.height))
        cap.set(cv2.CAP_PROP_FPS, float(s.fps))
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if (w, h) != (s.width, s.height):
            cap.release()
            raise CameraError(
                f"v4l2: {dev} gives {w}x{h}, not {s.width}x{s.height}: set camera.width and "
                "camera.height to a mode it supports (`v4l2-ctl --list-formats-ext`)"
            )
        self._apply(cap, "preview")
        return cap

    def _apply(self, cap: Capture, what: tuple[int, float] | str) -> None:
        """Set the controls (capture thread, or before it runs)."""
        s, v = self.settings, self.settings.v4l2
        if what == "preview" and v.auto_exposure_preview:
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, AUTO_EXPOSURE_AUTO)
        else:
            exposure, gain = (s.exposure_us, s.analogue_gain) if isinstance(what, str) else what
            cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, AUTO_EXPOSURE_MANUAL)
            cap.set(cv2.CAP_PROP_EXPOSURE, float(round(exposure / v.exposure_unit_us)))
            if v.gain_per_unit is not None:
                cap.set(cv2.CAP_PROP_GAIN, float(round(gain / v.gain_per_unit)))
        self._hold = self.settings.latency_frames

    def _read_back(self, cap: Capture) -> tuple[int, float]:
        s, v = self.settings, self.settings.v4l2
        exposure = round(cap.get(cv2.CAP_PROP_EXPOSURE) * v.exposure_unit_us)
        gain = s.analogue_gain
        if v.gain_per_unit is not None:
            gain = float(cap.get(cv2.CAP_PROP_GAIN)) * v.gain_per_unit
        return (exposure if exposure > 0 else s.exposure_us), gain

    def start(self, on_frame: FrameCallback) -> None:
        self._refuse_if_started()
        self._cap = self._open()
        self._alive = True
        self._start_thread(on_frame)

    def stop(self) -> None:
        self._stop_thread()
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._alive = False

    def request_exposure(self, exposure_us: int, analogue_gain: float) -> None:
        if exposure_us <= 0 or analogue_gain <= 0:
            raise CameraError(f"bad exposure request: {exposure_us} µs at gain {analogue_gain}")
        with self._lock:
            self._pending = (int(exposure_us), float(analogue_gain))

    def restore_preview(self) -> None:
        with self._lock:
            self._pending = "preview"

    def alive(self) -> bool:
        return self._alive

    def _timestamp(self, cap: Capture, read_ns: int) -> int:
        ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        ts = round(ms * 1e6) if ms > 0 else 0
        if 0 <= read_ns - ts < 1_000_000_000:
            return ts
        return read_ns - round(1e9 / self.settings.fps)

    def _run(self, on_frame: FrameCallback) -> None:
        h, w = self.size
        bgr: Any = np.empty((h, w, 3), np.uint8)
        rgb: U8 = np.empty((h, w, 3), np.uint8)
        failures = 0
        while not self._stop.is_set():
            cap = self._cap
            if cap is None:
                delay = _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]
                if self._stop.wait(delay):
                    break
                try:
                    self._cap = self._open()
                    self.reopen_count += 1
                    log.info("v4l2: %s reopened", self.device)
                except CameraError as exc:
                    failures += 1
                    log.warning("v4l2: %s (retrying in %.1f s)", exc, delay)
                continue
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                self._apply(cap, pending)
            ok, got = cap.read(bgr)
            read_ns = time.monotonic_ns()
            if not ok or got is None or got.shape != (h, w, 3):
                self._alive = False
                log.error("v4l2: reading %s failed; reopening", self.device)
                cap.release()
                self._cap = None
                failures = 0
                continue
            self._alive = True
            bgr = got
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=rgb)
            if self._hold > 0:
                self._hold -= 1  # keep reporting the old values: the change may not be in yet
            else:
                self._reported = self._read_back(cap)
            exposure, gain = self._reported
            meta = FrameMeta(self._number, self._timestamp(cap, read_ns), exposure, gain)
            try:
                on_frame(rgb, meta)
            except Exception:  # the consumer's bug must not stop the camera
                log.exception("v4l2: frame callback failed")
            self._number += 1
