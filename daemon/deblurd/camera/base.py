"""The camera interface: frames as numpy arrays plus the sensor's own metadata.

Every backend (sim, replay, picamera2, argus, v4l2) implements :class:`CameraBackend`.
A backend owns its capture thread (:class:`deblurd.camera.thread.ThreadedCamera`); for
each frame it calls the ``on_frame`` callback given to :meth:`CameraBackend.start` with a
``uint8 (H, W, 3)`` RGB array that is valid **only during the call** (the callback copies
it into the ring and returns at once; the camera never waits on processing) and a
:class:`FrameMeta` that tells the truth about that frame (DESIGN §5: exposure changes land
several frames late; only metadata counts). The array may be a strided view of the
camera's own buffer (padded rows; picamera2: channels reversed in memory), which
:meth:`deblurd.camera.ring.FrameRing.push` copies in one pass.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deblurd.errors import DeblurdError


class CameraError(DeblurdError):
    """The camera is missing, failed, or did not do what was asked in time."""


@dataclass(frozen=True)
class FrameMeta:
    """What the sensor says about one frame.

    ``frame_number``: counter from the backend, increasing by 1 per delivered frame
    (gaps = dropped frames). ``timestamp_ns``: sensor timestamp of the start of exposure,
    ns, on ``time.monotonic_ns``'s clock where the backend can map it (picamera2's
    ``SensorTimestamp`` is CLOCK_BOOTTIME-like; backends convert). ``exposure_us``:
    exposure time actually used, µs. ``analogue_gain``: gain actually used (1 = unity).
    """

    frame_number: int
    timestamp_ns: int
    exposure_us: int
    analogue_gain: float


FrameCallback = Callable[[npt.NDArray[np.uint8], FrameMeta], None]


class CameraBackend(abc.ABC):
    """A camera that streams preview frames and accepts exposure requests."""

    name: str = "camera"

    @property
    @abc.abstractmethod
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of delivered frames, px."""

    @property
    @abc.abstractmethod
    def fps(self) -> float:
        """Nominal preview frame rate, frames/s."""

    @abc.abstractmethod
    def start(self, on_frame: FrameCallback) -> None:
        """Open the camera and start delivering frames to ``on_frame`` from its own thread.

        Raises :class:`CameraError` naming the device and the fix when it cannot open.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop delivering frames and release the device. Idempotent."""

    @abc.abstractmethod
    def request_exposure(self, exposure_us: int, analogue_gain: float) -> None:
        """Ask for a fixed exposure and gain (auto exposure off). Returns at once; the
        change lands some frames later — watch :class:`FrameMeta` to know when."""

    @abc.abstractmethod
    def restore_preview(self) -> None:
        """Go back to the preview exposure settings (auto exposure where configured)."""

    def alive(self) -> bool:
        """True while frames are arriving (backends with their own health check override)."""
        return True

    def sensor_clock_ns(self, monotonic_ns: int | None = None) -> int:
        """The sensor clock (the clock of :attr:`FrameMeta.timestamp_ns`) at the
        ``time.monotonic_ns()`` instant ``monotonic_ns`` (None: now), ns. Timestamp a
        trigger with this to find its frame in the ring. Backends whose frames carry
        ``time.monotonic_ns`` timestamps (the default) return it unchanged; the sim camera
        in non-realtime mode runs a slower clock of its own."""
        return time.monotonic_ns() if monotonic_ns is None else monotonic_ns
