"""Full-reference image-quality metrics: PSNR (whole image or a region) and SSIM.

All metrics compare two 8-bit sRGB frames ``uint8 (H, W, 3)`` (or ``(H, W)``) of the same
shape, on the encoded values (no linearisation: that is how images are looked at and how
published numbers are usually computed). ``border`` crops that many pixels from every side
before measuring, because warped/registered images have unreliable borders.

* :func:`psnr`: ``10 log10(255² / MSE)`` in dB over all pixels and channels (or over the
  pixels of a boolean mask); identical images give ``inf``.
* :func:`ssim`: the SSIM index of Wang, Bovik, Sheikh & Simoncelli, "Image quality
  assessment: from error visibility to structural similarity", IEEE TIP 13(4), 2004:
  11x11 Gaussian window with σ = 1.5 px, K1 = 0.01, K2 = 0.03, L = 255, population
  (not sample) covariances, averaged over the image less the 5-px band where the window
  leaves it. By default on **luma** ``Y = 0.299 R + 0.587 G + 0.114 B`` (Rec. 601, the
  same weights as :func:`deblurd.imaging.to_gray`, kept as float, not re-quantised);
  ``channels="rgb"`` gives the mean of the three per-channel SSIMs instead. Equal to
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)`` on the same input (tests check this;
  scikit-image is not a run-time dependency).
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F64, U8, Mask

PEAK = 255.0
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)  # scipy/skimage truncate = 3.5 → 5 px, window 11
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def _check_pair(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> None:
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ImageError(f"metrics compare uint8 images, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise ImageError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ImageError(f"expected (H, W) or (H, W, 3) images, got shape {a.shape}")


def crop_border(image: npt.NDArray[np.generic], border: int) -> npt.NDArray[np.generic]:
    """``image[border:-border, border:-border]`` (a view); ``border = 0`` returns it whole.

    Raises :class:`ImageError` when nothing would be left.
    """
    if border < 0:
        raise ImageError(f"border must be >= 0, got {border}")
    if border == 0:
        return image
    h, w = image.shape[:2]
    if h <= 2 * border or w <= 2 * border:
        raise ImageError(f"a {border}-px border leaves nothing of a {w}x{h} image")
    return image[border : h - border, border : w - border]


def mse(a: U8, b: U8, mask: Mask | None = None, border: int = 0) -> float:
    """Mean squared error in 8-bit code values², over all channels of the (masked) pixels.

    ``mask``: boolean ``(H, W)``, the pixels to measure (e.g. a moving subject); it is
    cropped with the images. An empty (cropped) mask raises :class:`ImageError`.
    """
    _check_pair(a, b)
    x = crop_border(a, border).astype(np.float64)
    y = crop_border(b, border).astype(np.float64)
    diff2 = (x - y) ** 2
    if mask is None:
        return float(diff2.mean())
    full = np.asarray(mask)
    if full.shape != a.shape[:2]:
        raise ImageError(f"mask shape {full.shape} does not match image {a.shape[:2]}")
    m = crop_border(full.astype(np.bool_), border)
    if not m.any():
        raise ImageError("the mask selects no pixel (after the border crop)")
    return float(diff2[m].mean())


def psnr(a: U8, b: U8, mask: Mask | None = None, border: int = 0) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); ``inf`` when the images are equal.

    ``mask``: optional boolean ``(H, W)`` region (region PSNR); ``border``: px cropped from
    every side first (the mask too).
    """
    err = mse(a, b, mask, border)
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(PEAK * PEAK / err)


def _gauss(image: F64) -> F64:
    k = 2 * _SSIM_RADIUS + 1
    out = cv2.GaussianBlur(
        image, (k, k), SSIM_SIGMA, sigmaY=SSIM_SIGMA, borderType=cv2.BORDER_REFLECT
    )
    return np.asarray(out, np.float64)


def _ssim_plane(x: F64, y: F64) -> float:
    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2
    mx, my = _gauss(x), _gauss(y)
    sxx = _gauss(x * x) - mx * mx
    syy = _gauss(y * y) - my * my
    sxy = _gauss(x * y) - mx * my
    num = (2.0 * mx * my + c1) * (2.0 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    smap = num / den
    r = _SSIM_RADIUS
    return float(smap[r:-r, r:-r].mean())


def ssim(a: U8, b: U8, border: int = 0, channels: Literal["luma", "rgb"] = "luma") -> float:
    """Mean SSIM in [-1, 1] (1 = identical) of two uint8 images; see the module docstring.

    ``channels``: ``luma`` (default) measures the Rec. 601 luma of RGB input; ``rgb`` the
    mean of the per-channel SSIMs. Gray ``(H, W)`` input is measured as is.
    """
    _check_pair(a, b)
    x = crop_border(a, border).astype(np.float64)
    y = crop_border(b, border).astype(np.float64)
    if min(x.shape[:2]) <= 2 * _SSIM_RADIUS + 1:
        raise ImageError(f"SSIM needs images larger than 11x11 px, got {x.shape[:2]}")
    if x.ndim == 2:
        return _ssim_plane(x, y)
    if channels == "luma":
        return _ssim_plane(x @ _LUMA, y @ _LUMA)
    if channels == "rgb":
        return float(np.mean([_ssim_plane(x[..., c], y[..., c]) for c in range(3)]))
    raise ImageError(f"channels must be 'luma' or 'rgb', got {channels!r}")
