"""Stage 4b on frames whose noise no spatial estimate sees: the noise measured from the burst.

ISP-processed frames (denoised, demosaiced, compressed) carry spatially correlated noise
whose finest-scale (Haar) estimate collapses towards zero, while its low-pass power is
far above what white noise of that level would have. The fusion must measure the noise
from the frames' own differences and still average them, refuse a moving subject, and
not take a brightness difference for noise.
"""

from __future__ import annotations

import cv2
import numpy as np

from deblurd.imaging import F32
from deblurd.pipeline.fusion import AlignedFrame, NoiseCalibration, floor_variance, fuse
from deblurd.pipeline.noise import NoiseModel, estimate_noise_sigma
from deblurd.settings.fusion import FusionSettings

H = W = 192


def scene(seed: int = 0) -> F32:
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(
        rng.random((12, 12, 3)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC
    )
    fine = cv2.GaussianBlur(rng.random((H, W, 3)).astype(np.float32), (0, 0), 1.5)
    out: F32 = np.clip(0.45 * coarse + 0.8 * (fine - 0.5) + 0.15, 0.05, 0.85).astype(np.float32)
    return out


def correlated_noise(rng: np.random.Generator, sigma: float) -> F32:
    """Noise of std ``sigma`` per pixel, spatially correlated over ~3 px (an ISP's)."""
    white = rng.standard_normal((H, W, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(white, (0, 0), 1.5)
    out: F32 = (blurred * np.float32(sigma / blurred.std())).astype(np.float32)
    return out


def isp_burst(n: int = 6, sigma: float = 0.02, seed: int = 3) -> tuple[F32, F32, list[F32]]:
    rng = np.random.default_rng(seed)
    gt = scene(seed)
    ref = gt + correlated_noise(rng, sigma)
    frames = [gt + correlated_noise(rng, sigma) for _ in range(n - 1)]
    return gt, ref, frames


def moving_patch_burst() -> tuple[F32, F32, list[F32]]:
    """:func:`isp_burst` with a bright object with its own texture, 6 px further right in
    every frame; the reference (and the truth) have background there."""
    gt, ref, frames = isp_burst()
    moved = []
    for i, f in enumerate(frames):
        g = f.copy()
        g[70:110, 66 + 6 * i : 106 + 6 * i] = 0.55 + 0.5 * gt[70:110, 60:100]
        moved.append(g)
    return gt, ref, moved


def aligned(frames: list[F32]) -> list[AlignedFrame]:
    return [AlignedFrame(f, np.ones((H, W), np.float32)) for f in frames]


def test_correlated_noise_is_invisible_to_the_spatial_estimate() -> None:
    _, ref, _ = isp_burst()
    assert estimate_noise_sigma(ref) < 0.3 * 0.02  # the premise: the Haar estimate collapses


def test_static_isp_frames_are_averaged_with_the_measured_noise() -> None:
    gt, ref, frames = isp_burst()
    measured = fuse(ref, aligned(frames), FusionSettings())
    assumed = fuse(ref, aligned(frames), FusionSettings(calibrate_noise=False))
    # with the spatial model alone almost everything is "motion"
    assert np.mean(assumed.frame_weights) < 0.3
    # measured from the burst: static frames get (nearly) full weight ...
    assert np.mean(measured.frame_weights) > 0.9
    # ... the noise falls (5 more frames: ideally sqrt(6) = 2.45)
    assert np.std(ref - gt) / np.std(measured.image - gt) > 2.0
    # ... and the report's measured noise is the real one, within 30 %
    assert measured.noise_factor > 10.0
    assert 0.7 * 0.02 < measured.frame_noise_sigma < 1.3 * 0.02


def test_measured_noise_still_refuses_a_moving_patch() -> None:
    gt, ref, moved = moving_patch_burst()
    res = fuse(ref, aligned(moved), FusionSettings())
    every = np.zeros((H, W), bool)
    every[70:110, 90:106] = True  # where every frame has the object
    trail = np.zeros((H, W), bool)
    trail[70:110, 66:130] = True  # where any frame has it
    assert float(np.mean(res.weight_sum[every])) < 1.3  # only the reference counts there
    err_ref = np.sqrt(np.mean((ref - gt)[trail] ** 2))
    err_out = np.sqrt(np.mean((res.image - gt)[trail] ** 2))
    assert err_out <= 1.05 * err_ref  # no ghost
    static = np.zeros((H, W), bool)
    static[130:180, 20:170] = True
    assert float(np.mean(res.weight_sum[static])) > 4.5  # the rest is averaged


def test_a_brightness_difference_is_not_taken_for_noise() -> None:
    # a scene with flat areas (as photos have): a brightness difference there is smooth
    rng = np.random.default_rng(4)
    gt = np.asarray(cv2.GaussianBlur(scene(4), (0, 0), 6.0), np.float32)
    ref = gt + correlated_noise(rng, 0.02)
    brighter = (gt + correlated_noise(rng, 0.02)) * np.float32(1.3)
    off = fuse(ref, aligned([brighter]), FusionSettings(match_exposure=False))
    assert off.frame_weights[0] < 0.5
    matched = fuse(ref, aligned([brighter]), FusionSettings())
    assert matched.frame_weights[0] > 0.9


def test_consensus_caps_a_later_frame_that_claims_more_noise() -> None:
    cal = NoiseCalibration()
    chunks = [np.arange(0, 2000), np.arange(2000, 4000)]
    rng = np.random.default_rng(0)
    static = rng.standard_normal((4000, 3)).astype(np.float32) * 5.0  # 25× the model
    first = cal.factors(static, chunks, None)
    assert first is not None and np.allclose(first, 25.0, rtol=0.15)
    moving = rng.standard_normal((4000, 3)).astype(np.float32) * 50.0  # 2500×
    later = cal.factors(moving, chunks, None)
    assert later is not None and np.all(later <= 2.0 * 25.0 * 1.15)


def test_floor_is_half_a_code_in_srgb() -> None:
    levels = np.array([0.001, 0.05, 0.2, 0.8], np.float32)
    sigma = np.sqrt(floor_variance(levels))
    # half a code, taken through the slope of the sRGB decoding: larger where it is brighter
    assert np.all(np.diff(sigma) > 0)
    lin_step_mid = ((0.5 + 0.5 / 255 + 0.055) / 1.055) ** 2.4 - ((0.5 + 0.055) / 1.055) ** 2.4
    assert (
        abs(
            float(np.sqrt(floor_variance(np.array([0.214], np.float32)))[0])
            - 0.5 * lin_step_mid / 0.5
        )
        < 0.3 * lin_step_mid
    )


def test_zero_model_never_makes_every_difference_motion() -> None:
    _, ref, frames = isp_burst()
    res = fuse(ref, aligned(frames), FusionSettings(), noise_sigma=NoiseModel(a=0.0, b=0.0))
    assert np.mean(res.frame_weights) > 0.9
