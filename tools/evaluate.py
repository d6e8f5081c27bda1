#!/usr/bin/env python3
"""Quality evaluation: the pipeline against baselines on simulated handheld bursts.

Usage::

    python tools/evaluate.py [--size 640x480] [--levels 0.5,1,2] [--jobs 2]
        [--photos astronaut,chelsea,...] [--config deblurd.toml] [--per-burst]
        [--markdown eval.md] [--json eval.json] [--sheet sheet.png] [--set clean|isp|both]
        [--truth tone|camera]

Scenes are scikit-image's bundled photos (evaluation only: scikit-image is a dev
dependency, never the daemon's), fitted to ``--size`` by the simulator. Each photo is
simulated by :mod:`deblurd.sim` at every shake level (``--levels``: multiples of the
simulator's default shake, 25 deg/s RMS) with a seed of its own, plus one burst per photo
with a moving subject (a face, at ``--subject-level``); bursts at levels ≥
``--extra-from-level`` also capture 8 long-exposure ``extra`` frames. Default: 5 photos ×
3 levels + 5 subject bursts = 20 bursts of 9 ring frames, about a minute on 2 cores.

``--set``: ``clean`` (default) renders them through the simulator's plain sensor (white
Poisson–Gaussian noise, sRGB); ``isp`` renders the same bursts (same scenes, seeds, shake
and exposures) through a camera: a random ISP per burst (:func:`deblurd.sim.isp.isp_for_seed`
of the burst's seed: mosaic, demosaic, ISP denoise, tone curve, sharpening, 4:2:0,
JPEG or H.264-like coding, 0–3 % exposure flicker) and a rolling-shutter readout drawn
per burst in 10–30 ms, the truth through the same tone curve; ``both`` runs both sets
and prints a table for each.

``--truth``: what the isp set's outputs are scored against. ``tone`` (default): the sharp
view through the camera's tone curve only (``SimulatedBurst.truth``), so undoing the
camera's sharpening scores well; ``camera``: the camera's own look
(:func:`deblurd.sim.burst.camera_truth`: the same sharp view through the burst's ISP —
demosaic, denoise, sharpening, 4:2:0 — with noise and codec off), so keeping the
camera's look scores well. The clean set has no ISP and is scored the same either way.

On every burst it runs the pipeline (``process_burst``, default settings or ``--config``;
with the U-Net passes the settings ask for: both by default, from ``engines/``), the
pipeline with the U-Net passes off, and the baselines of
:mod:`deblurd.evaluation.baselines` (trigger frame, sharpest frame, aligned mean, Fourier
Burst Accumulation), plus the near-limit reference "Wiener (true kernels)" of
:mod:`deblurd.evaluation.wiener` (frames registered by the truth, multi-frame Wiener
with the true kernels, the measured noise and a power-law prior; per burst the best of the
candidate or all frames and of 1–8× the noise-to-prior ratio, by PSNR; clean set only:
through a camera ISP and a rolling shutter its linear model does not hold, so the isp set
shows "—"), and
measures PSNR and SSIM (luma) against the simulator's ground truth **of the frame whose
geometry each output is in**: the pipeline's selected frame, the sharpest frame, the
trigger frame, and the registration reference (the sharpest) for the aligned mean, FBA
and the Wiener reference. ``--border`` px are cropped from every side first (warps leave
unreliable borders). For subject bursts it also measures the PSNR inside the subject's
mask (the moving face). Means skip infinite PSNRs (identical images).

Prints the time of every burst, a table of mean PSNR / SSIM per method and burst group,
the bursts where the pipeline is worse than the sharpest frame, the pipeline's mean PSNR
difference to the Wiener reference on the camera-shake bursts, the bursts where the blur
score's pick is not the least blurred candidate (by the simulator's true PSF extent), and
the subject-region table; ``--per-burst`` adds a row per burst. Optionally a Markdown
file, a JSON file of every number (and every rejection reason) and a contact sheet PNG
(rows: a few bursts; columns: truth, trigger, sharpest, aligned mean, FBA, pipeline;
crops enlarged 2x, around the face or the most detailed area). Deterministic: same
arguments, same numbers (``--jobs`` included; OpenCV's RNG is seeded per burst).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deblurd.evaluation.baselines import (
    aligned_mean,
    candidate_indices,
    fourier_burst_accumulation,
    register_stack,
    sharpest_index,
    trigger_frame,
)
from deblurd.evaluation.cli_args import frame_size_at_least, nonnegative_floats
from deblurd.evaluation.metrics import crop_border, psnr, ssim
from deblurd.evaluation.wiener import Oracle, wiener_reference
from deblurd.imaging import U8, Mask, atomic_write_bytes, srgb_to_linear, write_image
from deblurd.settings.models import DeblurdSettings
from deblurd.sim.burst import (
    DEFAULT_SHAKE_DEG_S,
    SimParams,
    SimulatedBurst,
    camera_truth,
    simulate_burst,
)
from deblurd.sim.isp import CAMERA_READOUT_MS, isp_for_seed

WIENER = "Wiener (true kernels)"
METHODS = ("trigger", "sharpest", "aligned mean", "FBA", WIENER, "pipeline", "pipeline U-Net off")
SETS = ("clean", "isp")
TRUTHS = ("tone", "camera")  # --truth: what the isp set is scored against (module doc)
SHEET_COLUMNS = ("truth", *METHODS[:4], "pipeline")
DEFAULT_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")
CROP_FRACTION = 4  # sheet crops are 1/4 of the frame's width and height, shown 2x


# --------------------------------------------------------------------------- scenes


def _photo_loaders() -> dict[str, Callable[[], U8]]:
    import skimage.data as data  # evaluation only; a dev dependency

    stereo: Callable[[], Any] = data.stereo_motorcycle

    def motorcycle() -> U8:
        return np.asarray(stereo()[0], np.uint8)

    return {
        "astronaut": data.astronaut,
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle": motorcycle,
    }


def load_photo(name: str) -> U8:
    """A scikit-image photo as ``uint8 (H, W, 3)`` RGB."""
    loaders = _photo_loaders()
    if name not in loaders:
        raise SystemExit(f"unknown photo {name!r}; choose from {', '.join(loaders)}")
    img = np.ascontiguousarray(loaders[name](), np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise SystemExit(f"photo {name!r} is not RGB: shape {img.shape}")
    return img


# ---------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One simulated burst: which photo, how much shake, subject motion, extra frames,
    and which set (``"clean"``: the plain sensor; ``"isp"``: a camera, see module)."""

    index: int
    photo: str
    level: float
    subject: bool
    extra: bool
    seed: int
    camera: str = "clean"

    @property
    def name(self) -> str:
        return f"{self.photo}@{self.level:g}{'+subj' if self.subject else ''}"

    @property
    def group(self) -> str:
        return f"{self.level:g}{'+subj' if self.subject else ''}"


def build_cases(
    photos: Sequence[str],
    levels: Sequence[float],
    subject_level: float | None,
    extra_from_level: float,
    base_seed: int,
    camera: str = "clean",
) -> list[Case]:
    """Every photo at every level, then every photo with a moving subject.

    The seed of a burst depends on its photo, level and subject flag (and ``base_seed``),
    not on which other bursts are run, so a subset reproduces the same bursts.
    """
    specs: list[tuple[str, float, bool]] = [(p, lv, False) for lv in levels for p in photos]
    if subject_level is not None:
        specs += [(p, subject_level, True) for p in photos]
    cases = []
    for k, (photo, level, subject) in enumerate(specs):
        key = f"{photo}/{level:g}/{int(subject)}".encode()
        seed = (zlib.crc32(key) + 7919 * base_seed) % (2**31 - 1)
        cases.append(Case(k, photo, level, subject, level >= extra_from_level, seed, camera))
    return cases


def sheet_case_indices(cases: Sequence[Case], rows: int) -> list[int]:
    """A few bursts for the contact sheet: one per group, photos rotating, up to ``rows``."""
    groups: list[str] = []
    for c in cases:
        if c.group not in groups:
            groups.append(c.group)
    photos: list[str] = []
    for c in cases:
        if c.photo not in photos:
            photos.append(c.photo)
    chosen: list[int] = []
    for gi, group in enumerate(groups):
        members = [c for c in cases if c.group == group]
        want = photos[gi % len(photos)]
        pick = next((c for c in members if c.photo == want), members[0])
        chosen.append(pick.index)
    return sorted(chosen[:rows])


# ------------------------------------------------------------------------ simulation


EXTRA_FRAMES = 8  # long-exposure frames of an "extra" burst (the decision table's most)


def simulate(case: Case, size: tuple[int, int]) -> SimulatedBurst:
    """Simulate the burst of ``case`` at ``size`` = ``(width, height)``.

    Shake ``case.level × DEFAULT_SHAKE_DEG_S``; the photo is fitted to the view (plus the
    simulator's margin) by the simulator; other parameters are the simulator's defaults
    (9 ring frames at 8 ms, trigger in the middle; extra frames at 32 ms). The ``isp``
    set adds the burst's random camera and a rolling-shutter readout (module docstring).
    """
    width, height = size
    scene = srgb_to_linear(load_photo(case.photo))
    camera: dict[str, Any] = {}
    if case.camera == "isp":
        readout = np.random.default_rng([case.seed, 17]).uniform(*CAMERA_READOUT_MS)
        camera = {"isp": isp_for_seed(case.seed), "rolling_shutter_ms": float(readout)}
    elif case.camera != "clean":
        raise SystemExit(f"unknown set {case.camera!r}; choose from {', '.join(SETS)}")
    params = SimParams(
        width=width,
        height=height,
        seed=case.seed,
        shake=case.level * DEFAULT_SHAKE_DEG_S,
        subject=case.subject,
        extra_frames=EXTRA_FRAMES if case.extra else 0,
        **camera,
    )
    return simulate_burst(params, scene)


def _subject_mask(sim: SimulatedBurst, index: int) -> Mask | None:
    """The subject's mask in frame ``index`` (``bool (H, W)``), or None without a subject."""
    if sim.subject_masks is None:
        return None
    return np.asarray(sim.subject_masks[index] > 127, np.bool_)


def reference_truth(
    sim: SimulatedBurst, index: int, truth: str, cache: dict[int, U8] | None = None
) -> U8:
    """The truth of frame ``index`` that outputs in its geometry are scored against,
    ``uint8 (H, W, 3)`` sRGB: ``truth = "tone"`` the simulator's (``sim.truth``);
    ``"camera"`` the camera's own look (:func:`camera_truth`) for a burst through an ISP,
    the simulator's otherwise (clean set). ``cache`` keeps the camera looks per frame."""
    if truth not in TRUTHS:
        raise SystemExit(f"unknown truth {truth!r}; choose from {', '.join(TRUTHS)}")
    if truth == "tone" or sim.params.isp is None:
        return sim.truth[index]
    if cache is None:
        return camera_truth(sim, index)
    if index not in cache:
        cache[index] = camera_truth(sim, index)
    return cache[index]


# ------------------------------------------------------------------------ one burst


@dataclass
class MethodScore:
    """A method's output measured against the truth of frame ``reference``."""

    reference: int
    psnr: float
    ssim: float
    psnr_subject: float | None = None


@dataclass
class BurstResult:
    """Everything measured on one burst (picklable: it comes back from a worker)."""

    case: Case
    frames: int
    extra_frames: int
    trigger: int
    sharpest: int
    least_blur: int
    blur_px: list[float]
    selected: int
    fused: int
    rejected: int
    decision: str
    baseline_rejected: int
    scores: dict[str, MethodScore]
    seconds: dict[str, float]
    rejected_reasons: dict[str, str] = field(default_factory=dict)
    baseline_rejected_reasons: dict[str, str] = field(default_factory=dict)
    crops: dict[str, U8] = field(default_factory=dict)
    crop_box: tuple[int, int, int, int] | None = None
    wiener_choice: str = ""  # the Wiener reference's per-burst pick: frames x factor


def _crop_box(truth: U8, mask: Mask | None) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` of the sheet crop: around the subject, else the most detailed area."""
    h, w = truth.shape[:2]
    cw, ch = w // CROP_FRACTION, h // CROP_FRACTION
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        cx, cy = float(xs.mean()), float(ys.mean())
    else:
        gray = cv2.cvtColor(truth, cv2.COLOR_RGB2GRAY).astype(np.float32)
        energy = np.abs(np.asarray(cv2.Laplacian(gray, cv2.CV_32F)))
        local = np.asarray(cv2.boxFilter(energy, -1, (cw, ch)), np.float32)
        m = max(cw, ch) // 2 + 16  # stay clear of the borders
        inner = np.full_like(local, -1.0)
        inner[m : h - m, m : w - m] = local[m : h - m, m : w - m]
        cy, cx = (float(v) for v in np.unravel_index(int(np.argmax(inner)), inner.shape))
    x = int(min(max(0, round(cx - cw / 2)), w - cw))
    y = int(min(max(0, round(cy - ch / 2)), h - ch))
    return x, y, cw, ch


def evaluate_burst(
    case: Case,
    size: tuple[int, int],
    settings: DeblurdSettings,
    border: int,
    fba_p: float,
    want_crops: bool,
    single_thread: bool,
    truth: str = "tone",
) -> BurstResult:
    """Simulate one burst, run the pipeline and every baseline, and measure them
    (against :func:`reference_truth` of kind ``truth``: ``--truth``)."""
    from deblurd.inference.factory import open_deblurrer
    from deblurd.pipeline.process import process_burst

    if single_thread:
        cv2.setNumThreads(1)
    cv2.setRNGSeed(case.seed % (2**31))  # MAGSAC inside registration draws from it
    t0 = time.perf_counter()
    sim = simulate(case, size)
    burst = sim.burst
    t1 = time.perf_counter()

    deblurrer = open_deblurrer(settings.inference)
    try:
        result = process_burst(burst, settings, deblurrer)
    finally:
        if deblurrer is not None:
            deblurrer.close()
    plain = process_burst(burst, settings, None, "off")
    t2 = time.perf_counter()

    sel = settings.selection
    candidates = candidate_indices(burst, sel.frames_before, sel.frames_after)
    sharp = sharpest_index(burst, candidates, settings.blur_score.size)
    least_blur = min(candidates, key=lambda i: (sim.stats[i].blur_extent_px, i))
    cv2.setRNGSeed(case.seed % (2**31))  # baselines independent of what the pipeline drew
    stack = register_stack(burst, sharp, settings=settings.registration)
    outputs: dict[str, tuple[U8, int]] = {
        "trigger": (trigger_frame(burst), burst.trigger_index),
        "sharpest": (burst.frames[sharp], sharp),
        "aligned mean": (aligned_mean(burst, sharp, stack=stack), sharp),
        "FBA": (fourier_burst_accumulation(burst, sharp, p=fba_p, stack=stack), sharp),
        "pipeline": (result.image, result.report.selected),
        "pipeline U-Net off": (plain.image, plain.report.selected),
    }
    oracle = Oracle.from_simulation(sim)
    wiener_choice = ""
    if oracle.applies():  # not through a camera ISP / rolling shutter (wiener module)
        image, choice = wiener_reference(oracle, sharp, candidates, border=border)
        outputs[WIENER] = (image, sharp)
        wiener_choice = f"{choice.frames} x{choice.regularisation:g}"
    t3 = time.perf_counter()

    scores: dict[str, MethodScore] = {}
    if WIENER not in outputs:
        scores[WIENER] = MethodScore(sharp, math.nan, math.nan)
    looks: dict[int, U8] = {}  # camera truths, per frame (--truth camera)
    for method, (image, ref) in outputs.items():
        target = reference_truth(sim, ref, truth, looks)
        score = MethodScore(ref, psnr(image, target, border=border), ssim(image, target, border))
        mask = _subject_mask(sim, ref)
        if mask is not None and crop_border(mask, border).any():
            score.psnr_subject = psnr(image, target, mask=mask, border=border)
        scores[method] = score

    rep = result.report
    res = BurstResult(
        case=case,
        frames=len(burst.frames),
        extra_frames=len(burst.indices("extra")),
        trigger=burst.trigger_index,
        sharpest=sharp,
        least_blur=least_blur,
        blur_px=[round(float(st.blur_extent_px), 2) for st in sim.stats],
        selected=rep.selected,
        fused=len(rep.used),
        rejected=len(rep.rejected),
        decision=str(rep.decision.get("source", "")),
        baseline_rejected=len(stack.rejected),
        scores=scores,
        rejected_reasons={str(x.index): x.reason for x in rep.rejected},
        baseline_rejected_reasons={str(i): why for i, why in stack.rejected.items()},
        wiener_choice=wiener_choice,
        seconds={},
    )
    if want_crops:
        sel_truth = reference_truth(sim, rep.selected, truth, looks)
        # the crop is placed on the tone truth, whichever truth the sheet shows
        x, y, cw, ch = _crop_box(sim.truth[rep.selected], _subject_mask(sim, rep.selected))
        res.crop_box = (x, y, cw, ch)
        res.crops["truth"] = sel_truth[y : y + ch, x : x + cw].copy()
        for method, (image, _ref) in outputs.items():
            res.crops[method] = image[y : y + ch, x : x + cw].copy()
    t4 = time.perf_counter()
    res.seconds = {
        "simulate": round(t1 - t0, 3),
        "pipeline": round(t2 - t1, 3),
        "baselines": round(t3 - t2, 3),
        "total": round(t4 - t0, 3),
    }
    return res


# ---------------------------------------------------------------------------- report


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def summarise(results: Sequence[BurstResult]) -> dict[str, Any]:
    """Mean PSNR / SSIM per method and group (and over all bursts), and the comparisons."""
    groups: list[str] = []
    for r in results:
        if r.case.group not in groups:
            groups.append(r.case.group)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for method in METHODS:
        row: dict[str, dict[str, float]] = {}
        for group in [*groups, "all"]:
            members = [r for r in results if group in ("all", r.case.group)]
            row[group] = {
                "psnr": _mean([r.scores[method].psnr for r in members]),
                "ssim": _mean([r.scores[method].ssim for r in members]),
                "n": float(len(members)),
            }
        table[method] = row
    below = [r.case.name for r in results if r.scores["pipeline"].psnr < r.scores["sharpest"].psnr]
    misses = [
        f"{r.case.name} (f{r.sharpest} {r.blur_px[r.sharpest]:.1f} px vs "
        f"f{r.least_blur} {r.blur_px[r.least_blur]:.1f} px)"
        for r in results
        if r.blur_px[r.sharpest] > r.blur_px[r.least_blur] + 0.5
    ]
    subject = [
        {
            "burst": r.case.name,
            **{m: r.scores[m].psnr_subject for m in METHODS},
        }
        for r in results
        if r.case.subject
    ]
    shake = [
        r
        for r in results
        if not r.case.subject
        and math.isfinite(r.scores[WIENER].psnr)
        and math.isfinite(r.scores["pipeline"].psnr)
    ]
    vs_wiener = {
        "n": len(shake),
        "mean_delta_db": _mean([r.scores["pipeline"].psnr - r.scores[WIENER].psnr for r in shake]),
        "below": [r.case.name for r in shake if r.scores["pipeline"].psnr < r.scores[WIENER].psnr],
    }
    return {
        "groups": groups,
        "table": table,
        "pipeline_below_sharpest": below,
        "blur_score_misses": misses,
        "subject_region_psnr": subject,
        "pipeline_vs_wiener": vs_wiener,
    }


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None or math.isnan(v):
        return "—"
    if math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def _rows_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    groups = [*summary["groups"], "all"]
    n = {g: int(summary["table"]["pipeline"][g]["n"]) for g in groups}
    header = ["method", *[f"{g} (n={n[g]}) PSNR / SSIM" for g in groups]]
    rows = []
    for method in METHODS:
        cells = [method]
        for g in groups:
            s = summary["table"][method][g]
            cells.append(f"{_fmt(s['psnr'])} / {_fmt(s['ssim'], 4)}")
        rows.append(cells)
    return header, rows


def _subject_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["burst", *[f"{m} face PSNR" for m in METHODS], "pipeline - sharpest"]
    rows = []
    for entry in summary["subject_region_psnr"]:
        p, s = entry["pipeline"], entry["sharpest"]
        delta = p - s if p is not None and s is not None else None
        rows.append([entry["burst"], *[_fmt(entry[m]) for m in METHODS], _fmt(delta)])
    return header, rows


def _burst_table(results: Sequence[BurstResult]) -> tuple[list[str], list[list[str]]]:
    header = [
        "burst",
        "seed",
        "frames",
        "trig",
        "sharp",
        "sel",
        "blur px",
        "fused",
        "rej",
        "decision",
        *[f"{m} PSNR" for m in METHODS],
        "pipe SSIM",
        "s",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                r.case.name,
                str(r.case.seed),
                f"{r.frames - r.extra_frames}" + (f"+{r.extra_frames}x" if r.extra_frames else ""),
                str(r.trigger),
                str(r.sharpest),
                str(r.selected),
                f"{r.blur_px[r.selected]:.1f}",
                str(r.fused),
                str(r.rejected),
                r.decision,
                *[_fmt(r.scores[m].psnr) for m in METHODS],
                _fmt(r.scores["pipeline"].ssim, 4),
                f"{r.seconds['total']:.1f}",
            ]
        )
    return header, rows


def _text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def render_report(
    results: Sequence[BurstResult],
    summary: dict[str, Any],
    per_burst: bool,
    fmt: Callable[[Sequence[str], Sequence[Sequence[str]]], str],
    heading: str,
) -> str:
    parts = [
        f"{heading}Mean PSNR (dB) / SSIM (luma) against the truth of each output's frame",
        fmt(*_rows_table(summary)),
    ]
    below = summary["pipeline_below_sharpest"]
    parts.append(
        f"{heading}Pipeline below the sharpest frame (PSNR): {len(below)} of {len(results)}"
        + (f": {', '.join(below)}" if below else "")
    )
    vs = summary["pipeline_vs_wiener"]
    if vs["n"]:
        parts.append(
            f"{heading}Pipeline minus {WIENER} (camera-shake bursts, PSNR): mean "
            f"{vs['mean_delta_db']:+.2f} dB; below it on {len(vs['below'])} of {vs['n']}"
            + (f": {', '.join(vs['below'])}" if vs["below"] else "")
        )
    misses = summary["blur_score_misses"]
    parts.append(
        f"{heading}Sharpest by blur score is not the least blurred candidate (true PSF "
        f"extent, > 0.5 px worse): {len(misses)} of {len(results)}"
        + (f": {'; '.join(misses)}" if misses else "")
    )
    if summary["subject_region_psnr"]:
        parts += [f"{heading}Subject (moving face) region PSNR (dB)", fmt(*_subject_table(summary))]
    if per_burst:
        parts += [f"{heading}Per burst", fmt(*_burst_table(results))]
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- sheet


def _label(img: U8, text: str, y: int, scale: float = 0.5) -> None:
    """White text on a dark band at baseline ``y`` (legible on any content)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    y0, y1 = max(0, y - th - 4), min(img.shape[0], y + base + 2)
    band = img[y0:y1, 0 : min(img.shape[1], tw + 10)]
    band[...] = (band.astype(np.uint16) * 2 // 7).astype(np.uint8)
    cv2.putText(img, text, (5, y), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def contact_sheet(results: Sequence[BurstResult], scale: int = 2) -> U8 | None:
    """Rows = bursts with crops, columns = truth and each method, crops enlarged ``scale``x."""
    rows = []
    for r in results:
        if not r.crops:
            continue
        cells = []
        for col in SHEET_COLUMNS:
            crop = r.crops[col]
            h, w = crop.shape[:2]
            cell = np.ascontiguousarray(
                cv2.resize(crop, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST),
                np.uint8,
            )
            if col == "truth":
                _label(cell, f"truth f{r.selected}", 18)
                _label(cell, r.case.name, cell.shape[0] - 8)
            else:
                s = r.scores[col]
                _label(cell, f"{col} f{s.reference}", 18)
                _label(cell, f"{s.psnr:.2f} dB {s.ssim:.3f}", cell.shape[0] - 8)
            cell[:, -2:] = 255
            cell[-2:, :] = 255
            cells.append(cell)
        rows.append(np.concatenate(cells, axis=1))
    if not rows:
        return None
    return np.ascontiguousarray(np.concatenate(rows, axis=0), np.uint8)


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Evaluate the pipeline against baselines on simulated bursts.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--size", type=frame_size_at_least(64), default=(640, 480), help="frame size WxH, px"
    )
    p.add_argument(
        "--levels",
        type=nonnegative_floats,
        default=[0.5, 1.0, 2.0],
        help="shake levels, multiples of the simulator's default shake",
    )
    p.add_argument(
        "--photos", default=",".join(DEFAULT_PHOTOS), help="scikit-image photos, comma-separated"
    )
    p.add_argument(
        "--subject-level",
        type=float,
        default=1.0,
        help="shake level of the moving-subject bursts (one per photo)",
    )
    p.add_argument("--no-subject", action="store_true", help="no moving-subject bursts")
    p.add_argument(
        "--extra-from-level",
        type=float,
        default=2.0,
        help="bursts at this shake level or more also capture extra frames",
    )
    p.add_argument("--seed", type=int, default=0, help="base seed (each burst derives its own)")
    p.add_argument("--config", default=None, help="deblurd.toml for the pipeline's settings")
    p.add_argument("--border", type=int, default=16, help="px cropped from every side")
    p.add_argument("--fba-p", type=float, default=11.0, help="FBA's Fourier weight exponent")
    p.add_argument("--jobs", type=int, default=1, help="bursts evaluated in parallel")
    p.add_argument("--per-burst", action="store_true", help="print a row per burst")
    p.add_argument("--markdown", default=None, help="write the tables as Markdown here")
    p.add_argument("--json", default=None, help="write every number as JSON here")
    p.add_argument("--sheet", default=None, help="write a contact-sheet PNG here")
    p.add_argument("--sheet-rows", type=int, default=4, help="bursts on the contact sheet")
    p.add_argument(
        "--set",
        dest="sets",
        choices=[*SETS, "both"],
        default="clean",
        help="clean: the simulator's plain sensor; isp: the same bursts through a "
        "random camera ISP and rolling shutter per burst; both: a table for each",
    )
    p.add_argument(
        "--truth",
        choices=TRUTHS,
        default="tone",
        help="what the isp set is scored against: tone = the sharp view through the "
        "camera's tone curve only; camera = the camera's own noiseless look (its ISP "
        "with noise and codec off, deblurd.sim.burst.camera_truth); the clean set is "
        "scored the same either way",
    )
    return p


def load_settings_arg(path: str | None) -> DeblurdSettings:
    """Default settings, or the file at ``path`` through ``deblurd.settings.load``."""
    if path is None:
        return DeblurdSettings()
    from deblurd.settings.load import load_settings

    return load_settings(path)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN → null, ±inf → "inf"/"-inf" (PSNR of identical images)."""
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _result_json(r: BurstResult) -> dict[str, Any]:
    doc = asdict(r)
    doc.pop("crops")
    doc["name"] = r.case.name
    out: dict[str, Any] = _clean(doc)
    return out


def _output_path(path: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def _run_cases(
    cases: Sequence[Case], args: argparse.Namespace, settings: DeblurdSettings, sheet: set[int]
) -> tuple[list[BurstResult], float]:
    """Evaluate ``cases`` (in parallel with ``--jobs``); results in case order, wall s."""
    jobs = max(1, args.jobs)
    t0 = time.perf_counter()
    results: list[BurstResult] = []

    def report(r: BurstResult) -> None:
        s = r.seconds
        print(
            f"[{len(results):>2}/{len(cases)}] {r.case.camera:<5} {r.case.name:<22} "
            f"{s['total']:5.1f} s (sim {s['simulate']:.1f}, pipeline {s['pipeline']:.1f}, "
            f"baselines {s['baselines']:.1f})  pipeline {r.scores['pipeline'].psnr:.2f} dB, "
            f"sharpest {r.scores['sharpest'].psnr:.2f} dB",
            flush=True,
        )

    common = (tuple(args.size), settings, args.border, args.fba_p)
    truth = args.truth
    if jobs == 1:
        for case in cases:
            try:
                results.append(evaluate_burst(case, *common, case.index in sheet, False, truth))
            except Exception:
                print(f"burst {case.name} (seed {case.seed}) failed:", file=sys.stderr)
                raise
            report(results[-1])
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {
                pool.submit(evaluate_burst, c, *common, c.index in sheet, True, truth): c
                for c in cases
            }
            for fut in as_completed(futures):
                try:
                    results.append(fut.result())
                except Exception:
                    c = futures[fut]
                    print(f"burst {c.name} (seed {c.seed}) failed:", file=sys.stderr)
                    raise
                report(results[-1])
    results.sort(key=lambda r: r.case.index)
    return results, time.perf_counter() - t0


def _set_path(path: str, camera: str, several: bool) -> str:
    """``path`` for the clean set (or a lone set); ``NAME-isp.EXT`` for the isp set of two."""
    if not several or camera == "clean":
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}-{camera}{p.suffix}"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    photos = [p.strip() for p in args.photos.split(",") if p.strip()]
    for name in photos:
        load_photo(name)  # fail early on an unknown photo
    settings = load_settings_arg(args.config)
    sets = list(SETS) if args.sets == "both" else [args.sets]
    several = len(sets) > 1
    subject_level = None if args.no_subject else args.subject_level
    runs: dict[str, tuple[list[BurstResult], float, dict[str, Any]]] = {}

    def against(camera: str) -> str:  # said only when the truth is not the default
        return (
            " (truth: the camera's own look)" if camera == "isp" and args.truth == "camera" else ""
        )

    for camera in sets:
        cases = build_cases(
            photos, args.levels, subject_level, args.extra_from_level, args.seed, camera
        )
        sheet = set(sheet_case_indices(cases, args.sheet_rows)) if args.sheet else set()
        print(
            f"{camera} set: {len(cases)} bursts at {args.size[0]}x{args.size[1]}, levels "
            f"{', '.join(f'{v:g}' for v in args.levels)}, {max(1, args.jobs)} job(s)",
            flush=True,
        )
        results, wall = _run_cases(cases, args, settings, sheet)
        runs[camera] = (results, wall, summarise(results))

    for camera, (results, wall, summary) in runs.items():
        print(f"\n==== {camera} set{against(camera)} " + "=" * 60)
        print(render_report(results, summary, args.per_burst, _text, f"== [{camera}] "), end="")
        print(
            f"\n{len(results)} bursts in {wall:.1f} s wall "
            f"({statistics.fmean(r.seconds['total'] for r in results):.1f} s per burst)"
        )

    if args.markdown:
        md = "# deblurd evaluation\n\n"
        for camera, (results, _wall, summary) in runs.items():
            md += (
                f"## {camera} set{against(camera)}\n\n{len(results)} simulated bursts at "
                f"{args.size[0]}x{args.size[1]}, border {args.border} px.\n\n"
                + render_report(results, summary, True, _markdown, "### ")
                + "\n"
            )
        atomic_write_bytes(_output_path(args.markdown), md.encode())
        print(f"wrote {args.markdown}")
    if args.json:

        def set_doc(camera: str) -> dict[str, Any]:
            results, wall, summary = runs[camera]
            return {
                "wall_s": round(wall, 2),
                "summary": summary,
                "bursts": [_result_json(r) for r in results],
            }

        doc: dict[str, Any] = {
            "args": {k: v for k, v in vars(args).items()},
            "settings": settings.model_dump(mode="json"),
            **set_doc(sets[0]),  # the first set at the top level, as before
            "sets": {camera: set_doc(camera) for camera in sets},
        }
        text = json.dumps(_clean(doc), indent=1, default=str, allow_nan=False)
        atomic_write_bytes(_output_path(args.json), (text + "\n").encode())
        print(f"wrote {args.json}")
    if args.sheet:
        for camera, (results, _wall, _summary) in runs.items():
            img = contact_sheet(results)
            if img is not None:
                path = _set_path(args.sheet, camera, several)
                write_image(_output_path(path), img)
                print(f"wrote {path} ({img.shape[1]}x{img.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
