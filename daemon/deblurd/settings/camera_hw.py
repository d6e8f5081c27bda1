"""Settings of the hardware camera backends (picamera2 on Raspberry Pi, Argus on Jetson)."""

from __future__ import annotations

from deblurd.settings.base import Section


class Picamera2Settings(Section):
    """picamera2 (Raspberry Pi): see ``deblurd.camera.picamera2``."""


class ArgusSettings(Section):
    """nvarguscamerasrc through GStreamer (Jetson): see ``deblurd.camera.argus``."""
