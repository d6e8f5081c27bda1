"""The whole method on one burst (DESIGN §1): select → deblur → decide → register → fuse → finish.

Pure arrays in, arrays and a report out: the daemon runs it on frames from its ring,
``deblurd process`` on a saved burst directory. Each stage is a call into its own module;
this module only sequences them, times them and records what each decided.

Where the two U-Net passes act (``inference.passes``): the first pass deblurs the
selected frame; its blur score drives the decision (stage 3), and it is the result when
no second frame can be fused. Stage 4 registers, gates and averages the **raw** frames
around the raw selected frame (like with like: the noise model and the blur gate hold,
and the average keeps texture a single deblurred frame loses), and the second pass
deblurs that fused image, which has several times less noise than any frame. Measured
against a deblurred first frame as the fusion reference: engines/MODEL_CARD.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from deblurd.burstdir import Burst
from deblurd.imaging import F32, U8, linear_to_srgb, linear_to_srgb_float, srgb_to_linear
from deblurd.inference.base import Deblurrer
from deblurd.pipeline.blur import blur_score
from deblurd.pipeline.decision import Decision, decide
from deblurd.pipeline.finishing import finish
from deblurd.pipeline.fusion import FusionResult
from deblurd.pipeline.noise import estimate_noise_model
from deblurd.pipeline.selection import select_first_frame, walk_order
from deblurd.pipeline.stage4 import CPU_STAGE4, Stage4
from deblurd.pipeline.timing import StageTimer
from deblurd.settings.models import DeblurdSettings

UnetPasses = Literal["off", "first", "both"]


@dataclass
class FrameRecord:
    """One frame of the burst as the report shows it."""

    index: int
    file: str
    role: str
    exposure_us: int
    blur_score: float


@dataclass
class UsedFrame:
    """A second frame that was fused: registration quality and the weight it got."""

    index: int
    inliers: int
    residual_px: float
    frame_weight: float
    mean_pixel_weight: float


@dataclass
class RejectedFrame:
    """A second frame that was not fused, and why."""

    index: int
    reason: str


@dataclass
class ProcessReport:
    """Everything the pipeline decided, for ``--json`` and the daemon's result metadata."""

    frames: list[FrameRecord] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    selected: int = -1
    selection_rule: str = ""
    unet_passes: str = "off"
    deblurred_blur_score: float | None = None
    decision: dict[str, Any] = field(default_factory=dict)
    noise_model: dict[str, float] = field(default_factory=dict)
    noise: dict[str, float] = field(default_factory=dict)
    used: list[UsedFrame] = field(default_factory=list)
    rejected: list[RejectedFrame] = field(default_factory=list)
    fusion_mode: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProcessResult:
    """The output frame ``uint8 (H, W, 3)`` sRGB RGB in the selected frame's geometry."""

    image: U8
    report: ProcessReport


def candidate_indices(burst: Burst, before: int, after: int) -> list[int]:
    """Ring frames within ``before``/``after`` ring positions of the trigger, in file order."""
    ring = burst.indices("ring")
    pos = ring.index(burst.trigger_index)
    return ring[max(0, pos - before) : pos + after + 1]


def _second_frame_pool(
    burst: Burst, decision: Decision, candidates: list[int], selected: int, scores: list[float]
) -> tuple[list[int], str | None]:
    """Indices to try as second frames, and a note when the plan had to change.

    ``ring``: the ``decision.frames`` sharpest ring candidates (ties: nearest the selected
    frame first). ``extra``: the burst's extra (long-exposure) frames first, then every
    ring candidate: the blur gate and the fusion weights decide which of them help (a long
    exposure trades noise for blur, and sharp ring neighbours should not be thrown away).
    """
    ring_order = [candidates[i] for i in walk_order(len(candidates), candidates.index(selected))]
    ring = sorted((i for i in ring_order if i != selected), key=lambda i: scores[i])
    if decision.source == "ring":
        return ring[: decision.frames], None
    extra = burst.indices("extra")
    if not extra:
        return ring, "the burst has no extra frames: ring frames used"
    return extra[: decision.frames] + ring, None


@dataclass
class BurstPlan:
    """Stages 1–3 done on a burst: what :func:`complete_burst` needs to finish it.

    ``scores``: blur score (dB) per frame of the burst as it was planned (frames appended
    later, e.g. extra frames the daemon captured after the decision, are scored by
    :func:`complete_burst`). ``raw``: the selected frame decoded to linear ``float32
    (H, W, 3)``: the reference of stage 4. ``first``: the first deblurred image, same
    layout (``raw`` itself with the U-Net off); ``first_score``: its blur score (dB).
    ``decision``: where the second frames come from (stage 3).
    """

    passes: UnetPasses
    scores: list[float]
    candidates: list[int]
    selected: int
    raw: F32
    first: F32
    first_score: float
    decision: Decision
    report: ProcessReport

    @property
    def timer(self) -> StageTimer:
        return StageTimer(self.report.stage_ms)


def plan_burst(
    burst: Burst,
    settings: DeblurdSettings,
    deblurrer: Deblurrer | None = None,
    unet: UnetPasses | None = None,
) -> BurstPlan:
    """Stages 1–3 on ``burst``: blur scores, first frame, first deblur, decision.

    The daemon acts on ``plan.decision`` (captures extra frames and appends them to the
    burst with role ``extra``) before it calls :func:`complete_burst`. ``unet`` overrides
    ``settings.inference.passes``; a U-Net pass without a ``deblurrer`` → ``ValueError``.
    """
    passes: UnetPasses = unet or settings.inference.passes
    if passes != "off" and deblurrer is None:
        raise ValueError(f"U-Net passes {passes!r} need a deblurrer")
    report = ProcessReport(unet_passes=passes, fusion_mode=settings.fusion.mode)
    timer = StageTimer(report.stage_ms)

    # Stage 1: score every frame, pick the first frame among the ring candidates.
    with timer.stage("blur_score"):
        scores = [blur_score(f, settings.blur_score.size) for f in burst.frames]
    report.frames = [
        FrameRecord(i, info.file, info.role, info.exposure_us, round(s, 4))
        for i, (info, s) in enumerate(zip(burst.infos, scores, strict=True))
    ]
    sel_cfg = settings.selection
    with timer.stage("select"):
        candidates = candidate_indices(burst, sel_cfg.frames_before, sel_cfg.frames_after)
        selection = select_first_frame(
            [scores[i] for i in candidates],
            candidates.index(burst.trigger_index),
            sel_cfg.first_blur_threshold,
        )
    selected = candidates[selection.index]
    report.candidates, report.selected, report.selection_rule = candidates, selected, selection.rule

    # Stage 2: the first deblurred image (or the selected frame itself with the U-Net off).
    with timer.stage("decode"):
        raw = first = srgb_to_linear(burst.frames[selected])
    if passes != "off" and deblurrer is not None:
        with timer.stage("unet_first"):
            first = deblurrer.deblur(raw, "first")
        first_score = blur_score(linear_to_srgb(first), settings.blur_score.size)
        report.deblurred_blur_score = round(first_score, 4)
    else:
        first_score = scores[selected]

    # Stage 3: decide which second frames to take.
    with timer.stage("decide"):
        decision = decide(first_score, settings.decision)
    return BurstPlan(
        passes, scores, candidates, selected, raw, first, first_score, decision, report
    )


def complete_burst(
    burst: Burst,
    settings: DeblurdSettings,
    plan: BurstPlan,
    deblurrer: Deblurrer | None = None,
    stage4: Stage4 | None = None,
) -> ProcessResult:
    """Stages 4–5 on a planned burst: register, fuse, finish, the second U-Net pass.

    ``burst`` is the planned burst, possibly with frames appended since (extra frames);
    they are scored here. ``plan`` is used up (its report becomes the result's).
    ``stage4``: the registration/fusion backend (:mod:`deblurd.pipeline.stage4`); None:
    the CPU one, which only ``registration.backend = "opencv"`` may use (the others
    come from :func:`deblurd.gpu.factory.stage4_for`: a ``ValueError`` otherwise).
    """
    if stage4 is None:
        if settings.registration.backend != "opencv":
            raise ValueError(
                f"registration.backend {settings.registration.backend!r} needs its stage-4 "
                "backend (deblurd.gpu.factory.stage4_for)"
            )
        stage4 = CPU_STAGE4
    if plan.passes == "both" and deblurrer is None:
        raise ValueError("U-Net passes 'both' need a deblurrer")
    report, timer = plan.report, plan.timer
    scores = plan.scores
    if len(burst.frames) > len(scores):
        with timer.stage("blur_score"):
            added = [blur_score(f, settings.blur_score.size) for f in burst.frames[len(scores) :]]
        for i, s in enumerate(added, start=len(scores)):
            info = burst.infos[i]
            record = FrameRecord(i, info.file, info.role, info.exposure_us, round(s, 4))
            report.frames.append(record)
        scores = scores + added
    decision, selected = plan.decision, plan.selected
    with timer.stage("decide"):
        pool, note = _second_frame_pool(burst, decision, plan.candidates, selected, scores)
    report.decision = {
        "source": decision.source,
        "frames": decision.frames,
        "exposure_us": decision.exposure_us,
        "reason": decision.reason + (f"; {note}" if note else ""),
    }

    # Stage 4: register and fuse the raw frames (linear light).
    fusion = _register_and_fuse(
        burst, settings, selected, plan.raw, scores, pool, report, timer, stage4
    )

    # Stage 5: finish, then the U-Net once more (on the fused image only).
    if fusion is None:
        # Nothing was fused: the result is the first deblurred image (the selected frame
        # itself with the U-Net off). The second pass is for fused images; run on the first
        # pass's output it would only over-sharpen.
        out = plan.first
        if plan.passes == "both":
            report.unet_passes = "first (no frame fused: second pass skipped)"
    else:
        fused, residual_noise = fusion
        with timer.stage("finish"):
            out = finish(fused, settings.finishing, residual_noise)
        if plan.passes == "both" and deblurrer is not None:
            with timer.stage("unet_second"):
                out = deblurrer.deblur(out, "second")
    with timer.stage("encode"):
        image = linear_to_srgb(out)
    report.stage_ms.pop("total", None)
    report.stage_ms["total"] = round(sum(report.stage_ms.values()), 2)
    return ProcessResult(image, report)


def process_burst(
    burst: Burst,
    settings: DeblurdSettings,
    deblurrer: Deblurrer | None = None,
    unet: UnetPasses | None = None,
    stage4: Stage4 | None = None,
) -> ProcessResult:
    """Run the method on ``burst``; ``unet`` overrides ``settings.inference.passes``.

    A U-Net pass is requested but ``deblurrer`` is ``None`` → :class:`ValueError`
    (the caller opens the runtime; a pass is never silently skipped). The same as
    :func:`plan_burst` then :func:`complete_burst`.
    """
    plan = plan_burst(burst, settings, deblurrer, unet)
    return complete_burst(burst, settings, plan, deblurrer, stage4)


def _register_and_fuse(
    burst: Burst,
    settings: DeblurdSettings,
    selected: int,
    raw: F32,
    scores: list[float],
    pool: list[int],
    report: ProcessReport,
    timer: StageTimer,
    stage4: Stage4,
) -> tuple[F32, F32 | None] | None:
    """Stage 4 on the raw frames: the fused image, linear ``float32 (H, W, 3)``, and its
    per-pixel residual noise std ``float32 (H, W)`` (or None); None when no second frame
    was fused.

    The second frames are registered to, gated against and fused with the **raw** selected
    frame, never the first pass's output: like with like (same noise, same kind of blur),
    so the noise model behind the robust weights holds, the blur gate compares scores of
    one kind, and the average keeps the raw frames' texture, which a deblurred reference
    loses on detailed scenes, and the second U-Net pass then deblurs an image with far
    less noise than any single frame (measured: engines/MODEL_CARD.md).
    """
    gate = settings.second_frames
    raw_score = scores[selected]
    kept: list[int] = []
    for i in pool:
        excess = scores[i] - raw_score
        if excess > gate.max_blur_excess:
            report.rejected.append(
                RejectedFrame(
                    i,
                    f"blur score {scores[i]:.3f} exceeds the selected frame's "
                    f"{raw_score:.3f} by more than {gate.max_blur_excess}",
                )
            )
        else:
            kept.append(i)
    if not kept:
        return None

    with timer.stage("noise"):
        noise = estimate_noise_model(raw)
    report.noise_model = {"a": float(noise.a), "b": float(noise.b)}
    # Streaming in both fusion modes: each frame is registered, warped and fused before
    # the next (one aligned frame at a time; on the GPU backends it never leaves the
    # device, and the next warp reuses its buffers). register/warp/fuse are timed apart.
    aligner = stage4.open_aligner(settings.registration)
    aligner.set_reference(raw)
    timer.add("register", aligner.stage_ms["register"])
    with timer.stage("fuse"):
        job = stage4.open_fusion_job(settings.registration, raw, settings.fusion, noise)
    for i in kept:
        weight = float(np.exp(-max(0.0, scores[i] - raw_score) / gate.sharpness_scale))
        reg, aligned = aligner.align(burst.frames[i], weight)
        for stage in ("register", "warp"):
            if stage in aligner.stage_ms:
                timer.add(stage, aligner.stage_ms[stage])
        if aligned is None:
            report.rejected.append(RejectedFrame(i, f"registration: {reg.reason}"))
            continue
        report.used.append(
            UsedFrame(i, reg.inliers, round(reg.residual_px, 4), round(weight, 4), 0.0)
        )
        with timer.stage("fuse"):
            job.add(aligned)
    with timer.stage("fuse"):
        result = job.result()
    for used, w in zip(report.used, result.frame_weights, strict=False):
        used.mean_pixel_weight = round(float(w), 4)
    if not report.used:
        return None
    report.noise = measured_noise_report(raw, result)
    return result.image, result.residual_noise_sigma(noise)


def measured_noise_report(raw: F32, result: FusionResult) -> dict[str, float]:
    """The noise before and after fusion as the burst measured it, for the report: one
    frame's noise std and the fused image's (one frame's over the square root of the
    median per-pixel weight sum), in 8-bit sRGB codes at the selected frame's median
    intensity, and the factor the burst's differences put on the spatial noise model."""
    sigma = result.frame_noise_sigma
    if not np.isfinite(sigma):
        return {}
    level = float(np.median(raw[:: max(1, raw.shape[0] // 64), :: max(1, raw.shape[1] // 64)]))
    ends = np.array([max(level - sigma, 0.0), min(level + sigma, 1.0)], np.float32)
    enc = linear_to_srgb_float(ends)
    span = max(float(ends[1] - ends[0]), 1e-12)
    codes = float(enc[1] - enc[0]) / span * sigma * 255.0
    wsum = float(np.median(result.weight_sum))
    return {
        "level": round(level, 4),
        "frame_sigma_codes": round(codes, 3),
        "fused_sigma_codes": round(codes / max(wsum, 1e-6) ** 0.5, 3),
        "median_weight_sum": round(wsum, 3),
        "model_factor": round(result.noise_factor, 3),
    }
