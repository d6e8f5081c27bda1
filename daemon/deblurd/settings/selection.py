"""Settings of stage 1 (blur score, first-frame selection) and stage 3 (the decision)."""

from __future__ import annotations

from pydantic import Field, model_validator

from deblurd.settings.base import Section


class BlurScoreSettings(Section):
    """How the frequency-domain blur score is computed (see ``deblurd.pipeline.blur``)."""

    size: int = Field(256, ge=64, le=1024, description="side of the square downsample scored, px")


class SelectionSettings(Section):
    """Stage 1: which ring frames around the trigger are candidates, and which is taken."""

    frames_before: int = Field(4, ge=0, le=64, description="ring frames before the trigger")
    frames_after: int = Field(4, ge=0, le=64, description="ring frames after the trigger")
    first_blur_threshold: float | None = Field(
        None,
        description="if set, walk from the reference outwards and take the first frame whose "
        "blur score is under this; unset = always take the sharpest",
    )


class ExposureStep(Section):
    """One row of the blur -> extra-capture table: used when blur score <= ``max_blur``."""

    max_blur: float
    exposure_us: int = Field(ge=100, le=1_000_000)
    frames: int = Field(ge=1, le=32)


class RingStep(Section):
    """One row of the blur -> ring-frame-count table: used when blur score <= ``max_blur``."""

    max_blur: float
    frames: int = Field(ge=0, le=64)


class DecisionSettings(Section):
    """Stage 3: after the first deblur, take ring neighbours or capture extra long exposures."""

    second_blur_threshold: float = Field(
        0.5, description="blur score of the deblurred frame under which ring frames suffice"
    )
    ring_frames: list[RingStep] = Field(
        default_factory=lambda: [
            RingStep(max_blur=0.3, frames=4),
            RingStep(max_blur=0.5, frames=6),
            RingStep(max_blur=1e9, frames=8),
        ],
        description="second frames taken from the ring, growing with blur",
    )
    extra_exposures: list[ExposureStep] = Field(
        default_factory=lambda: [
            ExposureStep(max_blur=0.8, exposure_us=20000, frames=4),
            ExposureStep(max_blur=1.2, exposure_us=33000, frames=6),
            ExposureStep(max_blur=1e9, exposure_us=50000, frames=8),
        ],
        description="longer exposure and extra frame count, growing with blur",
    )

    @model_validator(mode="after")
    def _tables_sorted(self) -> DecisionSettings:
        for name in ("ring_frames", "extra_exposures"):
            rows = getattr(self, name)
            if not rows:
                raise ValueError(f"{name}: needs at least one row")
            limits = [r.max_blur for r in rows]
            if limits != sorted(limits):
                raise ValueError(f"{name}: rows must be sorted by max_blur")
        return self
