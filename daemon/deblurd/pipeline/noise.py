"""Noise estimation: how noisy an image is, in the image's own units.

Used by fusion (stage 4b: how large a frame-to-reference difference may be before it is
"motion" rather than "noise") and by finishing (stage 5: do not sharpen flat-area noise).

Both estimators work on the finest diagonal Haar wavelet band. On each 2×2 block
``[[p, q], [r, s]]`` the coefficient ``HH = (p - q - r + s) / 2`` carries the variance
``σ²`` of white noise unchanged, and almost no image content (only "checkerboard"
structure), so its robust spread is the noise std:

    σ = 1.4826 · median(|HH|)          (MAD of a zero-mean band)

For the level function the median is taken over the flattest quarter of each intensity
bin (the blocks with the least horizontal and vertical Haar detail ``LH² + HL²``): for
pure noise the bands are independent, so the selection does not bias σ, while on
texture it keeps edges from posing as noise. Fine texture with real diagonal detail
still reads as some noise: on strongly textured scenes σ comes out up to ~25 % high (2×
when the noise is far below the texture); fusion tightens a model that is too high per
frame from the data (``FusionSettings.calibrate_noise``).

The block mean ``LL = (p + q + r + s) / 4`` is statistically independent of ``HH`` for
Gaussian noise, so binning ``HH`` by ``LL`` gives the *noise level function* — the noise
variance as a function of intensity — without the bias of binning on a noisy value.
For a photon-limited sensor in linear light this is the Poisson–Gaussian model

    σ²(I) = a + b · I

which :func:`estimate_noise_model` fits by weighted least squares on equal-count
intensity bins. Blocks of four equal values (clipped at black or white, flat after 8-bit
quantisation) and saturated blocks carry no noise and are left out, as are bins so dark
that the noise is clipped at black.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F32

#: A Gaussian's std over its median absolute deviation.
MAD_TO_SIGMA = 1.4826
#: Samples the estimators use at most (every k-th row of Haar blocks): keeps a 1080p
#: estimate at a few ms; the MAD of 2·10⁵ samples is accurate to well under 1 %.
_MAX_SAMPLES = 200_000
#: The smallest noise std a model reports, linear units (about the 8-bit sRGB step in
#: deep shadows): a noise-free synthetic image must not make every difference "motion".
MIN_NOISE_SIGMA = 2.0e-4
#: Fraction of each intensity bin (the flattest by LH² + HL²) whose HH band is used.
_FLAT_FRACTION = 0.25


@dataclass(frozen=True)
class NoiseModel:
    """Signal-dependent noise: ``variance(I) = max(a + b·I, floor²)``, per channel.

    ``a``: variance at zero intensity (read noise), image units squared.
    ``b``: variance per unit intensity (shot noise gain), image units.
    ``floor``: smallest std returned, image units.
    """

    a: float
    b: float = 0.0
    floor: float = MIN_NOISE_SIGMA

    @classmethod
    def constant(cls, sigma: float) -> NoiseModel:
        """Signal-independent noise of std ``sigma`` (image units)."""
        if not np.isfinite(sigma) or sigma < 0.0:
            raise ImageError(f"noise sigma must be finite and >= 0, got {sigma}")
        return cls(a=float(sigma) ** 2, b=0.0)

    def variance(self, intensity: npt.NDArray[np.floating]) -> F32:
        """Noise variance at each intensity (any shape, linear units), ``float32``."""
        level = np.maximum(np.asarray(intensity, dtype=np.float32), np.float32(0.0))
        var = np.float32(self.a) + np.float32(self.b) * level
        out: F32 = np.maximum(var, np.float32(self.floor**2)).astype(np.float32)
        return out

    def sigma_at(self, level: float) -> float:
        """Noise std at one intensity, image units."""
        return float(np.sqrt(max(self.a + self.b * max(level, 0.0), self.floor**2)))


def _channels(image: npt.NDArray[np.generic]) -> F32:
    """``(H, W)`` or ``(H, W, C)`` → float32 ``(H, W, C)``; refuses anything else."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ImageError(f"expected an (H, W) or (H, W, C) image of at least 2x2, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageError(f"expected a float image, got {arr.dtype}")
    out: F32 = arr.astype(np.float32, copy=False)
    return out


def haar_bands(
    image: npt.NDArray[np.generic], max_samples: int | None = None
) -> tuple[F32, F32, F32]:
    """Finest Haar bands of an ``(H, W[, C])`` float image.

    Returns ``(hh, ll, grad2)``, all ``float32 (H//2, W//2, C)``: the diagonal detail
    (carries white-noise variance unchanged), the 2×2 block mean (the local intensity) and
    ``LH² + HL²`` (horizontal and vertical detail: large on edges and texture).
    For Gaussian white noise the four bands are independent. ``max_samples``: keep only
    every k-th row of blocks so that about this many coefficients are computed.
    """
    x = _channels(image)
    h2, w2 = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    rows = x[:h2, :w2].reshape(h2 // 2, 2, w2, x.shape[2])
    if max_samples is not None:
        per_row = (w2 // 2) * x.shape[2]
        step = max(1, (rows.shape[0] * per_row) // max(max_samples, 1))
        rows = rows[::step]
    p = rows[:, 0, 0::2]
    q = rows[:, 0, 1::2]
    r = rows[:, 1, 0::2]
    s = rows[:, 1, 1::2]
    half = np.float32(0.5)
    hh: F32 = ((p - q) - (r - s)) * half
    ll: F32 = ((p + q) + (r + s)) * np.float32(0.25)
    lh = ((p + q) - (r + s)) * half
    hl = ((p - q) + (r - s)) * half
    grad2: F32 = lh * lh + hl * hl
    return hh, ll, grad2


def estimate_noise_sigma(image: npt.NDArray[np.generic]) -> float:
    """Robust noise std of a float image ``(H, W)`` or ``(H, W, C)``, in its units.

    The MAD of the finest diagonal Haar band over all channels (pooled), blocks of four
    equal values left out: for linear RGB this is a typical per-channel noise std.
    Signal-dependent noise gives a mix over the image's intensities; use
    :func:`estimate_noise_model` for the level function.
    """
    hh, _, grad2 = haar_bands(image, _MAX_SAMPLES)
    hh_f, g_f = hh.reshape(-1), grad2.reshape(-1)
    informative = np.abs(hh_f[(hh_f != 0.0) | (g_f != 0.0)])  # not clipped / constant
    if informative.size == 0:
        return 0.0
    return float(MAD_TO_SIGMA * np.median(informative))


def estimate_noise_model(
    image: npt.NDArray[np.generic],
    bins: int = 16,
    saturation: float = 0.97,
) -> NoiseModel:
    """Fit the noise level function ``σ²(I) = a + b·I`` of a float image (linear light).

    ``image``: ``(H, W)`` or ``(H, W, C)`` float; each channel's samples are paired with
    that channel's local intensity and pooled. ``bins``: equal-count intensity bins.
    Blocks brighter than ``saturation`` (clipped: no noise) are left out. ``a`` and ``b``
    are constrained to be >= 0; with too few samples the model is a constant
    :func:`estimate_noise_sigma`.
    """
    hh, ll, grad2 = haar_bands(image, _MAX_SAMPLES)
    hh_f, ll_f, g_f = hh.reshape(-1), ll.reshape(-1), grad2.reshape(-1)
    # saturated blocks and blocks of four equal values (clipped at black or white, or
    # flat after quantisation) carry no noise: leave them out
    keep = (ll_f < saturation) & ((hh_f != 0.0) | (g_f != 0.0))
    hh_f, ll_f, g_f = np.abs(hh_f[keep]), ll_f[keep], g_f[keep]
    n_bins = min(bins, hh_f.size // 512)
    if n_bins < 2:
        return NoiseModel.constant(estimate_noise_sigma(image))
    order = np.argsort(ll_f, kind="stable")
    levels: list[float] = []
    variances: list[float] = []
    counts: list[int] = []
    for chunk in np.array_split(order, n_bins):
        g = g_f[chunk]
        flat = chunk[g <= np.quantile(g, _FLAT_FRACTION)]  # texture must not pose as noise
        level = float(np.mean(ll_f[chunk]))
        var = float((MAD_TO_SIGMA * np.median(hh_f[flat])) ** 2)
        if var <= MIN_NOISE_SIGMA**2 or level < 2.5 * np.sqrt(var):
            continue  # clipped at black: the noise there is not the sensor's
        levels.append(level)
        variances.append(var)
        counts.append(int(flat.size))
    if len(levels) < 2:
        return NoiseModel.constant(estimate_noise_sigma(image))
    return _fit_affine(np.array(levels), np.array(variances), np.array(counts, dtype=np.float64))


def _fit_affine(
    level: npt.NDArray[np.float64],
    var: npt.NDArray[np.float64],
    count: npt.NDArray[np.float64],
) -> NoiseModel:
    """Weighted least squares ``var ≈ a + b·level`` with ``a, b >= 0``.

    Weights ``count / var²``: a variance estimated from n samples has a relative
    uncertainty ``~ sqrt(2/n)``, so bins are trusted by count and in relative terms.
    """
    floor = MIN_NOISE_SIGMA**2
    wgt = count / np.maximum(var, floor) ** 2
    sw, sx, sy = wgt.sum(), (wgt * level).sum(), (wgt * var).sum()
    sxx, sxy = (wgt * level * level).sum(), (wgt * level * var).sum()
    det = sw * sxx - sx * sx
    if det > 1e-12 * max(sw * sxx, 1e-30):
        b = (sw * sxy - sx * sy) / det
        a = (sy - b * sx) / sw
        if a >= 0.0 and b >= 0.0:
            return NoiseModel(a=float(a), b=float(b))
    # Constrained: the better of "a only" and "b only" (both are convex 1-D fits).
    a_only = sy / sw
    b_only = sxy / sxx if sxx > 0 else 0.0
    err_a = float((wgt * (var - a_only) ** 2).sum())
    err_b = float((wgt * (var - b_only * level) ** 2).sum())
    if err_b < err_a and b_only > 0:
        return NoiseModel(a=0.0, b=float(b_only))
    return NoiseModel(a=float(max(a_only, 0.0)), b=0.0)
