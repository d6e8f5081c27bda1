"""tools/evaluate.py ``--truth``: the isp set scored against the camera's own look."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deblurd.evaluation.metrics import psnr
from deblurd.settings.models import DeblurdSettings
from deblurd.sim.burst import camera_truth
from tool_modules import load_tool

pytest.importorskip("skimage.data")  # the evaluation's photos

REPO = Path(__file__).resolve().parents[2]
SIZE = (160, 120)


def _settings() -> DeblurdSettings:
    s = DeblurdSettings()  # U-Net passes off: no engines needed
    return s.model_copy(update={"inference": s.inference.model_copy(update={"passes": "off"})})


def test_truth_option_parses_and_defaults_to_tone() -> None:
    tool = load_tool("evaluate")
    assert tool.build_parser().parse_args([]).truth == "tone"
    assert tool.build_parser().parse_args(["--truth", "camera"]).truth == "camera"
    with pytest.raises(SystemExit):
        tool.build_parser().parse_args(["--truth", "isp"])


def test_isp_set_scored_against_the_camera_look() -> None:
    tool = load_tool("evaluate")
    settings = _settings()
    case = tool.build_cases(["astronaut"], [1.0], None, 2.0, 0, "isp")[0]
    args = (case, SIZE, settings, 8, 11.0, False, False)
    default = tool.evaluate_burst(*args)
    tone = tool.evaluate_burst(*args, "tone")
    camera = tool.evaluate_burst(*args, "camera")
    for method, score in default.scores.items():  # the default is the tone truth, unchanged
        other = tone.scores[method]
        assert score.reference == other.reference
        assert np.array_equal([score.psnr, score.ssim], [other.psnr, other.ssim], equal_nan=True)
    # the same outputs, another truth: the numbers move, the frames a method is scored in stay
    sim = tool.simulate(case, SIZE)
    sharp = camera.scores["sharpest"].reference
    assert sharp == tone.scores["sharpest"].reference
    look = camera_truth(sim, sharp)
    assert camera.scores["sharpest"].psnr == pytest.approx(
        psnr(sim.burst.frames[sharp], look, border=8)
    )
    assert camera.scores["sharpest"].psnr != pytest.approx(tone.scores["sharpest"].psnr)
    # a camera frame is nearer its own camera's look than the tone-curve-only truth
    assert camera.scores["trigger"].psnr > tone.scores["trigger"].psnr
    # reference_truth: the camera look per frame (cached), the tone truth under "tone"
    cache: dict[int, np.ndarray] = {}
    assert np.array_equal(tool.reference_truth(sim, sharp, "camera", cache), look)
    assert sharp in cache
    assert tool.reference_truth(sim, sharp, "tone") is sim.truth[sharp]
    with pytest.raises(SystemExit):
        tool.reference_truth(sim, sharp, "isp")


def test_clean_set_is_the_same_under_either_truth() -> None:
    tool = load_tool("evaluate")
    case = tool.build_cases(["astronaut"], [1.0], None, 2.0, 0, "clean")[0]
    args = (case, SIZE, _settings(), 8, 11.0, False, False)
    tone = tool.evaluate_burst(*args, "tone")
    camera = tool.evaluate_burst(*args, "camera")
    for method, score in tone.scores.items():
        other = camera.scores[method]
        assert np.array_equal([score.psnr, score.ssim], [other.psnr, other.ssim], equal_nan=True)
    sim = tool.simulate(case, SIZE)
    assert tool.reference_truth(sim, 0, "camera") is sim.truth[0]
