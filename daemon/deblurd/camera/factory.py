"""``open_camera``: the configured backend, its library imported only when chosen.

A backend whose library is not installed raises :class:`deblurd.errors.ConfigError`
naming ``camera.backend`` and what to install (the daemon exits 78, EX_CONFIG).
Opening the device itself happens in :meth:`CameraBackend.start` (``CameraError``).
"""

from __future__ import annotations

import importlib
from typing import Any

from deblurd.camera.base import CameraBackend, CameraError
from deblurd.errors import ConfigError
from deblurd.settings.camera import CameraSettings
from deblurd.settings.limits import LimitsSettings

# backend -> (module, class, "module:function" that imports its library or raises
# CameraError saying what is missing, and the fallback install hint)
_HARDWARE: dict[str, tuple[str, str, str | None, str]] = {
    "picamera2": (
        "deblurd.camera.picamera2",
        "Picamera2Camera",
        "deblurd.camera.picamera2:import_picamera2",
        "install python3-picamera2 (Raspberry Pi OS, apt) and use a venv made with "
        "--system-site-packages",
    ),
    "argus": (
        "deblurd.camera.argus",
        "ArgusCamera",
        "deblurd.camera.gst:import_gst",
        "install PyGObject and GStreamer (python3-gi, gir1.2-gstreamer-1.0; on Jetson "
        "nvarguscamerasrc from JetPack)",
    ),
    "v4l2": ("deblurd.camera.v4l2", "V4l2Camera", None, "pip install opencv-python-headless"),
}


def _config_error(backend: str, problem: str) -> ConfigError:
    msg = f"camera.backend = {backend!r}: {problem}"
    return ConfigError(msg, [("camera.backend", msg)])


def _load(backend: str) -> Any:
    """Import the backend's module and probe its hardware library (module docstring)."""
    module_name, class_name, probe, hint = _HARDWARE[backend]
    try:
        module = importlib.import_module(module_name)
        if probe is not None:
            probe_module, probe_name = probe.split(":")
            getattr(importlib.import_module(probe_module), probe_name)()
    except CameraError as exc:  # the probe's own message names what to install
        raise _config_error(backend, f"its library is not available: {exc}") from exc
    except Exception as exc:  # ImportError, or a library that fails to load
        raise _config_error(backend, f"its library is not available ({exc}); {hint}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise _config_error(backend, f"{module_name} has no {class_name}")
    return cls


def open_camera(settings: CameraSettings, limits: LimitsSettings | None = None) -> CameraBackend:
    """The backend ``settings.backend`` names, constructed (not started). ``limits``: the
    size limits of the images the replay backend reads (default: the built-in ones).

    Raises :class:`ConfigError` (``camera.backend``) when its library is missing, or
    whatever the backend's constructor raises (``CameraError`` for an unusable source).
    """
    backend = settings.backend
    if backend == "sim":
        from deblurd.camera.sim import SimCamera

        return SimCamera(settings)
    if backend == "replay":
        from deblurd.camera.replay import ReplayCamera

        return ReplayCamera(settings, limits)
    if backend not in _HARDWARE:
        raise _config_error(backend, "unknown backend")
    camera: CameraBackend = _load(backend)(settings)
    return camera
