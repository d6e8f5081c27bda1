"""Replay camera: a saved burst directory or a video file, looped, paced at ``camera.fps``.

Frames are delivered at their own size (``size`` is the source's, not ``camera.width`` ×
``camera.height``), numbered without gaps across loops, timestamped with the
``time.monotonic_ns`` instant each frame is due. The exposure cannot change: requests are
recorded (``requests``) and answered honestly by the metadata, which reports each burst
frame's own ``exposure_us`` and ``analogue_gain`` (a video file has none: the configured
preview exposure and gain are reported), so an extra capture times out unless the burst
holds frames at the requested exposure.

Sizes are checked before anything is decoded (``limits``): every burst frame's header, and a
video's frame size as its container reports it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deblurd.burstdir import read_burst
from deblurd.camera.base import CameraError, FrameCallback, FrameMeta
from deblurd.camera.thread import ThreadedCamera
from deblurd.errors import BurstError
from deblurd.imaging import U8
from deblurd.settings.camera import ReplayCameraSection
from deblurd.settings.limits import LimitsSettings

log = logging.getLogger(__name__)


class _BurstSource:
    """The frames of a burst directory with their exposure and gain."""

    def __init__(self, path: Path, limits: LimitsSettings) -> None:
        try:
            burst = read_burst(path, limits.max_frame_pixels, limits.max_burst_pixels)
        except BurstError as exc:
            raise CameraError(f"replay: {exc}") from exc
        self.frames = burst.frames
        self.settings = [(i.exposure_us, i.analogue_gain) for i in burst.infos]
        self.size = burst.size
        self._i = 0

    def next(self, loop: bool) -> tuple[U8, int, float] | None:
        if self._i >= len(self.frames):
            if not loop:
                return None
            self._i = 0
        i, self._i = self._i, self._i + 1
        exposure, gain = self.settings[i]
        return self.frames[i], exposure, gain

    def close(self) -> None:
        pass


class _VideoSource:
    """The frames of a video file (OpenCV), RGB, with the configured exposure and gain."""

    def __init__(self, path: Path, exposure_us: int, gain: float, max_pixels: int) -> None:
        self.path, self.exposure_us, self.gain = path, exposure_us, gain
        self._cap = self._open()
        w = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w * h > max_pixels:
            self._cap.release()
            raise CameraError(
                f"replay: {path}: {w}x{h} video frames are {w * h / 1e6:.1f} MP, more than the "
                f"limit of {max_pixels / 1e6:.1f} MP (limits.max_frame_pixels)"
            )
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._cap.release()
            raise CameraError(f"replay: {path}: no frame could be decoded")
        self.size = (int(frame.shape[0]), int(frame.shape[1]))
        self._first: Any = frame

    def _open(self) -> Any:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"replay: {self.path}: cannot open as a video (OpenCV)")
        return cap

    def next(self, loop: bool) -> tuple[U8, int, float] | None:
        frame = self._first
        self._first = None
        if frame is None:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                if not loop:
                    return None
                self._cap.release()
                self._cap = self._open()
                ok, frame = self._cap.read()
                if not ok or frame is None:
                    raise CameraError(f"replay: {self.path}: cannot read after rewinding")
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        rgb: U8 = np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), np.uint8)
        if rgb.shape[:2] != self.size:
            raise CameraError(f"replay: {self.path}: frame size changed mid-stream")
        return rgb, self.exposure_us, self.gain

    def close(self) -> None:
        self._cap.release()


class ReplayCamera(ThreadedCamera):
    """Plays ``camera.replay.path`` (a burst directory or a video file) as a camera."""

    name = "replay"
    settings: ReplayCameraSection

    def __init__(self, settings: ReplayCameraSection, limits: LimitsSettings | None = None) -> None:
        super().__init__()
        self.settings = settings
        limits = limits or LimitsSettings()
        if settings.replay.path is None:
            raise CameraError("replay: camera.replay.path is not set")
        path = Path(settings.replay.path)
        if not path.exists():
            raise CameraError(f"replay: {path}: no such burst directory or video file")
        self._source: _BurstSource | _VideoSource
        if path.is_dir():
            self._source = _BurstSource(path, limits)
        else:
            self._source = _VideoSource(
                path, settings.exposure_us, settings.analogue_gain, limits.max_frame_pixels
            )
        self._running = False
        self.requests: list[tuple[int, float]] = []
        self.frames_delivered = 0

    @property
    def size(self) -> tuple[int, int]:
        return self._source.size

    def start(self, on_frame: FrameCallback) -> None:
        self._refuse_if_started()
        self._running = True
        self._start_thread(on_frame)

    def stop(self) -> None:
        self._stop_thread()
        self._source.close()

    def request_exposure(self, exposure_us: int, analogue_gain: float) -> None:
        self.requests.append((exposure_us, analogue_gain))  # recorded; frames cannot change

    def restore_preview(self) -> None:
        self.requests.append((self.settings.exposure_us, self.settings.analogue_gain))

    def alive(self) -> bool:
        return self._running

    def _run(self, on_frame: FrameCallback) -> None:
        period_ns = round(1e9 / self.settings.fps)
        due = time.monotonic_ns()
        number = 0
        try:
            while not self._stop.is_set():
                item = self._source.next(self.settings.replay.loop)
                if item is None:
                    log.info("replay: end of %s (loop off)", self.settings.replay.path)
                    break
                frame, exposure, gain = item
                left = (due - time.monotonic_ns()) * 1e-9
                if left > 0 and self._stop.wait(left):
                    break
                try:
                    on_frame(frame, FrameMeta(number, due, exposure, gain))
                except Exception:  # the consumer's bug must not stop the camera
                    log.exception("replay: frame callback failed")
                number += 1
                self.frames_delivered = number
                # Late (slow decode): do not burst to catch up, just keep the period.
                due = max(due + period_ns, time.monotonic_ns() - period_ns)
        except Exception:
            log.exception("replay: the playback thread failed")
        finally:
            self._running = False
