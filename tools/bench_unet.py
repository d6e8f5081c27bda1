#!/usr/bin/env python3
"""Benchmark the shipped U-Net on onnxruntime (CPU): 1080p whole and 12 MP tiled.

Usage: python tools/bench_unet.py [--model engines/unet.onnx] [--threads 2] [--tile 512]
       [--repeats 3] [--sizes 1920x1080,4000x3000]

Each size runs in a child process of its own (so its peak resident memory is its own):
one warm-up, then ``--repeats`` timed calls of ``OnnxDeblurrer.deblur`` (linear in,
linear out: the sRGB conversions, padding and tiling included). Prints the median time,
megapixels per second, the tiling used and the child's peak RSS (MiB, the interpreter
and onnxruntime's arenas included; the baseline RSS after loading the model is shown
beside it). A 1080p frame runs whole when ``--tile`` ≥ 1920, tiled otherwise.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from deblurd.evaluation.cli_args import frame_sizes


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(
    model: str, threads: int, tile: int, width: int, height: int, repeats: int
) -> dict[str, float]:
    import numpy as np

    from deblurd.inference.onnx import OnnxDeblurrer
    from deblurd.settings.inference import OnnxRuntimeSettings

    net = OnnxDeblurrer(OnnxRuntimeSettings(model=model, threads=threads, tile=tile))
    rng = np.random.default_rng(0)
    image = rng.random((height, width, 3), dtype=np.float32)
    base = _rss_mib()
    net.deblur(image, "first")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net.deblur(image, "first")
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "width": width,
        "height": height,
        "tile": tile,
        "tiled": float(max(width, height) > tile),
        "median_s": med,
        "min_s": min(times),
        "mp_per_s": width * height / 1e6 / med,
        "rss_after_load_mib": base,
        "peak_rss_mib": _rss_mib(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="engines/unet.onnx")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--tile", type=int, default=2048, help="tile side for 12 MP, px (default: the config's)"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=frame_sizes, default="1920x1080,4000x3000", help="WxH,...")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        w, h, tile = (int(v) for v in args.case.split(","))
        print(json.dumps(run_case(args.model, args.threads, tile, w, h, args.repeats)))
        return 0
    print(f"model {args.model}, onnxruntime CPU, {args.threads} threads")
    head = ("size", "tiling", "median s", "min s", "MP/s", "RSS load", "peak RSS")
    print(" ".join(f"{h:>{n}}" for h, n in zip(head, (11, 12, 9, 7, 6, 9, 9), strict=True)))
    for w, h in args.sizes:
        tile = 4096 if w * h <= 1920 * 1088 else args.tile
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--model",
                args.model,
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
                "--case",
                f"{w},{h},{tile}",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        tiling = f"{tile}px tiles" if r["tiled"] else "whole"
        print(
            f"{w}x{h:<6} {tiling:>12} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['mp_per_s']:6.2f} "
            f"{r['rss_after_load_mib']:8.0f}M {r['peak_rss_mib']:8.0f}M"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
