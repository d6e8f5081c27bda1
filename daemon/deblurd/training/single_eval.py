"""Single-frame evaluation of the U-Net: trigger frames of simulated bursts.

    python -m deblurd.training.single_eval --model engines/unet.onnx [--size 640x480]
        [--levels 0.5,1,2] [--photos astronaut,...] [--markdown OUT.md]

The bursts are exactly those of ``tools/evaluate.py`` (its cases, seeds and simulation;
scikit-image photos, never used for training). On each burst's trigger frame it measures
PSNR/SSIM (luma, ``--border`` px cropped) against the simulator's truth of that frame of:

* ``input``: the trigger frame itself;
* ``wiener``: Wiener deconvolution in linear light with the **true** PSF
  (``sim.psfs[trigger]``), noise-aware (white noise over a ``1/f²`` image spectrum), at
  two noise-to-signal ratios from a grid: the one best on average over all bursts
  (*tuned*, a fixed linear filter) and the best per burst against its truth (*oracle*,
  an upper bound no real filter reaches);
* ``unet``: the U-Net's first pass (``OnnxDeblurrer.deblur(linear, "first")``).

Needs only onnxruntime (no torch).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from deblurd.evaluation.cli_args import frame_size_at_least, nonnegative_floats
from deblurd.evaluation.metrics import psnr, ssim
from deblurd.imaging import F32, U8, linear_to_srgb, srgb_to_linear
from deblurd.inference.onnx import OnnxDeblurrer
from deblurd.settings.inference import OnnxRuntimeSettings

NSR_GRID = tuple(10.0 ** (e / 4) for e in range(-16, 5))


def _evaluate_tool() -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "tools" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("deblurd_tools_evaluate", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: cannot load the evaluation tool")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def wiener(linear: F32, psf: F32, nsr: float) -> F32:
    """Wiener deconvolution of ``linear`` ``(H, W, 3)`` by ``psf`` (convolution
    convention, centred), noise-aware: the noise-to-signal ratio of a ``1/f²`` signal
    spectrum and white noise, ``nsr · (f / f_Nyquist)²``; reflect-padded."""
    k = psf.shape[0]
    pad = 2 * k
    img = np.pad(linear, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    h, w = img.shape[:2]
    kern = np.zeros((h, w), np.float64)
    kern[:k, :k] = psf
    kern = np.roll(kern, (-(k // 2), -(k // 2)), axis=(0, 1))
    kf = np.fft.rfft2(kern)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    # Signal spectrum ∝ 1/f² (natural images): NSR grows as f², 0 at DC, ``nsr`` at Nyquist.
    filt = np.conj(kf) / (np.abs(kf) ** 2 + nsr * (fx**2 + fy**2) / 0.25)
    out = np.fft.irfft2(np.fft.rfft2(img, axes=(0, 1)) * filt[..., None], s=(h, w), axes=(0, 1))
    return np.asarray(np.clip(out[pad:-pad, pad:-pad], 0.0, 1.0), np.float32)


def wiener_grid(linear: F32, psf: F32, truth: U8, border: int) -> list[tuple[float, float]]:
    """(PSNR, SSIM) of the Wiener output at every NSR of :data:`NSR_GRID`."""
    out = []
    for nsr in NSR_GRID:
        img = linear_to_srgb(wiener(linear, psf, nsr))
        out.append((psnr(img, truth, border=border), ssim(img, truth, border=border)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ev = _evaluate_tool()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="engines/unet.onnx")
    p.add_argument("--size", type=frame_size_at_least(64), default=(640, 480))
    p.add_argument("--levels", type=nonnegative_floats, default=[0.5, 1.0, 2.0])
    p.add_argument("--photos", default=",".join(ev.DEFAULT_PHOTOS))
    p.add_argument("--no-subject", action="store_true")
    p.add_argument("--border", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    cases = ev.build_cases(
        args.photos.split(","), args.levels, None if args.no_subject else 1.0, 2.0, 0
    )
    net = OnnxDeblurrer(OnnxRuntimeSettings(model=args.model, threads=args.threads))
    rows: list[tuple[str, str, dict[str, float]]] = []
    grids: list[list[tuple[float, float]]] = []
    for case in cases:
        sim = ev.simulate(case, args.size)
        t = sim.burst.trigger_index
        frame, truth = sim.burst.frames[t], sim.truth[t]
        linear = srgb_to_linear(frame)
        outs = {"input": frame, "unet": linear_to_srgb(net.deblur(linear, "first"))}
        m = {f"{k}_psnr": psnr(v, truth, border=args.border) for k, v in outs.items()}
        m |= {f"{k}_ssim": ssim(v, truth, border=args.border) for k, v in outs.items()}
        grid = wiener_grid(linear, sim.psfs[t], truth, args.border)
        best = max(range(len(grid)), key=lambda i: grid[i][0])
        m["wiener_psnr"], m["wiener_ssim"] = grid[best]
        m["blur_px"] = sim.stats[t].blur_extent_px
        grids.append(grid)
        rows.append((case.name, case.group, m))
        print(
            f"{case.name:28s} blur {m['blur_px']:5.1f}px  input {m['input_psnr']:6.2f}  "
            f"wiener {m['wiener_psnr']:6.2f}  unet {m['unet_psnr']:6.2f} dB",
            flush=True,
        )
    net.close()
    # The tuned linear baseline: the one NSR best on average over all bursts.
    tuned = max(range(len(NSR_GRID)), key=lambda i: statistics.fmean(g[i][0] for g in grids))
    for (_, _, m), grid_row in zip(rows, grids, strict=True):
        m["wtuned_psnr"], m["wtuned_ssim"] = grid_row[tuned]
    groups = [*sorted({g for _, g, _ in rows}), "all"]
    lines = [
        "| group | bursts | input PSNR | Wiener, tuned NSR | Wiener, oracle NSR | U-Net "
        "| U-Net - input | U-Net - tuned Wiener | U-Net - oracle Wiener "
        "| input SSIM | tuned Wiener SSIM | oracle Wiener SSIM | U-Net SSIM |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        ms = [m for _, gg, m in rows if g in ("all", gg)]

        def mean(key: str, ms: list[dict[str, float]] = ms) -> float:
            return statistics.fmean(x[key] for x in ms)

        u = mean("unet_psnr")
        lines.append(
            f"| {g} | {len(ms)} | {mean('input_psnr'):.2f} | {mean('wtuned_psnr'):.2f} | "
            f"{mean('wiener_psnr'):.2f} | {u:.2f} | {u - mean('input_psnr'):+.2f} | "
            f"{u - mean('wtuned_psnr'):+.2f} | {u - mean('wiener_psnr'):+.2f} | "
            f"{mean('input_ssim'):.4f} | {mean('wtuned_ssim'):.4f} | {mean('wiener_ssim'):.4f} | "
            f"{mean('unet_ssim'):.4f} |"
        )
    lines.append(f"\nTuned Wiener NSR (at Nyquist): {NSR_GRID[tuned]:.3g}")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
