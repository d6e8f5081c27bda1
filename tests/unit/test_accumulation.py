"""Stage 4c: the robust Fourier burst accumulation (deblurd.pipeline.accumulation)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deblurd.errors import ImageError
from deblurd.imaging import F32
from deblurd.pipeline.accumulation import fourier_accumulate, luma

H, W = 160, 192


def scene(seed: int = 0) -> F32:
    rng = np.random.default_rng(seed)
    fine = cv2.GaussianBlur(rng.random((H, W, 3)).astype(np.float32), (0, 0), 1.0)
    coarse = cv2.resize(rng.random((10, 12, 3)).astype(np.float32), (W, H))
    out: F32 = np.clip(0.4 * coarse + 1.0 * (fine - 0.5) + 0.3, 0.02, 0.95).astype(np.float32)
    return out


def blur(img: F32, length: int, vertical: bool) -> F32:
    k = np.zeros((length, length), np.float32)
    if vertical:
        k[:, length // 2] = 1.0 / length
    else:
        k[length // 2, :] = 1.0 / length
    return np.asarray(cv2.filter2D(img, -1, k, borderType=cv2.BORDER_REFLECT), np.float32)


def crossed_pair(seed: int, length: int, sigma: float) -> tuple[F32, F32, F32]:
    """:func:`scene` ``seed`` and two frames of it, blurred ``length`` px horizontally and
    vertically, with Gaussian noise of std ``sigma`` (drawn from ``seed``)."""
    rng = np.random.default_rng(seed)
    gt = scene(seed)
    a = blur(gt, length, False) + rng.normal(0, sigma, gt.shape).astype(np.float32)
    b = blur(gt, length, True) + rng.normal(0, sigma, gt.shape).astype(np.float32)
    return gt, a, b


def ones() -> F32:
    return np.ones((H, W), np.float32)


def rms(a: F32, b: F32) -> float:
    d = (a - b)[12:-12, 12:-12]
    return float(np.sqrt(np.mean(d * d)))


def test_frames_blurred_in_different_directions_give_a_sharper_image() -> None:
    sigma = 0.003
    gt, a, b = crossed_pair(1, 9, sigma)
    average = (a + b) / 2
    out = fourier_accumulate(average, [(a, ones()), (b, ones())], sigma)
    # the accumulation acts on luma (the average's chroma is kept)
    assert rms(luma(out), luma(gt)) < 0.85 * rms(luma(average), luma(gt))
    assert rms(luma(out), luma(gt)) < 0.85 * min(rms(luma(a), luma(gt)), rms(luma(b), luma(gt)))
    # the paper's exponent matters: p = 0 is the plain mean
    mean = fourier_accumulate(average, [(a, ones()), (b, ones())], sigma, p=0.0)
    assert rms(mean, average) < 1e-4


def test_static_noisy_frames_are_still_averaged() -> None:
    rng = np.random.default_rng(2)
    gt = np.asarray(cv2.GaussianBlur(scene(2), (0, 0), 3.0), np.float32)  # little detail
    sigma = 0.02
    frames = [gt + rng.normal(0, sigma, gt.shape).astype(np.float32) for _ in range(6)]
    average = np.mean(frames, axis=0).astype(np.float32)
    out = fourier_accumulate(average, [(f, ones()) for f in frames], sigma)
    # the noise floor keeps the weights equal where every frame is noise
    assert rms(out, gt) < 1.15 * rms(average, gt)
    assert rms(out, gt) < 0.6 * rms(frames[0], gt)


def test_pixels_the_fusion_refused_bring_no_ghost() -> None:
    gt = scene(3)
    moved = gt.copy()
    moved[40:100, 50:110] = 0.9  # a subject the reference does not have
    weight = ones()
    weight[30:110, 40:120] = 0.0  # the fusion refused it there
    average = gt.copy()  # the robust average: the reference's content where refused
    out = fourier_accumulate(average, [(gt, ones()), (moved, weight)], 0.002)
    assert float(np.abs(luma(out) - luma(gt))[40:100, 50:110].max()) < 0.02


def test_bad_shapes_are_refused() -> None:
    gt = scene(4)
    with pytest.raises(ImageError):
        fourier_accumulate(gt, [(gt[:-2], ones())], 0.01)
    with pytest.raises(ImageError):
        fourier_accumulate(gt, [(gt, ones())], float("nan"))


def test_the_fuser_accumulates_when_asked() -> None:
    from deblurd.pipeline.fusion import AlignedFrame, fuse
    from deblurd.settings.fusion import FusionSettings

    sigma = 0.004
    gt, ref, other = crossed_pair(5, 7, sigma)
    frames = [AlignedFrame(other, ones())]
    # robust off: the two frames differ by their blur, which the detail test would refuse
    plain = fuse(ref, frames, FusionSettings(robust=False))
    accumulated = fuse(ref, frames, FusionSettings(robust=False, accumulation="fourier"))
    assert rms(luma(accumulated.image), luma(gt)) < 0.9 * rms(luma(plain.image), luma(gt))
