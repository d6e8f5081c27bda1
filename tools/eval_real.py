#!/usr/bin/env python3
"""No-reference evaluation of the product on real camera frames (``../shared/realdata``).

Usage::

    python tools/eval_real.py [--windows 5] [--frames 9] [--holdout 3]
        [--unet off|first|both] [--config deblurd.toml] [--max-bursts N]
        [--json out.json] [--markdown out.md] [--sheet sheet.png] [--data DIR]

Real frames have no ground truth, so every number here is a no-reference measure from
:mod:`deblurd.evaluation.noref`, none of which uses the pipeline's own noise model or
registration.

**Bursts.** Each video (``DATA/video/*.mp4``, read with ``cv2.VideoCapture``) is cut at
``--windows`` evenly spaced windows of ``--frames + 2 · --holdout`` consecutive frames.
The middle ``--frames`` are written as a burst directory (``deblurd.burstdir``: role
``ring``, timestamps at 15 fps, exposure 16666 µs and gain 1.0 — the phone did not record
them — trigger in the middle), read back and run through the product in-process
(``process_burst``, default settings or ``--config``, the U-Net passes of ``--unet`` or
the settings, the shipped networks). The ``--holdout`` frames on each side are **never
given to the product**: registered to the selected frame (OpenCV ECC, not the product's
registrar) and averaged, they are the independent reference of the temporal noise
measure and define the *static flat* mask (no motion against the selected frame, no
clipping, flat in the held-out mean) where the noise measures look.

**Measures per burst** (all on luma, sRGB codes): the product's report (selected frame,
frames fused and rejected, its noise model); temporal noise σ of the selected frame,
the output and the aligned mean (residual against the held-out mean, the mean's own
noise share removed; the output is independent of the held-out frames, so this is
unbiased); Immerkær's spatial noise σ on the same mask; gradient energy (Tenengrad) and
the product's blur score of the selected frame, the sharpest candidate (lowest blur
score), the output and the aligned mean (``deblurd.evaluation.baselines``, registered to
the selected frame); brightness drift of the output and of the mean against the
selected frame (units of 2 codes); 8×8 blockiness (H.264 grid at the frame origin); the
ghost fraction (pixels where the image departs from the selected frame far beyond noise
after a σ = 3 px low-pass). **Photos** (``DATA/photos/*.png``) go through the
single-frame ``deblur`` (first U-Net pass) and get the spatial measures (the flat mask
from the input).

Prints a row per burst, means per video and overall; ``--json`` writes every number,
``--markdown`` the tables, ``--sheet`` a contact sheet of 100 % crops at the most
textured area of each burst (selected frame | output | their difference × 4 on grey |
aligned mean; two bursts a row) and of each photo (input | output | difference × 4),
labelled. Deterministic: the same arguments give the same numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from deblurd.burstdir import Burst, FrameInfo, frame_names, read_burst, write_burst
from deblurd.evaluation import noref
from deblurd.evaluation.baselines import aligned_mean, candidate_indices, sharpest_index
from deblurd.imaging import (
    U8,
    atomic_write_bytes,
    linear_to_srgb,
    read_rgb8,
    srgb_to_linear,
    write_image,
)
from deblurd.inference.base import Deblurrer
from deblurd.pipeline.process import process_burst
from deblurd.settings.inference import InferenceSettings
from deblurd.settings.load import load_settings
from deblurd.settings.models import DeblurdSettings

FPS = 15.0
EXPOSURE_US = 16666
GAIN = 1.0
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "realdata"
SHEET_LIMIT_BYTES = 3_000_000


# ------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Window:
    """One burst cut from a video: frames ``start .. start + span`` (span = frames + 2 h)."""

    video: str
    index: int
    start: int
    frames: int
    holdout: int

    @property
    def name(self) -> str:
        return f"{self.video}@{self.start}"

    @property
    def span(self) -> int:
        return self.frames + 2 * self.holdout


def window_starts(count: int, windows: int, span: int) -> list[int]:
    """``windows`` evenly spaced starts of ``span``-frame windows in ``count`` frames."""
    if count < span:
        return []
    if windows <= 1:
        return [(count - span) // 2]
    last = count - span
    return sorted({round(k * last / (windows - 1)) for k in range(windows)})


def read_video(path: Path, wanted: set[int]) -> dict[int, U8]:
    """The frames of ``path`` whose index is in ``wanted``, ``uint8 (H, W, 3)`` RGB."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SystemExit(f"{path}: cannot open (opencv-python reads H.264 MP4)")
    out: dict[int, U8] = {}
    i = 0
    try:
        while wanted and i <= max(wanted):
            ok, bgr = cap.read()
            if not ok:
                break
            if i in wanted:
                out[i] = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
    return out


def video_frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n > 0:
            return n
        n = 0
        while cap.read()[0]:
            n += 1
        return n
    finally:
        cap.release()


def make_burst(frames: Sequence[U8]) -> Burst:
    """A ring burst of ``frames``: 15 fps, 16666 µs, gain 1, trigger in the middle."""
    step = round(1e9 / FPS)
    infos = [
        FrameInfo(name, i * step, EXPOSURE_US, GAIN, "ring")
        for i, name in enumerate(frame_names(len(frames)))
    ]
    return Burst([f.copy() for f in frames], infos, trigger_index=len(frames) // 2)


def open_runtime(settings: InferenceSettings) -> Deblurrer | None:
    """The product's inference factory (``deblurd.inference.factory`` where it exists,
    else ``deblurd.inference.base``): ``None`` with passes ``off``."""
    for name in ("deblurd.inference.factory", "deblurd.inference.base"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "open_deblurrer"):
            opener = cast(Callable[[InferenceSettings], Deblurrer | None], mod.open_deblurrer)
            return opener(settings)
    raise SystemExit("no deblurd.inference open_deblurrer found")


# ----------------------------------------------------------------------- measures


def _r(x: float, nd: int = 3) -> float | None:
    return None if not math.isfinite(x) else round(float(x), nd)


def image_measures(image: U8, phase: tuple[int, int] = (0, 0)) -> dict[str, float | None]:
    """Geometry-free measures of one image: gradient energy, blur score, blockiness."""
    return {
        "gradient_energy": _r(noref.gradient_energy(image), 1),
        "blur_score": _r(noref.blur_score(image), 3),
        "blockiness": _r(noref.blockiness(image, 8, phase), 3),
        "block_excess": _r(noref.block_excess(image, 8, phase), 3),
    }


def noise_measures(image: U8, ref: noref.TemporalReference) -> dict[str, float | None]:
    """Noise of ``image`` (in the reference frame's geometry): temporal on the static flat
    mask and on every static pixel (texture included), Immerkær on the static flat mask."""
    return {
        "temporal_noise": _r(noref.temporal_noise(image, ref)),
        "temporal_noise_static": _r(noref.temporal_noise(image, ref, ref.static)),
        "temporal_residual": _r(noref.temporal_residual_sigma(image, ref)),
        "immerkaer": _r(noref.immerkaer_sigma(image, ref.mask if ref.usable else None)),
    }


@dataclass
class BurstResult:
    window: Window
    seconds: float
    report: dict[str, Any]
    numbers: dict[str, Any] = field(default_factory=dict)
    crops: list[tuple[str, U8]] = field(default_factory=list)


def evaluate_window(
    window: Window,
    frames: Sequence[U8],
    settings: DeblurdSettings,
    deblurrer: Deblurrer | None,
    passes: str,
    workdir: Path,
    crop: int,
) -> BurstResult:
    """Run the product on one window's burst and measure it (see the module docstring)."""
    t0 = time.perf_counter()
    h = window.holdout
    inner, held = (
        list(frames[h : h + window.frames]),
        list(frames[:h]) + list(frames[-h:] if h else []),
    )
    path = write_burst(workdir / f"{window.video}_{window.start:04d}", make_burst(inner))
    burst = read_burst(path)
    seed = zlib.crc32(window.name.encode()) % (2**31)
    cv2.setRNGSeed(seed)  # RANSAC/MAGSAC draw from it: same arguments, same numbers
    result = process_burst(burst, settings, deblurrer, passes)  # type: ignore[arg-type]
    rep = result.report
    sel = rep.selected
    selected, output = burst.frames[sel], result.image

    # Fusion alone: the same burst with the U-Net off (stages 1 and 4 only).
    cv2.setRNGSeed(seed)  # the same draws as the product's run: the same registration
    fused_only = output if passes == "off" else process_burst(burst, settings, None, "off").image
    diff = np.abs(fused_only.astype(np.int16) - selected.astype(np.int16))
    fusion_effect = {
        "mean_abs_change": _r(float(diff.mean()), 4),
        "changed_fraction": _r(float((diff.max(axis=2) > 0).mean()), 4),
        "claimed_frames": _r(1.0 + sum(u.mean_pixel_weight for u in rep.used), 2),
    }

    cv2.setRNGSeed(seed)
    ref = noref.temporal_reference(selected, held)
    cv2.setRNGSeed(seed)
    mean_img = aligned_mean(burst, reference=sel)
    sc = settings.selection
    cands = candidate_indices(burst, sc.frames_before, sc.frames_after)
    sharp = sharpest_index(burst, cands, settings.blur_score.size)

    images = {
        "selected": selected,
        "output": output,
        "fusion_only": fused_only,
        "aligned_mean": mean_img,
    }
    per: dict[str, dict[str, float | None]] = {}
    for key, img in images.items():
        per[key] = {**noise_measures(img, ref), **image_measures(img)}
        if key != "selected":
            per[key]["drift"] = _r(noref.brightness_drift(img, selected), 3)
            per[key]["ghost"] = _r(noref.ghost_fraction(img, selected), 4)
    if sharp == sel:
        per["sharpest"] = dict(per["selected"])
    else:
        sref = noref.temporal_reference(burst.frames[sharp], held)
        per["sharpest"] = {
            **noise_measures(burst.frames[sharp], sref),
            **image_measures(burst.frames[sharp]),
        }
    numbers = {
        "reference_noise": _r(math.sqrt(max(0.0, ref.noise_share()))),
        "holdout_used": ref.count,
        "static_fraction": _r(float(ref.static.mean()), 3),
        "mask_fraction": _r(float(ref.mask.mean()), 3),
        "sharpest_index": sharp,
        "fusion_effect": fusion_effect,
        **{k: v for k, v in per.items()},
    }
    report = rep.to_json()
    seconds = time.perf_counter() - t0

    r, c = noref.texture_window(selected, crop)
    used, rejected = len(rep.used), len(rep.rejected)
    win = (slice(r, r + crop), slice(c, c + crop))
    crops = [
        (f"{window.video[-6:]}@{window.start} #{sel} selected", selected[win]),
        (f"output: {used} fused, {rejected} rej", output[win]),
        ("(out - sel) x4", difference_tile(output[win], selected[win])),
        ("aligned mean", mean_img[win]),
    ]
    return BurstResult(window, seconds, report, numbers, crops)


def evaluate_photo(
    path: Path, deblurrer: Deblurrer | None, crop: int
) -> tuple[dict[str, Any], list[tuple[str, U8]]]:
    """Single-frame ``deblur`` (first pass) on a photo and its spatial measures."""
    t0 = time.perf_counter()
    image = read_rgb8(path)
    if deblurrer is None:
        out = image.copy()
    else:
        out = linear_to_srgb(deblurrer.deblur(srgb_to_linear(image), "first"))
    seconds = time.perf_counter() - t0
    mask = noref.flat_mask(image)
    phase = noref.block_phase(image)
    doc: dict[str, Any] = {
        "photo": path.name,
        "seconds": round(seconds, 2),
        "block_phase": list(phase),
    }
    for key, img in (("input", image), ("output", out)):
        doc[key] = {"immerkaer": _r(noref.immerkaer_sigma(img, mask)), **image_measures(img, phase)}
    doc["output"]["drift"] = _r(noref.brightness_drift(out, image), 3)
    doc["output"]["ghost"] = _r(noref.ghost_fraction(out, image), 4)
    doc["output"]["colour_shift"] = _r(noref.colour_shift(out, image), 4)
    r, c = noref.texture_window(image, crop)
    win = (slice(r, r + crop), slice(c, c + crop))
    crops = [
        (f"{path.stem} input", image[win]),
        ("deblur output", out[win]),
        ("(out - in) x4", difference_tile(out[win], image[win])),
    ]
    return doc, crops


# ------------------------------------------------------------------------ reports


def _measure(image: str, name: str) -> Callable[..., Any]:
    """A column of the burst or photo table: the number ``name`` of ``image`` (``selected``,
    ``output``, ``fusion_effect``, ``input``, ...) in the burst's or photo's numbers (the
    column function's first argument)."""
    return lambda numbers, *_: numbers[image][name]


BURST_COLUMNS: list[tuple[str, str, Callable[[dict[str, Any], dict[str, Any]], Any]]] = [
    ("sel", "selected frame index", lambda n, r: r["selected"]),
    ("fused", "frames fused", lambda n, r: len(r["used"])),
    ("rej", "frames rejected", lambda n, r: len(r["rejected"])),
    ("nm a/b", "product noise model", lambda n, r: _ab(r)),
    ("w claim", "1 + Σ mean pixel weight (report)", _measure("fusion_effect", "claimed_frames")),
    ("fus d", "fusion alone: mean |change| codes", _measure("fusion_effect", "mean_abs_change")),
    ("fus chg", "fusion alone: changed pixels", _measure("fusion_effect", "changed_fraction")),
    (
        "sigS sel",
        "temporal noise, all static: selected",
        _measure("selected", "temporal_noise_static"),
    ),
    ("sigS out", "temporal noise, all static: output", _measure("output", "temporal_noise_static")),
    (
        "sigS fus",
        "temporal noise, all static: fusion alone",
        _measure("fusion_only", "temporal_noise_static"),
    ),
    ("sigT sel", "temporal noise: selected", _measure("selected", "temporal_noise")),
    ("sigT out", "temporal noise: output", _measure("output", "temporal_noise")),
    ("sigT fus", "temporal noise: fusion alone", _measure("fusion_only", "temporal_noise")),
    ("sigT mean", "temporal noise: aligned mean", _measure("aligned_mean", "temporal_noise")),
    ("sigI sel", "Immerkær: selected", _measure("selected", "immerkaer")),
    ("sigI out", "Immerkær: output", _measure("output", "immerkaer")),
    ("GE sel", "gradient energy: selected", _measure("selected", "gradient_energy")),
    ("GE sharp", "gradient energy: sharpest", _measure("sharpest", "gradient_energy")),
    ("GE out", "gradient energy: output", _measure("output", "gradient_energy")),
    ("GE fus", "gradient energy: fusion alone", _measure("fusion_only", "gradient_energy")),
    ("GE mean", "gradient energy: mean", _measure("aligned_mean", "gradient_energy")),
    ("blur sel", "blur score dB: selected", _measure("selected", "blur_score")),
    ("blur sharp", "blur score: sharpest", _measure("sharpest", "blur_score")),
    ("blur out", "blur score: output", _measure("output", "blur_score")),
    ("blur fus", "blur score: fusion alone", _measure("fusion_only", "blur_score")),
    ("blur mean", "blur score: mean", _measure("aligned_mean", "blur_score")),
    ("drift out", "drift of output, 2-code units", _measure("output", "drift")),
    ("drift mean", "drift of aligned mean", _measure("aligned_mean", "drift")),
    ("blk sel", "8x8 blockiness: selected", _measure("selected", "blockiness")),
    ("blk out", "8x8 blockiness: output", _measure("output", "blockiness")),
    ("blk mean", "8x8 blockiness: mean", _measure("aligned_mean", "blockiness")),
    ("blk+ sel", "8x8 block step excess, codes: selected", _measure("selected", "block_excess")),
    ("blk+ out", "8x8 block step excess: output", _measure("output", "block_excess")),
    ("ghost out", "ghost fraction: output", _measure("output", "ghost")),
    ("ghost mean", "ghost fraction: mean", _measure("aligned_mean", "ghost")),
]

BURST_TABLES: list[tuple[str, list[str]]] = [
    (
        "fusion and noise (codes of luma)",
        [
            "sel",
            "fused",
            "rej",
            "nm a/b",
            "w claim",
            "fus d",
            "fus chg",
            "sigT sel",
            "sigT out",
            "sigT fus",
            "sigT mean",
            "sigI sel",
            "sigI out",
            "sigS sel",
            "sigS out",
            "sigS fus",
        ],
    ),
    (
        "sharpness: gradient energy (codes²) and blur score (dB)",
        [
            "GE sel",
            "GE sharp",
            "GE out",
            "GE fus",
            "GE mean",
            "blur sel",
            "blur sharp",
            "blur out",
            "blur fus",
            "blur mean",
        ],
    ),
    (
        "brightness, blocks, ghosts",
        [
            "drift out",
            "drift mean",
            "blk sel",
            "blk out",
            "blk mean",
            "blk+ sel",
            "blk+ out",
            "ghost out",
            "ghost mean",
        ],
    ),
]

PHOTO_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("sigI in", _measure("input", "immerkaer")),
    ("sigI out", _measure("output", "immerkaer")),
    ("GE in", _measure("input", "gradient_energy")),
    ("GE out", _measure("output", "gradient_energy")),
    ("blur in", _measure("input", "blur_score")),
    ("blur out", _measure("output", "blur_score")),
    ("blk in", _measure("input", "blockiness")),
    ("blk out", _measure("output", "blockiness")),
    ("blk+ in", _measure("input", "block_excess")),
    ("blk+ out", _measure("output", "block_excess")),
    ("drift", _measure("output", "drift")),
    ("ghost", _measure("output", "ghost")),
    ("lp>6", lambda d: d["output"].get("colour_shift")),
]


def _ab(report: dict[str, Any]) -> str:
    nm = report.get("noise_model") or {}
    if not nm:
        return "-"
    return f"{nm.get('a', 0.0):.2g}/{nm.get('b', 0.0):.2g}"


def _fmt(v: Any) -> str:
    if v is None:
        return "nan"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:.0f}"
        return f"{v:.2f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3f}"
    return str(v)


def _mean(values: Sequence[Any]) -> Any:
    nums = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not nums:
        return "-" if values and isinstance(values[0], str) else None
    return statistics.fmean(nums)


def burst_rows(results: Sequence[BurstResult]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: one per burst, then the mean of each video and of all bursts."""
    header = ["burst", *[c[0] for c in BURST_COLUMNS]]
    rows: list[list[Any]] = []
    raw: list[tuple[str, list[Any]]] = []
    for res in results:
        vals = [fn(res.numbers, res.report) for _, _, fn in BURST_COLUMNS]
        raw.append((res.window.video, vals))
        rows.append([res.window.name, *vals])
    groups: dict[str, list[list[Any]]] = {}
    for video, vals in raw:
        groups.setdefault(video, []).append(vals)
    if len(groups) > 1 or len(raw) > 1:
        for video, vals in [*groups.items(), ("all", [v for _, v in raw])]:
            cols = list(zip(*vals, strict=True))
            mean_row = [_mean(col) if k != 0 else "-" for k, col in enumerate(cols)]
            rows.append([f"mean {video} ({len(vals)})", *mean_row])
    return header, rows


def mean_table(results: Sequence[BurstResult]) -> dict[str, dict[str, Any]]:
    """Means per video and over all bursts, keyed by column description."""
    _, rows = burst_rows(results)
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if str(row[0]).startswith("mean "):
            out[str(row[0])] = {
                desc: (round(v, 4) if isinstance(v, float) else v)
                for (_, desc, _), v in zip(BURST_COLUMNS, row[1:], strict=True)
            }
    return out


def photo_rows(photos: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    header = ["photo", *[c[0] for c in PHOTO_COLUMNS]]
    rows = [[d["photo"], *[fn(d) for _, fn in PHOTO_COLUMNS]] for d in photos]
    if len(rows) > 1:
        cols = list(zip(*[r[1:] for r in rows], strict=True))
        rows.append([f"mean ({len(rows)})", *[_mean(c) for c in cols]])
    return header, rows


def split_tables(
    header: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[tuple[str, list[str], list[list[Any]]]]:
    """The burst table cut into :data:`BURST_TABLES` (each keeps the burst column)."""
    out = []
    for title, names in BURST_TABLES:
        idx = [0, *[header.index(n) for n in names]]
        out.append((title, [header[k] for k in idx], [[r[k] for k in idx] for r in rows]))
    return out


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(header)] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


LEGEND = """\
sigT: temporal noise sigma (codes of luma): the residual against the mean of held-out
frames the product never saw (registered with ECC, brightness-matched), in static flat
pixels, high-passed (8 px), minus the mean's own noise (measured from the held-out
frames' spread). sigS: the same on every static pixel, texture included (deblurring
changes texture too: read it with GE). sigI: Immerkær's spatial noise sigma on the static
flat pixels. GE: gradient energy (mean Sobel², codes²; rises with detail and with noise).
blur: the product's blur score (dB, lower is sharper). drift: median low-pass luma change
against the selected frame, in units of 2 codes (target: |drift| < 1). blk: 8x8
boundary/interior step ratio (1 = no grid); blk+: the same steps as a difference, codes
(0 = no grid). ghost: fraction of pixels departing from the selected frame by > 6 codes
after a sigma = 3 px low-pass. sel: the product's selected frame; out: its output;
sharp: the sharpest candidate by blur score; mean: plain aligned mean of the burst
registered to the selected frame (deblurd.evaluation.baselines); fus: the product with
the U-Net off (fusion alone). fus d: mean |fusion alone - selected| (codes); fus chg:
fraction of pixels fusion changed at all (0 = bit-identical). w claim: 1 + the sum of the
report's mean pixel weights (what the product says it fused). nm a/b: the product's own
noise model (variance = a·I + b), as reported."""


# -------------------------------------------------------------------------- sheet


def difference_tile(image: U8, reference: U8, gain: float = 4.0) -> U8:
    """``128 + gain · (image - reference)`` per channel, clipped: mid-grey where nothing
    changed (bit-identical reads flat grey)."""
    d = image.astype(np.float32) - reference.astype(np.float32)
    return np.asarray(np.clip(np.round(128.0 + gain * d), 0, 255), np.uint8)


def _label(tile: U8, text: str) -> U8:
    out = np.ascontiguousarray(tile.copy())
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    cv2.rectangle(out, (0, 0), (min(out.shape[1], tw + 6), th + base + 5), (0, 0, 0), -1)
    cv2.putText(out, text, (3, th + 3), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def contact_sheet(rows: Sequence[Sequence[tuple[str, U8]]], crop: int, gap: int = 4) -> U8:
    """Rows of labelled 100 % crops (no resampling), white gaps, left-aligned."""
    width = max(len(r) for r in rows) * (crop + gap) + gap
    height = len(rows) * (crop + gap) + gap
    sheet = np.full((height, width, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        y = gap + i * (crop + gap)
        for j, (text, tile) in enumerate(row):
            x = gap + j * (crop + gap)
            t = _label(tile, text)
            sheet[y : y + t.shape[0], x : x + t.shape[1]] = t
    return sheet


# ---------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="No-reference evaluation of deblurd on real camera videos and photos."
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="realdata folder with video/*.mp4 and photos/*.png "
        "(default: ../shared/realdata beside the repository)",
    )
    p.add_argument("--windows", type=int, default=5, help="bursts cut per video")
    p.add_argument("--frames", type=int, default=9, help="frames per burst given to the product")
    p.add_argument(
        "--holdout",
        type=int,
        default=3,
        help="frames held out on each side of a burst as the noise reference",
    )
    p.add_argument(
        "--unet",
        choices=("off", "first", "both"),
        default=None,
        help="U-Net passes (default: the settings', both)",
    )
    p.add_argument("--config", default=None, help="deblurd TOML config (default: built-ins)")
    p.add_argument("--max-bursts", type=int, default=None, help="stop after this many bursts")
    p.add_argument("--no-photos", action="store_true", help="skip the photos")
    p.add_argument("--crop", type=int, default=192, help="sheet crop side, px (shown 100 %%)")
    p.add_argument("--json", default=None, help="write every number here")
    p.add_argument("--markdown", default=None, help="write the tables here")
    p.add_argument("--sheet", default=None, help="write the contact sheet PNG here")
    p.add_argument(
        "--keep-bursts",
        type=Path,
        default=None,
        help="write the burst directories here (default: a temp folder)",
    )
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.windows < 1 or args.frames < 2 or args.holdout < 1:
        raise SystemExit("need --windows >= 1, --frames >= 2, --holdout >= 1")
    if args.max_bursts is not None and args.max_bursts < 0:
        raise SystemExit("--max-bursts must be >= 0")
    if not 32 <= args.crop <= 512:
        raise SystemExit("--crop must be in 32..512")
    if not (args.data / "video").is_dir() and not (args.data / "photos").is_dir():
        raise SystemExit(f"{args.data}: no video/ or photos/ folder (see --data)")


def plan_windows(data: Path, windows: int, frames: int, holdout: int) -> list[Window]:
    out: list[Window] = []
    for path in sorted((data / "video").glob("*.mp4")):
        span = frames + 2 * holdout
        for k, start in enumerate(window_starts(video_frame_count(path), windows, span)):
            out.append(Window(path.stem, k, start, frames, holdout))
    return out


def source_version() -> str:
    """``git describe --always --dirty`` of the checkout (the product measured), or
    ``unknown``: numbers from a shared, changing tree need the state they came from."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check_args(args)
    settings = load_settings(args.config)
    passes = args.unet or settings.inference.passes
    deblurrer = open_runtime(settings.inference.model_copy(update={"passes": passes}))
    windows = plan_windows(args.data, args.windows, args.frames, args.holdout)
    if args.max_bursts is not None:
        windows = windows[: args.max_bursts]
    version = source_version()
    print(
        f"eval_real: {len(windows)} bursts of {args.frames} frames (+{args.holdout} held out "
        f"each side) from {args.data}, U-Net {passes}, config {args.config or 'defaults'}, "
        f"source {version}",
        flush=True,
    )
    results: list[BurstResult] = []
    photos: list[dict[str, Any]] = []
    sheet_rows: list[list[tuple[str, U8]]] = []
    t_start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="eval_real.") as tmp:
            workdir = args.keep_bursts or Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            for video in sorted({w.video for w in windows}):
                mine = [w for w in windows if w.video == video]
                wanted = {w.start + i for w in mine for i in range(w.span)}
                frames = read_video(args.data / "video" / f"{video}.mp4", wanted)
                for w in mine:
                    clip = [frames[w.start + i] for i in range(w.span) if w.start + i in frames]
                    if len(clip) != w.span:
                        print(f"{w.name}: only {len(clip)} of {w.span} frames decoded; skipped")
                        continue
                    res = evaluate_window(w, clip, settings, deblurrer, passes, workdir, args.crop)
                    results.append(res)
                    if len(results) % 2 == 1:
                        sheet_rows.append(list(res.crops))
                    else:
                        sheet_rows[-1] += res.crops
                    print(
                        f"  {w.name}: selected #{res.report['selected']}, "
                        f"{len(res.report['used'])} fused, "
                        f"{len(res.report['rejected'])} rejected, {res.seconds:.1f} s",
                        flush=True,
                    )
                del frames
            if not args.no_photos:
                photo_tiles: list[tuple[str, U8]] = []
                for path in sorted((args.data / "photos").glob("*.png")):
                    doc, crops = evaluate_photo(path, deblurrer, args.crop)
                    photos.append(doc)
                    photo_tiles += crops
                    print(f"  {path.name}: deblurred in {doc['seconds']:.1f} s", flush=True)
                if photo_tiles:
                    sheet_rows.append(photo_tiles)
    finally:
        if deblurrer is not None:
            deblurrer.close()
    elapsed = time.perf_counter() - t_start

    out_text: list[str] = []
    if results:
        for title, h, rows in split_tables(*burst_rows(results)):
            out_text.append(f"{title}\n{text_table(h, rows)}")
    if photos:
        header_p, rows_p = photo_rows(photos)
        out_text.append(f"photos, single-frame deblur\n{text_table(header_p, rows_p)}")
    out_text.append(LEGEND)
    print("\n\n".join(out_text))
    print(f"\n{len(results)} bursts, {len(photos)} photos in {elapsed:.0f} s")

    if args.markdown:
        md = [
            f"# eval_real: {len(results)} real bursts, {len(photos)} photos, U-Net {passes}\n\n"
            f"Source {version}, config {args.config or 'defaults'}, {args.windows} windows "
            f"of {args.frames} frames per video (+{args.holdout} held out each side), "
            f"data {args.data}."
        ]
        if results:
            for title, h, rows in split_tables(*burst_rows(results)):
                md.append(f"## {title}\n\n{markdown_table(h, rows)}")
        if photos:
            md.append(f"## photos, single-frame deblur\n\n{markdown_table(*photo_rows(photos))}")
        md.append(LEGEND)
        atomic_write_bytes(args.markdown, ("\n\n".join(md) + "\n").encode())
    if args.json:
        doc = {
            "data": str(args.data),
            "source": version,
            "unet": passes,
            "config": args.config,
            "windows": args.windows,
            "frames": args.frames,
            "holdout": args.holdout,
            "bursts": [
                {
                    "burst": r.window.name,
                    "video": r.window.video,
                    "start": r.window.start,
                    "seconds": round(r.seconds, 2),
                    "measures": r.numbers,
                    "report": r.report,
                }
                for r in results
            ],
            "means": mean_table(results) if results else {},
            "photos": photos,
        }
        atomic_write_bytes(args.json, (json.dumps(doc, indent=1) + "\n").encode())
    if args.sheet and sheet_rows:
        sheet = contact_sheet(sheet_rows, args.crop)
        write_image(args.sheet, sheet)
        size = Path(args.sheet).stat().st_size
        note = " (over 3 MB: try --crop 160 or --max-bursts)" if size > SHEET_LIMIT_BYTES else ""
        print(f"wrote {args.sheet} ({sheet.shape[1]}x{sheet.shape[0]}, {size / 1e6:.1f} MB){note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
