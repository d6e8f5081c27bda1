"""Settings of stage 4b (fusion) and stage 5 (finishing)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deblurd.settings.base import Section


class FusionSettings(Section):
    """How registered frames are merged with the first (deblurred) frame."""

    mode: Literal["sequential", "reference"] = Field(
        "reference",
        description="sequential: running weighted average (weight 1 vs i-1); "
        "reference: all registered to the first frame, then averaged",
    )
    robust: bool = Field(True, description="down-weight pixels that disagree (moving subjects)")


class FinishingSettings(Section):
    """Stage 5: optional unsharp-mask sharpening before the last U-Net pass."""

    sharpen_amount: float = Field(0.0, ge=0.0, le=3.0, description="0 = off")
    sharpen_sigma_px: float = Field(1.0, gt=0.0, le=10.0)
