"""Single-frame deblurring (``deblurd deblur``) on camera-like blurred photos with a truth.

    python tools/eval_deblur.py [--model engines/unet.onnx ...] [--size 640x480]
        [--photos astronaut,...] [--blurs 3,8,16,28,40] [--camera random|off]
        [--truth tone|camera] [--averaged K] [--markdown OUT.md]

The stand-in for "real motion-blurred photos with a sharp truth" that this machine can
make: scikit-image's photos (evaluation only, never trained on) blurred by real-world
camera-shake kernels (Boracchi & Foi random walks with jerks, :mod:`deblurd.sim.kernels`)
of a fixed extent each (``--blurs``, px; a third of them with some defocus too), then
through a random camera ISP per case (mosaic, sensor noise at a random gain, demosaic,
ISP denoise, tone curve, sharpening, 4:2:0, JPEG or H.264-like blocks;
:mod:`deblurd.sim.isp`), or the plain sensor (``--camera off``). The truth is the sharp
photo through the same tone curve (``--truth tone``), or through the same camera without
noise or codec (``--truth camera``: what a sharp frame of that camera looks like —
demosaic, ISP denoise, sharpening and 4:2:0 included — as in a real pair of a blurred and
a sharp frame). ``--averaged K``: the blurred frame is exposed as the mean of ``K`` video
frames (an action camera's synthesised blur, GoPro-style: noise lower by sqrt(K)).
Each ``--model`` runs as ``deblurd deblur`` does (onnxruntime, first pass on the linear
image) and is scored against the truth with PSNR and SSIM (luma, ``--border`` px
cropped), next to the input. Deterministic (seeds per case). Prints a table per blur
extent and the mean gain over the input per model.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deblurd.evaluation.cli_args import frame_size_at_least, nonnegative_floats
from deblurd.evaluation.metrics import psnr, ssim
from deblurd.imaging import F32, U8, srgb_to_linear
from deblurd.inference.onnx import OnnxDeblurrer
from deblurd.settings.inference import OnnxRuntimeSettings
from deblurd.sim.isp import IspParams, camera_frame, tone_map
from deblurd.sim.kernels import combine_kernels, defocus_kernel, random_motion_kernel
from deblurd.sim.render import convolve
from deblurd.sim.sensor import SensorModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import load_photo  # the evaluation photos: one loader

DEFAULT_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
RING_EXPOSURE_US = 8000


def photo(name: str, size: tuple[int, int]) -> F32:
    """A scikit-image photo (:func:`evaluate.load_photo`, evaluation only) as linear
    float32 (H, W, 3), centre-cropped to ``size``'s aspect and resized (area) to it."""
    import cv2

    img = load_photo(name)
    w, h = size
    ih, iw = img.shape[:2]
    scale = max(w / iw, h / ih)
    cw, ch = round(w / scale), round(h / scale)
    y0, x0 = (ih - ch) // 2, (iw - cw) // 2
    crop = np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw])
    return srgb_to_linear(
        np.asarray(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA), np.uint8)
    )


def degrade(
    sharp: F32, extent: float, seed: int, camera: bool, truth: str = "tone", averaged: int = 1
) -> tuple[U8, U8]:
    """``(frame, truth)``: the photo blurred by a shake kernel of ``extent`` px (a third
    of the cases with a defocus of up to 3 px on top) through a random camera (or the
    plain sensor), exposed as the mean of ``averaged`` frames, and the truth through the
    same tone curve (``truth="tone"``) or the same camera without noise and codec
    (``"camera"``). The same seed draws the same kernel and camera for either truth."""
    rng = np.random.default_rng([seed, 7])
    kernel = random_motion_kernel(rng, extent, min_extent_px=extent)
    if rng.uniform() < 1 / 3:
        kernel = combine_kernels(kernel, defocus_kernel(float(rng.uniform(0.5, 3.0))))
    pad = kernel.shape[0] // 2 + 2
    import cv2

    padded = np.asarray(
        cv2.copyMakeBorder(sharp, pad, pad, pad, pad, cv2.BORDER_REFLECT), np.float32
    )
    blurred = convolve(padded, kernel)[pad:-pad, pad:-pad]
    isp = IspParams.random(rng) if camera else IspParams()
    gain = float(np.exp(rng.uniform(np.log(2.0), np.log(8.0))))
    sensor = SensorModel(ref_exposure_us=RING_EXPOSURE_US * gain, max_gain=64.0)
    exposure_us, frame_gain = RING_EXPOSURE_US * averaged, gain / averaged
    frame = camera_frame(np.clip(blurred, 0, None), isp, sensor, exposure_us, frame_gain, rng)
    if truth == "camera":
        clean = dataclasses.replace(isp, codec="none")
        return frame, camera_frame(np.clip(sharp, 0, None), clean, sensor, exposure_us,
                                   frame_gain, None)  # fmt: skip
    return frame, tone_map(np.clip(sharp, 0.0, 1.0), isp)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="ONNX model(s) to compare (default engines/unet.onnx)",
    )
    p.add_argument("--size", type=frame_size_at_least(64), default=(640, 480))
    p.add_argument("--photos", default=",".join(DEFAULT_PHOTOS))
    p.add_argument(
        "--blurs",
        type=nonnegative_floats,
        default=[3.0, 8.0, 16.0, 28.0, 40.0],
        help="shake kernel extents, px",
    )
    p.add_argument("--camera", choices=("random", "off"), default="random")
    p.add_argument("--truth", choices=("tone", "camera"), default="tone",
                   help="the sharp photo through the tone curve, or through the same camera "
                   "without noise and codec")  # fmt: skip
    p.add_argument(
        "--averaged",
        type=int,
        default=1,
        help="expose each blurred frame as the mean of K video frames",
    )
    p.add_argument("--border", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--markdown", default=None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.averaged < 1:
        parser.error(f"--averaged must be at least 1, got {args.averaged}")
    models = args.model or ["engines/unet.onnx"]
    nets = [OnnxDeblurrer(OnnxRuntimeSettings(model=m, threads=args.threads), m) for m in models]
    names = [Path(m).parent.name + "/" + Path(m).name for m in models]
    photos = [s.strip() for s in args.photos.split(",") if s.strip()]
    rows: list[tuple[str, float, list[tuple[float, float]]]] = []
    for pi, name in enumerate(photos):
        sharp = photo(name, args.size)
        for bi, extent in enumerate(args.blurs):
            frame, truth = degrade(sharp, extent, 1000 * pi + bi, args.camera == "random",
                                   args.truth, args.averaged)  # fmt: skip
            scores = [
                (psnr(frame, truth, border=args.border), ssim(frame, truth, border=args.border))
            ]
            for net in nets:
                out = net.deblur(srgb_to_linear(frame), "first")
                from deblurd.imaging import linear_to_srgb

                img = linear_to_srgb(out)
                scores.append(
                    (psnr(img, truth, border=args.border), ssim(img, truth, border=args.border))
                )
            rows.append((name, extent, scores))
            cells = "  ".join(f"{p_:.2f}/{s_:.4f}" for p_, s_ in scores)
            print(f"{name:12s} {extent:5.1f} px  input {cells}", flush=True)
    lines = [
        "| blur px | input PSNR / SSIM | " + " | ".join(names) + " |",
        "|---" * (2 + len(names)) + "|",
    ]
    for extent in [*args.blurs, None]:
        sel = [r for r in rows if extent is None or r[1] == extent]
        label = "all" if extent is None else f"{extent:g}"
        cols = []
        for k in range(1 + len(nets)):
            p_ = statistics.fmean(r[2][k][0] for r in sel)
            s_ = statistics.fmean(r[2][k][1] for r in sel)
            gain = "" if k == 0 else f" ({p_ - statistics.fmean(r[2][0][0] for r in sel):+.2f})"
            cols.append(f"{p_:.2f} / {s_:.4f}{gain}")
        lines.append(f"| {label} | " + " | ".join(cols) + " |")
    table = "\n".join(lines)
    print(
        f"\n{len(rows)} cases ({args.camera} camera, {args.size[0]}x{args.size[1]}, "
        f"truth {args.truth}, {args.averaged} frame(s) averaged); "
        "PSNR / SSIM, gain over the input in brackets\n"
    )
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    for net in nets:
        net.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
