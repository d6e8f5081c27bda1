"""Stage 4a: register second frames to the (deblurred) first frame (DESIGN §1 step 4).

Per job, :meth:`OpenCVRegistrar.set_reference` builds the reference's Gaussian pyramid
and picks Harris corners that persist across its levels (:mod:`deblurd.pipeline.corners`).
Per second frame, :meth:`OpenCVRegistrar.register`:

1. builds the frame's pyramid (:mod:`deblurd.pipeline.pyramid`): ``uint8`` from the
   tracking level on (1/2 resolution at 1080p, 1/4 at 12 MP), brightness and contrast
   normalised (frames of another exposure or gain track like the reference);
2. tracks the corners coarse to fine with Lucas–Kanade on that pyramid, then tracks the
   results back to the reference from scratch; a track lost either way, or whose round
   trip misses its corner by more than ``fb_max_error_px``, is dropped
   (forward-backward check);
3. fits a homography robustly (MAGSAC++), refits it by least squares on its inliers and
   scales it to full resolution;
4. gates the result. Too few tracks, too small a fraction of the reference's corners
   tracked (heavy blur, another scene), too few inliers, a low inlier ratio, a high
   median residual, or a homography that no handheld shake produces (zoom, shear,
   rotation, perspective or shift beyond limits) *rejects* the frame. A rejection is a
   :class:`Registration` with ``accepted=False`` and a reason, never an exception:
   :class:`~deblurd.errors.RegistrationError` is raised only for input that cannot be
   processed at all (wrong type or shape, no reference set).

Then, as the settings ask (:mod:`deblurd.pipeline.refine`, :meth:`TrackedCorners._refined`,
shared by every registrar, the CUDA one included): a rejected frame gets the dense
fallback (a homography fitted to a DIS flow), an accepted one the corners' homography
does not explain gets the local refinement (a residual flow the warp adds).

:meth:`OpenCVRegistrar.warp` resamples a frame into the reference geometry and says which
pixels came from inside the frame. :class:`Registrar` is the interface every backend
(the CUDA one included) implements.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from deblurd.errors import RegistrationError
from deblurd.imaging import F32, F64, U8, Mask
from deblurd.pipeline.corners import CornerParams, persistent_corners
from deblurd.pipeline.pyramid import (
    PyramidBuilder,
    coarsest_level,
    level_shape,
    tracking_level,
)
from deblurd.pipeline.refine import (
    RefineParams,
    WorkingScale,
    dense_homography,
    residual_field,
    warp_with_residual,
)
from deblurd.pipeline.timing import elapsed_ms
from deblurd.settings.registration import RegistrationSettings

__all__ = [
    "DENSE_MIN_INLIER_RATIO",
    "DENSE_MIN_NCC",
    "DENSE_MIN_SHARPNESS",
    "MIN_SIDE",
    "OpenCVRegistrar",
    "Registrar",
    "Registration",
    "TrackedCorners",
    "check_gray",
    "corner_misfit",
    "corner_params",
    "fit_homography",
    "fit_tracked",
    "global_shift",
    "implausible",
    "judge",
    "rejected",
    "reprojection_errors",
    "scale_homography",
    "track",
    "valid_mask",
    "warp_homography",
]

MIN_SIDE = 32  # px: smaller frames cannot hold a pyramid and a tracking window
_RANSAC_ITERS = 2000
_RANSAC_CONFIDENCE = 0.999
_SUBPIX_BITS = 8  # fractional bits of polygon vertices in valid_mask
_MIN_PHASE_RESPONSE = 0.03  # phase-correlation peak below which the global shift is ignored
#: The dense fallback's homography must fit at least this fraction of the flow samples
#: (an unrelated frame's flow fits a few percent by chance; a real burst's 15 % and more
#: even with rolling shutter, which the local refinement then follows).
DENSE_MIN_INLIER_RATIO = 0.1
#: ... and then correlate with the reference on its textured samples at least this well
#: (a flat or unrelated frame does not) and keep at least this fraction of its gradient
#: energy there (a frame blurred far beyond the reference adds nothing but blur).
DENSE_MIN_NCC = 0.6
DENSE_MIN_SHARPNESS = 0.25


@dataclass(frozen=True, kw_only=True)
class Registration:
    """How one second frame maps onto the reference, and whether it may be fused.

    ``homography``: ``float64 (3, 3)``, maps *moving* full-resolution pixel coordinates
    ``(x, y, 1)`` to *reference* coordinates (``H[2, 2] == 1``); the identity when no
    estimate exists, the best estimate otherwise (also when rejected, for diagnostics).
    ``reason``: why the frame was rejected (``None`` when accepted), e.g.
    ``"12 inliers < 24"``. ``tracked``: corners that survived tracking and the
    forward-backward check. ``inliers``: robust inliers among them. ``residual_px``:
    median reprojection error of the inliers, full-resolution px (``inf`` without a fit).
    ``method``: ``corners`` (tracked Harris corners) or ``dense`` (the homography fitted to
    the dense flow, :func:`~deblurd.pipeline.refine.dense_homography`, when the corners
    failed). ``residual``: the local refinement (:mod:`deblurd.pipeline.refine`), a
    working-scale field ``float32 (h, w, 2)`` of full-resolution px that the warp applies
    on top of the homography, or None.
    """

    homography: F64
    accepted: bool
    reason: str | None
    tracked: int
    inliers: int
    residual_px: float
    method: str = "corners"
    residual: F32 | None = None


class Registrar(Protocol):
    """What a registration backend offers (OpenCV here; CUDA on Jetson)."""

    def set_reference(self, gray: F32) -> None:
        """Take ``gray`` ``float32 (H, W)`` in [0, 1] as the reference of this job."""

    def register(self, gray: F32) -> Registration:
        """Register a second frame ``float32 (H, W)`` to the reference."""

    def warp(self, image: F32, reg: Registration) -> tuple[F32, F32]:
        """Resample ``image`` into the reference geometry; ``(warped, valid)``."""


def track(
    prev_pyr: list[U8],
    next_pyr: list[U8],
    points: F32,
    window: int,
    iterations: int,
    min_eigen: float,
    prior: tuple[float, float] = (0.0, 0.0),
) -> tuple[F32, Mask]:
    """Pyramidal Lucas–Kanade from ``prev_pyr`` to ``next_pyr``, coarse to fine.

    ``points``: ``float32 (N, 2)`` in level-0 pixels of the pyramids (element ``k`` is
    ``2**k`` times coarser). ``prior``: a global shift ``(dx, dy)`` in pixels of the
    coarsest level, the first guess of every point's motion. Returns the tracked
    positions ``float32 (N, 2)`` (level-0 pixels) and ``ok`` (``bool (N,)``). As in
    OpenCV's own pyramidal LK, a point lost at a coarse level keeps its guess; only the
    finest level decides ``ok``. The pyramids are ours (built once per image), one
    ``cv2.calcOpticalFlowPyrLK`` call per level.
    """
    # coarse levels only seed the next one: 0.05 px there, 0.01 px at the finest level
    coarse_criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 0.05)
    fine_criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 0.01)
    top = len(prev_pyr) - 1
    src = points.reshape(-1, 1, 2).astype(np.float32)
    guess = src / np.float32(2**top) + np.array(prior, np.float32)
    ok = np.zeros(len(points), np.bool_)
    for level in range(top, -1, -1):
        if level < top:
            guess = guess * np.float32(2.0)
        at = src / np.float32(2**level) if level else src
        nxt, status, _err = cv2.calcOpticalFlowPyrLK(
            prev_pyr[level],
            next_pyr[level],
            at,
            guess.copy(),
            winSize=(window, window),
            maxLevel=0,
            criteria=coarse_criteria if level else fine_criteria,
            flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
            minEigThreshold=min_eigen,
        )
        ok = status.reshape(-1).astype(np.bool_)
        guess = np.where(ok[:, None, None], nxt, guess).astype(np.float32)
    h, w = next_pyr[0].shape[:2]
    out: F32 = guess.reshape(-1, 2)
    ok &= np.isfinite(out).all(axis=1)
    ok &= (out[:, 0] >= 0) & (out[:, 0] <= w - 1) & (out[:, 1] >= 0) & (out[:, 1] <= h - 1)
    return out, ok


def global_shift(ref: U8, moving: U8, window: F32) -> tuple[float, float]:
    """Translation ``(dx, dy)`` of ``moving`` against ``ref`` by phase correlation, px.

    Run on the coarsest pyramid level, it gives Lucas–Kanade a first guess that reaches
    far beyond its window: a point at ``p`` in ``ref`` is near ``p + (dx, dy)`` in
    ``moving``. ``window``: a Hanning window of the level's size (``float32``). Returns
    ``(0, 0)`` when the correlation peak is too weak to trust.
    """
    a = ref.astype(np.float32)
    b = moving.astype(np.float32)
    (dx, dy), response = cv2.phaseCorrelate(a, b, window)
    if not (math.isfinite(dx) and math.isfinite(dy)) or response < _MIN_PHASE_RESPONSE:
        return 0.0, 0.0
    return float(dx), float(dy)


def reprojection_errors(H: F64, src: F32, dst: F32) -> F64:
    """``|H src - dst|`` per point, ``float64 (N,)``; ``src``, ``dst`` are ``(N, 2)``."""
    mapped = cv2.perspectiveTransform(src.reshape(-1, 1, 2).astype(np.float64), H)
    err: F64 = np.hypot(*(mapped.reshape(-1, 2) - dst.astype(np.float64)).T)
    return err


def fit_homography(src: F32, dst: F32, threshold: float) -> tuple[F64 | None, Mask]:
    """Robust homography ``dst ~ H src`` and its inliers (errors within ``threshold``).

    MAGSAC++ (``cv2.USAC_MAGSAC``) finds the consensus; the homography is then refitted
    by least squares (DLT + Levenberg–Marquardt) on the inliers, twice, re-selecting the
    inliers each time. Returns ``(None, all False)`` when no model is found.
    """
    none = np.zeros(len(src), np.bool_)
    if len(src) < 4:
        return None, none
    found, _mask = cv2.findHomography(
        src,
        dst,
        cv2.USAC_MAGSAC,
        threshold,
        maxIters=_RANSAC_ITERS,
        confidence=_RANSAC_CONFIDENCE,
    )
    if found is None or not np.isfinite(found).all():
        return None, none
    H = np.asarray(found, np.float64)
    inl = reprojection_errors(H, src, dst) <= threshold
    for _ in range(2):
        if inl.sum() < 8:
            break
        refit, _ = cv2.findHomography(src[inl], dst[inl], 0)
        if refit is None or not np.isfinite(refit).all():
            break
        H = np.asarray(refit, np.float64)
        inl = reprojection_errors(H, src, dst) <= threshold
    out: F64 = H / H[2, 2]
    return out, inl


def scale_homography(H: F64, factor: float) -> F64:
    """``H`` for coordinates ``factor`` times larger: ``S H S^-1``, ``S = diag(f, f, 1)``."""
    S = np.diag([factor, factor, 1.0])
    Si = np.diag([1.0 / factor, 1.0 / factor, 1.0])
    out: F64 = S @ H @ Si
    out /= out[2, 2]
    return out


def implausible(H: F64, shape: tuple[int, int], s: RegistrationSettings) -> str | None:
    """Why ``H`` (full-resolution, moving → reference) is not handheld shake, or ``None``.

    Tests the linear part at the frame centre (the Jacobian there): singular values within
    ``1 ± max_scale_change`` (zoom, shear, flips), rotation within ``max_rotation_deg``;
    the projective divisor's change across the frame, ``|h20| W + |h21| H``, within
    ``max_perspective``; the displacement of each frame corner within
    ``max_shift_fraction`` of the diagonal.
    """
    h, w = shape
    if not np.isfinite(H).all() or abs(H[2, 2]) < 1e-12:
        return "degenerate homography"
    H = H / H[2, 2]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    u, v, z = H @ np.array([cx, cy, 1.0])
    if z <= 1e-6:
        return "degenerate homography (centre maps to infinity)"
    J = (
        np.array(
            [
                [H[0, 0] - u / z * H[2, 0], H[0, 1] - u / z * H[2, 1]],
                [H[1, 0] - v / z * H[2, 0], H[1, 1] - v / z * H[2, 1]],
            ]
        )
        / z
    )
    if np.linalg.det(J) <= 0:
        return "degenerate homography (mirror or collapse)"
    sv = np.linalg.svd(J, compute_uv=False)
    if abs(sv[0] - 1) > s.max_scale_change or abs(sv[1] - 1) > s.max_scale_change:
        return f"scale/shear {sv[1]:.3f}..{sv[0]:.3f} outside 1 ± {s.max_scale_change:g}"
    angle = math.degrees(math.atan2(J[1, 0] - J[0, 1], J[0, 0] + J[1, 1]))
    if abs(angle) > s.max_rotation_deg:
        return f"rotation {angle:.2f}° beyond ±{s.max_rotation_deg:g}°"
    persp = abs(H[2, 0]) * w + abs(H[2, 1]) * h
    if persp > s.max_perspective:
        return f"perspective {persp:.3f} > {s.max_perspective:g}"
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    mapped = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), H).reshape(-1, 2)
    shift = float(np.hypot(*(mapped - corners).T).max())
    limit = s.max_shift_fraction * math.hypot(w, h)
    if shift > limit:
        return f"shift {shift:.0f} px > {limit:.0f} px"
    return None


def warp_homography(image: F32, H: F64) -> tuple[F32, F32]:
    """Resample ``image`` (``float32 (H, W)`` or ``(H, W, C)``) through ``H`` (moving →
    reference), bilinear, into the same size.

    Returns ``(warped, valid)``: ``warped`` has ``image``'s shape and dtype (pixels whose
    source lies outside the frame replicate its border); ``valid`` is ``float32 (H, W)``
    in {0, 1}, 1 where the pixel's source lies inside the moving frame (see
    :func:`valid_mask`).
    """
    h, w = image.shape[:2]
    image = np.ascontiguousarray(image)  # a no-op unless image is a strided view
    inv = np.linalg.inv(H)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if image.ndim == 2 or image.shape[2] <= 4:
        warped = cv2.warpPerspective(
            image, inv, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE
        ).reshape(image.shape)
    else:  # OpenCV resamples up to 4 channels at a time
        parts = [
            cv2.warpPerspective(
                np.ascontiguousarray(image[..., c : c + 4]),
                inv,
                (w, h),
                flags=flags,
                borderMode=cv2.BORDER_REPLICATE,
            ).reshape(h, w, -1)
            for c in range(0, image.shape[2], 4)
        ]
        warped = np.concatenate(parts, axis=2)
    out: F32 = warped.astype(np.float32, copy=False)
    return out, valid_mask(H, (h, w))


def valid_mask(H: F64, shape: tuple[int, int]) -> F32:
    """``float32 (H, W)``: 1 where ``H`` (moving → reference) maps a point of the moving
    frame, 0 elsewhere.

    The frame's image under a homography that keeps it in front of the camera is a
    convex quadrilateral: it is filled with sub-pixel vertices, inset by one pixel so
    that every pixel marked 1 has all four bilinear taps inside the frame (the border
    pixel row is given up). A homography that folds the frame through infinity falls
    back to warping a mask (slower, exact for any ``H``).
    """
    h, w = shape
    inset = 1.0
    rect = np.array(
        [
            [inset, inset],
            [w - 1 - inset, inset],
            [w - 1 - inset, h - 1 - inset],
            [inset, h - 1 - inset],
        ],
        np.float64,
    )
    z = np.hstack([rect, np.ones((4, 1))]) @ H[2]
    if (z > 1e-9).all():
        quad = cv2.perspectiveTransform(rect.reshape(-1, 1, 2), H).reshape(-1, 2)
        if np.abs(quad).max() < 1e6:
            fixed = np.rint(quad * (1 << _SUBPIX_BITS)).astype(np.int32)
            mask = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(mask, fixed, 1, cv2.LINE_8, _SUBPIX_BITS)
            out: F32 = mask.astype(np.float32)
            return out
    ones = np.full((h, w), 255, np.uint8)
    m = cv2.warpPerspective(
        ones,
        np.linalg.inv(H),
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    warped_mask: F32 = (m == 255).astype(np.float32)
    return warped_mask


class TrackedCorners:
    """What every registrar keeps of its reference: corners at the tracking level.

    Subclasses set ``_corners`` (``float32 (N, 2)``, tracking-level ``(x, y)`` px),
    ``_base`` (the tracking level) and ``_shape`` (full-resolution ``(H, W)``) in
    ``set_reference``, and ``_scale`` there with :meth:`_set_working_scale`; every
    ``register`` ends with :meth:`_refined` (the dense fallback and the local refinement,
    on the host, whatever the backend).
    """

    settings: RegistrationSettings
    _corners: F32
    _base: int
    _shape: tuple[int, int] | None
    _scale: WorkingScale | None
    stage_ms: dict[str, float]

    def _check_warp_input(self, image: F32) -> None:
        """Raise :class:`RegistrationError` unless ``image`` is ``float32 (H, W)`` or
        ``(H, W, C)`` of the reference's size (and a reference is set)."""
        if self._shape is None:
            raise RegistrationError("warp() before set_reference()")
        if (
            not isinstance(image, np.ndarray)
            or image.dtype != np.float32
            or image.ndim not in (2, 3)
            or image.shape[:2] != self._shape
        ):
            raise RegistrationError(
                f"warp expects float32 {self._shape} or {self._shape} x C, got "
                f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}"
            )

    def _fit_round_trip(
        self,
        fwd: F32,
        back: F32,
        ok: Mask,
        scale: float,
        shape: tuple[int, int],
        s: RegistrationSettings,
        t0: float,
        t1: float,
    ) -> tuple[Registration, F32, F32]:
        """After tracking the corners forth (``fwd``) and back (``back``; ``ok``: tracked
        both ways): the forward-backward check, :func:`fit_tracked` on what survives, and
        ``stage_ms`` (``pyramid`` from ``t0`` to ``t1``, ``lk`` from ``t1`` to the fit,
        ``homography``). Returns the registration and the tracks ``(src, dst)`` it fitted
        (tracking level: moving, reference)."""
        fb = np.hypot(*(back - self._corners).T)
        good = ok & (fb <= s.fb_max_error_px)
        src, dst = fwd[good], self._corners[good]
        t2 = time.perf_counter()
        self.stage_ms = {"pyramid": elapsed_ms(t0, t1), "lk": elapsed_ms(t1, t2)}
        reg = fit_tracked(src, dst, len(self._corners), scale, shape, s)
        self.stage_ms["homography"] = elapsed_ms(t2)
        return reg, src, dst

    def _set_working_scale(self, gray: Callable[[], F32], t0: float) -> None:
        """The reference's :class:`~deblurd.pipeline.refine.WorkingScale` from ``gray()``
        (``float32 (H, W)`` on the host, asked for only when the settings want the local
        refinement or the dense fallback; else None) and ``stage_ms["refine"]`` from
        ``t0``."""
        s = self.settings
        self._scale = None
        if s.refine or s.dense_fallback:
            self._scale = WorkingScale(
                gray(), RefineParams(s.refine_max_side_px, s.refine_smooth, s.refine_max_px)
            )
            self.stage_ms["refine"] = elapsed_ms(t0)

    def _refined(
        self, gray: Callable[[], F32], reg: Registration, misfit: float = math.inf
    ) -> Registration:
        """The dense fallback for a rejected frame, then the local refinement
        (:mod:`deblurd.pipeline.refine`) of an accepted one, as the settings ask: every
        registrar's last step, on the host. ``gray()``: the frame, ``float32 (H, W)`` on
        the host (asked for only when the dense flow runs). ``misfit``: the 75th
        percentile of the homography's error over every tracked corner (inliers or not),
        full-resolution px: what one homography leaves (:func:`corner_misfit`)."""
        s, scale = self.settings, self._scale
        if scale is None or self._shape is None:
            return reg
        t0 = time.perf_counter()
        host_gray = functools.cache(gray)  # the frame's gray: fetched once, when first needed

        if not reg.accepted and s.dense_fallback:
            fit = dense_homography(scale, host_gray())
            H, tried, inliers = fit.homography, fit.tried, fit.inliers
            reason = (
                "no fit"
                if H is None
                else f"{inliers} of {tried} flow samples fit ({inliers / tried:.2f} < "
                f"{DENSE_MIN_INLIER_RATIO:g})"
                if inliers < DENSE_MIN_INLIER_RATIO * tried
                else f"correlation {fit.ncc:.2f} < {DENSE_MIN_NCC:g}"
                if fit.ncc < DENSE_MIN_NCC
                else f"sharpness {fit.sharpness:.2f} of the reference's < {DENSE_MIN_SHARPNESS:g}"
                if fit.sharpness < DENSE_MIN_SHARPNESS
                else implausible(H, self._shape, s)
            )
            if H is not None and reason is None:
                reg = Registration(
                    homography=H,
                    accepted=True,
                    reason=None,
                    tracked=tried,
                    inliers=inliers,
                    residual_px=fit.residual_px,
                    method="dense",
                )
            else:  # the corners' statistics stay: they are the primary method
                reg = dataclasses.replace(reg, reason=f"{reg.reason}; dense flow: {reason}")
        # a corner fit this close explains the motion (no rolling shutter, no parallax to
        # speak of): the dense flow would find nothing to add
        explained = reg.method == "corners" and misfit <= s.refine_min_residual_px
        if reg.accepted and s.refine and not explained:
            residual = residual_field(scale, host_gray(), reg.homography)
            if residual is not None:
                reg = dataclasses.replace(reg, residual=residual)
        self.stage_ms["refine"] = elapsed_ms(t0)
        return reg

    @property
    def corners(self) -> F32:
        """Reference corners, ``float32 (N, 2)``, full-resolution ``(x, y)`` pixels."""
        out: F32 = self._corners * np.float32(2**self._base)
        return out

    @property
    def tracking_level(self) -> int:
        """Pyramid level corners and LK run on (0 = full resolution)."""
        return self._base


class OpenCVRegistrar(TrackedCorners):
    """The CPU registrar: OpenCV Harris, pyramidal LK, MAGSAC++ (see the module docstring).

    Not thread-safe: one registrar per job (the reference is its state). After each
    :meth:`set_reference` / :meth:`register` / :meth:`warp`, ``stage_ms`` holds the
    milliseconds its stages took (``pyramid``, ``corners``, ``lk``, ``homography``,
    ``warp``), for reports and benchmarks.
    """

    def __init__(self, settings: RegistrationSettings) -> None:
        self.settings = settings
        self.stage_ms: dict[str, float] = {}
        self._shape: tuple[int, int] | None = None
        self._base = 0
        self._ref_builder: PyramidBuilder | None = None
        self._builder: PyramidBuilder | None = None  # the second frames' pyramids
        self._ref_pyr: list[U8] = []
        self._window: F32 = np.ones((1, 1), np.float32)  # Hanning, coarsest level
        self._corners: F32 = np.empty((0, 2), np.float32)
        self._scale: WorkingScale | None = None

    def set_reference(self, gray: F32) -> None:
        """Build the reference pyramid and its persistent corners (once per job).

        ``gray``: ``float32 (H, W)`` in [0, 1]. A reference with few or no corners is not
        an error: every :meth:`register` then rejects with that reason.
        """
        check_gray(gray, "reference")
        s = self.settings
        self.stage_ms = {}
        t0 = time.perf_counter()
        shape = (int(gray.shape[0]), int(gray.shape[1]))
        if self._ref_builder is None or self._ref_builder.shape != shape:
            self._base = tracking_level(shape, s.tracking_max_side_px, s.levels)
            top = coarsest_level(s.levels, self._base)
            self._ref_builder = PyramidBuilder(shape, self._base, top)
            self._builder = PyramidBuilder(shape, self._base, top, self._ref_builder)
            top_h, top_w = level_shape(shape, top)
            self._window = np.asarray(
                cv2.createHanningWindow((top_w, top_h), cv2.CV_32F), np.float32
            )
        self._ref_pyr = self._ref_builder.build(gray)
        t1 = time.perf_counter()
        self._corners = persistent_corners(self._ref_pyr, corner_params(s))
        self._shape = shape
        t2 = time.perf_counter()
        self.stage_ms = {"pyramid": elapsed_ms(t0, t1), "corners": elapsed_ms(t1, t2)}
        self._set_working_scale(lambda: gray, t2)

    def register(self, gray: F32) -> Registration:
        """Register ``gray`` (``float32 (H, W)`` in [0, 1], the reference's size).

        Returns the homography moving → reference and whether the frame may be fused.
        """
        if self._shape is None or self._builder is None:
            raise RegistrationError("register() before set_reference()")
        check_gray(gray, "frame", self._shape)
        s = self.settings
        scale = float(2**self._base)
        self.stage_ms = {}
        n = len(self._corners)
        if n < s.min_inliers:
            reg = rejected(f"reference has {n} corners < {s.min_inliers}", 0, 0)
            return self._refined(lambda: gray, reg)  # the dense fallback may still register it

        t0 = time.perf_counter()
        pyr = self._builder.build(gray)
        t1 = time.perf_counter()
        args = (s.lk_window_px, s.lk_iterations, s.lk_min_eigen)
        dx, dy = global_shift(self._ref_pyr[-1], pyr[-1], self._window)
        fwd, ok_f = track(self._ref_pyr, pyr, self._corners, *args, prior=(dx, dy))
        back, ok_b = track(pyr, self._ref_pyr, fwd, *args, prior=(-dx, -dy))
        reg, src, dst = self._fit_round_trip(fwd, back, ok_f & ok_b, scale, self._shape, s, t0, t1)
        return self._refined(lambda: gray, reg, corner_misfit(reg, src, dst, scale))

    def warp(self, image: F32, reg: Registration) -> tuple[F32, F32]:
        """Resample ``image`` into the reference geometry with ``reg.homography`` (and
        ``reg.residual`` when refined and ``image`` has at most 4 channels).

        ``image``: ``float32 (H, W)`` or ``(H, W, C)``, the reference's size (any
        radiometry: gray, linear RGB …). Returns ``(warped, valid)``: ``warped`` of
        ``image``'s shape, ``valid`` ``float32 (H, W)`` in {0, 1}, 1 where the warped
        pixel came from inside the moving frame. Warps whatever ``reg.accepted`` says.
        """
        self._check_warp_input(image)
        t0 = time.perf_counter()
        H = np.asarray(reg.homography, np.float64)
        if reg.residual is not None and (image.ndim == 2 or image.shape[2] <= 4):
            out = warp_with_residual(image, H, reg.residual)
        else:
            out = warp_homography(image, H)
        self.stage_ms = {"warp": elapsed_ms(t0)}
        return out


def corner_misfit(reg: Registration, src: F32, dst: F32, scale: float) -> float:
    """What the homography of an accepted corner fit leaves: the 75th percentile of its
    error over every tracked corner ``src -> dst`` (tracking level, inliers or not),
    full-resolution px; ``inf`` for a rejected fit or without tracks."""
    if not reg.accepted or not len(src):
        return math.inf
    H_b = scale_homography(np.asarray(reg.homography, np.float64), 1.0 / scale)
    return float(np.percentile(reprojection_errors(H_b, src, dst), 75)) * scale


def fit_tracked(
    src: F32,
    dst: F32,
    corners: int,
    scale: float,
    shape: tuple[int, int],
    s: RegistrationSettings,
) -> Registration:
    """After tracking: the track-count gate, the robust fit and :func:`judge`.

    ``src``/``dst``: tracked points ``(N, 2)`` float32 at the tracking level (moving,
    reference); ``corners``: corners tried; ``scale``: tracking level to full resolution;
    ``shape``: full-resolution ``(H, W)``. Every registrar (OpenCV, CUDA) ends here.
    """
    tracked = len(src)
    if tracked < s.min_inliers:
        return rejected(f"{tracked} of {corners} corners tracked < {s.min_inliers}", tracked, 0)
    if tracked < s.min_tracked_ratio * corners:
        return rejected(
            f"{tracked} of {corners} corners tracked: ratio {tracked / corners:.2f} < "
            f"{s.min_tracked_ratio:g}",
            tracked,
            0,
        )
    H_b, inl = fit_homography(src, dst, s.ransac_threshold_px)
    return judge(H_b, inl, src, dst, scale, shape, s)


def judge(
    H_b: F64 | None,
    inl: Mask,
    src: F32,
    dst: F32,
    scale: float,
    shape: tuple[int, int],
    s: RegistrationSettings,
) -> Registration:
    """Scale the tracking-level fit to full resolution and apply the quality gate."""
    tracked, inliers = len(src), int(inl.sum())
    if H_b is None:
        return rejected("no homography found", tracked, 0)
    H = scale_homography(H_b, scale)
    residual = (
        float(np.median(reprojection_errors(H_b, src[inl], dst[inl]))) * scale
        if inliers
        else math.inf
    )
    reason: str | None = None
    if inliers < s.min_inliers:
        reason = f"{inliers} inliers < {s.min_inliers}"
    elif inliers / tracked < s.min_inlier_ratio:
        reason = f"inlier ratio {inliers / tracked:.2f} < {s.min_inlier_ratio:g}"
    elif residual > s.max_residual_px * scale:
        reason = f"median residual {residual:.2f} px > {s.max_residual_px * scale:.2f} px"
    else:
        reason = implausible(H, shape, s)
    return Registration(
        homography=H,
        accepted=reason is None,
        reason=reason,
        tracked=tracked,
        inliers=inliers,
        residual_px=residual,
    )


def corner_params(s: RegistrationSettings) -> CornerParams:
    """The reference corners' parameters from the settings (every registrar's)."""
    return CornerParams(
        max_corners=s.max_corners,
        quality=s.corner_quality,
        min_distance_px=s.corner_min_distance_px,
        margin_px=s.lk_window_px // 2 + 1,
        persistence_levels=s.persistence_levels,
        radius_px=s.persistence_radius_px,
        grid=s.grid_cells,
    )


def check_gray(gray: F32, what: str, shape: tuple[int, int] | None = None) -> None:
    """Raise :class:`RegistrationError` unless ``gray`` is ``float32 (H, W)`` of ``shape``."""
    if not isinstance(gray, np.ndarray) or gray.dtype != np.float32 or gray.ndim != 2:
        raise RegistrationError(
            f"{what} must be a float32 (H, W) gray image, got "
            f"{getattr(gray, 'dtype', type(gray).__name__)} {getattr(gray, 'shape', '')}"
        )
    if min(gray.shape) < MIN_SIDE:
        raise RegistrationError(f"{what} {gray.shape} is smaller than {MIN_SIDE} px")
    if shape is not None and gray.shape != shape:
        raise RegistrationError(f"{what} is {gray.shape}, the reference is {shape}")


def rejected(reason: str, tracked: int, inliers: int) -> Registration:
    """A rejection: the identity homography, ``reason``, no residual (every registrar's)."""
    return Registration(
        homography=np.eye(3),
        accepted=False,
        reason=reason,
        tracked=tracked,
        inliers=inliers,
        residual_px=math.inf,
    )
