"""Benchmark the GPU registration path: per kernel and end to end, per frame pair, at 1080p
and 12 MP, beside the OpenCV registrar on the same machine.

    python tools/bench_gpu.py [--sizes 1080p 12mp] [--pairs 5] [--no-emulated]

With a CUDA GPU (pycuda importable, a driver, nvcc) it times the CUDA backend; without
one it prints "no GPU" and times the OpenCV path and the host-emulated kernels (a
single-threaded CPU build: a correctness reference, not a speed target). Per-kernel
times are wall times of each launch followed by a synchronize; end to end is
``register()`` of one frame (pyramid, both LK passes, host homography) plus the warp of
its linear RGB image.

Then the whole of stage 4 per second frame as the pipeline streams it (upload, gray,
pyramid, LK, homography, warp, fusion into a to-reference job), from the camera's uint8
frame: the host round trip (frame converted on the host, gray and linear uploaded, the
aligned frame downloaded and uploaded again to the fuser) against the device-resident
path (one uint8 upload; :mod:`deblurd.gpu.resident`), with the bytes each moves per
frame, beside OpenCV + the CPU fuser. Prints peak host memory (ru_maxrss) at the end.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.gpu.backend import Backend, KernelArg, available
from deblurd.imaging import F32, U8, srgb_to_linear
from deblurd.pipeline.registration import OpenCVRegistrar, Registrar, Registration
from deblurd.pipeline.stage4 import Aligner, CpuFusionJob, FusionJob, RegistrarAligner
from deblurd.settings.fusion import FusionSettings
from deblurd.settings.registration import RegistrationSettings

SIZES = {"1080p": (1920, 1080), "12mp": (4000, 3000)}


def scene(width: int, height: int, seed: int = 0) -> F32:
    """A textured synthetic scene (blobs and edges at several scales), [0, 1]."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 32 + 2, width // 32 + 2)).astype(np.float32)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(300):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(4, max(5, width // 40)))
        cv2.rectangle(img, (x, y), (x + r, y + r), float(rng.random()), -1)
    out: F32 = np.clip(img, 0, 1).astype(np.float32)
    return out


def shifted(img: F32, rng: np.random.Generator) -> F32:
    h, w = img.shape
    a = math.radians(rng.uniform(-0.5, 0.5))
    M = cv2.getRotationMatrix2D((w / 2, h / 2), math.degrees(a), 1.0)
    M[:, 2] += rng.uniform(-10, 10, 2) * w / 1920
    out = cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    noisy: F32 = np.clip(out + rng.normal(0, 0.01, out.shape), 0, 1).astype(np.float32)
    return noisy


class TimedBackend(Backend):
    """Wraps a backend: synchronizes after every launch and records its wall time; counts
    the bytes uploaded and downloaded."""

    def __init__(self, inner: Backend) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.times: dict[str, list[float]] = defaultdict(list)
        self.up_bytes = 0
        self.down_bytes = 0
        self._pool = inner._pool

    def _alloc(self, nbytes: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        return self.inner._alloc(nbytes, shape, dtype)

    def _free(self, buf: Any) -> None:
        self.inner._free(buf)

    def upload(self, buf: Any, host: npt.NDArray[Any]) -> None:
        self.up_bytes += int(buf.nbytes)
        self.inner.upload(buf, host)

    def download(self, buf: Any) -> npt.NDArray[Any]:
        self.down_bytes += int(buf.nbytes)
        return self.inner.download(buf)

    def launch(
        self, kernel: str, grid: tuple[int, int], block: tuple[int, int], *args: KernelArg
    ) -> None:
        self.inner.synchronize()
        t0 = time.perf_counter()
        self.inner.launch(kernel, grid, block, *args)
        self.inner.synchronize()
        self.times[kernel].append((time.perf_counter() - t0) * 1000.0)

    def synchronize(self) -> None:
        self.inner.synchronize()


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    out = fn()  # warm-up (allocations, compilation)
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t0) * 1000.0 / repeat, out


def register_all(registrar: Registrar, frames: list[F32]) -> list[Registration]:
    return [registrar.register(f) for f in frames]


def to_frame(gray: F32) -> U8:
    """A camera frame of a gray scene: ``uint8 (H, W, 3)`` sRGB RGB."""
    code = np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8)
    out: U8 = np.ascontiguousarray(np.dstack([code, code, code]))
    return out


def stream(
    aligner: Aligner,
    job: Callable[[], FusionJob],
    first: F32,
    frames: list[U8],
    sync: Callable[[], None],
) -> tuple[float, int]:
    """Stage 4 as the pipeline runs it: ``(ms per frame, frames fused)``; the reference
    and the fusion job's set-up are not timed."""
    aligner.set_reference(first)
    fusion = job()
    sync()
    t0 = time.perf_counter()
    fused = 0
    for frame in frames:
        _reg, aligned = aligner.align(frame)
        if aligned is not None:
            fusion.add(aligned)
            fused += 1
    sync()
    return (time.perf_counter() - t0) * 1000.0 / len(frames), fused


def bench_stage4(frames: list[U8], ref: U8, backends: list[Backend]) -> None:
    """Per second frame: host round trip vs device-resident, time and bytes moved."""
    from deblurd.gpu.fuser import GpuFuser
    from deblurd.gpu.handoff import DeviceAligner
    from deblurd.gpu.registrar import GpuRegistrar

    s, fs = RegistrationSettings(), FusionSettings(mode="reference")
    first = srgb_to_linear(ref)
    n = len(frames)
    print(
        f"  stage 4 per frame from the uint8 frame (upload + gray + pyramid + LK + warp + "
        f"fuse), {n} frames:"
    )
    cpu_ms, fused = stream(
        RegistrarAligner(OpenCVRegistrar(s)),
        partial(CpuFusionJob, first, fs),
        first,
        frames,
        lambda: None,
    )
    print(f"    {'opencv':10s} {cpu_ms:9.1f} ms/frame (OpenCV + CPU fuser; fused {fused}/{n})")
    for backend in backends:
        for label, make in (("round trip", RegistrarAligner), ("resident", DeviceAligner)):
            counted = TimedBackend(backend)  # bytes (its per-launch waits would skew time)
            aligner_c = make(GpuRegistrar(s, counted))
            aligner_c.set_reference(first)
            job_c = GpuFuser(counted).job(first, fs)
            counted.up_bytes = counted.down_bytes = 0
            for frame in frames:
                _reg, aligned = aligner_c.align(frame)
                if aligned is not None:
                    job_c.add(aligned)
            up, down = counted.up_bytes / n / 1e6, counted.down_bytes / n / 1e6
            aligner = make(GpuRegistrar(s, backend))
            job = partial(GpuFuser(backend).job, first, fs)
            stream(aligner, job, first, frames, backend.synchronize)  # warm-up
            ms, fused = stream(aligner, job, first, frames, backend.synchronize)
            print(
                f"    {backend.name:10s} {label:10s} {ms:9.1f} ms/frame  x{cpu_ms / ms:5.2f} vs "
                f"opencv  up {up:7.2f} MB  down {down:7.2f} MB per frame (fused {fused}/{n})"
            )
            aligner.close()


def bench_size(label: str, size: tuple[int, int], pairs: int, backends: list[Backend]) -> None:
    from deblurd.gpu.registrar import GpuRegistrar

    w, h = size
    rng = np.random.default_rng(1)
    ref = scene(w, h)
    frames = [shifted(ref, rng) for _ in range(pairs)]
    rgb = np.dstack([frames[0]] * 3)
    s = RegistrationSettings()
    print(f"\n== {label} ({w}x{h}), {pairs} pairs")
    cpu = OpenCVRegistrar(s)
    cpu.set_reference(ref)
    ms_reg, reg = timed(partial(register_all, cpu, frames), 1)
    ms_warp, _ = timed(partial(cpu.warp, rgb, reg[0]), 1)
    cpu_pair = ms_reg / pairs + ms_warp
    print(
        f"opencv     register {ms_reg / pairs:8.1f} ms/pair  warp RGB {ms_warp:7.1f} ms  "
        f"=> {cpu_pair:8.1f} ms/pair  (accepted {sum(r.accepted for r in reg)}/{pairs})"
    )
    for backend in backends:
        tb = TimedBackend(backend)
        gpu = GpuRegistrar(s, tb)
        gpu.set_reference(ref)
        tb.times.clear()
        _ms, greg = timed(partial(register_all, gpu, frames), 1)
        timed(partial(gpu.warp, rgb, greg[0]), 1)
        per_kernel = {k: sum(v) / len(v) for k, v in sorted(tb.times.items())}
        # end to end without the per-launch synchronisation
        plain = GpuRegistrar(s, backend)
        plain.set_reference(ref)
        e2e_reg, _ = timed(partial(register_all, plain, frames), 1)
        stages = {k: round(v, 1) for k, v in plain.stage_ms.items()}
        e2e_warp, _ = timed(partial(plain.warp, rgb, greg[0]), 1)
        pair = e2e_reg / pairs + e2e_warp
        print(
            f"{backend.name:10s} register {e2e_reg / pairs:8.1f} ms/pair  warp RGB "
            f"{e2e_warp:7.1f} ms  => {pair:8.1f} ms/pair  x{cpu_pair / pair:5.2f} vs opencv  "
            f"(accepted {sum(r.accepted for r in greg)}/{pairs}; last register {stages} ms)"
        )
        print("  per kernel launch (ms, mean):")
        for k, v in per_kernel.items():
            print(f"    {k:18s} {v:9.3f}  x{len(tb.times[k])}")
        plain.close()
    bench_stage4([to_frame(f) for f in frames], to_frame(ref), backends)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--no-emulated", action="store_true", help="skip the host-emulated path")
    args = ap.parse_args(argv)
    backends: list[Backend] = []
    ok, why = available()
    if ok:
        from deblurd.gpu.cuda import CudaBackend

        print(f"GPU: {why}")
        backends.append(CudaBackend())
    else:
        print(f"no GPU ({why}): timing the OpenCV path and the host-emulated kernels")
    if not args.no_emulated:
        from deblurd.gpu.emulation import EmulatedBackend

        backends.append(EmulatedBackend())
    for label in args.sizes:
        bench_size(label, SIZES[label], args.pairs, backends)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"\npeak host memory: {peak:.0f} MiB")
    for b in backends:
        b.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
