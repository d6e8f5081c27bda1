"""Bursts that lie or disagree still give the best single frame, with the reasons reported.

A burst whose frames differ in brightness (auto-exposure), whose metadata lies about
exposure and gain, or that is all motion (nothing to fuse) must never come out worse than
the frame the pipeline selected, and the report must say what happened.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deblurd.burstdir import Burst, FrameInfo
from deblurd.evaluation.metrics import psnr
from deblurd.imaging import U8, linear_to_srgb, srgb_to_linear
from deblurd.pipeline.process import process_burst
from deblurd.settings.models import DeblurdSettings
from deblurd.sim import SimParams, simulate_burst


@pytest.fixture(scope="module")
def sim() -> object:
    return simulate_burst(SimParams(width=320, height=240, ring_frames=7, seed=21))


def off() -> DeblurdSettings:
    s = DeblurdSettings()
    return s.model_copy(update={"inference": s.inference.model_copy(update={"passes": "off"})})


def with_frames(burst: Burst, frames: list[U8], infos: list[FrameInfo] | None = None) -> Burst:
    return Burst(frames, infos or list(burst.infos), burst.trigger_index)


def test_frames_of_different_brightness_are_matched_and_fused(sim: object) -> None:
    b = sim.burst  # type: ignore[attr-defined]
    truth = sim.truth  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    scaled = [
        f
        if i == b.trigger_index
        else linear_to_srgb(srgb_to_linear(f) * np.float32(rng.uniform(0.75, 1.25)))
        for i, f in enumerate(b.frames)
    ]
    res = process_burst(with_frames(b, scaled), off())
    sel = res.report.selected
    assert res.report.used, res.report.rejected  # brightness is matched, not rejected
    assert psnr(res.image, truth[sel], border=16) > psnr(scaled[sel], truth[sel], border=16)
    # brightness stays put: within 2 codes of the selected frame on average
    drift = float(np.mean(res.image.astype(np.float64)) - np.mean(scaled[sel]))
    assert abs(drift) < 2.0


def test_lying_metadata_changes_nothing_that_matters(sim: object) -> None:
    b = sim.burst  # type: ignore[attr-defined]
    truth = sim.truth  # type: ignore[attr-defined]
    lies = [
        dataclasses.replace(info, exposure_us=100_000, analogue_gain=16.0) if i % 2 else info
        for i, info in enumerate(b.infos)
    ]
    res = process_burst(with_frames(b, list(b.frames), lies), off())
    honest = process_burst(b, off())
    sel = res.report.selected
    assert res.report.used
    assert psnr(res.image, truth[sel], border=16) >= psnr(b.frames[sel], truth[sel], border=16)
    assert (
        abs(psnr(res.image, truth[sel], border=16) - psnr(honest.image, truth[sel], border=16))
        < 0.5
    )


def test_all_motion_gives_the_selected_frame_with_reasons(sim: object) -> None:
    b = sim.burst  # type: ignore[attr-defined]
    others = [
        simulate_burst(SimParams(width=320, height=240, ring_frames=1, seed=100 + i)).burst.frames[
            0
        ]
        for i in range(len(b.frames))
    ]
    frames = [f if i == b.trigger_index else others[i] for i, f in enumerate(b.frames)]
    settings = off()
    # every other frame is another scene: the blur score may still select one of them;
    # whatever is selected, nothing else can be fused with it
    res = process_burst(with_frames(b, frames), settings)
    sel = res.report.selected
    assert not res.report.used
    assert res.report.rejected and all(r.reason for r in res.report.rejected)
    np.testing.assert_array_equal(res.image, frames[sel])
