"""Stage 1a: the frequency-domain blur score (higher = blurrier). Prototype."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError

F32 = npt.NDArray[np.float32]

_BIN = 0.025
_LOW = (0.025, 0.075)
_HIGH = (0.10, 0.45)
_NOISE_R = 0.55
_FLOOR_NOISE = 0.25
_FLOOR_RANGE = 1e-6
_MAX_ASPECT = 2.0


@lru_cache(maxsize=8)
def _geometry(h: int, w: int) -> tuple[F32, npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    r = np.hypot(fx, fy)
    nbins = int(math.ceil(0.5 / _BIN))
    idx = np.minimum((r / _BIN).astype(np.intp), nbins).ravel()
    counts = np.bincount(idx, minlength=nbins + 1).astype(np.float64)
    noise = (r >= _NOISE_R).ravel()
    return win, idx, counts, noise


def downsample_gray(image: npt.NDArray[np.generic], size: int) -> F32:
    arr = np.asarray(image)
    if arr.ndim == 3:
        if arr.shape[2] != 3:
            raise ImageError(f"expected (H, W, 3) image, got shape {arr.shape}")
    elif arr.ndim != 2:
        raise ImageError(f"expected (H, W) or (H, W, 3) image, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if h > w * _MAX_ASPECT:
        c = int(w * _MAX_ASPECT)
        arr = arr[(h - c) // 2 : (h - c) // 2 + c]
    elif w > h * _MAX_ASPECT:
        c = int(h * _MAX_ASPECT)
        arr = arr[:, (w - c) // 2 : (w - c) // 2 + c]
    h, w = arr.shape[:2]
    short = min(h, w)
    s = min(size, short)
    nh, nw = (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
    if arr.dtype == np.uint8:
        if arr.ndim == 3:
            arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(arr, (nw, nh), interpolation=cv2.INTER_AREA) if (nh, nw) != (h, w) else arr
        return small.astype(np.float32) * np.float32(1 / 255)
    f = arr.astype(np.float32)
    if f.ndim == 3:
        f = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
    if (nh, nw) != (h, w):
        f = cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA)
    return f


def radial_power(gray: F32) -> tuple[npt.NDArray[np.float64], float]:
    h, w = gray.shape
    win, idx, counts, noise = _geometry(h, w)
    g = (gray - np.float32(gray.mean())) * win
    spec = np.fft.rfft2(g)
    p = (spec.real**2 + spec.imag**2).ravel()
    prof = np.bincount(idx, weights=p, minlength=counts.size) / np.maximum(counts, 1)
    nf = float(np.median(p[noise])) / math.log(2) if noise.any() else 0.0
    return prof, nf


def blur_score(image: npt.NDArray[np.generic], size: int = 256) -> float:
    gray = downsample_gray(image, size)
    prof, nf = radial_power(gray)
    lo = int(_LOW[0] / _BIN), int(round(_LOW[1] / _BIN))
    hi = int(round(_HIGH[0] / _BIN)), int(round(_HIGH[1] / _BIN))
    p_low = float(prof[lo[0] : lo[1]].mean()) - nf
    if p_low <= 0:
        return 3.0
    floor = max(_FLOOR_NOISE * nf, _FLOOR_RANGE * p_low)
    s = np.maximum(prof[hi[0] : hi[1]] - nf, floor)
    return 0.5 * (math.log10(p_low) - float(np.mean(np.log10(s))))


def blur_scores(frames: Sequence[npt.NDArray[np.generic]], size: int = 256) -> list[float]:
    return [blur_score(f, size) for f in frames]
