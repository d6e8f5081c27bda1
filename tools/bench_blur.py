"""Benchmark (and calibrate) the blur score, ``deblurd.pipeline.blur``.

    python tools/bench_blur.py                 # ms per 1080p and 12 MP frame, peak memory
    python tools/bench_blur.py --repeat 100 --size 256
    python tools/bench_blur.py --calibrate     # typical scores: sharp photos, 2/5/10 px blur

Timing: median (and min) of ``--repeat`` calls on one uint8 RGB frame, after a warm-up
call; per stage: the analysis image (crop, gray, area downsample) and the spectrum (window,
FFT, rings, noise floor). Memory: the peak of numpy/Python allocations during one call
(tracemalloc; OpenCV's own buffers are not seen by it) and the process's peak RSS.
``--calibrate`` needs scikit-image (the ``dev`` extra): its photos are evaluation images.
"""

from __future__ import annotations

import argparse
import functools
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

import cv2
import numpy as np

from deblurd.imaging import F32, U8, linear_to_srgb, srgb_to_linear
from deblurd.pipeline.blur import DEFAULT_SIZE, analysis_image, blur_score, ring_powers


def natural_frame(height: int, width: int, seed: int = 0) -> U8:
    """A natural-looking uint8 RGB frame: 1/f noise in three channels, sRGB-encoded."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    channels = []
    for _ in range(3):
        spec = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius
        spec[0, 0] = 0.0
        img = np.fft.irfft2(spec, s=(height, width))
        channels.append((img - img.mean()) / (6.0 * img.std()) + 0.5)
    return np.clip(np.round(np.stack(channels, -1) * 255.0), 0, 255).astype(np.uint8)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median, min) wall time of ``fn()`` in ms over ``repeat`` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), min(times)


def peak_alloc_mib(fn: Callable[[], object]) -> float:
    """Peak traced (numpy/Python) allocation during one call of ``fn``, MiB."""
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def bench(size: int, repeat: int) -> None:
    print(f"blur score, size {size}, median (min) of {repeat} calls, uint8 RGB frames")
    print(f"OpenCV threads {cv2.getNumThreads()}, numpy {np.__version__}")
    base = natural_frame(1080, 1920)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    for name, (h, w) in (("1080p", (1080, 1920)), ("12MP", (3000, 4000))):
        frame = base
        if w != base.shape[1]:
            frame = np.asarray(cv2.resize(base, (w, h), interpolation=cv2.INTER_LINEAR), np.uint8)
        gray = analysis_image(frame, size)
        total = timed(functools.partial(blur_score, frame, size), repeat)
        stage_a = timed(functools.partial(analysis_image, frame, size), repeat)
        stage_s = timed(functools.partial(ring_powers, gray, 1.0 / 255.0), repeat)
        peak = peak_alloc_mib(functools.partial(blur_score, frame, size))
        print(
            f"  {name:6s} {w}x{h}: total {total[0]:6.2f} ms ({total[1]:.2f})  "
            f"analysis image {stage_a[0]:5.2f} ms  spectrum {stage_s[0]:5.2f} ms  "
            f"peak alloc {peak:5.1f} MiB"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"  process peak RSS {rss:.0f} MiB ({rss0:.0f} MiB before the 12 MP frame and scoring)")


def motion_kernel(length: float, angle_deg: float) -> F32:
    """Normalised line kernel of ``length`` px (segment splatted bilinearly)."""
    half = int(np.ceil(length / 2.0)) + 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float64)
    n = max(int(length * 16), 1)
    t = ((np.arange(n) + 0.5) / n - 0.5) * length
    xs = half + t * np.cos(np.deg2rad(angle_deg))
    ys = half - t * np.sin(np.deg2rad(angle_deg))
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            np.add.at(kernel, (y0 + dy, x0 + dx), wy * wx)
    out: F32 = (kernel / kernel.sum()).astype(np.float32)
    return out


def blurred(frame: U8, length: float, angle_deg: float, noise: float, seed: int) -> U8:
    """``frame`` motion-blurred in linear light, plus Gaussian noise (sRGB, fraction of 255)."""
    k = motion_kernel(length, angle_deg)
    lin = np.asarray(
        cv2.filter2D(srgb_to_linear(frame), -1, k, borderType=cv2.BORDER_REFLECT), np.float32
    )
    out = linear_to_srgb(lin).astype(np.float32)
    out += np.random.default_rng(seed).normal(0.0, noise * 255.0, out.shape).astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def calibrate(size: int, noise: float) -> None:
    import skimage.data as skd  # dev extra; evaluation photos only

    lengths = [0, 1, 2, 3, 5, 10, 15, 20]
    scenes: dict[str, U8] = {}
    for name in ("astronaut", "camera", "coffee", "chelsea", "rocket"):
        img = np.asarray(getattr(skd, name)(), np.uint8)
        img = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
        scale = 1080 / img.shape[0]
        scenes[name] = np.asarray(
            cv2.resize(img, (round(img.shape[1] * scale), 1080), interpolation=cv2.INTER_CUBIC),
            np.uint8,
        )
    scenes["1/f noise"] = natural_frame(1080, 1920, seed=1)
    print(f"blur score (dB), size {size}, 1080p frames, motion blur at 30 deg, noise {noise}")
    print("  blur px      " + " ".join(f"{n:6d}" for n in lengths))
    table = []
    for name, frame in scenes.items():
        row = [blur_score(blurred(frame, n, 30.0, noise, seed=n), size) for n in lengths]
        table.append(row)
        print(f"  {name:12s} " + " ".join(f"{v:6.1f}" for v in row))
    arr = np.array(table)
    print("  mean         " + " ".join(f"{v:6.1f}" for v in arr.mean(0)))
    rise = arr - arr[:, :1]
    print("  rise (mean)  " + " ".join(f"{v:6.1f}" for v in rise.mean(0)))
    print("  rise (min)   " + " ".join(f"{v:6.1f}" for v in rise.min(0)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="analysis size, px")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per frame size")
    parser.add_argument("--calibrate", action="store_true", help="print typical scores")
    parser.add_argument("--noise", type=float, default=0.004, help="calibration noise sigma")
    args = parser.parse_args(argv)
    if args.calibrate:
        calibrate(args.size, args.noise)
    else:
        bench(args.size, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
