"""Stage 4a, second half: local refinement of a registration by a dense residual flow.

A homography is exact for a camera that only rotates in front of a distant scene. Real
bursts break it: the rows of a rolling-shutter sensor are read out over 10–30 ms while
the hand moves (each row band has its own pose), near objects move against far ones
(parallax), the lens bends straight lines, and a blurred frame's corners track badly.
What is left after the global fit is a smooth, non-rigid displacement of a few pixels,
which averages into visible double edges. This module measures it and removes it:

1. both images are taken to a *working scale* (longer side at most ``max_side_px``),
   brightness-normalised (mean and spread: auto-exposure moves both between frames) and
   quantised to ``uint8``;
2. the moving frame is warped there by the global homography, and OpenCV's DIS optical
   flow (Kroeger, Timofte, Dai & Van Gool, "Fast Optical Flow using Dense Inverse
   Search", ECCV 2016) measures where each reference pixel's content lies in it;
3. the flow is smoothed by *normalised convolution* (Knutsson & Westin, "Normalized and
   differential convolution", CVPR 1993) with a confidence that is the reference's local
   gradient energy (flat areas carry no motion information) and that falls for vectors
   far from their neighbourhood's median (a moving subject should not drag the
   background with it); its magnitude is capped at ``max_px``;
4. the warp of the full-resolution frame samples the moving frame at
   ``H⁻¹(p + r(p))``: the residual field ``r`` is applied in reference coordinates,
   upsampled with the homography's map (the map is smooth: built at the working scale and
   resized bilinearly).

:func:`dense_homography` is the fallback for bursts on which corners cannot be tracked
(heavy or differing blur, low texture, large motion): the homography fitted robustly to
the dense flow's vectors on textured samples.

Everything is in float32 and OpenCV; the fusion's per-pixel weights still reject what
disagrees after refinement (moving subjects, occlusions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.imaging import F32, F64, U8

#: Grid step of the samples the dense homography is fitted to, working-scale px.
_FIT_STEP = 8
#: Fraction of the flattest samples left out of the dense fit (no motion information).
_FIT_FLAT_FRACTION = 0.4
#: MAGSAC++ inlier threshold of the dense fit, working-scale px.
_FIT_THRESHOLD = 1.0
#: Minimum inlier count of the dense fit.
_FIT_MIN_INLIERS = 40
#: A flow vector further than this from its neighbourhood's median loses confidence
#: (working-scale px).
_OUTLIER_PX = 1.5
#: The residual must lower the textured pixels' difference to the reference by this much.
_MIN_GAIN = 0.1
#: A residual field whose 95th percentile length is under this is not applied, px.
_NEGLIGIBLE_PX = 0.25
#: The residual's smoothing runs on a grid this many times coarser than the working scale.
_SMOOTH_STEP = 4


@dataclass(frozen=True)
class RefineParams:
    """``max_side_px``: longer side of the working scale, px. ``smooth``: std of the
    normalised convolution, as a fraction of the working scale's longer side.
    ``max_px``: cap on the residual's length, full-resolution px."""

    max_side_px: int = 640
    smooth: float = 0.04
    max_px: float = 24.0


class WorkingScale:
    """A reference image prepared for dense flow: its working-scale ``uint8`` gray and
    gradient confidence. ``gray``: ``float32 (H, W)`` in [0, 1], full resolution."""

    def __init__(self, gray: F32, params: RefineParams) -> None:
        h, w = gray.shape
        self.params = params
        self.full_shape = (h, w)
        self.factor = min(1.0, params.max_side_px / max(h, w))
        self.size = (max(8, round(w * self.factor)), max(8, round(h * self.factor)))
        self.ref = normalised_u8(self.resize(gray))
        ref_f = self.ref.astype(np.float32)
        gx = cv2.Sobel(ref_f, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(ref_f, cv2.CV_32F, 0, 1, ksize=3)
        energy = cv2.GaussianBlur(gx * gx + gy * gy, (0, 0), 2.0)
        # gradient energy saturates: an edge counts about as much as strong texture
        self.texture: F32 = np.asarray(energy / (energy + np.float32(400.0)), np.float32)
        create = getattr(cv2, "DISOpticalFlow_create")  # noqa: B009 - missing from the stubs
        self._dis = create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.sx = w / self.size[0]
        self.sy = h / self.size[1]

    def resize(self, gray: F32) -> F32:
        if self.factor >= 1.0:
            return gray
        return np.asarray(cv2.resize(gray, self.size, interpolation=cv2.INTER_AREA), np.float32)

    def flow(self, moving_u8: U8) -> F32:
        """Dense flow ``float32 (h, w, 2)`` at the working scale: ``ref(p)`` is found at
        ``moving(p + flow(p))``."""
        out = self._dis.calc(self.ref, moving_u8, None)
        return np.asarray(out, np.float32)

    def small_homography(self, H: F64) -> F64:
        """``H`` (full resolution) in working-scale coordinates."""
        S = np.diag([1.0 / self.sx, 1.0 / self.sy, 1.0])
        Si = np.diag([self.sx, self.sy, 1.0])
        out: F64 = S @ H @ Si
        out /= out[2, 2]
        return out

    def full_homography(self, H_small: F64) -> F64:
        """A working-scale homography at full resolution."""
        S = np.diag([self.sx, self.sy, 1.0])
        Si = np.diag([1.0 / self.sx, 1.0 / self.sy, 1.0])
        out: F64 = S @ H_small @ Si
        out /= out[2, 2]
        return out


def normalised_u8(gray: F32) -> U8:
    """``gray`` with its mean at 128 and its robust spread fixed, as ``uint8``: frames of
    another exposure or gain look alike to the flow."""
    lo, hi = np.percentile(
        gray[:: max(1, gray.shape[0] // 128), :: max(1, gray.shape[1] // 128)], (1.0, 99.0)
    )
    span = max(float(hi - lo), 1e-3)
    out = (gray - np.float32(lo)) * np.float32(200.0 / span) + np.float32(28.0)
    return np.asarray(np.clip(out + 0.5, 0, 255), np.uint8)


def residual_field(scale: WorkingScale, moving_gray: F32, H: F64) -> F32 | None:
    """The smoothed residual displacement ``float32 (h, w, 2)`` at the working scale, in
    full-resolution px, that remains after warping ``moving_gray`` (``float32 (H, W)``,
    full resolution) by ``H`` (moving → reference); None when it is negligible (median
    length under 0.05 px)."""
    h_small = scale.small_homography(H)
    small = scale.resize(moving_gray)
    w, h = scale.size
    warped = cv2.warpPerspective(
        small,
        np.linalg.inv(h_small),
        (w, h),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    warped_u8 = normalised_u8(np.asarray(warped, np.float32))
    flow = scale.flow(warped_u8)
    smooth = _smooth(flow, scale.texture, scale.params.smooth * max(w, h))
    if not _improves(scale, warped_u8, smooth):
        return None
    smooth[..., 0] *= np.float32(scale.sx)
    smooth[..., 1] *= np.float32(scale.sy)
    length = np.hypot(smooth[..., 0], smooth[..., 1])
    cap = np.float32(scale.params.max_px)
    over = length > cap
    if over.any():
        smooth[over] *= (cap / length[over])[:, None]
    if float(np.percentile(length, 95)) < _NEGLIGIBLE_PX:
        return None
    return smooth


@dataclass(frozen=True)
class DenseFit:
    """The dense fallback's result: ``homography`` (full resolution, moving → reference,
    or None), flow samples ``tried`` and ``inliers``; after warping, the normalised
    cross-correlation ``ncc`` with the reference on its textured samples and the
    ``sharpness`` ratio (the warped frame's gradient energy there over the reference's);
    ``residual_px``: the inliers' median fit error, full-resolution px."""

    homography: F64 | None
    tried: int
    inliers: int
    ncc: float = 0.0
    sharpness: float = 0.0
    residual_px: float = math.inf


def _improves(scale: WorkingScale, warped_u8: U8, residual: F32) -> bool:
    """Whether ``warped_u8`` resampled by ``residual`` (working-scale px) is closer to the
    reference than ``warped_u8`` itself by at least ``_MIN_GAIN`` (mean absolute
    difference of the low-passed images over the textured half)."""
    h, w = warped_u8.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    moved = cv2.remap(
        warped_u8,
        xs + residual[..., 0],
        ys + residual[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    ref = cv2.GaussianBlur(scale.ref.astype(np.float32), (0, 0), 1.0)
    mask = scale.texture > np.median(scale.texture)
    before = np.abs(cv2.GaussianBlur(warped_u8.astype(np.float32), (0, 0), 1.0) - ref)[mask]
    after = np.abs(cv2.GaussianBlur(moved.astype(np.float32), (0, 0), 1.0) - ref)[mask]
    return float(after.mean()) < (1.0 - _MIN_GAIN) * float(before.mean())


def dense_homography(scale: WorkingScale, moving_gray: F32) -> DenseFit:
    """Homography moving → reference at full resolution fitted robustly (MAGSAC++) to the
    dense flow's vectors on textured samples, and how well the frame then agrees with the
    reference (a flat or unrelated frame's flow can fit a homography by chance; its
    correlation and sharpness say what it is)."""
    small = normalised_u8(scale.resize(moving_gray))
    flow = scale.flow(small)
    w, h = scale.size
    ys, xs = np.mgrid[_FIT_STEP // 2 : h : _FIT_STEP, _FIT_STEP // 2 : w : _FIT_STEP]
    ys, xs = ys.ravel(), xs.ravel()
    conf = scale.texture[ys, xs]
    keep = conf > np.quantile(conf, _FIT_FLAT_FRACTION)
    ref_pts = np.stack([xs[keep], ys[keep]], axis=1).astype(np.float32)
    mov_pts = ref_pts + flow[ys[keep], xs[keep]]
    n = len(ref_pts)
    if n < _FIT_MIN_INLIERS:
        return DenseFit(None, n, 0)
    H_small, inl = cv2.findHomography(mov_pts, ref_pts, cv2.USAC_MAGSAC, _FIT_THRESHOLD)
    if H_small is None or inl is None:
        return DenseFit(None, n, 0)
    inliers = int(inl.sum())
    if inliers < _FIT_MIN_INLIERS:
        return DenseFit(None, n, inliers)
    H_fit: F64 = np.asarray(H_small, np.float64)
    mask_in = inl.reshape(-1).astype(bool)
    mapped = cv2.perspectiveTransform(mov_pts[mask_in].reshape(-1, 1, 2).astype(np.float64), H_fit)
    err = np.hypot(*(mapped.reshape(-1, 2) - ref_pts[mask_in]).T)
    residual = float(np.median(err)) * 0.5 * (scale.sx + scale.sy)
    warped = cv2.warpPerspective(
        small, H_fit, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float32)
    ref = scale.ref.astype(np.float32)
    mask = scale.texture > np.quantile(scale.texture, _FIT_FLAT_FRACTION)
    a, b = ref[mask] - ref[mask].mean(), warped[mask] - warped[mask].mean()
    ncc = float((a * b).sum() / max(math.sqrt(float((a * a).sum() * (b * b).sum())), 1e-9))
    sharp = _gradient_energy(warped, mask) / max(_gradient_energy(ref, mask), 1e-9)
    return DenseFit(scale.full_homography(H_fit), n, inliers, ncc, sharp, residual)


def _gradient_energy(image: F32, mask: npt.NDArray[np.bool_]) -> float:
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    return float((gx * gx + gy * gy)[mask].mean())


def _smooth(flow: F32, texture: F32, sigma: float) -> F32:
    """Normalised convolution of ``flow`` ``(h, w, 2)`` with confidence ``texture``
    ``(h, w)``, down-weighting vectors far from their local median (Gaussian std
    ``sigma`` px). The wide Gaussian runs on a 4× smaller grid (it keeps nothing finer)."""
    med = np.stack([cv2.medianBlur(np.ascontiguousarray(flow[..., c]), 5) for c in range(2)], -1)
    dev = np.hypot(*(flow - med).transpose(2, 0, 1))
    conf = texture * np.exp(-((dev / np.float32(_OUTLIER_PX)) ** 2)).astype(np.float32)
    conf += np.float32(1e-4)  # nowhere without an opinion: far from texture, the mean
    h, w = conf.shape
    small = (max(1, w // _SMOOTH_STEP), max(1, h // _SMOOTH_STEP))
    stacked = np.dstack([flow * conf[..., None], conf])
    coarse = np.asarray(cv2.resize(stacked, small, interpolation=cv2.INTER_AREA), np.float32)
    s = max(sigma / _SMOOTH_STEP, 0.5)
    ksize = 2 * math.ceil(3 * s) + 1
    coarse = np.asarray(cv2.GaussianBlur(coarse, (ksize, ksize), s), np.float32)
    ratio = coarse[..., :2] / coarse[..., 2:3]
    out: F32 = np.asarray(cv2.resize(ratio, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
    return out


def residual_map(shape: tuple[int, int], H: F64, residual: F32) -> F32:
    """The source positions ``H⁻¹(p + r(p))`` of the working grid's pixel centres ``p``
    (in full-resolution coordinates), ``float32 (h, w, 2)`` ``(x, y)`` full-resolution px
    of a frame of ``shape`` ``(H, W)``; ``residual`` as in :func:`warp_with_residual`.
    Resized bilinearly (``cv2.resize``, ``INTER_LINEAR``) to the full resolution, it is
    the warp's sampling map (the CUDA warp upsamples it on the device)."""
    h, w = shape
    rh, rw = residual.shape[:2]
    sx, sy = w / rw, h / rh
    ys, xs = np.mgrid[0:rh, 0:rw].astype(np.float32)
    # pixel centres of the working grid in full-resolution coordinates
    pts = np.stack([(xs + 0.5) * sx - 0.5, (ys + 0.5) * sy - 0.5], axis=-1) + residual
    src = cv2.perspectiveTransform(pts.reshape(-1, 1, 2).astype(np.float64), np.linalg.inv(H))
    out: F32 = np.ascontiguousarray(src.reshape(rh, rw, 2), np.float32)
    return out


def warp_with_residual(image: F32, H: F64, residual: F32) -> tuple[F32, F32]:
    """Resample ``image`` (``float32 (H, W)`` or ``(H, W, C)``, C ≤ 4) at
    ``H⁻¹(p + r(p))`` for every reference pixel ``p``; ``residual`` is the working-scale
    field ``(h, w, 2)`` in full-resolution px (:func:`residual_field`).

    Returns ``(warped, valid)`` as :func:`~deblurd.pipeline.registration.warp_homography`:
    ``valid`` is ``float32 (H, W)``, 1 where all bilinear taps lie inside the frame.
    """
    h, w = image.shape[:2]
    src_small = residual_map((h, w), H, residual)
    maps = np.asarray(cv2.resize(src_small, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)
    # fixed-point maps (1/32 px, as warpPerspective uses): remap is twice as fast with them
    fixed, frac = cv2.convertMaps(maps, None, cv2.CV_16SC2)  # type: ignore[call-overload]
    warped = cv2.remap(
        np.ascontiguousarray(image), fixed, frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    inside = cv2.inRange(maps, (1.0, 1.0), (w - 2.0, h - 2.0))
    out: F32 = np.asarray(warped, np.float32).reshape(image.shape)
    return out, (inside > 0).astype(np.float32)
