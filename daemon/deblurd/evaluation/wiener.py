"""The near-limit reference: multi-frame Wiener deconvolution given the true kernels.

Evaluation only, never the daemon: it needs the simulator's ground truth (an **oracle**).
For a simulated burst (:class:`~deblurd.sim.burst.SimulatedBurst` in memory, or a burst
directory with its ``<dir>.truth/`` read by :func:`~deblurd.sim.truthdir.read_truth`;
:class:`Oracle` holds either), :func:`wiener_true_kernels`:

1. **Registration by the truth.** Every frame is warped into the geometry of the
   reference frame — the sharpest candidate, the frame the aligned mean and FBA are
   compared in — by the exact homography of the simulated camera: frame ``i``'s sharp
   view is the scene at its mean pose ``p_i``, so reference pixel ``x`` is frame pixel
   ``G(p_i) G(p_ref)⁻¹ x`` with ``G = K R K⁻¹`` the rotation-only camera. No
   registration error, but the warp resamples (cubic): the simulator's views are
   bilinear renders of a scene at about its own resolution, so two frames' truth views
   differ by more than the warp can undo on fine texture (−46 dB in linear light on
   astronaut, −32 dB on a sharp procedural scene), which every multi-frame method pays.
   The choice of interpolation moves the reference by up to ±2.5 dB on single bursts
   (bilinear is better on the detailed motorcycle, cubic on astronaut); cubic is used.
2. **True kernels.** ``psf_i``, the blur of frame ``i`` at the frame centre, centred on
   its mean pose (no shift against its truth view), used as it is in the reference
   geometry (the roll between frames, < 0.5° at 2× shake, would rotate it by as
   little). Blur that varies across the frame (roll, perspective) is not modelled, as in
   every one-kernel-per-frame reference; ``tile > 0`` solves tiles with their own true
   kernels instead (:meth:`Oracle.kernel_at`, from the trajectory; at the frame centre it
   is ``psf_i``). Measured on astronaut and coffee at 1× and 2× shake that moved the PSNR
   by −0.4 … +0.9 dB, so the default is the textbook one kernel per frame.
3. **Noise variance in linear light**, per frame and colour channel, in the reference's
   exposure × gain units. Default ``"measured"``: the variance of ``y_i − psf_i * x_i``
   (the frame minus its noiseless truth view blurred by its true kernel) — shot, read and
   8-bit rounding noise plus what one kernel per frame does not explain. For ring frames
   of the evaluation photos that is within ~10 % of the sensor model (more on finer
   textures: the renderer's bilinear resampling); for the long, 5–15 px blurred extra
   frames it is 1.3–2.5× (their blur varies across the frame), and with the sensor model
   instead they spoil the result (below the sharpest frame on a 2× burst).
   ``"sensor"``: :mod:`deblurd.sim.sensor`'s ``g² (L·FW·t/T_ref + σ_r²) / FW²`` at the
   mean radiance ``L`` of the truth view plus the sRGB rounding.
4. **Multi-frame Wiener**, per colour channel, in linear light:
   ``X = Σ_i conj(K_i) Y_i / σ_i²  /  (Σ_i |K_i|² / σ_i² + 1 / S_x)`` — the linear MMSE
   estimate for a Gaussian prior of power spectrum ``S_x`` and white noise of variance
   ``σ_i²`` per frame (with equal ``σ_i = σ``, the textbook
   ``Σ conj(K_i) Y_i / (Σ |K_i|² + σ²/S_x)``; with one frame, single-frame Wiener).
   Images are mirror-padded by a margin of at least twice the largest kernel and the pad
   is faded to the mean (raised cosine), so the FFT's wrap-around meets a smooth border
   and the ringing stays in the pad, which is cropped. Pixels a warped frame does not
   cover are missing data: the first solve fills them with ``K_i *`` (the reference
   frame), then with ``K_i * X`` of that solve (:data:`MISSING_DATA_PASSES`; the EM fill
   of missing samples), so a frame adds nothing where it saw nothing.
5. **Prior** ``S_x(f) = A · |f|^(−α)``: a power law fitted per colour channel to the
   radially averaged power spectrum of the reference's sharp truth view (Hann window,
   linear light, 4/min(H, W) … 0.5 cycles/px, least squares in log-log; α ≈ 3.1–3.7 on
   the evaluation photos) — the usual "Wiener with true kernels" reference, two numbers
   per channel from the truth. ``prior="oracle"``: the truth's own spectrum
   ``|X_true(f)|²`` (the strict oracle). It is better in linear-light MSE (the quantity
   a Wiener filter minimises: +0.9 dB on astronaut at 1×) but 1–2 dB *worse* in the
   evaluation's PSNR on 8-bit sRGB, which weights dark areas many times more than linear
   light does; the power law is the default.

:func:`wiener_reference` is what the evaluation reports: the per-burst best, by PSNR
against the truth, of the candidate frames (the ring window the pipeline selects from)
or the whole burst (with its extra frames), times a factor 1, 2, 4 or 8 on ``σ²/S_x``
(an oracle choice, like the per-burst best noise ratio of the project's single-frame
Wiener reference; the metric is sRGB while the filter is optimal in linear light, and
bursts at 2× shake want 4–8× the measured ratio).

The output is in the reference frame's geometry, 8-bit sRGB, compared with its truth.
It is a limit for *linear* restoration with perfect knowledge, not for any method: a
nonlinear one (the pipeline's robust per-pixel fusion and its U-Net passes) can beat it,
most of all where the blur is small and the task is mostly denoising.

Where it does not apply: the simulator's camera-pipeline set (``isp``). There the frame is
not ``K * x + white noise`` in linear light: the ISP's tone curve, sharpening, denoise,
demosaic and codec change the effective kernel and colour the noise, and the rolling
shutter gives every row band its own pose and kernel (the truth folder records only the
centre band's). A Wiener filter with ``psf_i`` there would measure the model mismatch,
not a limit; :meth:`Oracle.applies` says no for those bursts. Moving-subject bursts: the
kernels are the camera's (the subject ghosts, as in the aligned mean), so the reference
is about camera shake; their numbers belong in their own group.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.burstdir import Burst
from deblurd.errors import ImageError
from deblurd.imaging import F32, F64, U8, linear_to_srgb, srgb_to_linear
from deblurd.sim.render import ExposureStats, convolve, rasterise_psf
from deblurd.sim.sensor import SensorModel
from deblurd.sim.trajectory import homographies

if TYPE_CHECKING:
    from deblurd.sim.burst import SimulatedBurst
    from deblurd.sim.truthdir import Truth

C64 = npt.NDArray[np.complex64]
Prior = Literal["power", "oracle"]
Noise = Literal["measured", "sensor"]

_PSF_STEP_PX = 0.1  # the simulator's PSF path sampling (deblurd.sim.render)
_MAX_DENSE = 4096
MIN_PAD = 32
"""Least mirror-padding margin, px (at least twice the largest kernel's side is used)."""
MISSING_DATA_PASSES = 1
"""Re-solves with the pixels a frame does not cover replaced by ``K_i * X`` of the last
solve (the first solve fills them from the reference frame, :func:`wiener_true_kernels`)."""
_FIT_LOW = 4.0  # the power-law fit starts at _FIT_LOW / min(H, W) cycles/px ...
_FIT_HIGH = 0.5  # ... and ends at Nyquist
_FIT_BINS = 24


# --------------------------------------------------------------------------- the oracle


@dataclass
class Oracle:
    """What the reference knows about a simulated burst (from memory or the truth folder).

    ``truth``: the noiseless sharp view per frame, 8-bit sRGB, its geometry; ``psfs``: the
    kernel per frame at the frame centre (convolution convention of
    :mod:`deblurd.sim.render`); ``stats``: per frame the exposure window and mean camera
    pose; ``trajectory``: camera poses ``(N, 4)`` rows ``(t_s, yaw, pitch, roll)``, 1 kHz;
    ``focal_px``: the renderer's focal length; ``sensor``: the sensor model;
    ``rolling_shutter``/``isp``: whether the burst went through a rolling shutter or a
    camera ISP (then the model does not hold, :meth:`applies`).
    """

    burst: Burst
    truth: list[U8]
    psfs: list[F32]
    stats: list[ExposureStats]
    trajectory: F64
    focal_px: float
    sensor: SensorModel
    rolling_shutter: bool = False
    isp: bool = False
    _residuals: dict[int, F32] = field(default_factory=dict, repr=False)

    @classmethod
    def from_simulation(cls, sim: SimulatedBurst) -> Oracle:
        return cls(
            burst=sim.burst,
            truth=list(sim.truth),
            psfs=list(sim.psfs),
            stats=list(sim.stats),
            trajectory=np.asarray(sim.trajectory, np.float64),
            focal_px=sim.renderer.focal_px,
            sensor=sim.params.sensor(),
            rolling_shutter=sim.params.rolling_shutter_ms > 0,
            isp=sim.params.isp is not None,
        )

    @classmethod
    def from_truth(cls, burst: Burst, truth: Truth) -> Oracle:
        """``burst`` read from a burst directory, ``truth`` its :func:`read_truth`."""
        if len(truth.truth) != len(burst.frames):
            raise ImageError(f"truth has {len(truth.truth)} frames, the burst {len(burst.frames)}")
        return cls(
            burst=burst,
            truth=list(truth.truth),
            psfs=list(truth.psfs),
            stats=list(truth.stats),
            trajectory=np.asarray(truth.trajectory, np.float64),
            focal_px=truth.focal_px,
            sensor=truth.params.sensor(),
            rolling_shutter=truth.params.rolling_shutter_ms > 0,
            isp=truth.params.isp is not None,
        )

    def applies(self) -> bool:
        """Whether the linear model ``y_i = K_i * x + n_i`` holds (see module: no for a
        camera ISP or a rolling shutter)."""
        return not (self.isp or self.rolling_shutter)

    def _view(self, poses: npt.ArrayLike) -> F64:
        h, w = self.burst.size
        return homographies(np.asarray(poses, np.float64).reshape(-1, 3), self.focal_px, w, h)

    def homography(self, i: int, reference: int) -> F64:
        """``M`` mapping reference pixels to frame ``i`` pixels (``warpPerspective`` with
        ``WARP_INVERSE_MAP`` brings frame ``i`` into the reference geometry)."""
        g = self._view([self.stats[i].mean_pose, self.stats[reference].mean_pose])
        m: F64 = g[0] @ np.linalg.inv(g[1])
        return m

    def poses(self, t_s: npt.ArrayLike) -> F64:
        """Camera poses ``(N, 3)`` at times ``t_s``, linearly interpolated in the
        trajectory's samples."""
        t = np.atleast_1d(np.asarray(t_s, np.float64))
        tr = self.trajectory
        out: F64 = np.stack([np.interp(t, tr[:, 0], tr[:, k]) for k in (1, 2, 3)], axis=1)
        return out

    def kernel_at(self, i: int, reference: int, point: tuple[float, float]) -> F32:
        """The true blur kernel of frame ``i`` warped into ``reference``'s geometry, at
        the reference pixel ``point`` ``(x, y)``: the path of the scene point seen there
        (at frame ``i``'s mean pose) over frame ``i``'s exposure, mapped into the
        reference by :meth:`homography`, rasterised like the simulator's PSF (so at the
        centre of frame ``i`` itself it is ``psfs[i]``)."""
        st = self.stats[i]
        to_i = self.homography(i, reference)
        p_ref = np.array([point[0], point[1], 1.0])
        p_i = to_i @ p_ref
        mean_inv = np.linalg.inv(self._view(st.mean_pose)[0])

        def path(n: int) -> F64:
            t = st.t_start_s + st.exposure_s * (np.arange(n) + 0.5) / n
            pts = self._view(self.poses(t)) @ (mean_inv @ p_i)  # (n, 3) in frame i
            in_ref = pts @ np.linalg.inv(to_i).T
            out: F64 = in_ref[:, :2] / in_ref[:, 2:3]
            return out

        coarse = path(33)
        length = float(np.linalg.norm(np.diff(coarse, axis=0), axis=1).sum())
        n = int(min(max(64, math.ceil(length / _PSF_STEP_PX)), _MAX_DENSE))
        return rasterise_psf(path(n) - p_ref[:2])

    def noise_variance(
        self,
        i: int,
        reference: int,
        region: tuple[slice, slice] | None = None,
        how: Noise = "measured",
    ) -> F64:
        """Noise variance of frame ``i`` in linear light per channel ``(3,)``, in the
        reference's exposure × gain units (module, 3), over ``region`` (reference pixels;
        default the whole frame less a border).

        ``"measured"``: the variance of ``y_i − psf_i * x_i`` (the frame minus its truth
        view blurred by its true kernel; pixels within ``max(16, k)`` of the border left
        out): the sensor's noise plus what one kernel per frame does not explain.
        ``"sensor"``: the sensor model's shot and read noise at the mean radiance of the
        truth view (the reference's over ``region``) plus the 8-bit rounding.
        """
        scale = _exposure_scale(self.burst, i, reference)
        if how == "measured":
            res = self._residual(i)
            if region is None:
                b = max(16, self.psfs[i].shape[0])
                region = (slice(b, res.shape[0] - b), slice(b, res.shape[1] - b))
            measured: F64 = res[region].reshape(-1, 3).astype(np.float64).var(axis=0)
            return measured * scale**2
        if how != "sensor":
            raise ImageError(f"unknown noise estimate {how!r}")
        info = self.burst.infos[i]
        t, g = float(info.exposure_us), float(info.analogue_gain)
        s = self.sensor
        view = self.truth[i] if region is None else self.truth[reference][region]
        radiance = srgb_to_linear(view).reshape(-1, 3).astype(np.float64)
        electrons = radiance.mean(axis=0) * s.electrons_at_white(t)
        shot_read = (g / s.full_well_e) ** 2 * (electrons + s.read_noise_e**2)
        quant = _quantisation_variance(view)
        out: F64 = (shot_read + quant) * scale**2
        return out

    def _residual(self, i: int) -> F32:
        """``y_i − psf_i * x_i`` in frame ``i``'s geometry, linear light (cached)."""
        if i not in self._residuals:
            sharp = srgb_to_linear(self.truth[i])
            frame = srgb_to_linear(self.burst.frames[i])
            self._residuals[i] = (frame - convolve(sharp, self.psfs[i])).astype(np.float32)
        return self._residuals[i]


def _exposure_scale(burst: Burst, i: int, reference: int) -> float:
    ref, info = burst.infos[reference], burst.infos[i]
    return (float(ref.exposure_us) * float(ref.analogue_gain)) / (
        float(info.exposure_us) * float(info.analogue_gain)
    )


_CODES = np.arange(256, dtype=np.float64) / 255.0
_DLIN_DS = np.where(_CODES <= 0.04045, 1.0 / 12.92, 2.4 / 1.055 * ((_CODES + 0.055) / 1.055) ** 1.4)
_QUANT_VAR_LUT = (_DLIN_DS / 255.0) ** 2 / 12.0


def _quantisation_variance(srgb: U8) -> F64:
    """Mean variance per channel ``(3,)`` in linear light of rounding to 8-bit sRGB codes
    around the values of ``srgb`` (uniform rounding error through the decoding slope)."""
    out: F64 = _QUANT_VAR_LUT[srgb.reshape(-1, 3)].mean(axis=0)
    return out


# ------------------------------------------------------------------------- Fourier tools


def otf(psf: F32, shape: tuple[int, int]) -> C64:
    """The transfer function ``(H, W // 2 + 1)`` (real FFT) of ``psf`` (convolution
    convention, centre ``(k // 2, k // 2)``) on an ``shape`` periodic grid: the kernel's
    centre at the origin, so ``FFT(psf ⊛ x) = otf · FFT(x)`` with no shift."""
    kh, kw = psf.shape
    if kh > shape[0] or kw > shape[1]:
        raise ImageError(f"kernel {kh}x{kw} larger than the grid {shape[1]}x{shape[0]}")
    grid = np.zeros(shape, np.float64)
    grid[:kh, :kw] = psf
    grid = np.roll(grid, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    out: C64 = np.fft.rfft2(grid).astype(np.complex64)
    return out


def _radial_frequency(shape: tuple[int, int]) -> F64:
    """``|f|`` in cycles/px on the real-FFT grid of ``shape``."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    out: F64 = np.hypot(fy, fx)
    return out


def fit_power_law(sharp: F32) -> tuple[float, float]:
    """``(A, α)`` of ``S(f) = A · |f|^(−α)`` fitted to the power spectrum per pixel
    (``|FFT|² / N``, Hann-windowed, mean removed) of the 2-D linear image ``sharp``, by
    least squares on the logs of radially binned means, ``4/min(H, W)`` … 0.5 cycles/px."""
    h, w = sharp.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    x = (sharp.astype(np.float64) - float(sharp.mean())) * win
    power = np.abs(np.fft.rfft2(x)) ** 2 / float((win**2).sum())
    f = _radial_frequency((h, w))
    lo = _FIT_LOW / min(h, w)
    edges = np.geomspace(lo, _FIT_HIGH, _FIT_BINS + 1)
    idx = np.digitize(f.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < _FIT_BINS)
    counts = np.bincount(idx[ok], minlength=_FIT_BINS)
    sums = np.bincount(idx[ok], weights=power.ravel()[ok], minlength=_FIT_BINS)
    fsum = np.bincount(idx[ok], weights=f.ravel()[ok], minlength=_FIT_BINS)
    keep = (counts > 0) & (sums > 0)
    if keep.sum() < 2:
        raise ImageError("too small an image to fit a power spectrum")
    lf = np.log(fsum[keep] / counts[keep])
    lp = np.log(sums[keep] / counts[keep])
    slope, intercept = np.polyfit(lf, lp, 1)
    return float(math.exp(intercept)), float(-slope)


def _pad_taper(image: F32, margin: tuple[int, int, int, int]) -> F32:
    """``image`` (H, W) mirror-padded by ``(top, bottom, left, right)``, the pad faded to
    the image mean by a raised cosine from the image edge to the grid edge (so the
    periodic grid is continuous across its border)."""
    top, bottom, left, right = margin
    padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    h, w = image.shape
    mean = np.float32(image.mean())

    def ramp(n: int, before: int, after: int) -> F32:
        r = np.ones(before + n + after, np.float32)
        if before:
            t = (np.arange(before, dtype=np.float32) + 1) / np.float32(before + 1)
            r[:before] = 0.5 - 0.5 * np.cos(np.pi * t)
        if after:
            t = (np.arange(after, dtype=np.float32) + 1) / np.float32(after + 1)
            r[before + n :] = (0.5 - 0.5 * np.cos(np.pi * t))[::-1]
        return r

    weight = np.outer(ramp(h, top, bottom), ramp(w, left, right))
    out: F32 = ((padded - mean) * weight + mean).astype(np.float32)
    return out


def _grid(
    h: int, w: int, kernels: Sequence[F32]
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The FFT grid and the margins ``(top, bottom, left, right)`` for an ``h × w`` image."""
    k = max(max(p.shape) for p in kernels)
    m = max(MIN_PAD, 2 * k)
    gh, gw = cv2.getOptimalDFTSize(h + 2 * m), cv2.getOptimalDFTSize(w + 2 * m)
    top, left = (gh - h) // 2, (gw - w) // 2
    return (gh, gw), (top, gh - h - top, left, gw - w - left)


# ------------------------------------------------------------------------- the filter


def multiframe_wiener(
    images: Sequence[F32],
    kernels: Sequence[F32],
    noise_var: Sequence[float | npt.ArrayLike],
    prior: Sequence[float | npt.ArrayLike] | Sequence[F32],
    *,
    valid: Sequence[npt.NDArray[np.bool_] | None] | None = None,
    passes: int = MISSING_DATA_PASSES,
    fill: F32 | None = None,
) -> F32:
    """Multi-frame Wiener deconvolution of registered images (module, 4).

    ``images``: ``N`` registered ``float32 (H, W)`` or ``(H, W, C)`` (linear light);
    ``kernels``: their blur kernels (convolution convention, centred); ``noise_var``: per
    image the noise variance, a number or one per channel; ``prior``: per channel either
    ``(A, α)`` of the power law ``A |f|^(−α)`` or a sharp image ``(H, W)`` whose own
    spectrum ``|FFT|² / N`` is the prior (the strict oracle, padded like the data);
    ``valid``: per image where it has data (None: everywhere); pixels without are filled
    by ``K_i * X`` and the system re-solved ``passes`` times; ``fill``: a first guess of
    ``X`` (shape of the images, e.g. the reference frame) for those pixels in the first
    solve (None: the images' own values there). Returns ``float32`` of the images' shape
    (unclipped).
    """
    if not images or len(images) != len(kernels) or len(images) != len(noise_var):
        raise ImageError("Wiener needs as many kernels and noise variances as images")
    shape = images[0].shape
    if any(im.shape != shape for im in images):
        raise ImageError("Wiener images must all have the same shape")
    h, w = shape[:2]
    planes = 1 if len(shape) == 2 else shape[2]
    if len(prior) != planes:
        raise ImageError(f"need a prior per channel ({planes}), got {len(prior)}")
    masks = list(valid) if valid is not None else [None] * len(images)
    grid, margin = _grid(h, w, kernels)
    top, left = margin[0], margin[2]
    otfs = [otf(np.asarray(k, np.float32), grid) for k in kernels]
    freq = _radial_frequency(grid)
    n_grid = float(grid[0] * grid[1])
    out = np.empty((h, w, planes), np.float32)
    for c in range(planes):
        var = [float(np.broadcast_to(np.asarray(v, np.float64), (planes,))[c]) for v in noise_var]
        if min(var) <= 0:
            raise ImageError("noise variances must be positive")
        pc = prior[c]
        if isinstance(pc, np.ndarray) and pc.ndim == 2:
            sharp = _pad_taper(np.asarray(pc, np.float32), margin)
            spec = np.abs(np.fft.rfft2(sharp - sharp.mean())) ** 2 / n_grid
            inv_prior = np.where(freq > 0, 1.0 / np.maximum(spec, 1e-20), 0.0)
        else:
            a, alpha = (float(v) for v in np.asarray(pc, np.float64).ravel()[:2])
            safe = np.where(freq > 0, freq, 1.0)
            inv_prior = np.where(freq > 0, safe**alpha / a, 0.0)
        denom = np.zeros(freq.shape, np.float64)
        for k_f, v in zip(otfs, var, strict=True):
            denom += np.abs(k_f.astype(np.complex128)) ** 2 / v
        denom += inv_prior
        planes_c = [
            np.asarray(im if planes == 1 and im.ndim == 2 else im[..., c], np.float32)
            for im in images
        ]
        estimate: F32 | None = None
        if fill is not None:
            if fill.shape != shape:
                raise ImageError(f"fill {fill.shape} is not the images' shape {shape}")
            guess = fill if planes == 1 and fill.ndim == 2 else fill[..., c]
            estimate = _pad_taper(np.asarray(guess, np.float32), margin)
        for step in range(passes + 1):
            num = np.zeros(freq.shape, np.complex128)
            for y, k_f, v, m in zip(planes_c, otfs, var, masks, strict=True):
                data = y
                if m is not None and estimate is not None and not m.all():
                    synth = np.fft.irfft2(k_f * np.fft.rfft2(estimate), grid)
                    synth = synth[top : top + h, left : left + w].astype(np.float32)
                    data = np.where(m, y, synth).astype(np.float32)
                num += np.conj(k_f) * np.fft.rfft2(_pad_taper(data, margin)) / v
            # the DC term: no prior there (1/S = 0) and Σ|K|²/σ² > 0, so it is the
            # noise-weighted mean; the full estimate on the grid feeds the next pass.
            grid_est = np.fft.irfft2(num / denom, grid).astype(np.float32)
            estimate = grid_est
            if step == passes or all(m is None or m.all() for m in masks):
                break
        assert estimate is not None
        out[..., c] = estimate[top : top + h, left : left + w]
    result: F32 = out.reshape(shape)
    return result


# ------------------------------------------------------------------------ the baseline


TILE_PX = 160
"""A tile side for ``tile=`` (local true kernels), px; the default is 0 (one kernel per
frame)."""
TILE_OVERLAP_PX = 24
"""Each tile is solved this much larger on every side and blended over the overlap."""


@dataclass
class WienerStack:
    """Frames warped into the reference geometry by the truth, linear light, scaled to
    the reference's exposure × gain; entry 0 is the reference."""

    reference: int
    indices: list[int]
    images: list[F32]
    valid: list[npt.NDArray[np.bool_]]


def oracle_stack(
    oracle: Oracle, reference: int, indices: Sequence[int] | None = None
) -> WienerStack:
    """Frames ``indices`` (default: all, ring and extra) warped into frame ``reference``'s
    geometry by the true homography (module, 1)."""
    if not 0 <= reference < len(oracle.burst.frames):
        raise ImageError(f"reference {reference} is not a frame of the burst")
    pool = list(range(len(oracle.burst.frames))) if indices is None else list(indices)
    order = [reference, *[i for i in pool if i != reference]]
    h, w = oracle.burst.size
    stack = WienerStack(reference, [], [], [])
    ones = np.ones((h, w), np.float32)
    for i in order:
        linear = srgb_to_linear(oracle.burst.frames[i])
        scale = _exposure_scale(oracle.burst, i, reference)
        if not math.isclose(scale, 1.0, rel_tol=1e-6):
            linear = linear * np.float32(scale)
        if i == reference:
            warped, valid = linear, np.ones((h, w), np.bool_)
        else:
            m = oracle.homography(i, reference)
            warped = np.asarray(
                cv2.warpPerspective(
                    linear,
                    m,
                    (w, h),
                    flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_REFLECT_101,
                ),
                np.float32,
            )
            cover = cv2.warpPerspective(
                ones,
                m,
                (w, h),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0.0,
            )
            valid = np.asarray(cover, np.float32) > 0.999
        stack.indices.append(i)
        stack.images.append(warped)
        stack.valid.append(valid)
    return stack


def _tiles(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Along one axis of ``n`` px: ``(core0, core1, ext0, ext1)`` per tile."""
    count = max(1, round(n / tile)) if tile > 0 else 1
    edges = np.round(np.linspace(0, n, count + 1)).astype(int)
    return [
        (int(a), int(b), max(0, int(a) - overlap), min(n, int(b) + overlap))
        for a, b in itertools.pairwise(edges.tolist())
    ]


def _blend_ramp(core: tuple[int, int, int, int], n: int) -> F32:
    """Weights along one axis of an extended tile: 1 over the core, a raised cosine
    falling over the overlap into the neighbours (none at the image border)."""
    a, b, e0, e1 = core
    r = np.ones(e1 - e0, np.float32)
    for lo, hi, rising in ((e0, a, True), (b, e1, False)):
        if hi <= lo or (rising and lo == 0) or (not rising and hi == n):
            continue
        span = hi - lo
        pos = (np.arange(span, dtype=np.float32) + 0.5) / np.float32(span)
        ramp = 0.5 - 0.5 * np.cos(np.pi * (pos if rising else 1 - pos))
        r[lo - e0 : hi - e0] = np.maximum(ramp, 1e-3)
    return r


def wiener_true_kernels(
    oracle: Oracle,
    reference: int,
    indices: Sequence[int] | None = None,
    *,
    tile: int = 0,
    overlap: int = TILE_OVERLAP_PX,
    prior: Prior = "power",
    noise: Noise = "measured",
    regularisation: float = 1.0,
    passes: int = MISSING_DATA_PASSES,
) -> U8:
    """The multi-frame Wiener reference of a simulated burst, 8-bit sRGB in frame
    ``reference``'s geometry (module docstring). ``indices``: the frames used (default
    all, ring and extra). ``tile``: 0 (default), the whole frame with one kernel per
    frame, ``psfs[i]``; > 0, tiles of that side, each with the frames' true kernels at
    its centre (:meth:`Oracle.kernel_at`) and its own noise variances. ``prior``:
    ``"power"`` (a power law fitted to the reference's truth) or ``"oracle"`` (the
    truth's own spectrum). ``noise``: see :meth:`Oracle.noise_variance`;
    ``regularisation``: a factor on every noise variance (on ``σ²/S_x``; 1: as measured)."""
    if prior not in ("power", "oracle"):
        raise ImageError(f"unknown prior {prior!r}")
    stack = oracle_stack(oracle, reference, indices)
    order = stack.indices
    h, w = oracle.burst.size
    sharp = srgb_to_linear(oracle.truth[reference])
    laws = [fit_power_law(sharp[..., c]) for c in range(3)] if prior == "power" else []
    acc = np.zeros((h, w, 3), np.float64)
    weight = np.zeros((h, w), np.float64)
    for ty in _tiles(h, tile, overlap):
        for tx in _tiles(w, tile, overlap):
            region = (slice(ty[2], ty[3]), slice(tx[2], tx[3]))
            if tile > 0:
                centre = ((tx[0] + tx[1] - 1) / 2.0, (ty[0] + ty[1] - 1) / 2.0)  # (x, y)
                kernels = [oracle.kernel_at(i, reference, centre) for i in order]
                variances = [oracle.noise_variance(i, reference, region, noise) for i in order]
            else:
                kernels = [np.asarray(oracle.psfs[i], np.float32) for i in order]
                variances = [oracle.noise_variance(i, reference, how=noise) for i in order]
            variances = [v * regularisation for v in variances]
            priors: list[F32] | list[tuple[float, float]]
            if prior == "power":
                priors = laws
            else:
                priors = [np.ascontiguousarray(sharp[region][..., c]) for c in range(3)]
            x = multiframe_wiener(
                [im[region] for im in stack.images],
                kernels,
                variances,
                priors,
                valid=[v[region] for v in stack.valid],
                passes=passes,
                fill=stack.images[0][region],
            )
            wt = np.outer(_blend_ramp(ty, h), _blend_ramp(tx, w)).astype(np.float64)
            acc[region] += x * wt[..., None]
            weight[region] += wt
    fused = (acc / weight[..., None]).astype(np.float32)
    return linear_to_srgb(np.clip(fused, 0.0, 1.0))


REGULARISATION_SCALES = (1.0, 2.0, 4.0, 8.0)
"""The factors on ``σ²/S_x`` :func:`wiener_reference` tries per burst."""


@dataclass(frozen=True)
class ReferenceChoice:
    """What :func:`wiener_reference` picked: the frames, the factor on ``σ²/S_x``, and the
    PSNR (dB, 8-bit sRGB, ``border`` cropped) of every combination it tried."""

    frames: str
    regularisation: float
    tried: dict[str, float]


def wiener_reference(
    oracle: Oracle,
    reference: int,
    candidates: Sequence[int],
    *,
    scales: Sequence[float] = REGULARISATION_SCALES,
    border: int = 16,
) -> tuple[U8, ReferenceChoice]:
    """The reference as the evaluation reports it: :func:`wiener_true_kernels` with the
    per-burst best of a few settings, chosen by PSNR against the reference's truth (an
    oracle choice, like the per-burst best noise ratio of the single-frame Wiener
    reference): the frames ``candidates`` (the ring window the pipeline selects from) or
    all of the burst (with its extra frames, when it has any), times the factors
    ``scales`` on ``σ²/S_x``. Returns the best image and the :class:`ReferenceChoice`."""
    from deblurd.evaluation.metrics import psnr

    if not scales:
        raise ImageError("no regularisation factor to try")
    truth = oracle.truth[reference]
    sets: dict[str, list[int] | None] = {"candidates": list(candidates)}
    if len(oracle.burst.frames) > len(set(candidates) | {reference}):
        sets["all"] = None
    tried: dict[str, float] = {}
    best: tuple[float, str, float, U8] | None = None
    for name, frames in sets.items():
        for scale in scales:
            img = wiener_true_kernels(oracle, reference, frames, regularisation=scale)
            score = psnr(img, truth, border=border)
            tried[f"{name} x{scale:g}"] = round(score, 3)
            if best is None or score > best[0]:
                best = (score, name, scale, img)
    assert best is not None
    return best[3], ReferenceChoice(best[1], best[2], tried)
