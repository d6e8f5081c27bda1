"""Settings of which second frames are fused and how much each one counts."""

from __future__ import annotations

from pydantic import Field

from deblurd.settings.base import Section


class SecondFrameSettings(Section):
    """Sharpness gate and weighting of second frames (stage 4, before registration)."""

    max_blur_excess: float = Field(
        0.35,
        ge=0.0,
        description="a second frame whose blur score exceeds the first frame's by more than "
        "this is not fused (it would import blur)",
    )
    sharpness_scale: float = Field(
        0.15,
        gt=0.0,
        description="frame weight = exp(-(score - first score) / scale): blurrier frames count "
        "less; blur-score units",
    )
