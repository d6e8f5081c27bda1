"""Stage 4b on the GPU: :func:`~deblurd.pipeline.fusion.fuse` and its two modes over the
``fusion.cu`` kernels.

Same weights and results as :mod:`deblurd.pipeline.fusion` (see its docstring for the
method). Per job, the reference's statistics (its low-pass, the noise variances of both
tests, the calibration bins) are computed on the host by the CPU fuser's own
:class:`~deblurd.pipeline.fusion.ReferenceGuide`, so both backends use identical
numbers, and uploaded once. Per frame, everything at pixel rate runs on the device: the
half-resolution differences, the low-pass, the motion and detail tests, the min filter,
the smoothing, the upsampling and the accumulation. What needs a median (exposure
matching, noise calibration) is computed on the host from the same sparse samples the CPU
fuser uses (tens of thousands of values gathered on the device), by the same code
(:class:`~deblurd.pipeline.fusion.NoiseCalibration`), and enters the kernels as a few
numbers: the motion test's factor per brightness bin and, with ``fusion.calibrate_detail``,
the detail test's own (from its energy ratios, computed on the device at the calibration
grid), each as a small interpolation table.

Aligned frames come in two kinds. A host :class:`~deblurd.pipeline.fusion.AlignedFrame`
is uploaded (image and valid mask, ``H * W * 16`` bytes). A
:class:`~deblurd.gpu.resident.DeviceAlignedFrame` (the registrar's
:meth:`~deblurd.gpu.registrar.GpuRegistrar.warp_resident`) is already in this backend's
memory and is read where it lies: per frame, nothing crosses but the sparse samples above
(down), the per-row sums of its weight (``H`` float64, down) and the calibration table
(at most 128 bytes, up). The only full-frame download is the result.

:class:`GpuFuser` offers :func:`~deblurd.pipeline.fusion.fuse` with the same signature
(:meth:`~GpuFuser.fuse`; the mode is ``settings.mode``), taking either kind of frame, and
the streaming job it runs (``add`` / ``result`` as
:class:`~deblurd.pipeline.fusion.SequentialFuser`): :meth:`~GpuFuser.job`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.gpu.backend import Backend, Buffer, GpuError, grid_1d, grid_2d, shared_backend
from deblurd.gpu.resident import AnyAlignedFrame, DeviceAlignedFrame
from deblurd.imaging import F32, I32
from deblurd.pipeline.fusion import (
    FusionResult,
    ReferenceGuide,
    as_linear_rgb,
    check_aligned_frame,
    exposure_gains_from_samples,
    exposure_sample_step,
    gaussian_ksize,
    resolve_noise,
)
from deblurd.pipeline.noise import NoiseModel
from deblurd.settings.fusion import FusionSettings

_P = "fuse/"
AREA_TAPS = 3  # fusion.cu: taps per axis of the half-resolution INTER_AREA resize


def area_taps(ssize: int, dsize: int) -> tuple[I32, F32]:
    """cv2.resize INTER_AREA taps along one axis (OpenCV's computeResizeAreaTab):
    ``(index, weight)``, each ``(dsize, 3)``, unused taps weight 0."""
    idx = np.zeros((dsize, AREA_TAPS), np.int32)
    wts = np.zeros((dsize, AREA_TAPS), np.float32)
    scale = ssize / dsize
    for d in range(dsize):
        taps: list[tuple[int, float]] = []
        fs1 = d * scale
        fs2 = fs1 + scale
        cell = min(scale, ssize - fs1)
        s1, s2 = math.ceil(fs1), math.floor(fs2)
        s2 = min(s2, ssize - 1)
        s1 = min(s1, s2)
        if s1 - fs1 > 1e-3:
            taps.append((s1 - 1, (s1 - fs1) / cell))
        taps.extend((s, 1.0 / cell) for s in range(s1, s2))
        if fs2 - s2 > 1e-3:
            taps.append((s2, min(min(fs2 - s2, 1.0), cell) / cell))
        if len(taps) > AREA_TAPS:
            raise ValueError(f"area resize {ssize} -> {dsize} needs {len(taps)} taps")
        for j, (s, wt) in enumerate(taps):
            idx[d, j], wts[d, j] = s, wt
    return idx, wts


def linear_taps(ssize: int, dsize: int) -> tuple[I32, F32]:
    """cv2.resize INTER_LINEAR along one axis: left source index and the float32 weight of
    the right one, ``(dsize,)`` each (clamped at both ends as OpenCV does)."""
    scale = 1.0 / (dsize / ssize)
    fx = ((np.arange(dsize, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    sx = np.floor(fx).astype(np.int32)
    frac = (fx - sx.astype(np.float32)).astype(np.float32)
    low = sx < 0
    frac[low], sx[low] = 0.0, 0
    high = sx >= ssize - 1
    frac[high], sx[high] = 0.0, ssize - 1
    return sx, frac


def _i(v: int) -> np.int32:
    return np.int32(v)


def _f(v: float) -> np.float32:
    return np.float32(v)


class GpuSequentialFuser:
    """One fusion job on the device; ``mode`` "sequential" (running average) or
    "reference" (sum, divided at the end). Use through :class:`GpuFuser`.

    Memory: O(one frame) in both modes (the to-reference sum is accumulated frame by
    frame). :meth:`add` takes host or device-resident aligned frames.
    """

    def __init__(
        self,
        backend: Backend,
        reference: npt.NDArray[np.generic],
        settings: FusionSettings,
        noise_sigma: float | NoiseModel | None,
        mode: str,
    ) -> None:
        b = self.backend = backend
        ref = as_linear_rgb(reference, "reference")
        self._settings = s = settings
        self._mode = mode
        self._noise = resolve_noise(ref, settings, noise_sigma)
        guide = self._guide = ReferenceGuide(
            ref, settings, self._noise if self._noise is not None else NoiseModel.constant(1.0)
        )
        self._shape = ref.shape
        H, W = ref.shape[:2]
        w2, h2 = guide.half_size
        self._size, self._half = (W, H), (w2, h2)
        self._frame_weights: list[float] = []
        self._ref = b.upload_new(_P + "ref", ref)  # what frames are compared with
        rw = np.float32(s.reference_weight)
        acc = ref * rw if mode == "reference" else ref
        self._acc = b.upload_new(_P + "acc", np.ascontiguousarray(acc, np.float32))
        self._wsum = b.upload_new(_P + "wsum", np.full((H, W), rw, np.float32))
        self._weighted = s.robust or s.match_exposure
        if not self._weighted:
            return
        ax, ay = area_taps(W, w2), area_taps(H, h2)
        self._area = [
            b.upload_new(_P + n, a)
            for n, a in zip(("ax_i", "ax_w", "ay_i", "ay_w"), (*ax, *ay), strict=True)
        ]
        lx, ly = linear_taps(w2, W), linear_taps(h2, H)
        self._lin = [
            b.upload_new(_P + n, a)
            for n, a in zip(("lx_i", "lx_a", "ly_i", "ly_a"), (*lx, *ly), strict=True)
        ]
        self._inv_var_lo = b.upload_new(_P + "ivlo", np.ascontiguousarray(guide.inv_var_lo))
        self._inv_var_box = b.upload_new(_P + "ivbox", np.ascontiguousarray(guide.inv_var_box))
        self._luma = b.upload_new(_P + "luma", np.ascontiguousarray(guide.luma_lo, np.float32))
        self._guide_k = self._kernel("gk", guide.guide_sigma)
        self._smooth_k = self._kernel("sk", guide.smooth_sigma)
        half3, half1 = (h2, w2, 3), (h2, w2)
        self._d_half = b.buffer(_P + "d_half", half3, np.float32)
        self._e_half = b.buffer(_P + "e_half", half3, np.float32)
        self._tmp3 = b.buffer(_P + "tmp3", half3, np.float32)
        self._d_lo = b.buffer(_P + "d_lo", half3, np.float32)
        self._q = b.buffer(_P + "q", half3, np.float32)
        self._vmask = b.buffer(_P + "vmask", half1, np.float32)
        self._w_half = b.buffer(_P + "w_half", half1, np.float32)
        self._tmp1 = b.buffer(_P + "tmp1", half1, np.float32)
        self._cal = b.buffer(_P + "cal", (2 * 16,), np.float32)
        self._cal_d = b.buffer(_P + "cal_detail", (2 * 16,), np.float32)  # the detail test's
        # exposure matching samples the reference's low-pass on this grid
        self._exp_step = exposure_sample_step(h2, w2)
        self._ref_lo_s = guide.lo[:: self._exp_step, :: self._exp_step]

    def _kernel(self, name: str, sigma: float) -> tuple[Buffer, int] | None:
        if sigma <= 0.0:
            return None
        k = gaussian_ksize(sigma)
        taps = np.asarray(cv2.getGaussianKernel(k, sigma, cv2.CV_32F), np.float32).reshape(-1)
        return self.backend.upload_new(_P + name, taps), k // 2

    def _blur(
        self, src: Buffer, dst: Buffer, tmp: Buffer, c: int, kernel: tuple[Buffer, int] | None
    ) -> Buffer:
        """Separable Gaussian of ``src`` into ``dst`` (``src`` itself without a kernel)."""
        if kernel is None:
            return src
        w2, h2 = self._half
        taps, r = kernel
        g = grid_2d(w2, h2)
        self.backend.launch("sep_row", *g, src, _i(w2), _i(h2), _i(c), taps, _i(r), tmp)
        self.backend.launch("sep_col", *g, tmp, _i(w2), _i(h2), _i(c), taps, _i(r), dst)
        return dst

    def _differences(self, img: Buffer, valid: Buffer, gains: F32) -> Buffer:
        """d_half, e_half, vmask of the frame times ``gains``; returns the low-passed d."""
        W, H = self._size
        w2, h2 = self._half
        self.backend.launch(
            "area_half_diff",
            *grid_2d(w2, h2),
            img,
            self._ref,
            valid,
            _i(W),
            _i(H),
            _i(w2),
            _i(h2),
            *self._area,
            *[_f(float(g)) for g in gains],
            self._d_half,
            self._e_half,
            self._vmask,
        )
        return self._blur(self._d_half, self._d_lo, self._tmp3, 3, self._guide_k)

    def _samples(self, src: Buffer, c: int, step: int, key: str) -> F32:
        """``src[::step, ::step]`` (``c`` channels) gathered on the device, downloaded."""
        w2, h2 = self._half
        out = self.backend.buffer(
            _P + key, (math.ceil(h2 / step), math.ceil(w2 / step), c), np.float32
        )
        self.backend.launch(
            "gather_strided",
            *grid_2d(out.shape[1], out.shape[0]),
            src,
            _i(w2),
            _i(h2),
            _i(c),
            _i(step),
            out,
        )
        got: F32 = self.backend.download(out)
        return got

    def _exposure_gain(self, d_lo: Buffer) -> F32 | None:
        """ReferenceGuide.exposure_gain from the device's samples."""
        step = self._exp_step
        x_s = self._samples(d_lo, 3, step, "exp_d") + self._ref_lo_s
        ok = self._samples(self._vmask, 1, step, "exp_v")[..., 0] > 0.5
        return exposure_gains_from_samples(self._ref_lo_s, x_s, ok)

    def _calibration(
        self, d_lo: Buffer, detail: bool
    ) -> tuple[tuple[F32, F32] | None, tuple[F32, F32] | None]:
        """ReferenceGuide.calibration's bin factors from the device's samples, and with
        ``detail`` those of ReferenceGuide.detail_calibration (the detail test's ratios,
        computed on the device at the same sparse grid; measured after the motion test's,
        as the CPU guide does): each ``(levels, factors)`` for np.interp, or None when
        nothing changes."""
        guide = self._guide
        if not guide.calib_chunks:
            return None, None
        st = guide.calib_step
        zs = guide.signed_samples(self._samples(d_lo, 3, st, "cal_d"))
        ok = self._samples(self._vmask, 1, st, "cal_v").reshape(-1) > 0.5
        cal = guide.calibrator
        motion = self._table(cal.factors(zs, guide.calib_chunks, ok))
        if not detail:
            return motion, None
        ratios = self._detail_ratios(st)
        tolerance = self._settings.detail_tolerance
        return motion, self._table(cal.detail_factors(ratios, guide.calib_chunks, ok, tolerance))

    def _table(self, factors: npt.NDArray[np.float64] | None) -> tuple[F32, F32] | None:
        """Bin factors as the kernel's interpolation table ``(levels, factors)``."""
        if factors is None:
            return None
        if factors.size == 1:
            return np.zeros(1, np.float32), np.asarray(factors, np.float32)
        return (np.asarray(self._guide.calib_levels, np.float32), np.asarray(factors, np.float32))

    def _detail_ratios(self, step: int) -> F32:
        """The detail test's ratios (local energy over the model's) at ``[::step, ::step]``
        of the half-resolution grid, computed on the device, downloaded flat ``(n,)``."""
        w2, h2 = self._half
        out = self.backend.buffer(
            _P + "cal_r", (math.ceil(h2 / step), math.ceil(w2 / step)), np.float32
        )
        self.backend.launch(
            "detail_ratio_strided",
            *grid_2d(out.shape[1], out.shape[0]),
            self._e_half,
            self._inv_var_box,
            _i(w2),
            _i(h2),
            _i(step),
            out,
        )
        got: F32 = self.backend.download(out).reshape(-1)
        return got

    def _upload_table(self, buf: Buffer, cal: tuple[F32, F32] | None) -> int:
        """Upload a calibration table into ``buf``; returns its number of bins (0: none)."""
        if cal is None:
            return 0
        levels, factors = cal
        n = len(factors)
        table = np.zeros(32, np.float32)
        table[:n], table[n : 2 * n] = levels, factors
        self.backend.upload(buf, table)
        return n

    def _device_inputs(self, frame: DeviceAlignedFrame) -> tuple[Buffer, Buffer]:
        """A device-resident frame's buffers, checked: :class:`ImageError` for a wrong
        shape, dtype or weight; :class:`GpuError` for buffers that are not this backend's
        (another backend, freed) or whose lease has ended (overwritten by a later warp)."""
        what = f"aligned frame {len(self._frame_weights)}"
        H, W = self._shape[:2]
        image, valid = frame.image, frame.valid
        if not isinstance(image, Buffer) or not isinstance(valid, Buffer):
            raise ImageError(
                f"{what}: a device-resident frame holds device Buffers, got "
                f"{type(image).__name__}, {type(valid).__name__}"
            )
        if image.shape != (H, W, 3) or image.dtype != np.float32:
            raise ImageError(
                f"{what}: device image {image.dtype}{image.shape}, expected "
                f"float32{(H, W, 3)} (the reference's shape)"
            )
        if valid.shape != (H, W) or valid.dtype != np.float32:
            raise ImageError(
                f"{what}: device valid mask {valid.dtype}{valid.shape}, expected float32{(H, W)}"
            )
        if not math.isfinite(frame.weight) or frame.weight < 0.0:
            raise ImageError(f"{what}: frame weight must be finite and >= 0, got {frame.weight}")
        if not (self.backend.owns(image) and self.backend.owns(valid)):
            raise GpuError(
                f"{what}: its device buffers are not live buffers of this fuser's "
                f"{self.backend.name} backend (another backend, or freed)"
            )
        if frame.lease is not None and not frame.lease.alive:
            raise GpuError(
                f"{what}: its device buffers were overwritten by a later warp "
                "(fuse each aligned frame before warping the next)"
            )
        return image, valid

    def add(self, frame: AnyAlignedFrame) -> float:
        """Merge one frame; returns the mean per-pixel weight it got (0..1).

        A :class:`~deblurd.pipeline.fusion.AlignedFrame` is uploaded; a
        :class:`~deblurd.gpu.resident.DeviceAlignedFrame` is read in place (checked by
        :meth:`_device_inputs`). Same arithmetic for both.
        """
        b, s = self.backend, self._settings
        W, H = self._size
        w2, h2 = self._half
        if isinstance(frame, DeviceAlignedFrame):
            img, val = self._device_inputs(frame)
        else:
            image, valid = check_aligned_frame(frame, self._shape, len(self._frame_weights))
            img = b.upload_new(_P + "img", image)
            val = b.upload_new(_P + "valid", valid)
        gains = np.ones(3, np.float32)
        w_half: Buffer | None = None
        if self._weighted:
            d_lo = self._differences(img, val, gains)
            if s.match_exposure:
                found = self._exposure_gain(d_lo)
                if found is not None:
                    gains = found
                    d_lo = self._differences(img, val, gains)
            if s.robust:
                w_half = self._robust_weights(d_lo)
        wfull = b.buffer(_P + "wfull", (H, W), np.float32)
        b.launch(
            "fuse_accumulate",
            *grid_2d(W, H),
            w_half,
            _i(w2),
            _i(h2),
            *self._lin_or_none(),
            val,
            img,
            _i(W),
            _i(H),
            *[_f(float(g)) for g in gains],
            _f(frame.weight),
            _i(0 if self._mode == "reference" else 1),
            wfull,
            self._acc,
            self._wsum,
        )
        rows = b.buffer(_P + "rows", (H,), np.float64)
        b.launch("row_sums", *grid_1d(H), wfull, _i(W), _i(H), rows)
        mean_w = float(b.download(rows).sum() / (W * H))
        self._frame_weights.append(mean_w)
        return mean_w

    def _lin_or_none(self) -> list[Buffer | None]:
        return list(self._lin) if self._weighted else [None] * 4

    def _robust_weights(self, d_lo: Buffer) -> Buffer:
        """The half-resolution weight map: tests, min filter, smoothing."""
        b, s, guide = self.backend, self._settings, self._guide
        w2, h2 = self._half
        n3 = w2 * h2 * 3
        b.launch("fuse_q", *grid_1d(n3), d_lo, self._inv_var_lo, _i(n3), self._q)
        # the detail test's own factor (fusion.calibrate_detail), as the CPU guide: only
        # when the detail test runs; otherwise it divides by the motion test's factor
        own_detail = s.calibrate_noise and s.calibrate_detail and s.detail_guard
        cal, cal_detail = self._calibration(d_lo, own_detail) if s.calibrate_noise else (None, None)
        ncal = self._upload_table(self._cal, cal)
        cal_d, ncal_d = self._cal, ncal
        if own_detail:
            cal_d, ncal_d = self._cal_d, self._upload_table(self._cal_d, cal_detail)
        k, t = s.robust_k, s.detail_tolerance
        b.launch(
            "weight_half",
            *grid_2d(w2, h2),
            self._q,
            self._e_half,
            self._inv_var_box,
            self._luma,
            _i(w2),
            _i(h2),
            self._cal,
            _i(ncal),
            cal_d,
            _i(ncal_d),
            _f(k),
            _f(1.0 / (2.0 * k - k)),
            _i(1 if s.detail_guard else 0),
            _f(t),
            _f(1.0 / (3.0 * t - t)),
            self._w_half,
        )
        w = self._w_half
        if guide.grow_kernel is not None:
            r = guide.grow_kernel.shape[0] // 2
            b.launch("erode_min", *grid_2d(w2, h2), w, _i(w2), _i(h2), _i(r), self._tmp1)
            w = self._tmp1
        if self._smooth_k is not None:
            dst = self._w_half if w is self._tmp1 else self._tmp1
            tmp = self.backend.buffer(_P + "tmp1b", (h2, w2), np.float32)
            w = self._blur(w, dst, tmp, 1, self._smooth_k)
        return w

    def result(self) -> FusionResult:
        """The fused image so far (downloaded: adding more frames does not change it)."""
        b = self.backend
        W, H = self._size
        if self._mode == "reference":
            out = b.buffer(_P + "out", (H, W, 3), np.float32)
            b.launch("divide_wsum", *grid_1d(W * H), self._acc, self._wsum, _i(W * H), out)
            image: F32 = b.download(out)
            wsum = b.download(self._wsum)
        else:
            image = b.download(self._acc)
            wsum = b.download(self._wsum)
        factor, sigma = self._guide.measured_noise()
        return FusionResult(
            image=image,
            weight_sum=wsum,
            frame_weights=list(self._frame_weights),
            noise_model=self._noise,
            noise_factor=factor,
            frame_noise_sigma=sigma,
        )


class GpuFuser:
    """The fuse functions of :mod:`deblurd.pipeline.fusion` on a backend (``"cuda"``,
    ``"emulated"`` or a :class:`~deblurd.gpu.backend.Backend`). :meth:`close` frees the
    fusion buffers (they are otherwise kept for the next job of the same size)."""

    def __init__(self, backend: Backend | str = "cuda") -> None:
        self.backend = shared_backend(backend) if isinstance(backend, str) else backend

    def job(
        self,
        reference: npt.NDArray[np.generic],
        settings: FusionSettings,
        noise_sigma: float | NoiseModel | None = None,
    ) -> GpuSequentialFuser:
        """A streaming job (``add(frame)``, ``result()``, as
        :class:`~deblurd.pipeline.fusion.SequentialFuser`) in ``settings.mode``: what
        :meth:`fuse` computes from the frames added."""
        return GpuSequentialFuser(self.backend, reference, settings, noise_sigma, settings.mode)

    def fuse(
        self,
        reference: npt.NDArray[np.generic],
        frames: Iterable[AnyAlignedFrame],
        settings: FusionSettings,
        noise_sigma: float | NoiseModel | None = None,
    ) -> FusionResult:
        """fusion.fuse on the device: by ``settings.mode`` (both modes stream ``frames``)."""
        job = self.job(reference, settings, noise_sigma)
        for frame in frames:
            job.add(frame)
        return job.result()

    def close(self) -> None:
        """Free the fusion buffers."""
        self.backend.release(_P)
