"""Settings of stage 4a: registering second frames to the deblurred first frame."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deblurd.settings.base import Section


class RegistrationSettings(Section):
    """Pyramid Harris corners + pyramidal LK + robust homography, with a quality gate."""

    backend: Literal["opencv", "cuda", "auto"] = Field(
        "opencv", description="opencv everywhere; cuda on Jetson; auto = cuda where available"
    )
    levels: int = Field(4, ge=1, le=6, description="pyramid levels (1, 1/2, 1/4, 1/8 for 4)")
    max_corners: int = Field(1000, ge=16, le=20000, description="Harris corners kept at most")
    min_inliers: int = Field(24, ge=8, description="fewer robust inliers rejects the frame")
    min_inlier_ratio: float = Field(0.4, gt=0.0, le=1.0)
    ransac_threshold_px: float = Field(1.5, gt=0.0, description="inlier reprojection error, px")
    max_residual_px: float = Field(0.9, gt=0.0, description="median inlier residual above this rejects")
