"""``open_camera``: the configured backend, its library imported only when chosen.

The dispatch is a ``match`` on the class of the ``[camera]`` section
(:data:`deblurd.settings.camera.CameraSettings`: one class per backend, told apart by
``camera.backend``) that ends in :func:`typing.assert_never`, so a backend section that
is not handled here is a mypy error. Each case imports its backend's module, and a
hardware backend's case loads its library there too (picamera2, GStreamer, OpenCV): one
that is not installed raises :class:`deblurd.errors.ConfigError` naming
``camera.backend`` and what to install (the daemon exits 78, EX_CONFIG). Opening the
device itself happens in :meth:`CameraBackend.start` (``CameraError``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import assert_never

from deblurd.camera.base import CameraBackend, CameraError
from deblurd.errors import ConfigError
from deblurd.settings.camera import (
    ArgusCameraSection,
    CameraSettings,
    Picamera2CameraSection,
    ReplayCameraSection,
    SimCameraSection,
    V4l2CameraSection,
)
from deblurd.settings.limits import LimitsSettings

_PICAMERA2_HINT = (
    "install python3-picamera2 (Raspberry Pi OS, apt) and use a venv made with "
    "--system-site-packages"
)
_GSTREAMER_HINT = (
    "install PyGObject and GStreamer (python3-gi, gir1.2-gstreamer-1.0; on Jetson "
    "nvarguscamerasrc from JetPack)"
)
_OPENCV_HINT = "pip install opencv-python-headless"


def _config_error(backend: str, problem: str) -> ConfigError:
    msg = f"camera.backend = {backend!r}: {problem}"
    return ConfigError(msg, [("camera.backend", msg)])


@contextmanager
def _library(backend: str, hint: str) -> Iterator[None]:
    """Around the import of ``backend``'s module and the load of its library: a failure
    becomes a :class:`ConfigError` on ``camera.backend`` (the loader's own
    :class:`CameraError` says what to install; any other error gets ``hint``)."""
    try:
        yield
    except CameraError as exc:
        raise _config_error(backend, f"its library is not available: {exc}") from exc
    except Exception as exc:  # ImportError, or a library that fails to load
        raise _config_error(backend, f"its library is not available ({exc}); {hint}") from exc


def open_camera(settings: CameraSettings, limits: LimitsSettings | None = None) -> CameraBackend:
    """The backend ``settings.backend`` names, constructed (not started). ``limits``: the
    size limits of the images the replay backend reads (default: the built-in ones).

    Raises :class:`ConfigError` (``camera.backend``) when its library is missing, or
    whatever the backend's constructor raises (``CameraError`` for an unusable source).
    """
    match settings:
        case SimCameraSection():
            from deblurd.camera.sim import SimCamera

            return SimCamera(settings)
        case ReplayCameraSection():
            from deblurd.camera.replay import ReplayCamera

            return ReplayCamera(settings, limits)
        case Picamera2CameraSection():
            with _library(settings.backend, _PICAMERA2_HINT):
                from deblurd.camera.picamera2 import Picamera2Camera, import_picamera2

                import_picamera2()
            return Picamera2Camera(settings)
        case ArgusCameraSection():
            with _library(settings.backend, _GSTREAMER_HINT):
                from deblurd.camera.argus import ArgusCamera
                from deblurd.camera.gst import import_gst

                import_gst()
            return ArgusCamera(settings)
        case V4l2CameraSection():
            with _library(settings.backend, _OPENCV_HINT):
                from deblurd.camera.v4l2 import V4l2Camera
            return V4l2Camera(settings)
        case _:
            assert_never(settings)
