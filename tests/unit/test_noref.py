"""No-reference measures (deblurd.evaluation.noref) and a smoke run of tools/eval_real.py."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from deblurd.errors import ImageError
from deblurd.evaluation import noref
from tool_modules import load_tool

REPO = Path(__file__).resolve().parents[2]
REALDATA = REPO.parent / "shared" / "realdata"


def _scene(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A smooth scene with some edges and texture, float64 codes in ~[40, 210]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 120 + 40 * np.sin(xx / 37.0) * np.cos(yy / 29.0)
    base[61:139, 83:203] += 40.0  # a bright box: hard edges (off the 8x8 grid)
    tex = cv2.GaussianBlur(rng.normal(0, 40, (h, w)), (0, 0), 0.7)
    base[150:230, 20:140] += tex[150:230, 20:140]  # a textured patch
    return np.asarray(base, np.float64)


def _rgb(y: np.ndarray) -> np.ndarray:
    return np.clip(np.round(y), 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)


def _rgb_float_noise(y: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gray RGB frame whose luma carries white noise of ``sigma`` codes (same on all
    channels, so luma noise is ``sigma``)."""
    return _rgb(y + rng.normal(0, sigma, y.shape))


def test_immerkaer_reads_white_noise_sigma_within_10_percent() -> None:
    rng = np.random.default_rng(1)
    flat = np.full((256, 256), 128.0)
    for sigma in (2.0, 5.0, 10.0):
        est = noref.immerkaer_sigma(_rgb_float_noise(flat, sigma, rng))
        truth = math.sqrt(sigma**2 + 1 / 12)  # + rounding to codes
        assert abs(est - truth) / truth < 0.10, (sigma, est)


def test_immerkaer_on_flat_mask_ignores_edges_and_texture() -> None:
    rng = np.random.default_rng(2)
    scene = _scene()
    yy, xx = np.indices((50, scene.shape[1]))
    scene[10:60, :] += 30.0 * ((yy // 2 + xx // 2) % 2)  # a fine 2-D check, period 4 px
    noisy = _rgb_float_noise(scene, 3.0, rng)
    mask = noref.flat_mask(_rgb(scene))
    whole = noref.immerkaer_sigma(noisy)
    masked = noref.immerkaer_sigma(noisy, mask)
    assert abs(masked - 3.0) / 3.0 < 0.10
    assert whole > masked * 1.3  # the texture and edges inflate the unmasked estimate
    assert math.isnan(noref.immerkaer_sigma(noisy, np.zeros(scene.shape, bool)))


def test_gradient_energy_falls_with_gaussian_blur() -> None:
    img = _rgb(_scene())
    energies = [noref.gradient_energy(img)]
    for s in (0.8, 1.5, 3.0):
        energies.append(noref.gradient_energy(cv2.GaussianBlur(img, (0, 0), s)))
    assert all(a > b for a, b in itertools.pairwise(energies)), energies
    assert energies[-1] < 0.5 * energies[0]


def test_blur_score_is_the_products_and_rises_with_blur() -> None:
    img = _rgb(_scene())
    blurred = np.asarray(cv2.GaussianBlur(img, (0, 0), 2.5), np.uint8)
    assert noref.blur_score(blurred) > noref.blur_score(img) + 1.0


def test_blockiness_rises_after_low_quality_jpeg() -> None:
    rng = np.random.default_rng(3)
    img = _rgb_float_noise(_scene(), 2.0, rng)
    clean = noref.blockiness(img)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert ok
    jpeg = np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)
    blocky = noref.blockiness(jpeg)
    assert abs(clean - 1.0) < 0.05
    assert blocky > clean + 0.3
    assert abs(noref.block_excess(img)) < 0.2
    assert noref.block_excess(jpeg) > 1.0
    assert noref.block_phase(jpeg) == (0, 0)
    # a cropped JPEG: the grid moves, block_phase finds it, phase 0 misses it
    shifted = jpeg[3:, 5:]
    assert noref.block_phase(shifted) == (5, 3)
    assert noref.blockiness(shifted, phase=(5, 3)) > noref.blockiness(shifted) + 0.2


def test_drift_of_a_4_code_shift_reads_2_units() -> None:
    rng = np.random.default_rng(4)
    img = _rgb_float_noise(_scene(), 2.0, rng)
    up = np.clip(img.astype(np.int16) + 4, 0, 255).astype(np.uint8)
    assert noref.brightness_drift(up, img) == pytest.approx(2.0, abs=0.05)
    assert noref.brightness_drift(img, up) == pytest.approx(-2.0, abs=0.05)
    assert noref.brightness_drift(img, img) == 0.0


def test_colour_shift_sees_a_cast_not_deblurring_or_noise() -> None:
    rng = np.random.default_rng(8)
    scene = _scene()
    img = _rgb_float_noise(scene, 2.0, rng)
    other = _rgb_float_noise(scene, 2.0, rng)  # another exposure: noise only
    assert noref.colour_shift(other, img) == 0.0
    blurred = np.asarray(cv2.GaussianBlur(img, (0, 0), 2.0), np.uint8)  # what deblur undoes
    assert noref.colour_shift(blurred, img) < 0.02
    cast = img.astype(np.int16)
    cast[40:160, 40:160, 1] += 12  # a green patch
    cast_u8 = np.clip(cast, 0, 255).astype(np.uint8)
    assert 0.2 < noref.colour_shift(cast_u8, img) < 0.6
    with pytest.raises(ImageError):
        noref.colour_shift(img[:10], img)


def test_ghost_fraction_sees_a_pasted_copy_not_sharpening() -> None:
    rng = np.random.default_rng(5)
    scene = _scene()
    img = _rgb_float_noise(scene, 2.0, rng)
    other = _rgb_float_noise(scene, 2.0, rng)  # another exposure: noise only
    assert noref.ghost_fraction(other, img) < 0.002
    sharpened = np.asarray(
        cv2.addWeighted(img, 1.6, cv2.GaussianBlur(img, (0, 0), 1.0), -0.6, 0), np.uint8
    )
    assert noref.ghost_fraction(sharpened, img) < 0.01
    ghosted = img.copy()
    ghosted[61:139, 123:243] = img[61:139, 83:203]  # the box, shifted 40 px: a ghost
    frac = noref.ghost_fraction(ghosted, img)
    assert 0.03 < frac < 0.2


def _shift(y: np.ndarray, dx: float, dy: float) -> np.ndarray:
    M = np.array([[1, 0, dx], [0, 1, dy]], np.float64)
    return np.asarray(
        cv2.warpAffine(
            y, M, (y.shape[1], y.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        ),
        np.float64,
    )


def test_temporal_noise_on_a_static_burst_of_known_sigma() -> None:
    """Frames of one static scene (small handheld shifts) with white noise σ = 4: the
    temporal estimate of a frame is σ within 10 %, and an average of 4 exposures that
    the evaluation never sees reads σ/2 (unbiased: not flattered, not penalised)."""
    rng = np.random.default_rng(6)
    scene = _scene(h=200, w=280)
    sigma = 4.0
    shifts = [(0.0, 0.0), (1.5, -0.7), (-2.2, 1.1), (0.6, 2.4), (-1.1, -1.8), (2.7, 0.3),
              (-0.4, 1.6)]  # fmt: skip
    clean = [_shift(scene, dx, dy) for dx, dy in shifts]
    frames = [_rgb_float_noise(c, sigma, rng) for c in clean]
    ref = noref.temporal_reference(frames[0], frames[1:])
    assert ref.count == 6 and ref.usable
    assert ref.static.mean() > 0.7  # a static scene: almost everything is static
    est = noref.temporal_noise(frames[0], ref)
    assert abs(est - sigma) / sigma < 0.10, est
    avg = np.mean([clean[0] + rng.normal(0, sigma, scene.shape) for _ in range(4)], axis=0)
    out = noref.temporal_noise(_rgb(avg), ref)
    assert abs(out - sigma / 2) / (sigma / 2) < 0.10, out
    # the same on every static pixel, texture included
    est_all = noref.temporal_noise(frames[0], ref, ref.static)
    assert abs(est_all - sigma) / sigma < 0.15, est_all
    # one held-out frame cannot measure its own noise share: unusable, NaN
    single = noref.temporal_reference(frames[0], frames[1:2])
    assert not single.usable and math.isnan(noref.temporal_noise(frames[0], single))


def test_temporal_reference_masks_a_moving_object() -> None:
    rng = np.random.default_rng(7)
    scene = _scene(h=200, w=280)
    frames = []
    for k in range(5):
        y = scene.copy()
        y[20:60, 30 + 25 * k : 70 + 25 * k] = 230.0  # a bright block moving right
        frames.append(_rgb_float_noise(y, 2.0, rng))
    ref = noref.temporal_reference(frames[0], frames[1:])
    assert ref.count == 4
    assert not ref.static[30:50, 40:60].any()  # where the object was in the reference
    assert not ref.static[30:50, 140:160].any()  # where it went
    assert ref.static[120:140, 220:260].all()


def test_register_ecc_recovers_a_shift_and_refuses_noise() -> None:
    rng = np.random.default_rng(8)
    scene = _scene(h=200, w=280)
    moved = _shift(scene, 3.4, -2.2)  # moving(x) = scene(x - d)
    H = noref.register_ecc(scene, moved)
    assert H is not None
    # the centre of the reference maps to the centre of moving + (3.4, -2.2)
    x, y, _ = H @ np.array([140.0, 100.0, 1.0])
    assert x == pytest.approx(143.4, abs=0.15) and y == pytest.approx(97.8, abs=0.15)
    assert noref.register_ecc(scene, rng.normal(128, 40, scene.shape)) is None


def test_texture_window_finds_the_textured_patch() -> None:
    img = _rgb(_scene())
    r, c = noref.texture_window(img, 64)
    assert 140 <= r + 32 <= 235 and 15 <= c + 32 <= 145


# ------------------------------------------------------------------ tools/eval_real.py


def test_window_starts_are_even_and_inside() -> None:
    tool = load_tool("eval_real")
    assert tool.window_starts(94, 6, 15) == [0, 16, 32, 47, 63, 79]
    assert tool.window_starts(10, 3, 15) == []
    assert tool.window_starts(40, 1, 15) == [12]


@pytest.mark.skipif(
    not (REALDATA / "video").is_dir(),
    reason=f"real camera data not found at {REALDATA} (../shared/realdata beside the repo)",
)
def test_eval_real_smoke_on_one_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool("eval_real")
    out_json, sheet = tmp_path / "out.json", tmp_path / "sheet.png"
    rc = tool.main(["--data", str(REALDATA), "--windows", "1", "--frames", "5",
                    "--holdout", "2", "--max-bursts", "1", "--unet", "off", "--no-photos",
                    "--crop", "96", "--json", str(out_json), "--sheet", str(sheet),
                    "--markdown", str(tmp_path / "out.md")])  # fmt: skip
    assert rc == 0
    doc = json.loads(out_json.read_text())
    (burst,) = doc["bursts"]
    m = burst["measures"]
    assert m["holdout_used"] >= 1
    for key in ("selected", "output", "fusion_only", "aligned_mean", "sharpest"):
        assert m[key]["gradient_energy"] > 0
        assert m[key]["blockiness"] > 0
    assert m["selected"]["temporal_noise"] is not None and m["selected"]["temporal_noise"] >= 0
    assert m["reference_noise"] is not None
    assert "noise_model" in burst["report"]
    assert sheet.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "fusion and noise" in printed and burst["burst"] in printed


@pytest.mark.skipif(
    not (REALDATA / "video").is_dir(),
    reason=f"real camera data not found at {REALDATA} (../shared/realdata beside the repo)",
)
def test_noise_measures_on_real_frames_read_added_white_noise() -> None:
    """On a real H.264 burst, white noise σ = 3 added to the measured frame reads as
    sqrt(σ0² + 9) temporally (within 8 %) and ≈ 3 with Immerkær (the codec left almost no
    fine-grain noise in flat areas): the measures respond to noise, not to the scene."""
    tool = load_tool("eval_real")
    video = sorted((REALDATA / "video").glob("*.mp4"))[0]
    frames = tool.read_video(video, set(range(40, 51)))
    clip = [frames[i] for i in range(40, 51)]
    sel, held = clip[5], clip[:3] + clip[-3:]
    ref = noref.temporal_reference(sel, held)
    assert ref.usable and ref.count >= 4
    s0 = noref.temporal_noise(sel, ref)
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 3.0, sel.shape[:2])[..., None]
    noisy = np.clip(np.round(sel + noise), 0, 255).astype(np.uint8)
    expect = math.sqrt(s0**2 + 9.0 + 1.0 / 12.0)
    assert abs(noref.temporal_noise(noisy, ref) - expect) / expect < 0.08
    assert abs(noref.immerkaer_sigma(noisy, ref.mask) - 3.0) < 0.3
    assert noref.immerkaer_sigma(sel, ref.mask) < 0.3
