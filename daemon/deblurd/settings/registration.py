"""Settings of stage 4a: registering second frames to the deblurred first frame.

Corners and optical flow run on the *tracking level*, the finest pyramid level whose
longer side is at most ``tracking_max_side_px`` (full resolution up to 1024 px, 1/2 at
1080p, 1/4 at 12 MP). Distances of the tracker are in **tracking-level pixels**: the
level has about the same size at any sensor resolution, so one value means about the
same fraction of the frame (and of the shake and blur) everywhere. Multiply by 2 for
full-resolution pixels at 1080p, by 4 at 12 MP.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deblurd.settings.base import Section

RegistrationBackend = Literal["opencv", "cuda", "auto", "emulated"]
"""The values of ``registration.backend`` (:func:`deblurd.gpu.factory.resolve_backend`)."""


class RegistrationSettings(Section):
    """Pyramid Harris corners + pyramidal LK + robust homography, with a quality gate."""

    backend: RegistrationBackend = Field(
        "opencv",
        description="opencv everywhere; cuda = the CUDA kernels (needs pycuda, a GPU and nvcc: "
        "start-up error otherwise); auto = cuda where available, else opencv (logged, in "
        "status); emulated = the CUDA path's kernels built for the CPU with g++ (tests and "
        "CI: slow)",
    )
    levels: int = Field(
        4,
        ge=1,
        le=6,
        description="pyramid levels from full resolution (1, 1/2, 1/4, 1/8 for 4); tracking "
        "always gets at least 3 levels from the tracking level on (12 MP: 1/4 to 1/16)",
    )
    tracking_max_side_px: int = Field(
        1024,
        ge=64,
        le=16384,
        description="corners and optical flow run on the finest pyramid level whose longer "
        "side is at most this (1080p: 1/2, 12 MP: 1/4); the homography is scaled back, px",
    )

    # Corners (on the reference, once per job).
    max_corners: int = Field(400, ge=16, le=20000, description="Harris corners tracked at most")
    corner_quality: float = Field(
        3e-5,
        gt=0.0,
        lt=1.0,
        description="Harris response threshold relative to the strongest response of the "
        "tracking level; the same absolute threshold applies on the coarser levels",
    )
    corner_min_distance_px: float = Field(
        5.0, ge=1.0, description="non-maximum suppression radius, tracking-level px"
    )
    persistence_levels: int = Field(
        2,
        ge=0,
        le=5,
        description="consecutive coarser pyramid levels on which a corner must also be found "
        "to be kept (0 = no test; clamped to the levels there are); corners confirmed on "
        "more levels are preferred",
    )
    persistence_radius_px: float = Field(
        2.0,
        gt=0.0,
        le=4.0,
        description="a coarser-level corner within this distance confirms a corner, "
        "measured in that coarser level's px",
    )
    grid_cells: int = Field(
        8, ge=1, le=64, description="grid cells along the longer side used to spread corners"
    )

    # Tracking (pyramidal Lucas-Kanade, forward and backward).
    lk_window_px: int = Field(15, ge=5, le=61, description="LK window side, tracking-level px")
    lk_iterations: int = Field(20, ge=1, le=100, description="LK iterations per level at most")
    lk_min_eigen: float = Field(
        1e-3,
        gt=0.0,
        description="LK drops a point whose window's smallest gradient eigenvalue "
        "(normalised by the window area, OpenCV's minEigThreshold) is below this",
    )
    fb_max_error_px: float = Field(
        0.5,
        gt=0.0,
        description="forward-backward tracking disagreement that drops a track, tracking-level px",
    )

    # Robust fit and quality gate.
    min_inliers: int = Field(24, ge=8, description="fewer robust inliers rejects the frame")
    min_tracked_ratio: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="tracked / reference corners below this rejects (heavy blur, occlusion, "
        "another scene: the frame lost too much of the reference's structure)",
    )
    min_inlier_ratio: float = Field(
        0.5, gt=0.0, le=1.0, description="inliers / tracked corners below this rejects"
    )
    ransac_threshold_px: float = Field(
        0.75, gt=0.0, description="largest reprojection error of an inlier, tracking-level px"
    )
    max_residual_px: float = Field(
        0.45,
        gt=0.0,
        description="median inlier reprojection error above this rejects, tracking-level px "
        "(0.9 full-resolution px at 1080p)",
    )
    max_scale_change: float = Field(
        0.1,
        gt=0.0,
        lt=1.0,
        description="singular values of the homography's linear part outside 1 +- this "
        "reject (zoom or shear a handheld burst cannot have)",
    )
    max_rotation_deg: float = Field(
        5.0, gt=0.0, le=90.0, description="larger in-plane rotation rejects, degrees"
    )
    max_perspective: float = Field(
        0.1,
        gt=0.0,
        description="largest change of the projective divisor across the frame "
        "(|h20| W + |h21| H) above this rejects (a 1 degree yaw gives about 0.02 with a "
        "normal lens, 0.035 with a wide one)",
    )
    refine: bool = Field(
        True,
        description="local refinement: a dense residual flow (DIS) measured after the "
        "homography and smoothed is added to the warp, for rolling shutter, parallax and "
        "lens distortion, which one homography cannot follow (both backends: the flow runs "
        "on the host, the CUDA path applies it in its warp kernel)",
    )
    dense_fallback: bool = Field(
        True,
        description="when the corners cannot be tracked or fitted (heavy or differing blur, "
        "little texture), fit the homography to the dense flow instead; the plausibility "
        "gate still applies (both backends; the dense flow runs on the host)",
    )
    refine_min_residual_px: float = Field(
        0.4,
        ge=0.0,
        le=16.0,
        description="the local refinement runs only where the corners' homography misses "
        "a quarter of the tracked corners by more than this (rolling shutter, parallax; "
        "frames that differ only in blur stay under it, and the dense flow measured "
        "nothing to gain on them), full-resolution px",
    )
    refine_max_side_px: int = Field(
        640,
        ge=64,
        le=4096,
        description="longer side of the image the dense flow runs on, px",
    )
    refine_smooth: float = Field(
        0.04,
        gt=0.0,
        le=0.5,
        description="std of the residual flow's smoothing, as a fraction of the longer side",
    )
    refine_max_px: float = Field(
        24.0,
        gt=0.0,
        le=256.0,
        description="largest residual displacement applied, full-resolution px",
    )
    max_shift_fraction: float = Field(
        0.15,
        gt=0.0,
        le=1.0,
        description="largest displacement of a frame corner, as a fraction of the frame "
        "diagonal, above this rejects",
    )
