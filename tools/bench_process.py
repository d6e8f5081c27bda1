#!/usr/bin/env python3
"""Benchmark the whole pipeline on a simulated burst: per-stage times, peak memory.

Usage: python tools/bench_process.py [--size 1920x1080] [--frames 9] [--repeats 3]
    [--unet off|first|both] [--worst-case]

The U-Net passes are the configured ones (both, by default) unless ``--unet`` says.

Prints the median over repeats of each stage's time (ms) from the pipeline's own report,
the wall time of ``process_burst``, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from deblurd.evaluation.cli_args import frame_size
from deblurd.inference.factory import open_deblurrer
from deblurd.pipeline.process import process_burst
from deblurd.settings.load import load_settings
from deblurd.settings.models import DeblurdSettings
from deblurd.sim.burst import SimParams, simulate_burst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=frame_size, default="1920x1080", help="WxH")
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--mode", choices=["reference", "sequential"], default="reference")
    parser.add_argument(
        "--unet",
        choices=["off", "first", "both"],
        default=None,
        help="U-Net passes (default: the configured ones, both)",
    )
    parser.add_argument(
        "--worst-case",
        action="store_true",
        help="take and try to fuse every ring frame (no blur gate, 8 second frames)",
    )
    args = parser.parse_args()
    width, height = args.size
    t0 = time.perf_counter()
    sim = simulate_burst(
        SimParams(width=width, height=height, ring_frames=args.frames, seed=args.seed), None
    )
    print(f"simulated {args.frames} frames at {width}x{height} in {time.perf_counter() - t0:.2f} s")
    settings = DeblurdSettings()
    settings = settings.model_copy(
        update={"fusion": settings.fusion.model_copy(update={"mode": args.mode})}
    )
    if args.worst_case:
        settings = load_settings(
            None,
            env={
                "DEBLURD_SECOND_FRAMES__MAX_BLUR_EXCESS": "1e9",
                "DEBLURD_DECISION__SECOND_BLUR_THRESHOLD": "1e9",
                "DEBLURD_DECISION__RING_FRAMES": "[{max_blur = 1e9, frames = 64}]",
                "DEBLURD_FUSION__MODE": args.mode,
            },
        )
    if args.unet is not None:
        settings = settings.model_copy(
            update={"inference": settings.inference.model_copy(update={"passes": args.unet})}
        )
    deblurrer = open_deblurrer(settings.inference)
    print(f"U-Net passes: {settings.inference.passes}")
    walls: list[float] = []
    stages: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = process_burst(sim.burst, settings, deblurrer)
        walls.append((time.perf_counter() - t0) * 1000)
        for name, ms in result.report.stage_ms.items():
            stages.setdefault(name, []).append(ms)
    print(
        f"fusion mode {args.mode}: {len(result.report.used)} frames fused, "
        f"{len(result.report.rejected)} rejected"
    )
    for name, values in stages.items():
        print(f"  {name:<12} {statistics.median(values):8.1f} ms")
    print(
        f"process_burst wall: median {statistics.median(walls):.0f} ms "
        f"(min {min(walls):.0f}, max {max(walls):.0f}) over {args.repeats}"
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"peak resident memory (whole process, incl. the simulated burst): "
        f"{peak_kib / 1024:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
