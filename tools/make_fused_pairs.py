#!/usr/bin/env python3
"""Make second-pass training pairs with the real pipeline (deblurd.training.fused).

    python tools/make_fused_pairs.py --photos /work/train-photos --model engines/unet.onnx \
        --out runs/fused --count 150

Training photos only (tools/prepare_training_photos.sh), never scikit-image's.
``--camera SHARE`` sends a share of the bursts through a random camera ISP; their truth is
the sharp view through its tone curve (``--camera-target tone``, the default) or the
camera's own noiseless look, its ISP included (``--camera-target isp``).
"""

from __future__ import annotations

import argparse
import sys
import time

from deblurd.errors import DeblurdError
from deblurd.evaluation.cli_args import frame_sizes
from deblurd.inference.onnx import OnnxDeblurrer
from deblurd.settings.inference import OnnxRuntimeSettings
from deblurd.training.data import load_photos
from deblurd.training.fused import make_fused_pairs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", default="/work/train-photos", help="folder of sharp photos")
    p.add_argument("--model", default="engines/unet.onnx", help="ONNX model of the first pass")
    p.add_argument("--out", default="runs/fused", help="folder for pairs-NNNN.npz")
    p.add_argument("--count", type=int, default=150, help="bursts to simulate")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    p.add_argument(
        "--sizes",
        type=frame_sizes,
        default="640x480",
        help="burst sizes WxH, comma-separated; each burst draws one",
    )
    p.add_argument(
        "--procedural",
        type=float,
        default=0.0,
        help="share of bursts on the simulator's procedural scene (training seeds)",
    )
    p.add_argument(
        "--camera",
        type=float,
        default=0.0,
        help="share of bursts through a random camera ISP and rolling shutter (sim.isp)",
    )
    p.add_argument(
        "--camera-target",
        choices=("tone", "isp"),
        default="tone",
        help="truth of the camera bursts: tone = the sharp view through the camera's tone "
        "curve only; isp = the camera's own noiseless look (its ISP, codec off)",
    )
    args = p.parse_args()
    try:
        photos = load_photos(args.photos, short_sides=(720,))
        net = OnnxDeblurrer(OnnxRuntimeSettings(model=args.model, threads=args.threads))
        t0 = time.monotonic()
        n = make_fused_pairs(
            photos,
            net,
            args.out,
            args.count,
            args.seed,
            args.sizes,
            args.procedural,
            args.camera,
            args.camera_target,
        )
    except DeblurdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{n} fused pairs in {args.out} ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
