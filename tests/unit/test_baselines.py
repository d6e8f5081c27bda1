"""Tests of deblurd.evaluation.baselines: frame picks, aligned mean, Fourier Burst Accumulation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deblurd.burstdir import Burst, FrameInfo
from deblurd.evaluation.baselines import (
    aligned_mean,
    candidate_indices,
    fba_fuse,
    fba_weights,
    fourier_burst_accumulation,
    register_stack,
    sharpest_frame,
    sharpest_index,
    trigger_frame,
)
from deblurd.evaluation.metrics import psnr
from deblurd.imaging import F32, U8, linear_to_srgb, srgb_to_linear


def _texture(h: int, w: int, seed: int = 0) -> U8:
    """A textured colour scene with edges and corners (registration needs them)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 220, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(h * w // 480):
        x, y = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        dx, dy = int(rng.integers(8, 40)), int(rng.integers(8, 40))
        color = rng.uniform(0, 255, 3).tolist()
        cv2.rectangle(img, (x, y), (x + dx, y + dy), color, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _burst(
    frames: list[U8],
    trigger: int = 0,
    roles: list[str] | None = None,
    exposures: list[int] | None = None,
) -> Burst:
    roles = roles or ["ring"] * len(frames)
    exposures = exposures or [10000] * len(frames)
    infos = [
        FrameInfo(f"{i:03d}.png", i * 33_000_000, exposures[i], 2.0, roles[i])  # type: ignore[arg-type]
        for i in range(len(frames))
    ]
    return Burst(frames, infos, trigger)


def test_trigger_and_sharpest_frames() -> None:
    sharp = _texture(128, 160, seed=1)
    frames = [np.asarray(cv2.GaussianBlur(sharp, (0, 0), s), np.uint8) for s in (2.0, 1.2, 2.5)]
    frames.insert(2, sharp.copy())
    burst = _burst(frames, trigger=1)
    assert np.array_equal(trigger_frame(burst), frames[1])
    assert sharpest_index(burst) == 2
    assert np.array_equal(sharpest_frame(burst), sharp)
    # Restricted to other frames, the next sharpest (σ = 1.2) wins.
    assert sharpest_index(burst, [0, 1, 3]) == 1


def test_candidate_window_follows_the_trigger() -> None:
    frames = [np.zeros((8, 8, 3), np.uint8)] * 12
    roles = ["ring"] * 10 + ["extra"] * 2
    burst = _burst(frames, trigger=6, roles=roles)
    assert candidate_indices(burst) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert candidate_indices(burst, 1, 1) == [5, 6, 7]


def test_fba_of_identical_frames_is_the_frame() -> None:
    img = srgb_to_linear(_texture(96, 128, seed=2))
    out = fba_fuse([img.copy() for _ in range(5)])
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, atol=1e-4)
    burst = _burst([linear_to_srgb(img)] * 4)
    fused = fourier_burst_accumulation(burst, reference=0)
    assert int(np.abs(fused.astype(int) - linear_to_srgb(img).astype(int)).max()) <= 1


def test_fba_weights_are_a_partition_of_unity_without_overflow() -> None:
    rng = np.random.default_rng(0)
    mags = [rng.uniform(1e3, 1e6, (16, 20)).astype(np.float32) for _ in range(4)]
    w = fba_weights(mags, p=11.0)
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-5)
    # The largest magnitude gets the largest weight at every frequency.
    assert np.array_equal(w.argmax(axis=0), np.stack(mags).argmax(axis=0))
    np.testing.assert_allclose(fba_weights(mags, p=0.0), 0.25, atol=1e-6)


def test_fba_with_p_zero_is_the_mean() -> None:
    rng = np.random.default_rng(3)
    imgs = [rng.uniform(0, 1, (40, 56, 3)).astype(np.float32) for _ in range(3)]
    np.testing.assert_allclose(fba_fuse(imgs, p=0.0), np.mean(imgs, axis=0), atol=1e-5)


def test_fba_reduces_noise_on_a_static_aligned_burst() -> None:
    truth = srgb_to_linear(_texture(128, 160, seed=4))
    rng = np.random.default_rng(5)
    noisy = [(truth + rng.normal(0, 0.04, truth.shape)).astype(np.float32) for _ in range(8)]
    single_rmse = float(np.sqrt(np.mean((noisy[0] - truth) ** 2)))
    fused_rmse = float(np.sqrt(np.mean((fba_fuse(noisy) - truth) ** 2)))
    # The plain mean of 8 would reach 1/sqrt(8) = 0.35 of the single-frame error; the
    # Fourier weights favour the stronger (noisier) coefficients a little, so allow 0.6.
    assert fused_rmse < 0.6 * single_rmse


def _circular_blur(image: F32, kernel: F32) -> F32:
    """Periodic convolution (what the Fourier model of FBA assumes), via the FFT."""
    h, w = image.shape[:2]
    pad = np.zeros((h, w), np.float32)
    kh, kw = kernel.shape
    pad[:kh, :kw] = kernel
    pad = np.roll(pad, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    k_hat = np.fft.fft2(pad)[..., None]
    out = np.fft.ifft2(np.fft.fft2(image, axes=(0, 1)) * k_hat, axes=(0, 1)).real
    return out.astype(np.float32)


def test_fba_recovers_sharpness_from_differently_blurred_frames() -> None:
    truth = srgb_to_linear(_texture(128, 160, seed=6))
    kernels = []
    for angle in (0, 60, 120):  # 9-px line blurs in three directions
        k = np.zeros((9, 9), np.float32)
        k[4, :] = 1.0 / 9
        rot = cv2.getRotationMatrix2D((4, 4), angle, 1.0)
        k = np.asarray(cv2.warpAffine(k, rot, (9, 9)), np.float32)
        kernels.append(k / k.sum())
    blurred = [_circular_blur(truth, k) for k in kernels]
    single = max(psnr(linear_to_srgb(truth), linear_to_srgb(b), border=8) for b in blurred)
    mean = psnr(linear_to_srgb(truth), linear_to_srgb(np.mean(blurred, axis=0)), border=8)
    fba = psnr(linear_to_srgb(truth), linear_to_srgb(fba_fuse(blurred)), border=8)
    assert fba > single + 1.0
    assert fba > mean + 1.0


def test_fba_optional_sharpening_adds_high_frequencies() -> None:
    img = srgb_to_linear(_texture(64, 80, seed=7))
    plain = fba_fuse([img, img])
    sharp = fba_fuse([img, img], sharpen_amount=1.0)
    assert _laplacian_energy(sharp) > 1.2 * _laplacian_energy(plain)


def _laplacian_energy(image: F32) -> float:
    return float(np.abs(np.asarray(cv2.Laplacian(image, cv2.CV_32F))).mean())


def _shifted_burst(shifts: list[tuple[float, float]], seed: int = 8) -> tuple[Burst, U8]:
    big = _texture(300, 360, seed=seed)
    h, w, m = 240, 300, 30
    frames = []
    for dx, dy in shifts:
        M = np.array([[1, 0, -dx], [0, 1, -dy]], np.float32)
        moved = np.asarray(cv2.warpAffine(big, M, (360, 300), flags=cv2.INTER_LINEAR), np.uint8)
        frames.append(np.ascontiguousarray(moved[m : m + h, m : m + w]))
    return _burst(frames, trigger=0), frames[0]


def test_aligned_mean_of_shifted_copies_recovers_the_image() -> None:
    burst, ref = _shifted_burst([(0, 0), (3, -2), (-5, 4), (7, 6), (-2, -6)])
    stack = register_stack(burst, reference=0)
    assert stack.rejected == {}
    assert stack.indices[0] == 0 and len(stack.indices) == 5
    out = aligned_mean(burst, reference=0, stack=stack)
    assert out.shape == ref.shape and out.dtype == np.uint8
    assert psnr(ref, out, border=16) > 38.0
    # The unregistered mean of the same frames is far worse.
    naive = linear_to_srgb(np.mean([srgb_to_linear(f) for f in burst.frames], axis=0))
    assert psnr(ref, naive, border=16) < 25.0
    fba = fourier_burst_accumulation(burst, reference=0, stack=stack)
    assert psnr(ref, fba, border=16) > 35.0


def test_aligned_mean_reduces_noise_and_skips_extra_frames() -> None:
    burst, ref = _shifted_burst([(0, 0), (2, 1), (-3, 2), (1, -4), (4, 3), (0, 0)], seed=9)
    rng = np.random.default_rng(10)
    noisy = [
        np.clip(f.astype(np.float32) + rng.normal(0, 6, f.shape), 0, 255).astype(np.uint8)
        for f in burst.frames
    ]
    noisy[5] = np.full_like(ref, 255)  # an 'extra' frame: must not enter the ring mean
    nb = _burst(noisy, trigger=0, roles=["ring"] * 5 + ["extra"])
    stack = register_stack(nb, reference=0, indices=[0, 1, 2, 3, 4])
    out = aligned_mean(nb, reference=0, stack=stack)
    assert psnr(ref, out, border=16) > psnr(ref, noisy[0], border=16) + 3.0


def test_extra_frames_are_scaled_to_the_reference_exposure() -> None:
    ref = _texture(200, 240, seed=11)
    lin = srgb_to_linear(ref)
    bright = linear_to_srgb(np.clip(lin * 2.0, 0, 1))  # double exposure, same gain
    burst = _burst([ref, bright], trigger=0, roles=["ring", "extra"], exposures=[10000, 20000])
    stack = register_stack(burst, reference=0)
    assert stack.indices == [0, 1]
    unclipped = lin < 0.45
    # Same brightness (a sub-pixel registration error leaves small differences at edges).
    got, want = stack.images[1][unclipped], lin[unclipped]
    assert float(got.mean()) == pytest.approx(float(want.mean()), rel=0.01)
    assert float(np.median(np.abs(got - want))) < 0.005


def test_stack_reference_mismatch_is_an_error() -> None:
    burst, _ = _shifted_burst([(0, 0), (1, 1)])
    stack = register_stack(burst, reference=0)
    with pytest.raises(Exception, match="registered to frame 0"):
        aligned_mean(burst, reference=1, stack=stack)
