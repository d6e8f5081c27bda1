"""The U-Net's training loop: synthetic blur pairs (:mod:`.data`), L1 + FFT loss, Adam,
cosine schedule, a progress bar, resumable checkpoints, a fixed seed, a time budget.

``python tools/train.py --photos DIR --out runs/unet --minutes 40`` trains (resuming from
``OUT/last.pt`` when it exists) and exports ``OUT/unet.onnx``. The cosine schedule runs
over ``--steps`` steps or the ``--minutes`` budget, whichever ends first (progress is the
larger fraction), so a budgeted run always finishes at the low learning rate. Samples
are drawn by one seeded generator whose state is checkpointed: a resumed run continues
the same stream (timing-dependent only in where a time budget stops it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from deblurd.training.data import BlurConfig, load_photos, make_batch, procedural_photos
from deblurd.training.export import export_onnx, load_onnx_weights
from deblurd.training.fused import FusedPairs
from deblurd.training.unet_arch import UNet, UNetConfig, count_params, macs_per_pixel


def fft_l1(out: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference of the 2-D spectra (orthonormal FFT)."""
    d: Tensor = torch.fft.rfft2(out - target, norm="ortho")
    return d.abs().mean()


def _range(text: str) -> tuple[float, float]:
    """``"LO,HI"`` → ``(LO, HI)`` with ``0 < LO <= HI``."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LO,HI (two numbers)") from exc
    if not 0.0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 0 < LO <= HI")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the deblurd U-Net on synthetic shake blur.")
    p.add_argument("--photos", default="/work/train-photos", help="folder of sharp photos")
    p.add_argument("--out", default="runs/unet", help="checkpoint/output folder")
    p.add_argument("--minutes", type=float, default=40.0, help="wall-time budget, minutes")
    p.add_argument("--steps", type=int, default=20000, help="schedule length, steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128, help="crop side, px (multiple of 16)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--fft-weight", type=float, default=0.05, help="weight of the FFT L1 term")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--checkpoint-every", type=int, default=250, help="steps")
    p.add_argument(
        "--fused",
        default=None,
        help="folder of real fused pairs (tools/make_fused_pairs.py) for second-pass samples",
    )
    p.add_argument(
        "--second-fraction",
        type=float,
        default=BlurConfig.second_fraction,
        help="share of second-pass samples (1.0: a second-pass-only network)",
    )
    p.add_argument(
        "--fused-fraction",
        type=float,
        default=BlurConfig.fused_fraction,
        help="share of the second-pass samples cut from real fused pairs (with --fused)",
    )
    p.add_argument(
        "--init",
        default=None,
        help="start from these weights, a checkpoint (.pt) or an exported model (.onnx, e.g. "
        "the shipped engines/unet.onnx): fine-tuning, new optimiser and schedule",
    )
    p.add_argument(
        "--procedural",
        type=int,
        default=0,
        help="add this many procedural scenes (deblurd.sim.scene, training seeds) to the photos",
    )
    p.add_argument(
        "--shake",
        type=_range,
        default=BlurConfig.shake_deg_s,
        help="shake range LO,HI in deg/s RMS, drawn log-uniform (default %(default)s)",
    )
    p.add_argument(
        "--camera-fraction",
        type=float,
        default=BlurConfig.camera_fraction,
        help="share of samples through a random camera ISP with real-world blur (sim.isp)",
    )
    p.add_argument(
        "--camera-motion",
        type=float,
        default=BlurConfig.camera_max_motion_px,
        help="largest shake extent of the camera samples, px",
    )
    p.add_argument(
        "--camera-target",
        choices=("tone", "isp"),
        default=BlurConfig.camera_target,
        help="target of the camera samples: the sharp scene through the tone curve, or "
        "through the sample's whole ISP without noise and codec (default %(default)s)",
    )
    p.add_argument(
        "--camera-averaged",
        type=float,
        default=BlurConfig.camera_averaged,
        help="share of first-pass camera samples exposed as the mean of 7-13 video frames",
    )
    p.add_argument("--onnx", default=None, help="export here at the end (default OUT/unet.onnx)")
    p.add_argument(
        "--export-only", action="store_true", help="export OUT/last.pt to ONNX; no training"
    )
    return p


def export_checkpoint(ckpt: Path, onnx_path: Path) -> Path:
    """Export the model of a checkpoint written by :func:`main` to ONNX."""
    state = torch.load(ckpt, weights_only=False)
    cfg = state["config"]
    model = UNet(UNetConfig(**{k: tuple(v) for k, v in cfg.items()}))
    model.load_state_dict(state["model"])
    meta = {
        "deblurd.steps": str(state["step"]),
        "deblurd.train_minutes": f"{state['elapsed_s'] / 60:.1f}",
    }
    return export_onnx(model, onnx_path, meta)


def _validation(
    photos: list[Any], crop: int, fused: FusedPairs | None
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Fixed validation batches (seed 12345): 16 first-pass and 16 synthetic second-pass
    samples, and 16 crops of real fused pairs when there are any. (They are drawn from the
    training photos: they track the fit, not generalisation, which the evaluation tools
    measure on held-out scikit-image photos.)"""
    rng = np.random.default_rng(12345)
    out = {}
    kinds = [("first", 0.0, 0.0), ("second", 1.0, 0.0)]
    if fused is not None:
        kinds.append(("fused", 1.0, 1.0))
    for name, second, from_fused in kinds:
        vcfg = BlurConfig(second_fraction=second, fused_fraction=from_fused)
        x, n, y = make_batch(photos, 16, crop, rng, vcfg, fused)
        out[name] = (torch.from_numpy(x), torch.from_numpy(n), torch.from_numpy(y))
    return out


def _psnr(a: Tensor, b: Tensor) -> float:
    return float(-10.0 * torch.log10(((a.clamp(0, 1) - b) ** 2).mean()))


@dataclass
class _Data:
    """What the batches are drawn from: the photos, the sampler's settings, the real fused
    pairs (``--fused``)."""

    photos: list[Any]
    cfg: BlurConfig
    fused: FusedPairs | None


@dataclass
class _Run:
    """One training run's state: what a checkpoint holds, and the fixed validation batches."""

    args: argparse.Namespace
    out: Path
    model: UNet
    opt: torch.optim.Optimizer
    rng: np.random.Generator
    step: int
    start: float  # time.monotonic() of step 0 (earlier than the process start on a resume)
    val: dict[str, tuple[Tensor, Tensor, Tensor]]

    @property
    def ckpt(self) -> Path:
        return self.out / "last.pt"

    def save(self) -> None:
        """Write ``OUT/last.pt`` (atomically, through ``OUT/last.tmp``)."""
        state = {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "rng": self.rng.bit_generator.state,
            "step": self.step,
            "elapsed_s": time.monotonic() - self.start,
            "config": self.model.config.to_json(),
            "args": vars(self.args),
        }
        torch.save(state, self.out / "last.tmp")
        (self.out / "last.tmp").replace(self.ckpt)

    def evaluate(self) -> dict[str, float]:
        """PSNR of the validation batches, in and out of the network."""
        self.model.eval()
        res: dict[str, float] = {}
        with torch.no_grad():
            for name, (x, n, y) in self.val.items():
                res[f"{name}_in"] = _psnr(x, y)
                res[f"{name}_out"] = _psnr(self.model(x, n), y)
        self.model.train()
        return res


def _training_data(args: argparse.Namespace) -> _Data:
    """The photos (and procedural scenes), the sampler's settings and the fused pairs."""
    photos = load_photos(args.photos) + procedural_photos(args.procedural)
    cfg = BlurConfig(
        shake_deg_s=args.shake,
        camera_fraction=args.camera_fraction,
        camera_max_motion_px=args.camera_motion,
        camera_target=args.camera_target,
        camera_averaged=args.camera_averaged,
        second_fraction=args.second_fraction,
        fused_fraction=args.fused_fraction,
    )
    fused = FusedPairs(args.fused) if args.fused else None
    return _Data(photos, cfg, fused)


def _resume_or_init(
    args: argparse.Namespace,
    ckpt: Path,
    model: UNet,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
) -> tuple[int, float]:
    """Resume from ``ckpt`` when it exists (model, optimiser, sampler state; returns its
    step and elapsed seconds), else load the ``--init`` weights if any (returns 0, 0.0)."""
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        print(f"resumed from {ckpt} at step {step} ({elapsed / 60:.1f} min)")
        return step, elapsed
    if args.init and Path(args.init).suffix == ".onnx":
        model.load_state_dict(load_onnx_weights(args.init)[0].state_dict())
        print(f"weights from {args.init}")
    elif args.init:
        model.load_state_dict(torch.load(args.init, weights_only=False)["model"])
        print(f"weights from {args.init}")
    return 0, 0.0


def _start_run(args: argparse.Namespace, out: Path, data: _Data) -> _Run:
    """A new network, optimiser and sampler, resumed or initialised, with its validation
    batches; the run's clock starts here (minus the resumed run's elapsed time)."""
    model = UNet()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    step, elapsed = _resume_or_init(args, out / "last.pt", model, opt, rng)
    print(
        f"{len(data.photos)} photo scales, {count_params(model)} params, "
        f"{macs_per_pixel(model.config) * 1920 * 1080 / 1e9:.1f} GMAC at 1080p"
    )
    val = _validation(data.photos, args.crop, data.fused)
    start = time.monotonic() - elapsed
    return _Run(args, out, model, opt, rng, step, start, val)


def _train_loop(run: _Run, data: _Data, log: IO[str], tqdm: Any) -> None:
    """Train until ``--steps`` or the ``--minutes`` budget, whichever ends first, on the
    cosine schedule; checkpoint, evaluate and log every ``--checkpoint-every`` steps."""
    args, model, opt = run.args, run.model, run.opt
    budget = args.minutes * 60.0
    bar = tqdm(total=args.steps, initial=run.step, unit="step", dynamic_ncols=True, mininterval=5)
    running = 0.0
    while run.step < args.steps:
        now = time.monotonic() - run.start
        progress = max(run.step / args.steps, now / budget)
        if progress >= 1.0:
            break
        lr = args.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = make_batch(data.photos, args.batch, args.crop, run.rng, data.cfg, data.fused)
        x, n, y = (torch.from_numpy(a) for a in batch)
        pred = model(x, n)
        loss = (pred - y).abs().mean() + args.fft_weight * fft_l1(pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run.step += 1
        running = 0.98 * running + 0.02 * loss.item() if run.step > 1 else loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.1e}", refresh=False)
        if run.step % args.checkpoint_every == 0:
            run.save()
            rec = {
                "step": run.step,
                "minutes": round(now / 60, 2),
                "loss": running,
                "lr": lr,
                **run.evaluate(),
            }
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.write(json.dumps(rec))
    bar.close()


def _finish(run: _Run) -> None:
    """The last checkpoint, and the final evaluation (printed and in ``OUT/final.json``)."""
    run.save()
    final = {
        "step": run.step,
        "minutes": round((time.monotonic() - run.start) / 60, 2),
        **run.evaluate(),
    }
    print(json.dumps(final))
    (run.out / "final.json").write_text(json.dumps(final, indent=1))


def _export(ckpt: Path, onnx_path: Path) -> None:
    path = export_checkpoint(ckpt, onnx_path)
    print(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tqdm = importlib.import_module("tqdm").tqdm  # untyped; an extra [train] dependency

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    if not args.export_only:
        out.mkdir(parents=True, exist_ok=True)
        data = _training_data(args)
        run = _start_run(args, out, data)
        with (out / "log.jsonl").open("a") as log:
            _train_loop(run, data, log, tqdm)
        _finish(run)
    _export(out / "last.pt", Path(args.onnx or out / "unet.onnx"))
    return 0
