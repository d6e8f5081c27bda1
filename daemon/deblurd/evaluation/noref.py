"""No-reference image measures for real camera frames, which have no ground truth.

Every measure takes 8-bit sRGB frames ``uint8 (H, W, 3)`` (RGB order) and works on their
**luma in sRGB codes** ``Y = 0.299 R + 0.587 G + 0.114 B`` (Rec. 601, float64, 0–255, not
re-quantised): noise and blocks are judged on the coded values a viewer sees. None of
them uses the pipeline's noise model, registration or fusion; the blur score is the
product's own (:func:`deblurd.pipeline.blur.blur_score`), reported as the product sees it.

* :func:`immerkaer_sigma`: J. Immerkær, "Fast Noise Variance Estimation", Computer
  Vision and Image Understanding 64(2), 1996: ``σ = sqrt(π/2) · mean|Y ∗ M| / 6`` with
  ``M = [[1,-2,1],[-2,4,-2],[1,-2,1]]`` (the difference of two Laplacians, blind to
  planes and linear ramps), averaged over a mask (:func:`flat_mask`: flat, unclipped
  pixels) so that edges and texture do not count as noise. Codes of luma.
* :func:`temporal_reference` / :func:`temporal_residual_sigma`: noise measured against
  *other exposures of the same scene*: held-out frames (frames the pipeline was not
  given) registered to the measured frame with OpenCV ECC (:func:`register_ecc`, a
  homography; independent of the product's registration), brightness-matched and
  averaged; the residual of an image against that mean, in static flat pixels only
  (every held-out frame agrees with the reference frame there in low-pass, no clipping,
  inside every warp), has ``var = σ_image² + var(mean)``; ``var(mean)`` is measured
  from the spread of the registered held-out frames (so interpolation and residual
  misregistration are accounted for) and :func:`temporal_noise` removes it.
* :func:`gradient_energy`: Tenengrad, the mean of ``Gx² + Gy²`` of 3×3 Sobel on luma
  (codes², rises with sharpness *and* with noise; read it with the noise numbers).
* :func:`brightness_drift`: the median of the low-passed luma difference of two
  images in the same geometry, in units of :data:`DRIFT_UNIT_CODES` (2 codes).
* :func:`blockiness`: the mean absolute luma step across 8×8 block boundaries over the
  mean step inside blocks (1.0: no grid; JPEG/H.264 blocks raise it);
  :func:`block_excess`: their difference in codes (0: no grid).
* :func:`ghost_fraction`: the fraction of pixels where one image disagrees with another
  by far more than noise after a low-pass (σ = 3 px): ghosts of moving things,
  misregistered copies, local brightness changes. Sharpening or denoising alone barely
  moves it (both act on frequencies the low-pass removes).
* :func:`colour_shift`: the share of pixels where any colour channel's low-pass
  (σ = 8 px) moved by more than 6 codes between two images in the same geometry: the
  colour casts, patches and contrast changes a deblurring network may paint (deblurring
  itself barely moves a σ = 8 px low-pass of blur up to ~40 px).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F32, F64, U8, Mask
from deblurd.pipeline.blur import blur_score as _product_blur_score

LUMA = (0.299, 0.587, 0.114)
DRIFT_UNIT_CODES = 2.0
"""Brightness drift is reported in units of this many sRGB codes (the target: < 1 unit)."""
IMMERKAER_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
CLIP_LOW, CLIP_HIGH = 6, 249
"""Codes at or beyond which a channel counts as clipped (its noise is cut off)."""
MIN_PIXELS = 2000
"""Fewer masked pixels than this: the noise measures return NaN (not enough to trust)."""
_MAD = 1.4826  # MAD → σ for a Gaussian
_REGISTRATION_SCALE = 0.5  # register_ecc works on half-resolution images


def luma(image: npt.NDArray[np.generic]) -> F64:
    """Rec. 601 luma ``float64 (H, W)`` in sRGB codes of a ``uint8 (H, W, 3)`` frame
    (a 2-D array is taken as luma already)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr.astype(np.float64)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) frame, got shape {arr.shape}")
    f = arr.astype(np.float64)
    y: F64 = LUMA[0] * f[..., 0] + LUMA[1] * f[..., 1] + LUMA[2] * f[..., 2]
    return y


def _lowpass(y: F64, sigma: float) -> F64:
    out: F64 = np.asarray(
        cv2.GaussianBlur(y, (0, 0), sigma, borderType=cv2.BORDER_REFLECT), np.float64
    )
    return out


def _border_mask(shape: tuple[int, ...], border: int) -> Mask:
    m = np.zeros(shape[:2], np.bool_)
    h, w = shape[:2]
    if h > 2 * border and w > 2 * border:
        m[border : h - border, border : w - border] = True
    return m


def _erode(mask: Mask, radius: int) -> Mask:
    if radius <= 0:
        return mask
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return np.asarray(cv2.erode(mask.astype(np.uint8), k, borderValue=0), np.bool_)


def unclipped_mask(image: U8, radius: int = 2) -> Mask:
    """Pixels at least ``radius`` px away from any channel at or beyond
    :data:`CLIP_LOW`/:data:`CLIP_HIGH` codes (noise there is cut off by the clip)."""
    arr = np.asarray(image)
    clipped = np.asarray((arr <= CLIP_LOW) | (arr >= CLIP_HIGH), np.bool_)
    if arr.ndim == 3:
        clipped = np.asarray(clipped.any(axis=2), np.bool_)
    return _erode(~clipped, radius)


def flat_mask(
    reference: npt.NDArray[np.generic],
    fraction: float = 0.5,
    within: Mask | None = None,
    sigma: float = 0.7,
    window: int = 7,
    border: int = 8,
) -> Mask:
    """Flat pixels of ``reference`` (a frame or a luma image): the ``fraction`` of the
    pixels (of ``within``, default all) with the least local activity, unclipped, and
    ``border`` px from the edges. Activity: the Sobel gradient magnitude of the σ-smoothed
    luma, box-averaged over ``window`` px (fine texture counts, single noisy pixels do
    not). Measure every image to be compared on **one** mask made from an image
    independent of them (e.g. the held-out mean), not each on its own."""
    if not 0.0 < fraction <= 1.0:
        raise ImageError(f"fraction must be in (0, 1], got {fraction}")
    y = _lowpass(luma(reference), sigma)
    gx = cv2.Sobel(y, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_64F, 0, 1, ksize=3)
    activity = cv2.blur(np.hypot(gx, gy), (window, window), borderType=cv2.BORDER_REFLECT)
    base = _border_mask(y.shape, border)
    if np.asarray(reference).ndim == 3:
        base &= unclipped_mask(np.asarray(reference, np.uint8))
    else:
        base &= (y > CLIP_LOW) & (y < CLIP_HIGH)
    if within is not None:
        base &= within
    if not base.any():
        return base
    threshold = float(np.quantile(activity[base], fraction))
    out: Mask = np.asarray(base & (activity <= threshold), np.bool_)
    return out


def immerkaer_sigma(image: npt.NDArray[np.generic], mask: Mask | None = None) -> float:
    """Immerkær's noise σ (codes of luma) over ``mask`` (default: the whole frame but a
    1-px border). Each masked pixel needs its 3×3 neighbourhood inside the mask (the mask
    is eroded by 1 px). NaN with fewer than :data:`MIN_PIXELS` pixels."""
    y = luma(image)
    r = np.abs(cv2.filter2D(y, cv2.CV_64F, IMMERKAER_KERNEL, borderType=cv2.BORDER_REFLECT))
    m = _border_mask(y.shape, 1) if mask is None else _erode(mask, 1) & _border_mask(y.shape, 1)
    n = int(m.sum())
    if n < MIN_PIXELS:
        return math.nan
    return float(math.sqrt(math.pi / 2.0) * r[m].mean() / 6.0)


def gradient_energy(image: npt.NDArray[np.generic], border: int = 8) -> float:
    """Tenengrad: mean ``Gx² + Gy²`` of 3×3 Sobel on luma, codes², ``border`` px cropped.
    Falls with blur; rises with noise and sharpening halos too."""
    y = luma(image)
    gx = cv2.Sobel(y, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_64F, 0, 1, ksize=3)
    m = _border_mask(y.shape, border)
    return float((gx * gx + gy * gy)[m].mean())


def blur_score(image: U8) -> float:
    """The product's blur score (dB, higher = blurrier): :func:`deblurd.pipeline.blur.
    blur_score` at its default analysis size."""
    return float(_product_blur_score(image))


def brightness_drift(image: U8, reference: U8, mask: Mask | None = None) -> float:
    """Brightness change of ``image`` against ``reference`` (same geometry), in units of
    :data:`DRIFT_UNIT_CODES` codes: the median of the low-passed (σ = 2 px) luma
    difference over unclipped pixels of both (and ``mask``). A uniform +4-code shift
    reads +2.0. Robust to local changes (ghosts, sharpening) covering < half the frame."""
    d = _lowpass(luma(image) - luma(reference), 2.0)
    m = unclipped_mask(reference) & unclipped_mask(image) & _border_mask(d.shape, 4)
    if mask is not None:
        m &= mask
    if int(m.sum()) < MIN_PIXELS:
        m = _border_mask(d.shape, 4)
    return float(np.median(d[m])) / DRIFT_UNIT_CODES


COLOUR_SHIFT_SIGMA_PX = 8.0
COLOUR_SHIFT_CODES = 6.0


def colour_shift(
    image: U8,
    reference: U8,
    sigma: float = COLOUR_SHIFT_SIGMA_PX,
    codes: float = COLOUR_SHIFT_CODES,
) -> float:
    """The share (0–1) of pixels (an 8 px border left out) where the low-pass
    (Gaussian, ``sigma`` px) of any channel of ``image`` differs from that of
    ``reference`` (both ``uint8 (H, W, 3)``, same geometry) by more than ``codes``."""
    if image.shape != reference.shape or image.ndim != 3:
        raise ImageError(f"colour_shift needs two (H, W, 3) images of one size, got "
                         f"{image.shape} and {reference.shape}")  # fmt: skip
    d = cv2.GaussianBlur(image.astype(np.float32) - reference.astype(np.float32), (0, 0),
                         sigma, borderType=cv2.BORDER_REFLECT)  # fmt: skip
    moved = np.abs(d).max(axis=2) > codes
    return float(moved[_border_mask(moved.shape, 8)].mean())


def _block_steps(y: F64, axis: int, block: int, phase: int) -> tuple[float, float]:
    d = np.abs(np.diff(y, axis=axis))  # d[..., i]: step between i and i + 1
    idx = np.arange(d.shape[axis])
    boundary = (idx % block) == ((phase - 1) % block)
    take_b = d[:, boundary] if axis == 1 else d[boundary, :]
    take_i = d[:, ~boundary] if axis == 1 else d[~boundary, :]
    return float(take_b.mean()), float(take_i.mean())


def _block_means(
    image: npt.NDArray[np.generic], block: int, phase: tuple[int, int]
) -> tuple[float, float]:
    y = luma(image)
    if min(y.shape) < 4 * block:
        raise ImageError(f"image {y.shape} too small for {block}-px blocks")
    bh, ih = _block_steps(y, 1, block, phase[1])
    bv, iv = _block_steps(y, 0, block, phase[0])
    return (bh + bv) / 2.0, (ih + iv) / 2.0


def blockiness(
    image: npt.NDArray[np.generic], block: int = 8, phase: tuple[int, int] = (0, 0)
) -> float:
    """Block-boundary over block-interior luma step ratio (1.0: no grid).

    A block grid of side ``block`` starting at row/column ``phase`` (blocks start at
    ``phase + k · block``): the mean ``|Y[x] - Y[x-1]|`` across the boundaries, over the
    mean across every other neighbour pair, horizontal and vertical steps pooled.
    Compression blocks (JPEG, H.264) raise it; blur, noise and a smooth ramp do not.
    A ratio: on frames whose blocks are flat inside (heavy compression of smooth
    content) the interior step is tiny and the ratio large; read it with
    :func:`block_excess`, the same steps as a difference in codes.
    """
    boundary, interior = _block_means(image, block, phase)
    return float(boundary / interior) if interior > 0 else 1.0


def block_excess(
    image: npt.NDArray[np.generic], block: int = 8, phase: tuple[int, int] = (0, 0)
) -> float:
    """Mean luma step across block boundaries minus the mean step inside blocks, codes
    (0: no grid): how visible the grid is, in absolute terms (see :func:`blockiness`)."""
    boundary, interior = _block_means(image, block, phase)
    return float(boundary - interior)


def block_phase(image: npt.NDArray[np.generic], block: int = 8) -> tuple[int, int]:
    """The ``(row, column)`` phase of the strongest block grid of side ``block``: for a
    frame cropped after compression. Measure before/after on the input's phase."""
    y = luma(image)

    def best(axis: int) -> int:
        d = np.abs(np.diff(y, axis=axis)).mean(axis=1 - axis)
        per = [
            float(d[(np.arange(d.size) % block) == ((p - 1) % block)].mean()) for p in range(block)
        ]
        return int(np.argmax(per))

    return best(0), best(1)


def ghost_fraction(
    image: U8,
    reference: U8,
    threshold_codes: float = 6.0,
    sigma: float = 3.0,
    border: int = 8,
) -> float:
    """Fraction of pixels where ``image`` departs from ``reference`` (same geometry) by
    more than ``threshold_codes`` in σ-px low-passed luma, after removing the global
    drift (median difference). Noise of σ ≤ 8 codes is ~0.3 codes after this low-pass, so
    what remains is structure: ghosts, misplaced copies, local brightness changes."""
    d = _lowpass(luma(image) - luma(reference), sigma)
    m = _border_mask(d.shape, border)
    d = d - float(np.median(d[m]))
    return float((np.abs(d[m]) > threshold_codes).mean())


def _ecc_affine(
    a: F32, b: F32, start: F32, iterations: int, mask: npt.NDArray[np.uint8] | None = None
) -> tuple[float, F32] | None:
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-5)
    where = np.full(a.shape, 255, np.uint8) if mask is None else mask
    try:
        cc, fitted = cv2.findTransformECC(a, b, start, cv2.MOTION_AFFINE, criteria, where, 5)
    except cv2.error:
        return None
    return float(cc), np.asarray(fitted, np.float32)


def _to_u8(y: F64) -> U8:
    return np.asarray(np.clip(np.round(y), 0, 255), np.uint8)


def _orb_affine(a: F64, b: F64) -> F64 | None:
    """Robust start: ORB matches and a RANSAC affine fit (reference → moving coordinates,
    ``float64 (2, 3)``); ``None`` with fewer than 20 inliers."""
    orb = cv2.ORB.create(nfeatures=1500, fastThreshold=10)
    ka, da = orb.detectAndCompute(_to_u8(a), None)
    kb, db = orb.detectAndCompute(_to_u8(b), None)
    if da is None or db is None or len(ka) < 20 or len(kb) < 20:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(da, db)
    if len(matches) < 20:
        return None
    src = np.array([ka[m.queryIdx].pt for m in matches], np.float32)
    dst = np.array([kb[m.trainIdx].pt for m in matches], np.float32)
    M, inliers = cv2.estimateAffine2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.5, maxIters=4000,
        confidence=0.999, refineIters=20,
    )  # fmt: skip
    if M is None or inliers is None or int(inliers.sum()) < 20:
        return None
    return np.asarray(M, np.float64)


def register_ecc(
    reference: F64, moving: F64, iterations: int = 60, min_cc: float = 0.7
) -> F64 | None:
    """Affine motion as a ``float64 (3, 3)`` matrix mapping reference pixel coordinates to
    ``moving`` ones, between luma images ``(H, W)``: a robust start (ORB matches and a
    RANSAC affine fit on half-resolution images, or a phase-correlation shift when
    too few features match), then OpenCV ECC (G. Evangelidis and E. Psarakis, IEEE TPAMI
    30(10), 2008) on the same downsampled pair, on the pixels the start already agrees on
    (so a moving object does not pull the fit). Affine, not a homography: better conditioned on
    small or smooth images; it covers handheld shift, rotation and rolling-shutter
    shear. ``None`` when ECC does not converge (or its correlation stays under
    ``min_cc``) or the fit is not a plausible handheld motion (shift over 25 % of the
    width, zoom, shear or rotation over 20 %). What it leaves misregistered (parallax,
    local motion) is caught by :func:`temporal_reference`'s static test."""
    h, w = reference.shape
    scale = _REGISTRATION_SCALE
    small = (max(8, round(w * scale)), max(8, round(h * scale)))
    a = np.asarray(cv2.resize(reference, small, interpolation=cv2.INTER_AREA), np.float64)
    b = np.asarray(cv2.resize(moving, small, interpolation=cv2.INTER_AREA), np.float64)
    s = small[0] / w
    S = np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1]], np.float64)
    start_small = _orb_affine(a, b)
    if start_small is None:
        win = np.asarray(cv2.createHanningWindow(small, cv2.CV_32F), np.float32)
        (dx, dy), _ = cv2.phaseCorrelate(a.astype(np.float32), b.astype(np.float32), win)
        start_small = np.array([[1, 0, dx], [0, 1, dy]], np.float64)
    # ECC on the downsampled pair, only where the start already agrees (low-pass), so
    # moving things do not pull the fit; at half resolution it is accurate to ~0.1 px.
    start3 = np.vstack([start_small, [0.0, 0.0, 1.0]])
    warped, valid = warp_to_reference(b, start3)
    d = np.abs(_lowpass(warped - a, 1.0))
    dv = d[valid]
    if dv.size < MIN_PIXELS // 4:
        return None
    agree = valid & (d <= max(8.0, 4.0 * _MAD * float(np.median(dv))))
    if int(agree.sum()) < MIN_PIXELS // 4:
        return None
    mask = np.asarray(agree, np.uint8) * np.uint8(255)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    fine = _ecc_affine(a32, b32, start_small.astype(np.float32), iterations, mask)
    if fine is None or not fine[0] >= min_cc:
        return None
    H: F64 = np.linalg.inv(S) @ np.vstack([fine[1].astype(np.float64), [0.0, 0.0, 1.0]]) @ S
    lin = H[:2, :2]
    if (
        not np.all(np.isfinite(H))
        or abs(H[0, 2]) > 0.25 * w
        or abs(H[1, 2]) > 0.25 * w
        or np.abs(lin - np.eye(2)).max() > 0.2
    ):
        return None
    return H


def warp_to_reference(image: F64, H: F64) -> tuple[F64, Mask]:
    """Resample ``image`` ``(H, W)`` into the reference geometry through ``H`` (reference
    → moving coordinates, as :func:`register_ecc` returns), bilinear; ``(warped, valid)``
    with ``valid`` 1 px inside the moving frame."""
    h, w = image.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = np.asarray(cv2.warpPerspective(image, H, (w, h), flags=flags), np.float64)
    ones = np.ones((h, w), np.uint8)
    valid = cv2.warpPerspective(ones, H, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    return warped, _erode(np.asarray(valid, np.bool_), 2)


@dataclass
class TemporalReference:
    """Held-out frames registered to one frame (the *reference frame*) and averaged.

    ``mean``: ``float64 (H, W)`` luma codes, the brightness-matched mean of ``count``
    registered frames; ``mean_var``: ``float64 (H, W)``, the noise variance of ``mean``
    per pixel, measured: the sample variance of the registered frames over ``count``
    (this includes what warping's interpolation did to their noise, and their
    misregistration; NaN with fewer than 2 frames); ``static``: pixels where every frame
    is inside its warp, agrees with the reference frame after a σ = 2 px low-pass (no
    motion, no misregistration), and nothing is clipped; ``mask``: the flat part of
    ``static`` (:func:`flat_mask` of ``mean``), where the noise measures look;
    ``dropped``: indices of frames ECC could not register. ``highpass_sigma``: residuals
    and the spread are taken after removing their σ-px Gaussian low-pass (what varies
    slower than that is brightness and tone, not noise; white noise loses 1/(4πσ²) of its
    variance, 0.1 % at 8 px).
    """

    mean: F64
    mean_var: F64
    count: int
    static: Mask
    mask: Mask
    dropped: list[int]
    highpass_sigma: float = 8.0

    @property
    def usable(self) -> bool:
        return self.count >= 2 and int(self.mask.sum()) >= MIN_PIXELS

    def noise_share(self, mask: Mask | None = None) -> float:
        """The variance (codes²) the mean adds to a residual against it, over ``mask``
        (default ``self.mask``): the mean of ``mean_var`` there, values beyond 25× the
        median dropped (0.07 % of a χ² with 1 degree of freedom: outliers only)."""
        v = self.mean_var[self.mask if mask is None else mask]
        v = v[np.isfinite(v)]
        if v.size < MIN_PIXELS:
            return math.nan
        keep = v <= 25.0 * max(float(np.median(v)), 1e-6)
        return float(v[keep].mean())


def _match_brightness(y: F64, target: F64, valid: Mask) -> F64:
    """``g · y + o`` fitted to ``target`` on low-passed valid pixels (one robust refit)."""
    ly, lt = _lowpass(y, 2.0), _lowpass(target, 2.0)
    m = valid & (lt > CLIP_LOW) & (lt < CLIP_HIGH) & (ly > CLIP_LOW) & (ly < CLIP_HIGH)
    if int(m.sum()) < MIN_PIXELS:
        return y
    for _ in range(2):
        A = np.stack([ly[m], np.ones(int(m.sum()))], axis=1)
        (g, o), *_ = np.linalg.lstsq(A, lt[m], rcond=None)
        res = np.abs(lt - (g * ly + o))
        mad = float(np.median(res[m]))
        m = m & (res <= max(3.0 * _MAD * mad, 1.0))
    out: F64 = g * y + o
    return out


def temporal_reference(
    frame: U8,
    held_out: Sequence[U8],
    motion_codes: float = 3.0,
    flat_fraction: float = 0.5,
    border: int = 16,
    highpass_sigma: float = 8.0,
) -> TemporalReference:
    """Register ``held_out`` frames (same scene, not given to the method under test) to
    ``frame`` with :func:`register_ecc` and build the reference (see
    :class:`TemporalReference`). ``motion_codes``: the least low-pass disagreement (codes)
    that marks a pixel as moving (the threshold is raised to 5 robust σ of each frame's
    low-pass difference when that is larger)."""
    y0 = luma(frame)
    static = unclipped_mask(frame) & _border_mask(y0.shape, border)
    ly0 = _lowpass(y0, 2.0)
    total = np.zeros_like(y0)
    hp_total = np.zeros_like(y0)
    hp_total2 = np.zeros_like(y0)
    count, dropped = 0, []
    for i, other in enumerate(held_out):
        yi = luma(other)
        H = register_ecc(y0, yi)
        if H is None:
            dropped.append(i)
            continue
        warped, valid = warp_to_reference(yi, H)
        warped = _match_brightness(warped, y0, valid & static)
        d = _lowpass(warped, 2.0) - ly0
        dm = d[valid & static]
        if dm.size < MIN_PIXELS:
            dropped.append(i)
            continue
        med = float(np.median(dm))
        spread = _MAD * float(np.median(np.abs(dm - med)))
        static &= valid & (np.abs(d - med) <= max(motion_codes, 5.0 * spread))
        filled = np.where(valid, warped, y0 + med)  # no border step for the low-pass
        hp = filled - _lowpass(filled, highpass_sigma)
        total += filled
        hp_total += hp
        hp_total2 += hp * hp
        count += 1
    if count == 0:
        nan = np.full_like(y0, math.nan)
        empty = np.zeros_like(static)
        return TemporalReference(y0.copy(), nan, 0, empty, empty, dropped, highpass_sigma)
    mean = total / count
    if count >= 2:
        hp_mean = hp_total / count
        sample_var = np.maximum(hp_total2 - count * hp_mean * hp_mean, 0.0) / (count - 1)
        mean_var = sample_var / count
    else:
        mean_var = np.full_like(y0, math.nan)
    mask = flat_mask(mean, flat_fraction, within=static, border=border)
    return TemporalReference(mean, mean_var, count, static, mask, dropped, highpass_sigma)


def _robust_sigma(r: F64) -> float:
    """σ of residuals: MAD first, then the RMS of those within 4 MAD-σ (at least 2 codes)
    of the median (keeps the tails a Gaussian has, drops outliers; MAD alone reads 0 on
    data quantised to a few codes)."""
    med = float(np.median(r))
    s0 = _MAD * float(np.median(np.abs(r - med)))
    keep = np.abs(r - med) <= max(4.0 * s0, 2.0)
    c = r[keep] - float(r[keep].mean())
    return float(math.sqrt(float((c * c).mean())))


def temporal_residual_sigma(image: U8, ref: TemporalReference, mask: Mask | None = None) -> float:
    """Robust σ (codes of luma) of ``luma(image) - ref.mean``, high-passed (its
    ``ref.highpass_sigma`` low-pass removed), over ``mask`` (default ``ref.mask``, the
    static flat pixels). ``image`` must be in
    the reference frame's geometry. For noise independent of the held-out frames' it is
    ``sqrt(σ_image² + ref.noise_share(mask))``. NaN when unusable."""
    m = ref.mask if mask is None else mask
    if not ref.usable or int(m.sum()) < MIN_PIXELS:
        return math.nan
    d = luma(image) - ref.mean
    r = (d - _lowpass(d, ref.highpass_sigma))[m]
    return _robust_sigma(r)


def temporal_noise(image: U8, ref: TemporalReference, mask: Mask | None = None) -> float:
    """Noise σ (codes of luma) of ``image`` over ``mask`` (default ``ref.mask``):
    ``sqrt(max(0, residual² - ref.noise_share(mask)))``. Unbiased for any image whose noise
    is independent of the held-out frames' (the method under test never saw them), e.g.
    the selected frame, the pipeline's output, a baseline fused from the same burst."""
    resid = temporal_residual_sigma(image, ref, mask)
    share = ref.noise_share(mask)
    if not (math.isfinite(resid) and math.isfinite(share)):
        return math.nan
    return math.sqrt(max(0.0, resid**2 - share))


def texture_window(image: U8, side: int, valid: Mask | None = None) -> tuple[int, int]:
    """Top-left ``(row, col)`` of the ``side × side`` window with the most gradient energy
    (Sobel on luma), inside ``valid`` when given; for 100 % crops at detail."""
    y = luma(image)
    h, w = y.shape
    if h < side or w < side:
        return 0, 0
    gx = cv2.Sobel(y, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_64F, 0, 1, ksize=3)
    e = np.minimum(gx * gx + gy * gy, 48.0**2)  # many moderate edges beat one hard edge
    if valid is not None:
        e = np.where(valid, e, 0.0)
    ii = cv2.integral(e)
    s = ii[side:, side:] - ii[:-side, side:] - ii[side:, :-side] + ii[:-side, :-side]
    margin = 8
    s[:margin, :] = s[-margin:, :] = -1.0
    s[:, :margin] = s[:, -margin:] = -1.0
    r, c = np.unravel_index(int(np.argmax(s)), s.shape)
    return int(r), int(c)
