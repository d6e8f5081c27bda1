"""Stage 4b: noise estimation and fusion (sequential / to reference, robust weights)."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from deblurd.errors import ImageError
from deblurd.imaging import F32
from deblurd.pipeline.fusion import (
    AlignedFrame,
    FusionResult,
    SequentialFuser,
    fuse,
    fuse_sequential,
    fuse_to_reference,
)
from deblurd.pipeline.noise import NoiseModel, estimate_noise_model, estimate_noise_sigma
from deblurd.settings.fusion import FusionSettings

A_READ, B_SHOT = 2e-5, 2e-3  # Poisson-Gaussian noise: σ(0.2) ≈ 0.021, σ(0.7) ≈ 0.038
PATCH = 28


def scene(h: int = 160, w: int = 160, seed: int = 0) -> F32:
    """Textured linear scene in [0.05, 0.85]: smooth field, fine texture, hard edges."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(
        rng.random((h // 16, w // 16, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    fine = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.2)
    img = 0.5 * coarse + 1.2 * (fine - 0.5) + 0.1
    for _ in range(8):
        y, x = rng.integers(0, h - 24), rng.integers(0, w - 24)
        img[y : y + rng.integers(8, 40), x : x + rng.integers(8, 40)] = rng.random(3)
    out: F32 = np.clip(img, 0.05, 0.85).astype(np.float32)
    return out


def add_noise(img: F32, rng: np.random.Generator, a: float = A_READ, b: float = B_SHOT) -> F32:
    sigma = np.sqrt(a + b * np.clip(img, 0.0, None))
    out: F32 = (img + rng.standard_normal(img.shape) * sigma).astype(np.float32)
    return out


def motion_blur(img: F32, length: int) -> F32:
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0 / length
    return np.asarray(cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT), dtype=np.float32)


def ones(img: F32) -> F32:
    return np.ones(img.shape[:2], np.float32)


def static_burst(n: int = 8, seed: int = 1) -> tuple[F32, F32, list[AlignedFrame]]:
    """Ground truth, noisy reference, n−1 noisy aligned frames (perfect registration)."""
    rng = np.random.default_rng(seed)
    gt = scene(seed=seed)
    ref = add_noise(gt, rng)
    frames = [AlignedFrame(add_noise(gt, rng), ones(gt)) for _ in range(n - 1)]
    return gt, ref, frames


def patch_burst(n: int = 8, step: int = 7, seed: int = 2) -> tuple[F32, F32, list[AlignedFrame]]:
    """Static scene plus a textured patch that moves ``step`` px right in every frame."""
    rng = np.random.default_rng(seed)
    background = scene(seed=seed)
    texture = scene(PATCH, PATCH, seed=seed + 100) * 0.6 + 0.3
    shots = []
    for i in range(n):
        img = background.copy()
        img[60 : 60 + PATCH, 20 + i * step : 20 + i * step + PATCH] = texture
        shots.append(img)
    gt = shots[0]
    frames = [AlignedFrame(add_noise(s, rng), ones(s)) for s in shots[1:]]
    return gt, add_noise(gt, rng), frames


def rms(x: F32, gt: F32, mask: npt.NDArray[np.bool_] | None = None) -> float:
    d = (x - gt) ** 2
    return float(np.sqrt(d[mask].mean() if mask is not None else d.mean()))


def inner(shape: tuple[int, ...], margin: int = 6) -> npt.NDArray[np.bool_]:
    m = np.zeros(shape[:2], bool)
    m[margin:-margin, margin:-margin] = True
    return m


# ----------------------------------------------------------------------------- noise


def test_noise_sigma_of_white_noise() -> None:
    rng = np.random.default_rng(0)
    img = (0.4 + 0.02 * rng.standard_normal((256, 256, 3))).astype(np.float32)
    assert estimate_noise_sigma(img) == pytest.approx(0.02, rel=0.05)
    assert estimate_noise_sigma(img[..., 0]) == pytest.approx(0.02, rel=0.05)  # gray


def test_noise_sigma_on_texture_is_not_fooled_much() -> None:
    rng = np.random.default_rng(0)
    img = (scene(256, 256) + 0.02 * rng.standard_normal((256, 256, 3))).astype(np.float32)
    assert estimate_noise_sigma(img) == pytest.approx(0.02, rel=0.2)


def test_noise_level_function_recovers_poisson_gaussian() -> None:
    rng = np.random.default_rng(0)
    ramp = np.repeat(np.linspace(0.03, 0.9, 384, dtype=np.float32)[None, :], 256, axis=0)
    img = add_noise(np.repeat(ramp[..., None], 3, axis=2), rng)
    model = estimate_noise_model(img)
    for level in (0.1, 0.3, 0.7):
        assert model.sigma_at(level) == pytest.approx(np.sqrt(A_READ + B_SHOT * level), rel=0.08)
    assert model.b == pytest.approx(B_SHOT, rel=0.15)


def test_noise_model_of_constant_noise_on_texture() -> None:
    rng = np.random.default_rng(3)
    img = (scene(256, 256) + 0.015 * rng.standard_normal((256, 256, 3))).astype(np.float32)
    model = estimate_noise_model(img)
    for level in (0.2, 0.6):
        # strong fine texture has real diagonal detail: a bias upwards, bounded
        assert 0.95 * 0.015 < model.sigma_at(level) < 1.3 * 0.015


def test_noise_model_rejects_bad_input() -> None:
    with pytest.raises(ImageError):
        NoiseModel.constant(-1.0)
    with pytest.raises(ImageError):
        estimate_noise_sigma(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageError):
        estimate_noise_sigma(np.zeros((1, 8), np.float32))


def test_noise_model_ignores_clipped_and_quantised_blocks() -> None:
    from deblurd.imaging import linear_to_srgb, srgb_to_linear

    rng = np.random.default_rng(4)
    gt = scene(256, 256)
    gt[:96] = 0.0  # a black area, clipped at 0 once noisy
    gt[-48:] = 1.0  # and a saturated one
    img = srgb_to_linear(linear_to_srgb(add_noise(gt, rng)))
    model = estimate_noise_model(img)
    for level in (0.2, 0.6):
        truth = np.sqrt(A_READ + B_SHOT * level)
        assert 0.85 * truth < model.sigma_at(level) < 1.3 * truth


def test_noise_model_floor_keeps_noise_free_images_usable() -> None:
    model = estimate_noise_model(np.full((64, 64, 3), 0.5, np.float32))
    assert model.sigma_at(0.5) > 0.0


# ----------------------------------------------------------------------------- modes


@pytest.mark.parametrize("robust", [False, True])
@pytest.mark.parametrize("burst", [static_burst, patch_burst])
def test_sequential_equals_to_reference(robust: bool, burst: object) -> None:
    assert callable(burst)
    _, ref, frames = burst()
    # make it harder: frame weights, a partial valid mask
    frames[1] = AlignedFrame(frames[1].image, frames[1].valid, weight=0.5)
    valid = ones(ref)
    valid[:, :30] = 0.0
    frames[2] = AlignedFrame(frames[2].image, valid, weight=1.5)
    s = FusionSettings(robust=robust)
    a = fuse_to_reference(ref, frames, s)
    b = fuse_sequential(ref, iter(frames), s)
    np.testing.assert_allclose(a.image, b.image, atol=2e-6)
    np.testing.assert_allclose(a.weight_sum, b.weight_sum, rtol=1e-5)
    np.testing.assert_allclose(a.frame_weights, b.frame_weights, rtol=1e-6)
    c = fuse(ref, frames, s.model_copy(update={"mode": "sequential"}))
    np.testing.assert_allclose(c.image, b.image, atol=1e-7)


def test_robust_on_and_off_agree_on_a_static_scene() -> None:
    gt, ref, frames = static_burst()
    on = fuse_to_reference(ref, frames, FusionSettings(robust=True))
    off = fuse_to_reference(ref, frames, FusionSettings(robust=False))
    # static, perfectly registered: the flat-top weights are exactly 1 almost everywhere;
    # the rare pixel a noise excursion down-weights moves by a fraction of the noise left
    diff = np.abs(on.image - off.image)
    residual = rms(off.image, gt)
    assert float(np.quantile(diff, 0.95)) < 1e-3 * residual
    assert float(np.quantile(diff, 0.99)) < 0.01 * residual
    assert float(diff.max()) < 0.15 * residual
    assert abs(rms(on.image, gt) - residual) < 0.005 * residual
    assert min(on.frame_weights) > 0.995


def test_sequential_streams_a_generator_and_can_report_midway() -> None:
    _, ref, frames = static_burst()
    seen: list[int] = []

    def gen() -> Iterator[AlignedFrame]:
        for i, f in enumerate(frames):
            seen.append(i)
            yield f

    res = fuse_sequential(ref, gen(), FusionSettings())
    assert seen == list(range(len(frames))) and len(res.frame_weights) == len(frames)
    fuser = SequentialFuser(ref, FusionSettings())
    fuser.add(frames[0])
    mid = fuser.result()
    for f in frames[1:]:
        fuser.add(f)
    assert float(mid.weight_sum.mean()) == pytest.approx(2.0, abs=0.02)
    assert float(fuser.result().weight_sum.mean()) == pytest.approx(8.0, abs=0.1)


def test_no_frames_returns_the_reference() -> None:
    _, ref, _ = static_burst()
    res = fuse(ref, [], FusionSettings())
    np.testing.assert_array_equal(res.image, ref)
    assert res.frame_weights == [] and np.all(res.weight_sum == 1.0)


# ----------------------------------------------------------------------------- quality


def test_noise_falls_like_sqrt_n_on_a_static_scene() -> None:
    gt, ref, frames = static_burst(n=8)
    res = fuse(ref, frames, FusionSettings())
    m = inner(gt.shape)
    ratio = np.std((ref - gt)[m]) / np.std((res.image - gt)[m])
    assert ratio > 2.6  # sqrt(8) = 2.83
    sigma = res.residual_noise_sigma()
    assert sigma is not None and sigma.shape == gt.shape[:2]
    assert float(np.median(sigma)) == pytest.approx(np.std((res.image - gt)[m]), rel=0.25)


def test_moving_patch_does_not_ghost() -> None:
    n, step = 8, 7
    gt, ref, frames = patch_burst(n=n, step=step)
    robust = fuse(ref, frames, FusionSettings())
    plain = fuse(ref, frames, FusionSettings(robust=False))
    in_ref = np.zeros(gt.shape[:2], bool)
    in_ref[60 : 60 + PATCH, 20 : 20 + PATCH] = True  # the patch where the reference has it
    trail = np.zeros(gt.shape[:2], bool)
    trail[60 : 60 + PATCH, 20 : 20 + PATCH + (n - 1) * step] = True
    trail &= ~in_ref  # where other frames had the patch: background in the reference
    outside = inner(gt.shape) & ~trail & ~in_ref
    outside[50 : 70 + PATCH, 10 : 30 + PATCH + n * step] = False
    # no ghost: inside the patch and along its trail, no worse than the reference alone
    assert rms(robust.image, gt, in_ref) <= rms(ref, gt, in_ref)
    assert rms(robust.image, gt, trail) <= rms(ref, gt, trail)
    # ... which plain averaging is far from (the test can fail)
    assert rms(plain.image, gt, in_ref) > 3.0 * rms(ref, gt, in_ref)
    # and the static part is still averaged
    ratio = np.std((ref - gt)[outside]) / np.std((robust.image - gt)[outside])
    assert ratio > 2.4


def test_blurry_frames_do_not_import_blur() -> None:
    rng = np.random.default_rng(5)
    gt = scene(seed=5)
    gt[30:90, 40:120] = (0.3, 0.4, 0.5)  # a flat area: there blur does not matter
    flat = np.zeros(gt.shape[:2], bool)
    flat[40:80, 50:110] = True
    ref = add_noise(gt, rng)
    sharp = [AlignedFrame(add_noise(gt, rng), ones(gt)) for _ in range(4)]
    blurry = [AlignedFrame(add_noise(motion_blur(gt, 9), rng), ones(gt)) for _ in range(3)]
    m = inner(gt.shape, 8)
    only_sharp = fuse(ref, sharp, FusionSettings())
    guarded = fuse(ref, sharp + blurry, FusionSettings())
    unguarded = fuse(ref, sharp + blurry, FusionSettings(robust=False))
    e_sharp, e_guard, e_plain = (rms(r.image, gt, m) for r in (only_sharp, guarded, unguarded))
    assert e_guard < 0.7 * e_plain
    assert e_guard < 1.05 * e_sharp  # the blurry frames cost (almost) nothing ...
    # ... and still help where they are as good as the others: per-pixel, not per-frame
    assert np.mean(guarded.weight_sum[flat]) > np.mean(only_sharp.weight_sum[flat]) + 2.5
    assert rms(guarded.image, gt, flat) < 0.9 * rms(only_sharp.image, gt, flat)

    # sharpness: gradient energy of the result vs the truth (noise-free) at edges
    def grad_energy(x: F32) -> float:
        g = cv2.Sobel(cv2.GaussianBlur(x, (0, 0), 1.0), cv2.CV_32F, 1, 0)
        return float(np.mean(g[m] ** 2))

    assert grad_energy(guarded.image) > 0.93 * grad_energy(gt)
    assert grad_energy(unguarded.image) < grad_energy(guarded.image)


def test_detail_guard_is_what_rejects_mild_blur() -> None:
    rng = np.random.default_rng(6)
    gt = scene(seed=6)
    ref = add_noise(gt, rng)
    frames = [AlignedFrame(add_noise(motion_blur(gt, 3), rng), ones(gt)) for _ in range(5)]
    m = inner(gt.shape, 8)
    on = fuse(ref, frames, FusionSettings(detail_guard=True))
    off = fuse(ref, frames, FusionSettings(detail_guard=False))
    assert np.mean(on.frame_weights) < np.mean(off.frame_weights)
    assert rms(on.image, gt, m) < rms(off.image, gt, m)


def test_frame_weight_is_honoured() -> None:
    _, ref, frames = static_burst(n=5)
    s = FusionSettings()
    dropped = [*frames[:2], AlignedFrame(frames[2].image, frames[2].valid, 0.0), frames[3]]
    np.testing.assert_allclose(
        fuse(ref, dropped, s).image,
        fuse(ref, [frames[0], frames[1], frames[3]], s).image,
        atol=1e-6,
    )
    doubled = [frames[0], AlignedFrame(frames[1].image, frames[1].valid, 2.0)]
    twice = [frames[0], frames[1], frames[1]]
    np.testing.assert_allclose(fuse(ref, doubled, s).image, fuse(ref, twice, s).image, atol=1e-6)


def test_invalid_pixels_are_never_used() -> None:
    gt, ref, frames = static_burst(n=6)
    valid = ones(gt)
    valid[:, :60] = 0.0
    garbage = frames[0].image.copy()
    garbage[:, :60] = 0.0  # what a warp leaves outside its data
    frames[0] = AlignedFrame(garbage, valid)
    res = fuse(ref, frames, FusionSettings(robust=False))
    left = np.zeros(gt.shape[:2], bool)
    left[:, :60] = True
    assert abs(float(np.mean((res.image - gt)[left]))) < 0.002  # no darkening
    np.testing.assert_allclose(res.weight_sum[left], 5.0, atol=1e-6)
    assert res.frame_weights[0] == pytest.approx(100 / 160, abs=1e-6)


def test_exposure_difference_is_matched() -> None:
    gt, ref, frames = static_burst(n=5)
    frames[0] = AlignedFrame((frames[0].image * 1.25).astype(np.float32), frames[0].valid)
    matched = fuse(ref, frames, FusionSettings())
    unmatched = fuse(ref, frames, FusionSettings(match_exposure=False))
    assert matched.frame_weights[0] > 0.95
    assert unmatched.frame_weights[0] < 0.5  # the robust test sees a different picture
    assert abs(float(np.mean(matched.image - gt))) < 0.003


def test_noise_level_given_too_high_is_calibrated_down() -> None:
    gt, ref, frames = static_burst()
    m = inner(gt.shape)
    res = fuse(ref, frames, FusionSettings(), noise_sigma=0.1)  # ~4× too high
    assert np.std((ref - gt)[m]) / np.std((res.image - gt)[m]) > 2.6
    _, ref_p, frames_p = patch_burst()
    patch = np.zeros(ref.shape[:2], bool)
    patch[60 : 60 + PATCH, 20 : 20 + PATCH] = True
    loose = fuse(ref_p, frames_p, FusionSettings(calibrate_noise=False), noise_sigma=0.1)
    tight = fuse(ref_p, frames_p, FusionSettings(), noise_sigma=0.1)
    assert float(np.mean(tight.weight_sum[patch])) < 1.2  # still no ghost ...
    assert float(np.mean(tight.weight_sum[patch])) < float(np.mean(loose.weight_sum[patch]))


def test_noise_level_given_too_low_fails_safe() -> None:
    gt, ref, frames = static_burst()
    res = fuse(ref, frames, FusionSettings(), noise_sigma=0.002)  # 10× too low
    assert rms(res.image, gt) <= rms(ref, gt) * 1.001  # fewer frames used, never worse


def test_a_single_noise_number_takes_its_shape_from_the_reference() -> None:
    _, ref, frames = static_burst()
    by_model = fuse(ref, frames, FusionSettings())
    by_number = fuse(ref, frames, FusionSettings(), noise_sigma=estimate_noise_sigma(ref))
    assert by_number.noise_model is not None and by_model.noise_model is not None
    assert by_number.noise_model.b > 0.0  # signal-dependent, as the reference shows
    np.testing.assert_allclose(by_number.image, by_model.image, atol=1e-5)


def test_warped_frames_still_average() -> None:
    """Bilinear re-alignment (what registration does) blurs a little; fusion still wins."""
    rng = np.random.default_rng(7)
    gt = scene(seed=7)
    h, w = gt.shape[:2]
    ref = add_noise(gt, rng)
    frames = []
    for _ in range(7):
        tx, ty = rng.uniform(-2, 2, 2)
        fwd = np.array([[1, 0, tx], [0, 1, ty]], np.float32)
        back = np.array([[1, 0, -tx], [0, 1, -ty]], np.float32)
        moved = cv2.warpAffine(
            gt, fwd, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
        )
        shot = add_noise(np.asarray(moved, dtype=np.float32), rng)
        img = np.asarray(
            cv2.warpAffine(
                shot, back, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            ),
            dtype=np.float32,
        )
        valid = cv2.warpAffine(ones(gt), back, (w, h), flags=cv2.INTER_LINEAR) > 0.999
        frames.append(AlignedFrame(img, valid.astype(np.float32)))
    m = inner(gt.shape, 8)
    robust = fuse(ref, frames, FusionSettings())
    plain = fuse(ref, frames, FusionSettings(robust=False))
    assert rms(ref, gt, m) / rms(robust.image, gt, m) > 2.2
    assert rms(robust.image, gt, m) < rms(plain.image, gt, m)


# ----------------------------------------------------------------------------- contract


def test_result_types_and_ranges() -> None:
    _, ref, frames = patch_burst()
    res = fuse(ref, frames, FusionSettings())
    assert isinstance(res, FusionResult)
    assert res.image.dtype == np.float32 and res.image.shape == ref.shape
    assert res.weight_sum.dtype == np.float32 and res.weight_sum.shape == ref.shape[:2]
    assert np.all(res.weight_sum >= 1.0) and np.all(res.weight_sum <= 8.0 + 1e-4)
    assert all(0.0 <= w <= 1.0 for w in res.frame_weights)
    assert np.isfinite(res.image).all()


def test_bad_inputs_raise_image_error() -> None:
    _, ref, frames = static_burst(n=3)
    with pytest.raises(ImageError):
        fuse(ref, [AlignedFrame(frames[0].image[:-1], frames[0].valid[:-1])], FusionSettings())
    with pytest.raises(ImageError):
        fuse(ref, [AlignedFrame(frames[0].image, frames[0].valid[:-1])], FusionSettings())
    with pytest.raises(ImageError):
        fuse(ref, [AlignedFrame(frames[0].image, frames[0].valid, -1.0)], FusionSettings())
    with pytest.raises(ImageError):
        fuse(ref[..., 0], frames, FusionSettings())
    with pytest.raises(ImageError):
        fuse((ref * 255).astype(np.uint8), frames, FusionSettings())


def test_tiny_and_odd_sizes_work() -> None:
    rng = np.random.default_rng(0)
    for h, w in ((5, 7), (33, 47)):
        gt = np.full((h, w, 3), 0.4, np.float32)
        ref = add_noise(gt, rng)
        frames = [AlignedFrame(add_noise(gt, rng), ones(gt)) for _ in range(3)]
        res = fuse(ref, frames, FusionSettings())
        assert res.image.shape == (h, w, 3) and np.isfinite(res.image).all()
