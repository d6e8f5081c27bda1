"""Stage 4c: multi-frame deblurring by Fourier burst accumulation, made robust.

Hand shake blurs the frames of a burst in different directions: a frequency that one
frame lost to its blur another often kept. Fourier Burst Accumulation (M. Delbracio and
G. Sapiro, "Removing Camera Shake via Weighted Fourier Burst Accumulation", IEEE TIP
24(11), 2015) takes each frequency mostly from the frames where it is strongest:

    F(ζ) = Σ_i w_i(ζ) F_i(ζ),   w_i(ζ) = M_i(ζ)^p / Σ_j M_j(ζ)^p

with ``M_i`` the Fourier magnitude of frame ``i`` smoothed over nearby frequencies. On its
own it ghosts where the scene moved and amplifies noise where every frame is at the noise
floor (it takes the largest *noise* there). This stage keeps its idea and fixes both:

* **motion**: each frame enters as ``w·x + (1 − w)·A``, where ``w`` is the per-pixel
  weight the robust fusion gave it and ``A`` the robust average (stage 4b): where a frame
  disagrees (a moving subject, an occlusion), it contributes the average's content, which
  carries no ghost;
* **noise**: the magnitudes are floored by the noise's own spectral level (a frame of
  per-pixel noise std σ has ``E|F|² = H·W·σ²`` for white noise): ``M' = sqrt(M² + (κ·N)²)``.
  Where every frame is at the noise floor the weights become equal and the accumulation
  is the plain average (the noise falls as 1/√n); where the signal stands above the noise,
  the sharpest frame wins that frequency;
* it works on the **luma** only (the blur is the same in all channels and the eye sees
  detail in luma); the chroma of the robust average is kept: the result is ``A`` plus the
  accumulated luma's difference from ``A``'s luma, in linear light.

The whole frame is transformed at once (a camera rotation blurs a frame nearly uniformly;
the residual flow of stage 4a already aligned what it did not). Memory: the accumulation
needs every aligned frame (the streaming fuser keeps them only when this stage is on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F32

#: Luma weights of linear RGB (Rec. 709).
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)
#: Smoothing of the magnitudes, as a fraction of the shorter side in frequency bins
#: (the paper's min(H, W) / 50).
_SMOOTH_DIVISOR = 50.0


def luma(image: F32) -> F32:
    """Linear luma ``float32 (H, W)`` of a linear RGB image ``(H, W, 3)``."""
    out: F32 = np.asarray(cv2.transform(image, _LUMA.reshape(1, 3)), np.float32).reshape(
        image.shape[:2]
    )
    return out


def fourier_accumulate(
    average: F32,
    frames: Sequence[tuple[F32, F32]],
    noise_sigma: float,
    *,
    p: float = 11.0,
    noise_floor: float = 2.0,
) -> F32:
    """The robust average ``average`` (``float32 (H, W, 3)``, linear: reference and
    frames fused by stage 4b) with its luma replaced by the Fourier accumulation of the
    reference's and the frames' luma.

    ``frames``: the reference first, then every fused frame, each as ``(image, weight)``:
    ``image`` linear ``float32 (H, W, 3)`` in the reference's geometry (exposure-matched),
    ``weight`` its per-pixel fusion weight ``float32 (H, W)`` in [0, 1] (1 for the
    reference). ``noise_sigma``: one frame's noise std (linear units). ``p``: the
    accumulation exponent (0: the plain mean; the paper's 11). ``noise_floor``: ``κ``, in
    noise spectral levels. Returns ``float32 (H, W, 3)`` (unclipped).
    """
    if not frames:
        return average
    h, w = average.shape[:2]
    if any(im.shape != average.shape or wt.shape != (h, w) for im, wt in frames):
        raise ImageError("accumulation: every frame and weight must match the average's size")
    if not (math.isfinite(noise_sigma) and noise_sigma >= 0):
        raise ImageError(f"accumulation: noise sigma {noise_sigma} must be finite and >= 0")
    base = luma(average)
    floor2 = float((noise_floor * noise_sigma) ** 2 * h * w)
    sigma = min(h, w) / _SMOOTH_DIVISOR / 2.0  # rfft2: the smoothing in half-plane bins
    spectra: list[npt.NDArray[np.complex64]] = []
    logm: list[F32] = []
    for image, weight in frames:
        y = luma(image)
        y = base + weight * (y - base)  # where the frame disagrees, the average's content
        f = np.fft.rfft2(y).astype(np.complex64)
        spectra.append(f)
        mag2 = (f.real * f.real + f.imag * f.imag).astype(np.float32)
        mag2 = np.asarray(cv2.GaussianBlur(mag2, (0, 0), max(sigma, 0.5)), np.float32)
        logm.append(0.5 * np.log(mag2 + np.float32(floor2) + np.float32(1e-30)))
    logw = np.float32(p) * np.stack(logm)
    logw -= logw.max(axis=0, keepdims=True)
    wts = np.exp(logw)
    wts /= wts.sum(axis=0, keepdims=True)
    acc = np.zeros_like(spectra[0])
    for f, wi in zip(spectra, wts, strict=True):
        acc += f * wi
    accumulated = np.fft.irfft2(acc, s=(h, w)).astype(np.float32)
    out: F32 = (average + (accumulated - base)[..., None]).astype(np.float32)
    return out
