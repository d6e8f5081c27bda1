"""Settings of stage 4b (fusion) and stage 5 (finishing)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deblurd.settings.base import Section


class FusionSettings(Section):
    """How registered frames are merged with the first (deblurred) frame.

    See ``deblurd.pipeline.fusion`` for the weighting formulas these parameters enter.
    """

    mode: Literal["sequential", "reference"] = Field(
        "reference",
        description="sequential: running weighted average (weight 1 vs i-1), frames streamed; "
        "reference: all registered to the first frame, then averaged. Same result for the "
        "same frames (weights are always measured against the reference)",
    )
    robust: bool = Field(
        True,
        description="down-weight pixels that disagree with the reference (moving subjects, "
        "misregistration, frames blurrier than the reference); off = plain weighted average",
    )
    robust_k: float = Field(
        3.0,
        gt=0.0,
        le=50.0,
        description="motion test: a pixel keeps full weight while its low-passed difference "
        "to the reference is under robust_k noise stds (of that difference), and none from "
        "2·robust_k; unit: noise std",
    )
    detail_tolerance: float = Field(
        0.3,
        gt=0.0,
        le=50.0,
        description="detail test: full weight while the local mean squared difference to the "
        "reference exceeds what noise explains by at most this fraction of the noise "
        "energy, none from 3·detail_tolerance; catches blur and fine misregistration; "
        "unit: fraction of the expected noise energy",
    )
    detail_guard: bool = Field(
        True,
        description="use the detail test (per-pixel guard against importing blur from "
        "frames blurrier than the reference); the motion test always runs when robust",
    )
    calibrate_noise: bool = Field(
        True,
        description="tighten the noise model per frame and brightness where the frame's own "
        "static majority (median low-passed difference on flat areas) shows less noise than "
        "the model says (a denoised reference, a too generous noise level); never loosens, "
        "because blur, misregistration and motion raise those differences too",
    )
    calibrate_detail: bool = Field(
        True,
        description="measure the detail test's noise on its own scale (full-resolution "
        "energy, whose spread widens the tolerance for spatially correlated ISP noise) "
        "instead of applying the motion test's low-pass factor to it (both fusers, CPU and "
        "CUDA)",
    )
    accumulation: Literal["average", "fourier"] = Field(
        "average",
        description="average: the robust weighted average; fourier: its luma replaced by a "
        "robust Fourier burst accumulation (each frequency mostly from the frames that kept "
        "it, where frames disagree the average's content, noise-floored weights; "
        "deblurd.pipeline.accumulation); keeps every aligned frame in memory; CPU fuser only",
    )
    accumulation_p: float = Field(
        11.0,
        ge=0.0,
        le=50.0,
        description="exponent of the Fourier accumulation's weights (0 = plain mean); unitless",
    )
    accumulation_floor: float = Field(
        2.0,
        ge=0.0,
        le=100.0,
        description="noise floor of the Fourier accumulation's magnitudes, in the noise's "
        "spectral level: where every frame is below it the frequencies are averaged; unit: "
        "noise std",
    )
    guide_sigma_px: float = Field(
        2.0,
        ge=0.0,
        le=16.0,
        description="Gaussian low-pass of the motion test (on a half-resolution difference), "
        "std in full-resolution pixels; larger = less sensitive to noise and fine detail",
    )
    reject_grow_px: int = Field(
        4,
        ge=0,
        le=64,
        description="rejected areas grow by this many full-resolution pixels "
        "(min filter of the weights) so ghost edges are covered; pixels",
    )
    weight_smooth_px: float = Field(
        2.0,
        ge=0.0,
        le=32.0,
        description="Gaussian smoothing of the weight map (no speckle, soft seams), "
        "std in full-resolution pixels",
    )
    reference_weight: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description="per-pixel weight of the reference; every other frame has at most its "
        "frame weight (1 by default): 1 = equal-weight average as in the method; unitless",
    )
    match_exposure: bool = Field(
        True,
        description="scale each frame per channel to the reference's brightness (robust "
        "median ratio) when they differ by more than 0.5 %, e.g. extra frames taken at "
        "another exposure",
    )


class FinishingSettings(Section):
    """Stage 5: optional unsharp-mask sharpening before the last U-Net pass."""

    sharpen_amount: float = Field(
        0.0,
        ge=0.0,
        le=3.0,
        description="unsharp-mask gain: output = x + amount·(x - blur(x)); 0 = off; unitless",
    )
    sharpen_sigma_px: float = Field(
        1.0, gt=0.0, le=10.0, description="std of the unsharp mask's Gaussian blur, pixels"
    )
    sharpen_noise_aware: bool = Field(
        True,
        description="sharpen only detail that stands out of the image's own noise (estimated "
        "from the image), so flat-area noise is not amplified",
    )
