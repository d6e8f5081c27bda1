"""Stage 1a: the frequency-domain blur score of a frame (higher = blurrier).

The score is the level difference, in decibels, between the low-frequency and the
high-frequency part of the frame's power spectrum, measured on a fixed-size downsample so
that it does not depend on the frame's resolution.

Exact formula (``g`` = gray analysis image, ``s × s`` pixels, sRGB-encoded values)::

    g      = area-downsample(gray(centre square crop of the frame)) to s × s,
             s = min(size, short side)        (2×2 box halvings, then one area resize)
    x      = (g - mean(g)) · hann(s) ⊗ hann(s)
    P(k)   = |rfft2(x)(k)|²                   k: spatial frequency, cycles / analysis px
    N      = min(N_spec, N_haar)              white-noise floor per bin, two upper bounds:
             N_spec = median{P(k) : |k| ≥ 0.55} / ln 2      (spectrum corners)
             N_haar = (σ_HH² + q²/12) · Σ window²          (σ_HH: robust σ of the finest
                      Haar diagonal subband; q: 1/255 for uint8 input, else 0)
    S_b    = mean{P(k) : k in ring b} - N     noise-corrected signal power of ring b
    rings  : LOW  = 6 log-spaced rings covering |k| in [0.02, 0.06)
             HIGH = 12 log-spaced rings covering |k| in [0.10, 0.45)
    S_low  = mean_{b in LOW} S_b
    floor  = max(0.1 · N, 1e-6 · S_low)
    score  = 10 · ( log10 S_low - mean_{b in HIGH} log10 max(S_b, floor) )     [dB]

(no structure above the noise, ``S_low <= floor``: the ceiling, 60 dB.)

Why this form: the literal "mean high amplitude minus mean low amplitude" is not monotonic
in blur (heavy blur shrinks the low term too, and it dominates). A *ratio* of levels is
independent of exposure, gain, contrast and offset, and grows with blur as long as the low
rings stay below the blur's cut-off; log-spaced high rings give every octave the same
weight, so light blur (which only touches the top octave) and heavy blur (which empties
the top octave and works down) both move the score. Sensor noise fills the high rings with
a flat floor that would stop the score from rising: the floor ``N`` is estimated and
subtracted, and rings that sink under it are clipped to a fixed fraction of it, so at a
given noise level the score keeps rising with blur while any high ring still holds signal.
Each noise estimate alone errs upwards with signal in it (a sharp frame's spectrum reaches
the corners; a dense texture fills the Haar subband), and an estimate that falls with blur
faster than the high rings would make light blur look sharper; their minimum does not.

Scale, at ``size`` = 512 (the default), measured with ``tools/bench_blur.py --calibrate``
(1080p frames of scikit-image photos and a 1/f texture, motion blur in linear light,
noise σ = 1 code)::

    sharp frame                 19 - 31 dB (photos 23 - 31, mean 25.5; a 1/f texture 19):
                                scene-dependent, smooth scenes score higher
    motion blur at 1080p        + 0.9 dB at 2 px, + 1.4 at 3 px, + 2.7 at 5 px,
                                + 5.5 at 10 px, + 8 at 20 px (mean over the scenes;
                                disk and Gaussian blur of the same size rise faster)

Blur is measured in analysis pixels: a blur of ``L`` px on a frame whose short side is
``H`` counts as ``L · size / H`` (one scene at 1080p, 720p and 540p scores within 1 dB).
Within one scene (a burst) the score ranks blur reliably: strictly monotonic for blur
sizes up to ~1.5 % of the short side (8 analysis px) for motion, disk and Gaussian blur at
noise σ up to 8 codes, and for motion blur to ~30 px at 1080p; beyond, it saturates.
Across scenes the sharp level varies by about ±6 dB, so absolute thresholds are coarse.
Frames smaller than ``size`` are scored at their own resolution (never upsampled). The
centre square of the frame is scored (handheld blur covers the whole frame).

Cost: about 5 ms per 1080p frame, 10 ms per 12 MP frame on a 2-core x86 (OpenCV for the
gray conversion and area downsample, numpy's FFT), a few MiB of temporaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F32

DEFAULT_SIZE = 512
"""Default side of the square analysis image, px (also ``BlurScoreSettings.size``)."""

MIN_SIDE = 64
"""Smallest short side an image (and ``size``) may have, px."""

MAX_SCORE_DB = 60.0
"""The score's ceiling: no measurable structure left in the high band (or the image)."""

LOW_BAND = (0.02, 0.06)
"""Low band, cycles per analysis pixel (10 - 31 cycles per image side at size 512)."""

HIGH_BAND = (0.10, 0.45)
"""High band, cycles per analysis pixel."""

NOISE_MIN_FREQ = 0.55
"""Frequencies at or above this (cycles per analysis pixel) estimate the noise floor."""

_LOW_RINGS = 6
_HIGH_RINGS = 12
_FLOOR_NOISE = 0.1
_FLOOR_RANGE = 10.0 ** (-MAX_SCORE_DB / 10.0)
_HALF_NORMAL_LOWER_MS = 0.1426  # E[x² | |x| < median |x|] / σ² for x ~ N(0, σ²)


@dataclass(frozen=True)
class _Geometry:
    """Per-shape constants: window, ring label of every rfft2 bin, ring sizes, noise mask."""

    window: F32
    window_energy: float
    labels: npt.NDArray[np.intp]
    counts: npt.NDArray[np.float64]
    noise: npt.NDArray[np.bool_]


@lru_cache(maxsize=8)
def _geometry(h: int, w: int) -> _Geometry:
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    r = np.hypot(fx, fy).ravel()
    n_rings = _LOW_RINGS + _HIGH_RINGS
    labels = np.full(r.shape, n_rings, dtype=np.intp)  # n_rings = "not in any ring"
    for first, n, (lo, hi) in ((0, _LOW_RINGS, LOW_BAND), (_LOW_RINGS, _HIGH_RINGS, HIGH_BAND)):
        edges = np.geomspace(lo, hi, n + 1)
        ring = np.searchsorted(edges, r, side="right") - 1
        inside = (ring >= 0) & (ring < n)
        labels[inside] = first + ring[inside]
    counts = np.bincount(labels, minlength=n_rings + 1).astype(np.float64)
    noise = r >= NOISE_MIN_FREQ
    for arr in (window, labels, counts, noise):
        arr.setflags(write=False)
    energy = float(np.sum(window.astype(np.float64) ** 2))
    return _Geometry(window, energy, labels, counts, noise)


def analysis_image(image: npt.NDArray[np.generic], size: int = DEFAULT_SIZE) -> F32:
    """The gray analysis image that is scored: ``float32 (s, s)``, values in [0, 1] for uint8.

    ``image``: ``uint8 (H, W, 3)`` sRGB frame, or ``float32`` gray ``(H, W)`` / RGB
    ``(H, W, 3)`` (sRGB-encoded values; encode linear light first with
    ``deblurd.imaging.linear_to_srgb_float``). The centre square is area-resized to
    ``s = min(size, min(H, W))``.
    """
    if not MIN_SIDE <= size <= 8192:
        raise ValueError(f"size must be in [{MIN_SIDE}, 8192], got {size}")
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ImageError(f"expected (H, W) or (H, W, 3) image, got shape {arr.shape}")
    h, w = arr.shape[:2]
    side = min(h, w)
    if side < MIN_SIDE:
        raise ImageError(f"image {w}x{h} too small to score (short side < {MIN_SIDE} px)")
    top, left = (h - side) // 2, (w - side) // 2
    crop = arr[top : top + side, left : left + side]
    is_u8 = crop.dtype == np.uint8
    if not is_u8:
        if not np.issubdtype(crop.dtype, np.floating):
            raise ImageError(f"expected uint8 or float image, got {crop.dtype}")
        crop = crop.astype(np.float32, copy=False)
    s = min(size, side)
    if crop.ndim == 3:
        if side >= 2 * s:  # one 2x2 box halving first: cheaper than graying every pixel
            crop = _halve(crop)
        crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    gray = _area_resize(crop, s)
    if is_u8:
        return gray.astype(np.float32) * np.float32(1.0 / 255.0)
    out = np.array(gray, dtype=np.float32)  # a private copy, never a view of the input
    if not np.isfinite(out).all():
        raise ImageError("image contains NaN or infinite values")
    return out


def _area_resize(gray: npt.NDArray[Any], s: int) -> npt.NDArray[Any]:
    """Area-downsample a square gray image to ``s × s``: exact 2×2 box halvings while the
    side stays ≥ 2s (OpenCV's fast path; identical to one area resize by a power of two),
    then one area resize of the remaining factor in [1, 2) in float32."""
    img = gray
    while img.shape[0] >= 2 * s:
        img = _halve(img)
    if img.shape[0] != s:
        img = cv2.resize(img.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)
    return img


def _halve(img: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """2x2 box average of a square image (an odd last row/column is dropped)."""
    half = img.shape[0] // 2
    even = 2 * half
    return cv2.resize(img[:even, :even], (half, half), interpolation=cv2.INTER_AREA)


def ring_powers(gray: F32, quant_step: float = 0.0) -> tuple[npt.NDArray[np.float64], float]:
    """Mean spectral power of each ring (``LOW`` rings, then ``HIGH``) and the noise floor.

    ``gray``: the analysis image ``float32 (s, s)``; ``quant_step``: its values' quantisation
    step (1/255 for 8-bit frames; it sets a lower bound on the noise, see the module
    docstring). Returns ``(rings, N)``: ``rings`` ``float64 (18,)``, the mean power of each
    ring (NaN for a ring without a frequency bin, on tiny images), of the mean-removed,
    Hann-windowed image (arbitrary but consistent units), *not* noise-corrected; ``N``, the
    white-noise power per bin in the same units.
    """
    h, w = gray.shape
    geo = _geometry(h, w)
    x = (gray - np.float32(gray.mean())) * geo.window
    spec = np.fft.rfft2(x)
    power = (spec.real * spec.real + spec.imag * spec.imag).ravel()
    sums = np.bincount(geo.labels, weights=power, minlength=geo.counts.size)
    counts = geo.counts[:-1]
    rings = np.full(counts.shape, np.nan)  # NaN: a ring with no bin (tiny images)
    np.divide(sums[:-1], counts, out=rings, where=counts > 0)
    spectral = float(np.median(power[geo.noise])) / math.log(2.0) if geo.noise.any() else 0.0
    spatial = (_haar_noise_sigma(gray) ** 2 + quant_step**2 / 12.0) * geo.window_energy
    return rings, min(spectral, spatial)


def _haar_noise_sigma(gray: F32) -> float:
    """Robust noise σ from the finest Haar diagonal subband ``HH = (a - b - c + d) / 2``.

    White noise of variance σ² gives ``HH`` of variance σ²; edges are sparse in space, so
    the half of the coefficients smallest in magnitude is (nearly) noise only. For a normal
    distribution their mean square is ``0.1426 σ²`` (truncated at the median of ``|HH|``).
    A mean over many coefficients, unlike the median, varies smoothly with the image also
    when its values are quantised (8-bit codes).
    """
    h, w = gray.shape[0] // 2 * 2, gray.shape[1] // 2 * 2
    q = gray[:h, :w].reshape(h // 2, 2, w // 2, 2)
    hh = ((q[:, 0, :, 0] - q[:, 0, :, 1]) - (q[:, 1, :, 0] - q[:, 1, :, 1])).ravel() * 0.5
    sq = hh * hh
    half = sq.size // 2
    lower = np.partition(sq, half)[:half]
    return math.sqrt(float(lower.mean()) / _HALF_NORMAL_LOWER_MS) if half else 0.0


def blur_score(image: npt.NDArray[np.generic], size: int = DEFAULT_SIZE) -> float:
    """Blur score of one frame in dB, higher = blurrier (see the module docstring).

    ``image``: ``uint8 (H, W, 3)`` sRGB RGB frame, or ``float32 (H, W)`` gray /
    ``(H, W, 3)`` RGB of sRGB-encoded values (scale does not matter: the score is a ratio).
    ``size``: side of the analysis square, px; thresholds are tied to it.
    Returns a float in (-inf, 60]; typical values in the module docstring.
    Raises :class:`ImageError` for a wrong shape/dtype, a too-small or non-finite image.
    """
    quant_step = 1.0 / 255.0 if np.asarray(image).dtype == np.uint8 else 0.0
    rings, noise = ring_powers(analysis_image(image, size), quant_step)
    signal = rings - noise
    low, high = signal[:_LOW_RINGS], signal[_LOW_RINGS:]
    low, high = low[np.isfinite(low)], high[np.isfinite(high)]
    if low.size == 0 or high.size == 0:
        return MAX_SCORE_DB
    s_low = float(low.mean())
    floor = max(_FLOOR_NOISE * noise, _FLOOR_RANGE * s_low)
    if not s_low > floor:  # no structure above the noise at all (also: s_low <= 0)
        return MAX_SCORE_DB
    level_high = float(np.mean(np.log10(np.maximum(high, floor))))
    return min(10.0 * (math.log10(s_low) - level_high), MAX_SCORE_DB)


def blur_scores(frames: Sequence[npt.NDArray[np.generic]], size: int = DEFAULT_SIZE) -> list[float]:
    """:func:`blur_score` of each frame, in order."""
    return [blur_score(frame, size) for frame in frames]
