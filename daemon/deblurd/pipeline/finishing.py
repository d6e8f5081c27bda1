"""Stage 5: finishing — optional unsharp-mask sharpening before the last U-Net pass.

Unsharp mask in linear light, per channel::

    detail = x − G_σ * x
    out    = clip(x + amount · m · detail, 0, 1)

``m = 1`` for the plain mask. *Noise-aware* (a noise level is given): ``m`` is a per-pixel
gain in [0, 1] from the local detail energy against what noise alone would give::

    E  = G_2σ * mean_c detail²              (local detail energy)
    N  = σ_n²(I) · h                        (noise energy of ``detail``; h = Σ (δ − g)²,
                                             the high-pass's white-noise power gain)
    m  = smoothstep((E / N − 2) / 2)        (0 while E < 2N, 1 from E ≥ 4N)

so flat areas, where the "detail" is noise, are left alone and edges and texture get
the full gain. ``σ_n`` may be one std, a :class:`~deblurd.pipeline.noise.NoiseModel` (at
the local intensity) or a per-pixel map — after fusion the noise is lower where many
frames were averaged than where only the reference counted
(:meth:`deblurd.pipeline.fusion.FusionResult.residual_noise_sigma`).
"""

from __future__ import annotations

import math
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F32
from deblurd.pipeline.noise import NoiseModel, estimate_noise_model
from deblurd.settings.fusion import FinishingSettings

NoiseSpec = float | NoiseModel | npt.NDArray[np.floating] | None


_MEAN3 = np.full((1, 3), 1.0 / 3.0, np.float32)


def _f32(arr: object) -> F32:
    """An OpenCV result typed as the float32 array it is (no copy)."""
    return cast(F32, arr)


def _ksize(sigma: float) -> int:
    return 2 * math.ceil(3.0 * sigma) + 1


def _highpass_gain(sigma: float) -> float:
    """White-noise power gain of ``x − G_σ * x`` in 2-D: ``Σ (δ − g)²``."""
    k1 = cv2.getGaussianKernel(_ksize(sigma), sigma).astype(np.float64)
    g = k1 @ k1.T
    g = -g
    c = g.shape[0] // 2
    g[c, c] += 1.0
    return float(np.sum(g * g))


def _noise_variance(noise: NoiseModel | float | npt.NDArray[np.floating], level: F32) -> F32:
    """Noise variance per pixel, ``float32 (H, W)``, for the local intensity ``level``."""
    if isinstance(noise, NoiseModel):
        return noise.variance(level)
    if isinstance(noise, np.ndarray):
        sig = np.asarray(noise, dtype=np.float32)
        if sig.shape != level.shape:
            raise ImageError(f"noise map shape {sig.shape}, expected {level.shape}")
        var: F32 = sig * sig
        return var
    s = float(noise)
    if not math.isfinite(s) or s < 0.0:
        raise ImageError(f"noise sigma must be finite and >= 0, got {s}")
    return np.full(level.shape, s * s, np.float32)


def sharpen(
    image: npt.NDArray[np.floating],
    amount: float,
    sigma_px: float,
    noise_sigma: NoiseSpec = None,
) -> F32:
    """Unsharp mask of a linear image ``float32 (H, W, 3)`` (or ``(H, W)``).

    ``amount``: gain (>= 0; 0 returns ``image`` itself, unchanged). ``sigma_px``: std of
    the Gaussian blur, pixels. ``noise_sigma``: None = plain unsharp mask; else the
    image's noise (std in linear units, a NoiseModel, or a per-pixel std map
    ``(H, W)``) and only detail above it is sharpened. Result clipped to [0, 1].
    """
    if not math.isfinite(amount) or amount < 0.0:
        raise ImageError(f"sharpen amount must be finite and >= 0, got {amount}")
    if amount == 0.0:
        return cast(F32, image)
    if not math.isfinite(sigma_px) or sigma_px <= 0.0:
        raise ImageError(f"sharpen sigma must be > 0 px, got {sigma_px}")
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ImageError(f"expected an (H, W, 3) or (H, W) image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageError(f"expected a linear float image, got {arr.dtype}")
    x: F32 = np.ascontiguousarray(arr, dtype=np.float32)
    k = _ksize(sigma_px)
    blurred = _f32(cv2.GaussianBlur(x, (k, k), sigma_px, borderType=cv2.BORDER_REFLECT))
    detail = _f32(cv2.subtract(x, blurred))
    if noise_sigma is None:
        detail *= np.float32(amount)
    else:
        sq = _f32(cv2.multiply(detail, detail))
        level = blurred
        if x.ndim == 3:
            sq = _f32(cv2.transform(sq, _MEAN3))
            level = _f32(cv2.transform(blurred, _MEAN3))
        se = 2.0 * sigma_px
        ke = _ksize(se)
        energy = _f32(cv2.GaussianBlur(sq, (ke, ke), se, borderType=cv2.BORDER_REFLECT))
        noise_energy = _noise_variance(noise_sigma, level) * np.float32(_highpass_gain(sigma_px))
        ratio = energy / np.maximum(noise_energy, np.float32(1e-12))
        t = np.clip((ratio - np.float32(2.0)) * np.float32(0.5), 0.0, 1.0)
        gain = (t * t * (np.float32(3.0) - np.float32(2.0) * t)) * np.float32(amount)
        if x.ndim == 3:
            detail *= gain[..., None]
        else:
            detail *= gain
    out: F32 = np.clip(x + detail, 0.0, 1.0)
    return out


def finish(
    image: npt.NDArray[np.floating],
    settings: FinishingSettings,
    noise_sigma: NoiseSpec = None,
) -> F32:
    """Stage 5 before the last U-Net pass: sharpening per ``settings``.

    ``image``: linear ``float32 (H, W, 3)``. ``noise_sigma``: its noise (see
    :func:`sharpen`); with ``settings.sharpen_noise_aware`` and None, the noise level
    function is estimated from the image itself. Amount 0 returns ``image`` unchanged.
    """
    if settings.sharpen_amount == 0.0:
        return cast(F32, image)
    noise: NoiseSpec = None
    if settings.sharpen_noise_aware:
        noise = noise_sigma if noise_sigma is not None else estimate_noise_model(image)
    return sharpen(image, settings.sharpen_amount, settings.sharpen_sigma_px, noise)
