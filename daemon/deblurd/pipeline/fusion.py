"""Stage 4b: fuse registered second frames with the reference (the raw selected frame).

Inputs are already aligned (stage 4a warps every second frame into the reference's
geometry). Everything here is linear light, ``float32 (H, W, 3)``.

Two ways to merge, one result
-----------------------------
* *sequential* (:func:`fuse_sequential`, :class:`SequentialFuser`): a running weighted
  average. The i-th frame has weight 1 against weight i−1 for the fused result so far;
  with per-pixel weights ``w_i`` that generalises to
  ``fused ← (W·fused + w_i·x_i) / (W + w_i)``, ``W ← W + w_i``. Frames can be streamed:
  memory is O(one frame).
* *to reference* (:func:`fuse_to_reference`): ``fused = (w_ref·ref + Σ w_i·x_i) / (w_ref + Σ w_i)``.

The per-pixel weights are always measured against the *reference* (never against the
running result), so both modes give the same image for the same frames whatever their
order (pinned by a test); the modes differ only in how the data flows.

Per-pixel weights (``settings.robust``)
---------------------------------------
With ``δ = x − ref`` (per channel), ``V_c(I) = σ²_frame(I) + σ²_ref(I)`` the variance of δ
under "same scene, only noise" from the noise level function at the reference's local
intensity ``I`` (see :mod:`deblurd.pipeline.noise`; the reference is taken to be as
noisy as a frame), on a half-resolution grid:

* **motion test** (low frequencies, where noise is weak and a moving subject is not):
  ``L = G_s * (δ downsampled 2×2)``; ``z² = mean_c L_c² / (g·V_c)`` with ``g`` the noise
  power gain of that low-pass (exact, from its kernel), so ``E[z²] = 1`` on static pixels.
  ``w_motion = T(z; k, 2k)``, ``k = robust_k``. Comparing low-passed values keeps the
  reference's own noise from rejecting everything, while a subject that moved by more
  than its blur differs by many stds.
* **detail test** (``detail_guard``; all frequencies, the blur guard): ``E = box5 * (δ²
  downsampled 2×2)`` is the local mean squared difference (10×10 pixels × 3 channels);
  ``e = mean_c E_c / box5 * V_c − 1`` is the energy that noise does not explain. A frame
  blurrier than the reference (or slightly misregistered, or softened by the warp's
  interpolation) differs at edges and texture, so ``w_detail = T(e; t, 3t)``,
  ``t = detail_tolerance``. Flat areas, where blur does not matter, keep full weight
  and are still averaged: the guard is per pixel, not per frame.
* ``T(s; lo, hi) = (1 − u²)²`` with ``u = clip((s − lo)/(hi − lo), 0, 1)``: a flat top
  (static pixels get weight exactly 1, so noise falls as 1/sqrt(N)) and a smooth
  Tukey-style fall to exactly 0 (a rejected ghost contributes nothing).
* ``w = upsample(G_smooth * minfilter_grow(w_motion · w_detail)) · valid · frame.weight``:
  the min filter grows rejected areas over the ghost's soft edge, the blur removes speckle.
* **noise calibration** (``calibrate_noise``, :class:`NoiseCalibration`): the noise as
  the burst itself shows it. Per frame and luma bin, the robust spread (MAD around the
  median) of the low-passed differences over the flattest unclipped samples, in model
  stds, scales ``V`` of the motion test: down where the frame shows less noise than the
  model (a denoised reference, a generous σ), up where it shows clearly more
  (ISP-processed and compressed frames, whose spatially measured noise collapses),
  capped at a multiple of the least factor an earlier frame of the job measured (a
  mostly moving frame cannot loosen its own test). With ``calibrate_detail`` the detail
  test gets its own factor, measured at full resolution and widened by the spread of its
  ratios (correlated noise has fewer independent samples). The model never goes below
  the floor of quantisation and compression (:func:`floor_variance`). The CPU guide and
  the GPU fuser share this code and apply the same numbers.

The frame-level ``AlignedFrame.weight`` (e.g. from sharpness) multiplies everything, so
a caller can down-weight or drop a blurry frame outright; the detail test is the
per-pixel guard on top. With ``robust`` off: ``w = valid · frame.weight``.

Frames whose brightness differs (another exposure) are first scaled per channel to the
reference by the median ratio of low-passed values (``match_exposure``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F32, Mask, linear_to_srgb_float
from deblurd.pipeline.accumulation import fourier_accumulate
from deblurd.pipeline.noise import (
    MAD_TO_SIGMA,
    NoiseModel,
    estimate_noise_model,
    estimate_noise_sigma,
)
from deblurd.settings.fusion import FusionSettings

__all__ = [
    "AlignedFrame",
    "FusionResult",
    "NoiseCalibration",
    "ReferenceFuser",
    "ReferenceGuide",
    "SequentialFuser",
    "as_linear_rgb",
    "check_aligned_frame",
    "exposure_gains_from_samples",
    "exposure_sample_step",
    "floor_variance",
    "fuse",
    "fuse_sequential",
    "fuse_to_reference",
    "gaussian_ksize",
    "resolve_noise",
]

#: Exposure matching: ignore brightness ratios closer to 1 than this.
_EXPOSURE_TOLERANCE = 0.005
#: Exposure matching: only reference intensities in this range vote (no noise floor,
#: no clipping).
_EXPOSURE_RANGE = (0.02, 0.9)
#: Exposure matching: at most about this many low-passed pixels are sampled.
_EXPOSURE_MAX_SAMPLES = 50_000
#: Detail test: side of the box (half-resolution cells) over which the squared
#: differences are averaged: 5×5 cells = 10×10 pixels × 3 channels = 300 samples, so the
#: energy ratio is known to ±8 % (1 std) on static pixels.
_DETAIL_BOX = 5
#: Noise calibration: samples on the sparse grid, luma bins at most, samples per bin at
#: least, the median of χ²₁, the flattest fraction of a bin that votes, the smallest
#: variance factor, and the measured factor from which on the model is left alone.
_CALIB_SAMPLES = 60_000
_CALIB_BINS = 8
_CALIB_MIN_BIN = 1_000
#: Noise calibration: the std of the high-pass that removes smooth (systematic)
#: differences from the calibration samples, full-resolution px.
_CALIB_SMOOTH_PX = 32.0
#: Std of the detail test's energy ratio on static pixels with white noise: a mean of
#: 300 squared Gaussians (10×10 px × 3 channels) has a relative std of sqrt(2/300).
_WHITE_RATIO_SPREAD = math.sqrt(2.0 / (4 * _DETAIL_BOX * _DETAIL_BOX * 3))
_CALIB_FLAT_FRACTION = 0.3
_CALIB_MIN = 1.0 / 16.0
_CALIB_DEAD_ZONE = 0.8
#: Loosening (the noise is *measured* from the burst): a bin's variance is raised only
#: where the frame's flat static majority shows at least this many times the model's
#: (a spatial estimate collapses on ISP-denoised, compressed frames: their noise is
#: spatially correlated, so its low-pass power is far above what white noise predicts),
#: at most by ``_CALIB_MAX``, and never beyond ``_CALIB_CONSENSUS`` times the least
#: factor an earlier frame of the job measured in that bin (a frame that is mostly motion
#: cannot loosen the tests for itself once a static frame has shown the real noise).
_CALIB_LOOSEN_FROM = 2.0
_CALIB_MAX = 65536.0
_CALIB_CONSENSUS = 2.0
#: Floor of one frame's noise std, in 8-bit sRGB codes (quantisation, 0.29 codes, plus
#: the error of compression and ISP rounding): no model may claim less.
_FLOOR_CODES = 0.5


@dataclass(frozen=True)
class AlignedFrame:
    """A second frame warped into the reference's geometry.

    ``image``: ``float32 (H, W, 3)`` linear light, finite everywhere (what the warp puts
    outside its data does not matter as long as it is finite).
    ``valid``: ``float32 (H, W)`` in [0, 1], 1 where the warp had data.
    ``weight``: frame-level weight (e.g. from sharpness), >= 0; 0 drops the frame.
    """

    image: F32
    valid: F32
    weight: float = 1.0


@dataclass
class FusionResult:
    """The fused image and what went into it.

    ``image``: ``float32 (H, W, 3)`` linear light.
    ``weight_sum``: ``float32 (H, W)``, total weight per pixel including the reference's
    (reference_weight + Σ per-pixel weights × frame weights); for equal-noise frames the
    fused noise std is about ``σ_frame / sqrt(weight_sum)``.
    ``frame_weights``: per aligned frame, in input order, the mean per-pixel weight it got
    (robust weight × valid, in [0, 1], before its frame-level weight).
    ``noise_model``: the per-frame noise model the robust weights used (None when off).
    ``noise_factor``: how many times the model's variance the burst's own differences
    showed (:class:`NoiseCalibration`: the median over luma bins of the least factor any
    frame measured; 1.0 when not measured). ``frame_noise_sigma``: one frame's noise std
    at the reference's median intensity, linear units, as measured (model × factor; NaN
    when unknown).
    """

    image: F32
    weight_sum: F32
    frame_weights: list[float]
    noise_model: NoiseModel | None = field(default=None)
    noise_factor: float = 1.0
    frame_noise_sigma: float = math.nan

    def residual_noise_sigma(self, noise: NoiseModel | None = None) -> F32 | None:
        """Expected noise std left in ``image`` per pixel, ``float32 (H, W)``, or None.

        ``σ_frame(I) / sqrt(weight_sum)`` at the pixel's mean intensity, for frames of
        equal noise (``noise`` or this result's ``noise_model``; None if neither). Exact
        for weights 0/1, a slight underestimate for partial weights. Feeds the
        noise-aware sharpening of stage 5.
        """
        model = noise if noise is not None else self.noise_model
        if model is None:
            return None
        level = _mean3(self.image)
        var = np.maximum(model.variance(level), floor_variance(level)) * np.float32(
            self.noise_factor
        )
        sigma: F32 = np.sqrt(var / np.maximum(self.weight_sum, 1e-6))
        return sigma.astype(np.float32)


def as_linear_rgb(image: npt.NDArray[np.generic], what: str) -> F32:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ImageError(f"{what}: expected a (H, W, 3) image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageError(f"{what}: expected linear float32, got {arr.dtype}")
    out: F32 = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def check_aligned_frame(frame: AlignedFrame, shape: tuple[int, ...], index: int) -> tuple[F32, F32]:
    what = f"aligned frame {index}"
    image = as_linear_rgb(frame.image, what)
    if image.shape != shape:
        raise ImageError(f"{what}: shape {image.shape} differs from the reference's {shape}")
    valid = np.asarray(frame.valid)
    if valid.shape != shape[:2]:
        raise ImageError(f"{what}: valid mask shape {valid.shape}, expected {shape[:2]}")
    if not math.isfinite(frame.weight) or frame.weight < 0.0:
        raise ImageError(f"{what}: frame weight must be finite and >= 0, got {frame.weight}")
    if valid.dtype == np.float32 and valid.flags.c_contiguous:
        lo, hi = float(valid.min()), float(valid.max())
        if lo >= 0.0 and hi <= 1.0:
            return image, valid
    valid32: F32 = np.ascontiguousarray(np.clip(valid, 0.0, 1.0), dtype=np.float32)
    return image, valid32


def gaussian_ksize(sigma: float) -> int:
    """Side of the Gaussian kernel of std ``sigma`` px both backends use (±3σ, odd)."""
    return 2 * math.ceil(3.0 * sigma) + 1


def exposure_sample_step(h: int, w: int) -> int:
    """Stride of the grid on which exposure matching samples an ``(h, w)`` low-pass."""
    return max(1, math.isqrt(h * w // _EXPOSURE_MAX_SAMPLES))


def exposure_gains_from_samples(ref_s: F32, x_s: F32, ok: Mask) -> F32 | None:
    """Per-channel factor bringing a frame to the reference's brightness, or None, from
    sampled low-passed values ``(h', w', 3)`` of both and the samples' validity ``ok``
    ``(h', w')``: the median of ``ref / frame`` over valid unclipped samples; None when
    all three factors are within 0.5 % of 1 (or a channel has too few samples)."""
    lo, hi = _EXPOSURE_RANGE
    gains = np.ones(3, np.float32)
    for c in range(3):
        r, x = ref_s[..., c], x_s[..., c]
        sel = ok & (r > lo) & (r < hi) & (x > lo * 0.5)
        if int(np.count_nonzero(sel)) < 64:
            return None
        gains[c] = float(np.median(r[sel] / x[sel]))
    if np.all(np.abs(gains - 1.0) <= _EXPOSURE_TOLERANCE):
        return None
    return gains


def _flat_top(stat: F32, lo: float, hi: float) -> F32:
    """``(1 − u²)²``, ``u = clip((stat − lo)/(hi − lo), 0, 1)``: 1 up to lo, 0 from hi."""
    u: F32 = np.clip((stat - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0.0, 1.0)
    u *= u
    np.subtract(np.float32(1.0), u, out=u)
    u *= u
    return u


class ReferenceGuide:
    """What every frame is compared with: the reference and its half-resolution statistics."""

    def __init__(self, reference: F32, settings: FusionSettings, noise: NoiseModel) -> None:
        self.settings = settings
        self.image = reference
        h, w = reference.shape[:2]
        self.full_size = (w, h)
        self.scale = 2 if min(h, w) >= 8 else 1
        self.half_size = ((w + self.scale - 1) // self.scale, (h + self.scale - 1) // self.scale)
        self.guide_sigma = settings.guide_sigma_px / self.scale
        self.guide_ksize = gaussian_ksize(self.guide_sigma)
        self.smooth_sigma = settings.weight_smooth_px / self.scale
        grow = math.ceil(settings.reject_grow_px / self.scale)
        self.grow_kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8) if grow > 0 else None
        self.lo = self._lowpass(reference)
        # Full-size work buffers, reused frame after frame: fresh 20 MB arrays cost more in
        # page faults than the arithmetic done in them.
        # ``scratch`` is the caller's once frame_weights has returned.
        self._buf_delta = np.empty_like(reference)
        self._buf_w = np.empty(reference.shape[:2], np.float32)
        self.scratch: F32 = np.empty_like(reference)
        # Variance of δ = frame − reference on static pixels, per channel, at the local
        # intensity: one frame's noise plus the reference's (same model: the reference is
        # assumed no noisier than a raw frame; if it is less noisy, calibration tightens).
        var1 = np.maximum(noise.variance(self.lo), floor_variance(self.lo))
        var = var1 * np.float32(2.0)
        self.inv_var_lo: F32 = (1.0 / (var * np.float32(self._lowpass_gain()))).astype(np.float32)
        # The detail test's expected energy: the variance averaged over the same box as the
        # squared differences (the box is wider than the guide's low-pass; at an edge
        # between dark and bright the noise of both sides is in the box).
        box = (_DETAIL_BOX, _DETAIL_BOX)
        var_box = _f32(cv2.boxFilter(var, -1, box, borderType=cv2.BORDER_REFLECT))
        self.inv_var_box: F32 = (1.0 / var_box).astype(np.float32)
        # Noise calibration: equal-count bins of the reference's low-passed luma on a
        # sparse grid; each frame's static majority says how far the model is off per bin.
        # Only samples whose every channel is clear of black and white clipping vote
        # (clipping removes noise, and would make the model look too high elsewhere).
        self.luma_lo = _mean3(self.lo)
        n_half = self.luma_lo.size
        self.calib_step = max(1, math.isqrt(n_half // _CALIB_SAMPLES))
        st = self.calib_step
        lo_s = self.lo[::st, ::st].reshape(-1, 3)
        sig_s = np.sqrt(var1[::st, ::st].reshape(-1, 3))
        usable = np.all((lo_s > 2.5 * sig_s) & (lo_s < 0.95), axis=1)
        lum_s = self.luma_lo[::st, ::st].reshape(-1)
        gx = _f32(cv2.Sobel(self.luma_lo, cv2.CV_32F, 1, 0, ksize=3))
        gy = _f32(cv2.Sobel(self.luma_lo, cv2.CV_32F, 0, 1, ksize=3))
        texture = (gx * gx + gy * gy)[::st, ::st].reshape(-1)
        candidates = np.flatnonzero(usable)
        n_bins = int(np.clip(candidates.size // _CALIB_MIN_BIN, 0, _CALIB_BINS))
        order = candidates[np.argsort(lum_s[candidates], kind="stable")]
        self.calib_chunks: list[npt.NDArray[np.intp]] = []
        levels: list[float] = []
        for chunk in np.array_split(order, n_bins) if n_bins > 0 else []:
            # the flattest part of the bin: blur and small misregistration leave it alone,
            # a wrong noise level does not
            flat = chunk[np.argsort(texture[chunk], kind="stable")]
            self.calib_chunks.append(flat[: max(1, int(flat.size * _CALIB_FLAT_FRACTION))])
            levels.append(float(lum_s[chunk].mean()))
        self.calib_levels = np.array(levels)
        # per bin, the least factor that keeps the model at or above the floor (the
        # calibration may tighten a generous model, never below half a code)
        lv = self.calib_levels.astype(np.float32)
        floor_ratio = floor_variance(lv) / np.maximum(noise.variance(lv), floor_variance(lv))
        self.calibrator = NoiseCalibration(floor_ratio.astype(np.float64))
        #: one frame's noise variance (model, floored) at the reference's median luma
        self.model_variance_mid = float(np.median(var1[::st, ::st]))

    def measured_noise(self) -> tuple[float, float]:
        """``(factor, sigma)``: the median over luma bins of the least per-pixel variance
        factor the job's frames measured (the detail test's, full resolution; the motion
        test's where the detail test is off; 1.0 before any), and one frame's noise std
        at the reference's median intensity with it (linear units)."""
        cal = self.calibrator
        least = cal.least_centre if cal.least_centre is not None else cal.least
        if least is not None and cal.floor_ratio is not None:
            least = np.maximum(least, cal.floor_ratio)  # what the tests use: never below it
        factor = 1.0 if least is None else float(np.median(least))
        return factor, math.sqrt(self.model_variance_mid * factor)

    def _half(self, image: F32) -> F32:
        if self.scale == 1:
            return image
        return _f32(cv2.resize(image, self.half_size, interpolation=cv2.INTER_AREA))

    def _blur(self, half: F32) -> F32:
        if self.guide_sigma <= 0.0:
            return half
        k = self.guide_ksize
        return _f32(cv2.GaussianBlur(half, (k, k), self.guide_sigma))

    def _lowpass(self, image: F32) -> F32:
        return self._blur(self._half(image))

    def _lowpass_gain(self) -> float:
        """Power gain of :meth:`_lowpass` on white noise: Σ kernel² of its 2-D kernel."""
        gain = 1.0 / (self.scale * self.scale)
        if self.guide_sigma > 0.0:
            k1 = cv2.getGaussianKernel(self.guide_ksize, self.guide_sigma).astype(np.float64)
            gain *= float(np.sum(k1 * k1)) ** 2
        return gain

    def exposure_gain(self, x_lo: F32, vmask: F32 | None) -> F32 | None:
        """Per-channel factor bringing the frame to the reference's brightness, or None.

        The median of ``ref / frame`` over valid, unclipped low-passed pixels (a moving
        subject is a minority and does not move the median); None when all three factors
        are within 0.5 % of 1.
        """
        step = exposure_sample_step(x_lo.shape[0], x_lo.shape[1])
        ref_s = self.lo[::step, ::step]
        x_s = x_lo[::step, ::step]
        ok = np.ones(ref_s.shape[:2], bool) if vmask is None else vmask[::step, ::step] > 0.5
        return exposure_gains_from_samples(ref_s, x_s, ok)

    def signed_samples(self, d_lo_sparse: F32) -> F32:
        """The calibration grid's low-passed differences ``(h', w', 3)`` in model stds,
        with what varies slowly across the frame removed (a Gaussian high-pass of
        ``_CALIB_SMOOTH_PX`` full-resolution px: brightness and shading differences are
        smooth, noise is not), flattened to ``(n, 3)``."""
        st = self.calib_step
        z = np.ascontiguousarray(d_lo_sparse * np.sqrt(self.inv_var_lo[::st, ::st]))
        sigma = _CALIB_SMOOTH_PX / (self.scale * st)
        k = gaussian_ksize(sigma)
        z -= _f32(cv2.GaussianBlur(z, (k, k), sigma, borderType=cv2.BORDER_REFLECT))
        out: F32 = z.reshape(-1, 3)
        return out

    def detail_calibration(self, ratio: F32, vmask: F32 | None) -> F32 | None:
        """The detail test's per-pixel factor from ``ratio`` ``(h, w)`` (local energy over
        the model's), as :meth:`calibration` (:meth:`NoiseCalibration.detail_factors`)."""
        st = self.calib_step
        samples = ratio[::st, ::st].reshape(-1)
        ok = None if vmask is None else vmask[::st, ::st].reshape(-1) > 0.5
        factors = self.calibrator.detail_factors(
            samples, self.calib_chunks, ok, self.settings.detail_tolerance
        )
        return None if factors is None else self._per_pixel(factors)

    def _per_pixel(self, factors: npt.NDArray[np.float64]) -> F32:
        if factors.size == 1:
            return np.full(self.luma_lo.shape, factors[0], np.float32)
        return np.interp(self.luma_lo, self.calib_levels, factors).astype(np.float32)

    def calibration(self, d_lo: F32, vmask: F32 | None) -> F32 | None:
        """Per-pixel factor on the model's variance, measured from this frame's static
        majority (:class:`NoiseCalibration`); None when nothing changes.

        ``d_lo``: ``(h, w, 3)`` the frame's low-passed differences to the reference. The
        factor is linear in luma between bin centres.
        """
        st = self.calib_step
        zs = self.signed_samples(d_lo[::st, ::st])
        ok = None if vmask is None else vmask[::st, ::st].reshape(-1) > 0.5
        factors = self.calibrator.factors(zs, self.calib_chunks, ok)
        return None if factors is None else self._per_pixel(factors)

    def _valid_mask(self, valid: F32) -> F32 | None:
        """Half-resolution 0/1 mask of fully valid cells, or None where all is valid."""
        if valid.min() >= 1.0:
            return None
        return (self._half(valid) >= np.float32(0.999)).astype(np.float32)

    def _differences(self, image: F32, vmask: F32 | None) -> tuple[F32, F32]:
        """``δ = image − reference`` at full resolution, and its half-res low-pass.

        Cells without warp data get δ = 0 in the low-pass (what lies outside the warp's
        data never "moves"; its weight is zeroed by ``valid`` anyway).
        """
        delta = _f32(cv2.subtract(image, self.image, dst=self._buf_delta))
        d_half = self._half(delta)
        if vmask is not None:
            d_half *= vmask[..., None]
        return delta, self._blur(d_half)

    def frame_weights(self, image: F32, valid: F32) -> tuple[F32, F32]:
        """Per-pixel weight of one aligned frame, ``float32 (H, W)`` in [0, 1] (incl. valid).

        Returns ``(image, weight)``: the image is the input, or an exposure-matched copy;
        the weight lives in a buffer of this guide, valid until the next call.
        """
        s = self.settings
        if not (s.robust or s.match_exposure):
            np.copyto(self._buf_w, valid)
            return image, self._buf_w
        vmask = self._valid_mask(valid)
        delta, d_lo = self._differences(image, vmask)
        if s.match_exposure:
            gains = self.exposure_gain(d_lo + self.lo, vmask)
            if gains is not None:
                image = (image * gains).astype(np.float32)
                delta, d_lo = self._differences(image, vmask)
        if not s.robust:
            np.copyto(self._buf_w, valid)
            return image, self._buf_w
        q = _f32(cv2.multiply(_f32(cv2.multiply(d_lo, d_lo)), self.inv_var_lo))
        factor = self.calibration(d_lo, vmask) if s.calibrate_noise else None
        z2 = _mean3(q)
        if factor is not None:
            z2 /= factor
        w = _flat_top(np.sqrt(z2), s.robust_k, 2.0 * s.robust_k)
        if s.detail_guard:
            energy = self._half(_f32(cv2.multiply(delta, delta, dst=self.scratch)))
            if vmask is not None:
                energy *= vmask[..., None]
            box = (_DETAIL_BOX, _DETAIL_BOX)
            energy = _f32(cv2.boxFilter(energy, -1, box, borderType=cv2.BORDER_REFLECT))
            ratio = _mean3(_f32(cv2.multiply(energy, self.inv_var_box)))
            detail = (
                self.detail_calibration(ratio, vmask)
                if s.calibrate_noise and s.calibrate_detail
                else factor
            )
            if detail is not None:
                ratio /= detail
            w *= _flat_top(ratio - np.float32(1.0), s.detail_tolerance, 3.0 * s.detail_tolerance)
        if self.grow_kernel is not None:
            w = _f32(cv2.erode(w, self.grow_kernel, borderType=cv2.BORDER_REPLICATE))
        if self.smooth_sigma > 0.0:
            k = gaussian_ksize(self.smooth_sigma)
            w = _f32(cv2.GaussianBlur(w, (k, k), self.smooth_sigma))
        if self.scale != 1:
            w = _f32(cv2.resize(w, self.full_size, dst=self._buf_w, interpolation=cv2.INTER_LINEAR))
        w *= valid
        return image, w


def floor_variance(linear: F32) -> F32:
    """The least noise variance one 8-bit frame can have at each linear intensity
    (``float32``, ``linear``'s shape): ``_FLOOR_CODES`` sRGB codes, taken to linear units
    through the slope of the sRGB decoding at that intensity."""
    enc = linear_to_srgb_float(linear)
    slope = np.where(
        enc <= 0.04045, 1.0 / 12.92, 2.4 / 1.055 * np.power((enc + 0.055) / 1.055, 1.4)
    )
    step = slope * np.float32(_FLOOR_CODES / 255.0)
    return np.asarray(step * step, np.float32)


class NoiseCalibration:
    """The noise as the burst shows it: per luma bin, how far the model's variance is off.

    For each frame, per bin, over the flattest unclipped samples (blur and small
    misregistration leave flat areas alone; a moving subject is a minority there): ``f``
    is the mean over channels of the robust variance (``(1.4826 · MAD)²`` around the
    median) of the low-passed differences in model stds (1 on static pixels under a
    right model).
    Applied as: ``min(1, f / 0.8)`` (clipped at 1/16) where the frame shows less noise
    than the model (a denoised reference, a generous σ); ``f`` itself where it shows at
    least ``_CALIB_LOOSEN_FROM`` times more (ISP-processed frames, whose spatially
    measured noise collapses), capped at ``_CALIB_MAX`` and at ``_CALIB_CONSENSUS`` times
    the least ``f`` an earlier frame of this job measured in the bin; 1 in between. Bins
    without enough samples take the factor of the nearest measured bins.

    One instance per fusion job (it remembers the job's least factors); the CPU guide
    and the GPU fuser share it, so both apply the same numbers.
    """

    def __init__(self, floor_ratio: npt.NDArray[np.float64] | None = None) -> None:
        #: per bin, the least applied factor (the model's floor over the model)
        self.floor_ratio = floor_ratio
        self.least: npt.NDArray[np.float64] | None = None  # motion test (low-pass)
        self.least_detail: npt.NDArray[np.float64] | None = None  # detail test (full res)
        self._last_motion: npt.NDArray[np.float64] | None = None
        #: the detail test's measured centres (before widening): one frame's per-pixel
        #: noise variance over the model's, for the report
        self.least_centre: npt.NDArray[np.float64] | None = None

    def factors(
        self,
        zs: F32,
        chunks: list[npt.NDArray[np.intp]],
        ok: npt.NDArray[np.bool_] | None,
    ) -> npt.NDArray[np.float64] | None:
        """Per-bin factors of the motion test from one frame's samples ``zs`` ``(n, 3)``:
        signed low-passed differences in model stds, ``L_c / sqrt(g·V_c)`` (``chunks``:
        the bins' flattest sample indices; ``ok``: ``(n,)`` valid samples or None), or
        None when nothing changes.

        The spread is measured around the bin's median (``1.4826 · MAD``), not around 0:
        a systematic difference (brightness, a shift of shading) moves the median, not
        the spread, and must not pass for noise."""

        def spread(z: F32) -> tuple[float]:
            mad = np.median(np.abs(z - np.median(z, axis=0)), axis=0)
            return (float(np.mean((MAD_TO_SIGMA * mad) ** 2)),)

        per_bin = _per_bin(zs, chunks, ok, spread)
        measured = None if per_bin is None else per_bin[:, 0]
        self._last_motion = measured
        if measured is None:
            return None
        measured, self.least = _consensus(measured, self.least)
        return _applied(measured, self.floor_ratio)

    def detail_factors(
        self,
        ratios: F32,
        chunks: list[npt.NDArray[np.intp]],
        ok: npt.NDArray[np.bool_] | None,
        tolerance: float,
    ) -> npt.NDArray[np.float64] | None:
        """Per-bin factors of the detail test from the same frame's samples ``ratios``
        ``(n,)`` (local mean squared difference over what the model expects: 1 on static
        pixels under a right model), measured as their median, never above the motion
        test's measurement of the same frame (correlated noise keeps more of its power
        through a low-pass than white noise: the low-pass factor is the larger one; a
        brightness difference raises the energy, not the high-passed spread). Call after
        :meth:`factors`. None when nothing changes."""

        def centre_and_widened(r: F32) -> tuple[float, float]:
            # the static ratios' centre, and the centre widened by their spread:
            # correlated noise has fewer independent samples in the box, so its ratios
            # scatter more than white noise's, and the tolerance (set for white noise)
            # must scale with that
            centre = float(np.median(r))
            spread = MAD_TO_SIGMA * float(np.median(np.abs(r - centre)))
            wider = (1.0 + tolerance * spread / _WHITE_RATIO_SPREAD) / (1.0 + tolerance)
            return centre, centre * max(1.0, wider)

        both = _per_bin(ratios, chunks, ok, centre_and_widened)
        if both is None:
            return None
        centres, measured = both[:, 0], both[:, 1]
        if self._last_motion is not None:
            measured = np.minimum(measured, self._last_motion)
            centres = np.minimum(centres, self._last_motion)
        self.least_centre = (
            centres if self.least_centre is None else np.minimum(self.least_centre, centres)
        )
        measured, self.least_detail = _consensus(measured, self.least_detail)
        return _applied(measured, self.floor_ratio)


def _per_bin(
    samples: F32,
    chunks: list[npt.NDArray[np.intp]],
    ok: npt.NDArray[np.bool_] | None,
    statistic: Callable[[F32], tuple[float, ...]],
) -> npt.NDArray[np.float64] | None:
    """``statistic`` (one or more numbers) of each bin's usable samples, ``(bins, k)``;
    bins with too few samples take their nearest measured neighbours'; None when no bin
    has enough."""
    if not chunks:
        return None
    rows: list[tuple[float, ...] | None] = []
    for chunk in chunks:
        sel = chunk if ok is None else chunk[ok[chunk]]
        enough = sel.size >= _CALIB_MIN_BIN * _CALIB_FLAT_FRACTION / 2
        rows.append(statistic(samples[sel]) if enough else None)
    known = np.array([r is not None for r in rows])
    if not known.any():
        return None
    width = len(next(r for r in rows if r is not None))
    measured = np.array([r if r is not None else (np.nan,) * width for r in rows], np.float64)
    if not known.all():
        idx = np.arange(len(rows))
        for k in range(width):
            measured[:, k] = np.interp(idx, idx[known], measured[known, k])
    return measured


def _consensus(
    measured: npt.NDArray[np.float64], least: npt.NDArray[np.float64] | None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``measured`` capped at ``_CALIB_CONSENSUS`` × the job's least so far, and the new least."""
    if least is None:
        return measured, measured.copy()
    capped = np.minimum(measured, _CALIB_CONSENSUS * least)
    return capped, np.minimum(least, capped)


def _applied(
    measured: npt.NDArray[np.float64], floor_ratio: npt.NDArray[np.float64] | None
) -> npt.NDArray[np.float64] | None:
    """Measured factors as the tests apply them (see :class:`NoiseCalibration`); never
    below ``floor_ratio`` (per bin: the floor over the model, so no model is tightened
    below the floor)."""
    least = _CALIB_MIN if floor_ratio is None else np.maximum(_CALIB_MIN, floor_ratio)
    tighten = np.clip(measured / _CALIB_DEAD_ZONE, least, 1.0)
    loosen = np.minimum(measured, _CALIB_MAX)
    factors = np.where(measured >= _CALIB_LOOSEN_FROM, loosen, tighten)
    if np.all(factors == 1.0):
        return None
    return factors


def _f32(arr: object) -> F32:
    """An OpenCV result typed as the float32 array it is (no copy)."""
    return cast(F32, arr)


def _mean3(image: F32) -> F32:
    """Mean over the 3 channels, ``(H, W, 3)`` → ``(H, W)``."""
    return _f32(cv2.transform(image, _MEAN3))


_MEAN3 = np.full((1, 3), 1.0 / 3.0, np.float32)


def resolve_noise(
    reference: F32, settings: FusionSettings, noise_sigma: float | NoiseModel | None
) -> NoiseModel | None:
    if not settings.robust:
        return None
    if isinstance(noise_sigma, NoiseModel):
        return noise_sigma
    model = estimate_noise_model(reference)
    if noise_sigma is None:
        return model
    sigma = float(noise_sigma)
    if not math.isfinite(sigma) or sigma < 0.0:
        raise ImageError(f"noise sigma must be finite and >= 0, got {sigma}")
    # One number: the level as estimate_noise_sigma measures it (a pooled std over the
    # image); its dependence on intensity comes from the reference's level function.
    pooled = estimate_noise_sigma(reference)
    if pooled <= 0.0 or model.b == 0.0:
        return NoiseModel.constant(sigma)
    scale = (sigma / pooled) ** 2
    return NoiseModel(a=model.a * scale, b=model.b * scale)


class _StreamingFuser:
    """What both fusion modes share: the reference's guide (noise model, low-pass, the
    weights' statistics), the per-pixel weight sum and each frame's mean weight."""

    def __init__(
        self,
        reference: npt.NDArray[np.generic],
        settings: FusionSettings,
        noise_sigma: float | NoiseModel | None = None,
    ) -> None:
        ref = as_linear_rgb(reference, "reference")
        self._ref = ref
        self._noise = resolve_noise(ref, settings, noise_sigma)
        model = self._noise if self._noise is not None else NoiseModel.constant(1.0)
        self._guide = ReferenceGuide(ref, settings, model)
        self._wsum: F32 = np.full(ref.shape[:2], settings.reference_weight, np.float32)
        self._frame_weights: list[float] = []
        self._settings = settings
        self._keep: list[tuple[F32, F32]] | None = (
            [] if settings.accumulation == "fourier" else None
        )
        self._start(settings)

    def _start(self, settings: FusionSettings) -> None:
        """The mode's own state (called at the end of ``__init__``)."""

    def add(self, frame: AlignedFrame) -> float:
        """Merge one frame; returns the mean per-pixel weight it got (0..1)."""
        raise NotImplementedError

    def result(self) -> FusionResult:
        """The fused image so far (new arrays: adding more frames does not change it)."""
        raise NotImplementedError

    def add_all(self, frames: Iterable[AlignedFrame]) -> FusionResult:
        """Merge every frame of ``frames`` (consumed as it streams), then :meth:`result`."""
        for frame in frames:
            self.add(frame)
        return self.result()

    def _weigh(self, frame: AlignedFrame) -> tuple[F32, F32, float]:
        """``(image, w, mean)``: the frame (exposure-matched), its per-pixel weights
        ``float32 (H, W)`` times its frame weight, and their mean before that (recorded)."""
        image, valid = check_aligned_frame(frame, self._ref.shape, len(self._frame_weights))
        image, w = self._guide.frame_weights(image, valid)
        mean_w = float(w.mean())
        self._frame_weights.append(mean_w)
        if frame.weight != 1.0:
            w *= np.float32(frame.weight)
        if self._keep is not None:  # the Fourier accumulation needs every frame
            self._keep.append((image.copy(), np.minimum(w, np.float32(1.0))))
        return image, w, mean_w

    def _result(self, image: F32) -> FusionResult:
        factor, sigma = self._guide.measured_noise()
        if self._keep:
            ref = (self._ref, np.ones(self._ref.shape[:2], np.float32))
            # without the robust weights there is no noise model: the reference's own
            # spatial estimate sets the accumulation's noise floor
            floor_sigma = sigma if self._noise is not None else estimate_noise_sigma(self._ref)
            image = fourier_accumulate(
                image,
                [ref, *self._keep],
                floor_sigma,
                p=self._settings.accumulation_p,
                noise_floor=self._settings.accumulation_floor,
            )
        return FusionResult(
            image=image,
            weight_sum=self._wsum.copy(),
            frame_weights=list(self._frame_weights),
            noise_model=self._noise,
            noise_factor=factor,
            frame_noise_sigma=sigma,
        )


class SequentialFuser(_StreamingFuser):
    """Running weighted average, one aligned frame at a time (memory: O(one frame)).

    ``reference``: ``float32 (H, W, 3)`` linear. ``noise_sigma``: the noise of one raw
    frame. Best a :class:`NoiseModel` (``estimate_noise_model`` of a raw, unwarped frame);
    None estimates it from the reference (right when the reference is a raw frame; a
    denoised reference makes it too low: fewer frames averaged, never ghosts); a float
    is a pooled std as :func:`estimate_noise_sigma` gives, its intensity dependence then
    taken from the reference's level function.
    """

    def _start(self, settings: FusionSettings) -> None:
        self._fused: F32 = self._ref.copy()

    def add(self, frame: AlignedFrame) -> float:
        """Merge one frame; returns the mean per-pixel weight it got (0..1)."""
        image, w, mean_w = self._weigh(frame)
        if frame.weight == 0.0 or mean_w == 0.0:
            return mean_w
        # fused ← fused + w/(W + w) · (x − fused);  W ← W + w   (weight 1 vs i−1 when w ≡ 1)
        self._wsum += w
        ratio = np.divide(w, self._wsum, out=w)
        step = _f32(cv2.subtract(image, self._fused, dst=self._guide.scratch))
        step *= ratio[..., None]
        self._fused += step
        return mean_w

    def result(self) -> FusionResult:
        """The fused image so far (a copy: adding more frames later does not change it)."""
        return self._result(self._fused.copy())


def fuse_sequential(
    reference: npt.NDArray[np.generic],
    frames: Iterable[AlignedFrame],
    settings: FusionSettings,
    noise_sigma: float | NoiseModel | None = None,
) -> FusionResult:
    """Sequential fusion of a (possibly streamed) iterable of aligned frames.

    ``reference``: ``float32 (H, W, 3)`` linear; frames: :class:`AlignedFrame` in its
    geometry. See the module docstring for the weights and :class:`SequentialFuser` for
    ``noise_sigma``.
    """
    return SequentialFuser(reference, settings, noise_sigma).add_all(frames)


class ReferenceFuser(_StreamingFuser):
    """Fusion to the reference, one aligned frame at a time (memory: O(one frame)).

    ``(w_ref·ref + Σ w_i·x_i) / (w_ref + Σ w_i)`` per pixel: a sum, accumulated as frames
    arrive and divided in :meth:`result`. Arguments as :class:`SequentialFuser`.
    """

    def _start(self, settings: FusionSettings) -> None:
        self._acc: F32 = self._ref * np.float32(settings.reference_weight)

    def add(self, frame: AlignedFrame) -> float:
        """Merge one frame; returns the mean per-pixel weight it got (0..1)."""
        image, w, mean_w = self._weigh(frame)
        if frame.weight == 0.0:
            return mean_w
        self._wsum += w
        self._acc += np.multiply(image, w[..., None], out=self._guide.scratch)
        return mean_w

    def result(self) -> FusionResult:
        """The fused image so far (new arrays: adding more frames does not change it)."""
        return self._result(self._acc / self._wsum[..., None])


def fuse_to_reference(
    reference: npt.NDArray[np.generic],
    frames: Iterable[AlignedFrame],
    settings: FusionSettings,
    noise_sigma: float | NoiseModel | None = None,
) -> FusionResult:
    """Weighted average of the reference and all frames registered to it
    (:class:`ReferenceFuser`); same arguments as :func:`fuse_sequential`.
    """
    return ReferenceFuser(reference, settings, noise_sigma).add_all(frames)


def fuse(
    reference: npt.NDArray[np.generic],
    frames: Iterable[AlignedFrame],
    settings: FusionSettings,
    noise_sigma: float | NoiseModel | None = None,
) -> FusionResult:
    """Fuse by ``settings.mode`` ("sequential" or "reference"); both stream ``frames``."""
    if settings.mode == "sequential":
        return fuse_sequential(reference, frames, settings, noise_sigma)
    return fuse_to_reference(reference, frames, settings, noise_sigma)
