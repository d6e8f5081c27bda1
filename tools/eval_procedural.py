#!/usr/bin/env python3
"""The pipeline on the simulated camera's procedural scene: the result's error relative to
the selected frame's, with the U-Net off and with the configured passes.

    python tools/eval_procedural.py [--sizes 320x240,640x480,1280x720] [--seeds 4]
        [--config deblurd.toml]

For each size and seed (0, 1, …: the daemon's simulated camera uses seed 0; the U-Nets are
trained on procedural scenes of seeds from 1,000,000 on only) it simulates a 7-frame burst
of the procedural scene, runs ``process_burst`` with the U-Net off and with the settings'
passes, and prints ``MSE(result, truth) / MSE(selected frame, truth)`` over the frame less
a 16 px border (lower is better; 1 = no better than the selected frame). The same measure
as ``tests/integration/test_cli_process.py``'s quality test.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import numpy.typing as npt

from deblurd.evaluation.cli_args import frame_sizes
from deblurd.inference.factory import open_deblurrer
from deblurd.pipeline.process import process_burst
from deblurd.settings.load import load_settings
from deblurd.sim.burst import SimParams, simulate_burst

BORDER = 16


def relative_mse(
    result: npt.NDArray[np.uint8], frame: npt.NDArray[np.uint8], truth: npt.NDArray[np.uint8]
) -> float:
    """``MSE(result, truth) / MSE(frame, truth)`` inside a :data:`BORDER` px border."""
    crop = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))

    def mse(a: npt.NDArray[np.uint8]) -> float:
        return float(np.mean((a[crop].astype(np.float64) - truth[crop]) ** 2))

    return mse(result) / mse(frame)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes", type=frame_sizes, default="320x240,640x480,1280x720", help="WxH,WxH,..."
    )
    p.add_argument("--seeds", type=int, default=4, help="seeds 0 .. N-1")
    p.add_argument("--config", default=None, help="deblurd.toml (default: built-in defaults)")
    args = p.parse_args()
    settings = load_settings(args.config)
    passes = settings.inference.passes
    deblurrer = open_deblurrer(settings.inference)
    print(f"relative MSE (result vs selected frame); U-Net off | passes {passes}")
    try:
        for w, h in args.sizes:
            cells = []
            for seed in range(args.seeds):
                sim = simulate_burst(SimParams(width=w, height=h, ring_frames=7, seed=seed))
                row = []
                for unet in ("off", passes):
                    res = process_burst(sim.burst, settings, deblurrer, unet)
                    sel = res.report.selected
                    row.append(relative_mse(res.image, sim.burst.frames[sel], sim.truth[sel]))
                cells.append(f"seed {seed}: {row[0]:.2f} | {row[1]:.2f}")
            print(f"{w}x{h}: " + "; ".join(cells), flush=True)
    finally:
        if deblurrer is not None:
            deblurrer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
