#!/usr/bin/env python3
"""Make the README's before/after picture with the product itself.

Simulates a handheld burst of the built-in procedural scene (with a subject moving on its
own), runs ``process_burst`` with the default settings, and writes a PNG of three crops
side by side: the trigger frame (what a plain shutter press gives), deblurd's result, and
the ground truth, each labelled with its PSNR against the truth of its own frame.

Usage: python tools/make_figure.py [-o docs/before-after.png] [--seed 2]
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from deblurd.evaluation.metrics import psnr
from deblurd.imaging import U8, write_image
from deblurd.inference.factory import open_deblurrer
from deblurd.pipeline.process import process_burst
from deblurd.settings.models import DeblurdSettings
from deblurd.sim.burst import SimParams, simulate_burst


def _label(img: U8, text: str) -> U8:
    out = img.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 26), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-o", "--output", default="docs/before-after.png")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--crop", type=int, default=360, help="crop side, px")
    args = parser.parse_args()
    sim = simulate_burst(SimParams(width=1280, height=720, seed=args.seed, subject=True), None)
    settings = DeblurdSettings()
    deblurrer = open_deblurrer(settings.inference)  # the default: both U-Net passes
    result = process_burst(sim.burst, settings, deblurrer)
    if deblurrer is not None:
        deblurrer.close()
    trig, sel = sim.burst.trigger_index, result.report.selected
    h, w = sim.burst.size
    c = args.crop
    y0, x0 = (h - c) // 2, (w - c) // 2
    crop = (slice(y0, y0 + c), slice(x0, x0 + c))
    # Crops are taken at the same pixel window; each output is scored on the whole frame.
    panels = [
        _label(
            sim.burst.frames[trig][crop],
            f"trigger frame  {psnr(sim.burst.frames[trig], sim.truth[trig], border=16):.1f} dB",
        ),
        _label(
            result.image[crop], f"deblurd  {psnr(result.image, sim.truth[sel], border=16):.1f} dB"
        ),
        _label(sim.truth[sel][crop], "ground truth"),
    ]
    gap = np.full((c, 6, 3), 255, np.uint8)
    sheet = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    write_image(args.output, sheet)
    print(
        f"wrote {args.output}: trigger frame {trig}, selected {sel}, "
        f"{len(result.report.used)} frames fused"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
