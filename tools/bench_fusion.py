"""Benchmark stage 4b (fusion) and stage 5 (sharpening) on a synthetic burst.

Prints per-frame fusion time for both modes, robust on and off, the noise estimate's
time, sharpening time, and peak memory (numpy allocations traced by tracemalloc, and
the process's peak RSS). No timing assertions anywhere: this is a script, not a test.

    /work/venv/bin/python tools/bench_fusion.py [--width 1920 --height 1080 --frames 8]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from deblurd.imaging import F32
from deblurd.pipeline.finishing import sharpen
from deblurd.pipeline.fusion import AlignedFrame, FusionResult, fuse_sequential, fuse_to_reference
from deblurd.pipeline.noise import estimate_noise_model, estimate_noise_sigma
from deblurd.settings.fusion import FusionSettings


def make_scene(h: int, w: int, rng: np.random.Generator) -> F32:
    """Textured linear scene ``float32 (h, w, 3)`` in [0.02, 0.9]: smooth noise + edges."""
    base = rng.random((h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
    img = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    img = 0.6 * img + 0.8 * (fine - 0.5)
    for _ in range(40):
        x0, y0 = int(rng.integers(0, w - 64)), int(rng.integers(0, h - 64))
        dy, dx = int(rng.integers(16, 200)), int(rng.integers(16, 200))
        img[y0 : y0 + dy, x0 : x0 + dx] = rng.random(3)
    out: F32 = np.clip(img, 0.02, 0.9).astype(np.float32)
    return out


def make_frames(scene: F32, n: int, sigma: float, rng: np.random.Generator) -> list[AlignedFrame]:
    """Noisy captures at sub-pixel offsets, re-aligned bilinearly (like registration output)."""
    h, w = scene.shape[:2]
    frames = []
    for _ in range(n):
        tx, ty = rng.uniform(-2.0, 2.0, 2)
        fwd = np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]], np.float32)
        back = np.array([[1.0, 0.0, -tx], [0.0, 1.0, -ty]], np.float32)
        capture = cv2.warpAffine(
            scene, fwd, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        )
        capture = capture + rng.standard_normal(scene.shape, dtype=np.float32) * np.float32(sigma)
        img = cv2.warpAffine(
            capture, back, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        valid = cv2.warpAffine(np.ones((h, w), np.float32), back, (w, h), flags=cv2.INTER_LINEAR)
        frames.append(AlignedFrame(img.astype(np.float32), (valid > 0.999).astype(np.float32)))
    return frames


def timed(label: str, fn: Callable[[], object], per: int = 1, repeat: int = 1) -> object:
    """Run ``fn`` ``repeat`` times; print the best and median time and the traced peak."""
    times = []
    out: object = None
    peak = 0
    for _ in range(repeat):
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
    best, med = min(times), sorted(times)[len(times) // 2]
    extra = f"  {best / per * 1e3:6.1f} ms/frame" if per > 1 else ""
    print(
        f"{label:<44s} best {best * 1e3:7.1f} ms (median {med * 1e3:7.1f}){extra}"
        f"   traced peak +{peak / 2**20:6.1f} MiB"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--frames", type=int, default=8, help="second frames fused")
    ap.add_argument("--sigma", type=float, default=0.02, help="noise std, linear units")
    ap.add_argument("--threads", type=int, default=0, help="cv2 threads (0 = OpenCV default)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best shown)")
    args = ap.parse_args()
    if args.threads:
        cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(0)
    scene = make_scene(args.height, args.width, rng)
    ref = scene + rng.standard_normal(scene.shape, dtype=np.float32) * np.float32(args.sigma)
    ref = ref.astype(np.float32)
    frames = make_frames(scene, args.frames, args.sigma, rng)
    n, r = args.frames, max(1, args.repeat)
    print(
        f"{args.width}x{args.height}, {n} second frames, sigma {args.sigma}, "
        f"cv2 threads {cv2.getNumThreads()}"
    )
    one_frame_mib = ref.nbytes / 2**20
    print(
        f"one linear frame = {one_frame_mib:.1f} MiB; inputs held by the bench: "
        f"{(n + 2) * one_frame_mib:.0f} MiB (not counted in the traced peaks)"
    )
    tracemalloc.start()
    timed("estimate_noise_sigma", lambda: estimate_noise_sigma(ref), repeat=r)
    model = estimate_noise_model(ref)
    timed("estimate_noise_model", lambda: estimate_noise_model(ref), repeat=r)
    for robust in (True, False):
        s = FusionSettings(robust=robust)
        tag = "robust" if robust else "plain"

        def batch(s: FusionSettings = s) -> FusionResult:
            return fuse_to_reference(ref, frames, s, model)

        timed(f"fuse_to_reference ({tag}, noise given)", batch, per=n, repeat=r)

        def stream(s: FusionSettings = s) -> FusionResult:
            def gen() -> Iterator[AlignedFrame]:
                yield from frames

            return fuse_sequential(ref, gen(), s, model)

        timed(f"fuse_sequential ({tag}, noise given)", stream, per=n, repeat=r)
    res = timed(
        "fuse_to_reference (robust, noise estimated)",
        lambda: fuse_to_reference(ref, frames, FusionSettings()),
        per=n,
        repeat=r,
    )
    plain = fuse_to_reference(ref, frames, FusionSettings(robust=False))
    assert isinstance(res, FusionResult)
    inner = (slice(16, -16), slice(16, -16))
    err_ref = float(np.sqrt(np.mean((ref - scene)[inner] ** 2)))
    for tag, img in (("robust", res.image), ("plain", plain.image)):
        err = float(np.sqrt(np.mean((img - scene)[inner] ** 2)))
        print(
            f"RMS error vs scene ({tag}): reference {err_ref:.4f}, fused {err:.4f} "
            f"({err_ref / err:.2f}x lower; sqrt(N+1) = {np.sqrt(n + 1):.2f})"
        )
    timed("sharpen (plain)", lambda: sharpen(res.image, 0.8, 1.0), repeat=r)
    timed("sharpen (noise-aware)", lambda: sharpen(res.image, 0.8, 1.0, noise_sigma=0.01), repeat=r)
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
