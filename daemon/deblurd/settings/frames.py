"""Settings of which second frames are fused and how much each one counts."""

from __future__ import annotations

from pydantic import Field

from deblurd.settings.base import Section


class SecondFrameSettings(Section):
    """Sharpness gate and weighting of second frames (stage 4, before registration)."""

    max_blur_excess: float = Field(
        3.5,
        ge=0.0,
        description="a second frame whose blur score exceeds the selected frame's by more than "
        "this is not fused (it would import blur); dB (about a 6 px motion blur at 1080p "
        "over a sharp frame); the per-pixel detail guard of the fusion handles smaller excess",
    )
    sharpness_scale: float = Field(
        1.5,
        gt=0.0,
        description="frame weight = exp(-(score - first score) / scale): blurrier frames count "
        "less; dB",
    )
