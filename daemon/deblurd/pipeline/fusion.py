"""Stage 4b: fuse registered second frames with the reference (the deblurred first frame).

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
intensity ``I`` (see :mod:`deblurd.pipeline.noise`), on a half-resolution grid:

* **motion test** (low frequencies, where noise is weak and a moving subject is not):
  ``L = G_s * (δ downsampled 2×2)``; ``z² = mean_c L_c² / (g·V_c)`` with ``g`` the noise
  power gain of that low-pass (exact, from its kernel), so ``E[z²] = 1`` on static pixels.
  ``w_motion = T(z; k, 2k)``, ``k = robust_k``. Comparing low-passed values keeps the
  reference's own noise from rejecting everything, while a subject that moved by more
  than its blur differs by many stds.
* **detail test** (``detail_guard``; all frequencies, the blur guard): ``E = box3 * (δ²
  downsampled 2×2)`` is the local mean squared difference (36 pixels × 3 channels);
  ``e = mean_c E_c / V_c − 1`` is the energy that noise does not explain. A frame
  blurrier than the reference (or slightly misregistered) differs at edges and texture,
  so ``w_detail = T(e; t, 3t)``, ``t = detail_tolerance``. Flat areas, where blur does
  not matter, keep full weight and are still averaged.
* ``T(s; lo, hi) = (1 − u²)²`` with ``u = clip((s − lo)/(hi − lo), 0, 1)``: a flat top
  (static pixels get weight exactly 1, so noise falls as 1/sqrt(N)) and a smooth
  Tukey-style fall to exactly 0 (a rejected ghost contributes nothing).
* ``w = upsample(G_smooth * minfilter_grow(w_motion · w_detail)) · valid · frame.weight``:
  the min filter grows rejected areas over the ghost's soft edge, the blur removes speckle.

The frame-level ``AlignedFrame.weight`` (e.g. from sharpness) multiplies everything, so
a caller can down-weight or drop a blurry frame outright; the detail test is the
per-pixel guard on top. With ``robust`` off: ``w = valid · frame.weight``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.pipeline.noise import NoiseModel, estimate_noise_model
from deblurd.settings.fusion import FusionSettings

F32Image = npt.NDArray[np.float32]

#: Exposure matching: ignore brightness ratios closer to 1 than this.
_EXPOSURE_TOLERANCE = 0.005
#: Exposure matching: only reference intensities in this range vote (no noise floor,
#: no clipping).
_EXPOSURE_RANGE = (0.02, 0.9)
_EXPOSURE_MAX_SAMPLES = 100_000


@dataclass(frozen=True)
class AlignedFrame:
    """A second frame warped into the reference's geometry.

    ``image``: ``float32 (H, W, 3)`` linear light, finite everywhere (what the warp puts
    outside its data does not matter as long as it is finite).
    ``valid``: ``float32 (H, W)`` in [0, 1], 1 where the warp had data.
    ``weight``: frame-level weight (e.g. from sharpness), >= 0; 0 drops the frame.
    """

    image: F32Image
    valid: F32Image
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
    """

    image: F32Image
    weight_sum: F32Image
    frame_weights: list[float]
    noise_model: NoiseModel | None = field(default=None)

    def residual_noise_sigma(self, noise: NoiseModel | None = None) -> F32Image | None:
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
        sigma: F32Image = np.sqrt(model.variance(level) / np.maximum(self.weight_sum, 1e-6))
        return sigma.astype(np.float32)


def _as_rgb(image: npt.NDArray[np.generic], what: str) -> F32Image:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ImageError(f"{what}: expected a (H, W, 3) image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageError(f"{what}: expected linear float32, got {arr.dtype}")
    out: F32Image = np.ascontiguousarray(arr, dtype=np.float32)
    return out


def _check_frame(
    frame: AlignedFrame, shape: tuple[int, ...], index: int
) -> tuple[F32Image, F32Image]:
    what = f"aligned frame {index}"
    image = _as_rgb(frame.image, what)
    if image.shape != shape:
        raise ImageError(f"{what}: shape {image.shape} differs from the reference's {shape}")
    valid = np.asarray(frame.valid)
    if valid.shape != shape[:2]:
        raise ImageError(f"{what}: valid mask shape {valid.shape}, expected {shape[:2]}")
    if not math.isfinite(frame.weight) or frame.weight < 0.0:
        raise ImageError(f"{what}: frame weight must be finite and >= 0, got {frame.weight}")
    valid32: F32Image = np.ascontiguousarray(np.clip(valid, 0.0, 1.0), dtype=np.float32)
    return image, valid32


def _gaussian_ksize(sigma: float) -> int:
    return 2 * math.ceil(3.0 * sigma) + 1


def _flat_top(stat: F32Image, lo: float, hi: float) -> F32Image:
    """``(1 − u²)²``, ``u = clip((stat − lo)/(hi − lo), 0, 1)``: 1 up to lo, 0 from hi."""
    u = np.clip((stat - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0.0, 1.0)
    u *= u
    np.subtract(np.float32(1.0), u, out=u)
    u *= u
    return u


class _ReferenceGuide:
    """What every frame is compared with: the reference and its half-resolution statistics."""

    def __init__(self, reference: F32Image, settings: FusionSettings, noise: NoiseModel) -> None:
        self.settings = settings
        self.image = reference
        h, w = reference.shape[:2]
        self.full_size = (w, h)
        self.scale = 2 if min(h, w) >= 8 else 1
        self.half_size = ((w + self.scale - 1) // self.scale, (h + self.scale - 1) // self.scale)
        self.guide_sigma = settings.guide_sigma_px / self.scale
        self.guide_ksize = _gaussian_ksize(self.guide_sigma)
        self.smooth_sigma = settings.weight_smooth_px / self.scale
        grow = math.ceil(settings.reject_grow_px / self.scale)
        self.grow_kernel = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8) if grow > 0 else None
        self.lo = self._lowpass(reference)
        # Variance of δ = frame − reference on static pixels, per channel, at the local
        # intensity: one frame's noise plus the reference's (same model: the reference is
        # assumed no noisier than a raw frame; if it is less noisy this errs on tolerance).
        var = noise.variance(self.lo) * np.float32(2.0)
        self.inv_var: F32Image = (1.0 / var).astype(np.float32)
        self.inv_var_lo: F32Image = (self.inv_var / np.float32(self._lowpass_gain())).astype(
            np.float32
        )

    def _half(self, image: F32Image) -> F32Image:
        if self.scale == 1:
            return image
        return _f32(cv2.resize(image, self.half_size, interpolation=cv2.INTER_AREA))

    def _lowpass(self, image: F32Image) -> F32Image:
        half = self._half(image)
        if self.guide_sigma <= 0.0:
            return half
        k = self.guide_ksize
        return _f32(cv2.GaussianBlur(half, (k, k), self.guide_sigma))

    def _lowpass_gain(self) -> float:
        """Power gain of :meth:`_lowpass` on white noise: Σ kernel² of its 2-D kernel."""
        gain = 1.0 / (self.scale * self.scale)
        if self.guide_sigma > 0.0:
            k1 = cv2.getGaussianKernel(self.guide_ksize, self.guide_sigma).astype(np.float64)
            gain *= float(np.sum(k1 * k1)) ** 2
        return gain

    def exposure_gain(self, x_lo: F32Image, valid_half: F32Image) -> npt.NDArray[np.float32] | None:
        """Per-channel factor bringing the frame to the reference's brightness, or None."""
        lo, hi = _EXPOSURE_RANGE
        gains = np.ones(3, np.float32)
        for c in range(3):
            r = self.lo[..., c]
            x = x_lo[..., c]
            sel = (valid_half > 0.999) & (r > lo) & (r < hi) & (x > lo * 0.5)
            n = int(np.count_nonzero(sel))
            if n < 64:
                return None
            ratio = r[sel] / x[sel]
            if ratio.size > _EXPOSURE_MAX_SAMPLES:
                ratio = ratio[:: ratio.size // _EXPOSURE_MAX_SAMPLES]
            gains[c] = float(np.median(ratio))
        if np.all(np.abs(gains - 1.0) <= _EXPOSURE_TOLERANCE):
            return None
        return gains

    def frame_weights(self, image: F32Image, valid: F32Image) -> tuple[F32Image, F32Image]:
        """Per-pixel weight of one aligned frame, ``float32 (H, W)`` in [0, 1] (incl. valid).

        Returns ``(image, weight)``: the image is the input, or an exposure-matched copy.
        """
        s = self.settings
        if not (s.robust or s.match_exposure):
            return image, valid.copy()
        partial = bool(valid.min() < 1.0)
        delta = self._delta(image, valid, partial)
        d_lo = self._lowpass(delta)
        if s.match_exposure:
            gains = self.exposure_gain(d_lo + self.lo, self._half(valid))
            if gains is not None:
                image = (image * gains).astype(np.float32)
                delta = self._delta(image, valid, partial)
                d_lo = self._lowpass(delta)
        if not s.robust:
            return image, valid.copy()
        z2 = _mean3(_f32(cv2.multiply(_f32(cv2.multiply(d_lo, d_lo)), self.inv_var_lo)))
        w = _flat_top(np.sqrt(z2), s.robust_k, 2.0 * s.robust_k)
        if s.detail_guard:
            energy = self._half(_f32(cv2.multiply(delta, delta)))
            energy = _f32(cv2.boxFilter(energy, -1, (3, 3), borderType=cv2.BORDER_REFLECT))
            excess = _mean3(_f32(cv2.multiply(energy, self.inv_var))) - np.float32(1.0)
            w *= _flat_top(excess, s.detail_tolerance, 3.0 * s.detail_tolerance)
        if self.grow_kernel is not None:
            w = _f32(cv2.erode(w, self.grow_kernel, borderType=cv2.BORDER_REPLICATE))
        if self.smooth_sigma > 0.0:
            k = _gaussian_ksize(self.smooth_sigma)
            w = _f32(cv2.GaussianBlur(w, (k, k), self.smooth_sigma))
        if self.scale != 1:
            w = _f32(cv2.resize(w, self.full_size, interpolation=cv2.INTER_LINEAR))
        w *= valid
        return image, w

    def _delta(self, image: F32Image, valid: F32Image, partial: bool) -> F32Image:
        """``image − reference``, zero where the warp had no data (that never "moves")."""
        delta = _f32(cv2.subtract(image, self.image))
        if partial:
            delta *= valid[..., None]
        return delta


def _f32(arr: object) -> F32Image:
    """An OpenCV result typed as the float32 array it is (no copy)."""
    return cast(F32Image, arr)


def _mean3(image: F32Image) -> F32Image:
    """Mean over the 3 channels, ``(H, W, 3)`` → ``(H, W)``."""
    return _f32(cv2.transform(image, _MEAN3))


_MEAN3 = np.full((1, 3), 1.0 / 3.0, np.float32)


def _resolve_noise(
    reference: F32Image, settings: FusionSettings, noise_sigma: float | NoiseModel | None
) -> NoiseModel | None:
    if not settings.robust:
        return None
    if isinstance(noise_sigma, NoiseModel):
        return noise_sigma
    if noise_sigma is None:
        return estimate_noise_model(reference)
    return NoiseModel.constant(float(noise_sigma))


class SequentialFuser:
    """Running weighted average, one aligned frame at a time (memory: O(one frame)).

    ``reference``: ``float32 (H, W, 3)`` linear. ``noise_sigma``: the noise of one raw
    frame — a std in linear units, a :class:`NoiseModel`, or None to estimate the noise
    level function from the reference (right when the reference is a raw frame; when it
    is the denoising U-Net's output, pass the model of a raw frame).
    """

    def __init__(
        self,
        reference: npt.NDArray[np.generic],
        settings: FusionSettings,
        noise_sigma: float | NoiseModel | None = None,
    ) -> None:
        ref = _as_rgb(reference, "reference")
        self._settings = settings
        self._noise = _resolve_noise(ref, settings, noise_sigma)
        model = self._noise if self._noise is not None else NoiseModel.constant(1.0)
        self._guide = _ReferenceGuide(ref, settings, model)
        self._fused: F32Image = ref.copy()
        self._wsum: F32Image = np.full(ref.shape[:2], settings.reference_weight, np.float32)
        self._frame_weights: list[float] = []

    def add(self, frame: AlignedFrame) -> float:
        """Merge one frame; returns the mean per-pixel weight it got (0..1)."""
        image, valid = _check_frame(frame, self._fused.shape, len(self._frame_weights))
        image, w = self._guide.frame_weights(image, valid)
        mean_w = float(w.mean())
        self._frame_weights.append(mean_w)
        if frame.weight == 0.0 or mean_w == 0.0:
            return mean_w
        if frame.weight != 1.0:
            w *= np.float32(frame.weight)
        # fused ← fused + w/(W + w) · (x − fused);  W ← W + w   (weight 1 vs i−1 when w ≡ 1)
        self._wsum += w
        ratio = np.divide(w, self._wsum, dtype=np.float32)
        step = _f32(cv2.subtract(image, self._fused))
        step *= ratio[..., None]
        self._fused += step
        return mean_w

    def result(self) -> FusionResult:
        """The fused image so far (a copy: adding more frames later does not change it)."""
        return FusionResult(
            image=self._fused.copy(),
            weight_sum=self._wsum.copy(),
            frame_weights=list(self._frame_weights),
            noise_model=self._noise,
        )


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
    fuser = SequentialFuser(reference, settings, noise_sigma)
    for frame in frames:
        fuser.add(frame)
    return fuser.result()


def fuse_to_reference(
    reference: npt.NDArray[np.generic],
    frames: Sequence[AlignedFrame],
    settings: FusionSettings,
    noise_sigma: float | NoiseModel | None = None,
) -> FusionResult:
    """Weighted average of the reference and all frames registered to it.

    ``(w_ref·ref + Σ w_i·x_i) / (w_ref + Σ w_i)`` per pixel; same arguments as
    :func:`fuse_sequential`.
    """
    ref = _as_rgb(reference, "reference")
    noise = _resolve_noise(ref, settings, noise_sigma)
    guide = _ReferenceGuide(ref, settings, noise if noise is not None else NoiseModel.constant(1.0))
    acc: F32Image = ref * np.float32(settings.reference_weight)
    wsum: F32Image = np.full(ref.shape[:2], settings.reference_weight, np.float32)
    frame_weights: list[float] = []
    for index, frame in enumerate(frames):
        image, valid = _check_frame(frame, ref.shape, index)
        image, w = guide.frame_weights(image, valid)
        frame_weights.append(float(w.mean()))
        if frame.weight == 0.0:
            continue
        if frame.weight != 1.0:
            w *= np.float32(frame.weight)
        wsum += w
        acc += image * w[..., None]
    acc /= wsum[..., None]
    return FusionResult(image=acc, weight_sum=wsum, frame_weights=frame_weights, noise_model=noise)


def fuse(
    reference: npt.NDArray[np.generic],
    frames: Iterable[AlignedFrame],
    settings: FusionSettings,
    noise_sigma: float | NoiseModel | None = None,
) -> FusionResult:
    """Fuse by ``settings.mode``: "sequential" streams ``frames``; "reference" collects them."""
    if settings.mode == "sequential":
        return fuse_sequential(reference, frames, settings, noise_sigma)
    return fuse_to_reference(reference, list(frames), settings, noise_sigma)
