"""Settings of stage 1 (blur score, first-frame selection) and stage 3 (the decision).

Blur scores are in dB (``deblurd.pipeline.blur``): how far the high spatial frequencies
lie below the low ones, higher = blurrier. At the default ``blur_score.size`` of 512 a
sharp photo scores about 19 - 31 dB depending on its content (smooth scenes score
higher); motion blur on a 1080p frame adds about 0.9 dB at 2 px, 1.4 dB at 3 px, 2.7 dB
at 5 px, 5.5 dB at 10 px and 8 dB at 20 px. The defaults below are set for a typical
photo (sharp ≈ 25.5 dB, 3 px ≈ 27 dB, 5 px ≈ 28.3 dB, 10 px ≈ 31 dB); every threshold is
tied to ``blur_score.size`` — change that and recalibrate them.
"""

from __future__ import annotations

from itertools import pairwise

from pydantic import Field, model_validator

from deblurd.settings.base import Section


class BlurScoreSettings(Section):
    """How the frequency-domain blur score is computed (see ``deblurd.pipeline.blur``)."""

    size: int = Field(
        512,
        ge=128,
        le=1024,
        description="side of the square analysis image, px: the centre square of each frame "
        "is area-resized to this before its spectrum is taken (frames smaller are scored "
        "as they are); blur is measured in these pixels, so every blur threshold depends "
        "on it",
    )


class SelectionSettings(Section):
    """Stage 1: which ring frames around the trigger are candidates, and which is taken."""

    frames_before: int = Field(4, ge=0, le=64, description="ring frames before the trigger")
    frames_after: int = Field(4, ge=0, le=64, description="ring frames after the trigger")
    first_blur_threshold: float | None = Field(
        None,
        description="blur score, dB: if set, walk from the trigger frame outwards (F2, F1, "
        "F3, F0, F4 ...) and take the first frame scoring under this (27 ≈ a typical "
        "photo with 3 px of motion blur at 1080p); none under it, or unset: take the "
        "sharpest",
    )


class ExposureStep(Section):
    """One row of the blur -> extra-capture table: used when blur score <= ``max_blur``."""

    max_blur: float = Field(
        description="blur score, dB: this row applies up to and including this score"
    )
    exposure_us: int = Field(ge=100, le=1_000_000, description="extra-frame exposure, µs")
    frames: int = Field(ge=1, le=32, description="extra frames to capture")


class RingStep(Section):
    """One row of the blur -> ring-frame-count table: used when blur score <= ``max_blur``."""

    max_blur: float = Field(
        description="blur score, dB: this row applies up to and including this score"
    )
    frames: int = Field(ge=0, le=64, description="second frames taken from the ring")


def _default_ring_frames() -> list[RingStep]:
    return [
        RingStep(max_blur=24.0, frames=4),
        RingStep(max_blur=25.5, frames=6),
        RingStep(max_blur=27.0, frames=8),
    ]


def _default_extra_exposures() -> list[ExposureStep]:
    return [
        ExposureStep(max_blur=29.0, exposure_us=20000, frames=8),
        ExposureStep(max_blur=31.0, exposure_us=33000, frames=10),
        ExposureStep(max_blur=33.0, exposure_us=50000, frames=12),
    ]


class DecisionSettings(Section):
    """Stage 3: after the first deblur, take ring neighbours or capture extra long exposures.

    Both tables are read the same way: the first row whose ``max_blur`` is at or above the
    deblurred frame's blur score applies; a score above every row takes the last row. Rows
    are sorted by ``max_blur``, and their frame counts (and exposures) never decrease.
    """

    second_blur_threshold: float = Field(
        27.0,
        description="blur score of the deblurred frame, dB, under which second frames come "
        "from the ring (same short exposure); at or above it, extra frames are captured at "
        "a longer exposure (27 ≈ a typical photo with 3 px of motion blur at 1080p)",
    )
    ring_frames: list[RingStep] = Field(
        default_factory=_default_ring_frames,
        description="blur score (dB) -> how many second frames to take from the ring, "
        "growing with blur; the job takes at most what the ring holds",
    )
    extra_exposures: list[ExposureStep] = Field(
        default_factory=_default_extra_exposures,
        description="blur score (dB) -> exposure and count of the extra frames, growing with blur",
    )
    max_analogue_gain: float = Field(
        16.0,
        ge=1.0,
        le=64.0,
        description="highest analogue gain the extra frames may use to keep the preview's "
        "brightness (exposure x gain) at their longer exposure",
    )

    @model_validator(mode="after")
    def _tables_sorted(self) -> DecisionSettings:
        for name in ("ring_frames", "extra_exposures"):
            rows = getattr(self, name)
            if not rows:
                raise ValueError(f"{name}: needs at least one row")
            limits = [r.max_blur for r in rows]
            if any(b <= a for a, b in pairwise(limits)):
                raise ValueError(f"{name}: rows must be sorted by max_blur, strictly increasing")
            counts = [r.frames for r in rows]
            if counts != sorted(counts):
                raise ValueError(f"{name}: frames must not decrease as max_blur grows")
        exposures = [r.exposure_us for r in self.extra_exposures]
        if exposures != sorted(exposures):
            raise ValueError("extra_exposures: exposure_us must not decrease as max_blur grows")
        return self
