"""Settings of the camera backend (the daemon issue extends this section)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deblurd.settings.base import Section


class CameraSettings(Section):
    """Which camera and its preview (ring) mode."""

    backend: Literal["sim", "replay", "picamera2", "argus", "v4l2"] = Field(
        "sim",
        description="sim = simulated handheld camera; picamera2 on Raspberry Pi; "
        "argus on Jetson; v4l2 for USB",
    )
    width: int = Field(1280, ge=64, le=8192, description="frame width, px")
    height: int = Field(720, ge=64, le=8192, description="frame height, px")
    fps: float = Field(30.0, gt=0.0, le=240.0, description="preview frame rate, frames/s")
    exposure_us: int = Field(8000, ge=50, le=1_000_000, description="preview exposure, µs")
    analogue_gain: float = Field(
        4.0, ge=1.0, le=64.0, description="preview analogue gain, 1 = unity"
    )
