"""Tests of deblurd.evaluation.metrics: PSNR against known errors, SSIM against scikit-image."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from deblurd.errors import ImageError
from deblurd.evaluation.metrics import crop_border, mse, psnr, ssim
from deblurd.imaging import U8


def _scene(h: int = 96, w: int = 128, seed: int = 0) -> U8:
    rng = np.random.default_rng(seed)
    small = rng.uniform(20, 200, (h // 8, w // 8, 3)).astype(np.float32)
    img = np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), np.float32)
    img += rng.normal(0, 8, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _degraded(img: U8, kind: str, seed: int = 1) -> U8:
    rng = np.random.default_rng(seed)
    if kind == "blur":
        out = cv2.GaussianBlur(img, (0, 0), 1.7)
    elif kind == "noise":
        out = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    elif kind == "shift":
        out = np.roll(img, (1, 2), axis=(0, 1))
    else:  # contrast change + noise
        f = img.astype(np.float32) * 0.7 + 30 + rng.normal(0, 4, img.shape)
        out = np.clip(f, 0, 255).astype(np.uint8)
    return np.asarray(out, np.uint8)


def test_identical_images_are_perfect() -> None:
    a = _scene()
    assert psnr(a, a.copy()) == math.inf
    assert mse(a, a) == 0.0
    assert ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, a, channels="rgb") == pytest.approx(1.0, abs=1e-12)


def test_known_mse_gives_known_psnr() -> None:
    a = np.full((40, 50, 3), 100, np.uint8)
    b = a + np.uint8(5)  # every sample off by 5: MSE 25
    assert mse(a, b) == pytest.approx(25.0)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255.0**2 / 25.0), abs=1e-9)
    # Half the samples off by 10, half exact: MSE 50.
    c = a.copy()
    c[:20] += np.uint8(10)
    assert psnr(a, c) == pytest.approx(10 * math.log10(255.0**2 / 50.0), abs=1e-9)
    # Symmetric in its arguments.
    assert psnr(c, a) == pytest.approx(psnr(a, c))


def test_region_psnr_measures_only_the_mask() -> None:
    a = np.full((60, 80, 3), 120, np.uint8)
    b = a.copy()
    b[10:30, 20:50] = 140  # error 20 inside the region only
    mask = np.zeros((60, 80), np.bool_)
    mask[10:30, 20:50] = True
    assert psnr(a, b, mask=mask) == pytest.approx(10 * math.log10(255.0**2 / 400.0))
    assert psnr(a, b, mask=~mask) == math.inf
    assert psnr(a, b) < psnr(a, b, mask=mask) + 10  # whole image dilutes the error
    with pytest.raises(ImageError, match="no pixel"):
        psnr(a, b, mask=np.zeros((60, 80), np.bool_))
    with pytest.raises(ImageError, match="mask shape"):
        psnr(a, b, mask=np.ones((10, 10), np.bool_))


def test_border_crop_ignores_the_border() -> None:
    a = _scene()
    b = a.copy()
    b[:16] = 0
    b[:, -16:] = 255
    assert psnr(a, b) < 20
    assert psnr(a, b, border=16) == math.inf
    assert ssim(a, b, border=16) == pytest.approx(1.0)
    assert crop_border(a, 16).shape == (96 - 32, 128 - 32, 3)
    assert crop_border(a, 0) is a
    with pytest.raises(ImageError):
        crop_border(a, 48)


def test_mask_is_cropped_with_the_border() -> None:
    a = np.full((60, 80, 3), 120, np.uint8)
    b = a.copy()
    b[:5] = 0
    mask = np.zeros((60, 80), np.bool_)
    mask[:20] = True
    assert psnr(a, b, mask=mask, border=8) == math.inf
    assert psnr(a, b, mask=mask) < 30


def test_bad_inputs_raise_image_error() -> None:
    a = _scene()
    with pytest.raises(ImageError, match="shape"):
        psnr(a, a[:-1])
    with pytest.raises(ImageError, match="uint8"):
        psnr(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(ImageError, match="larger"):
        ssim(a[:10, :10], a[:10, :10])
    with pytest.raises(ImageError, match="channels"):
        ssim(a, a, channels="hsv")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["blur", "noise", "shift", "tone"])
def test_ssim_matches_scikit_image(kind: str) -> None:
    skm = pytest.importorskip("skimage.metrics")
    a = _scene(seed=3)
    b = _degraded(a, kind)
    common = {
        "gaussian_weights": True,
        "sigma": 1.5,
        "use_sample_covariance": False,
        "data_range": 255,
    }
    luma = np.array([0.299, 0.587, 0.114])
    ref_luma = skm.structural_similarity(a @ luma, b @ luma, **common)
    ref_rgb = skm.structural_similarity(a, b, channel_axis=-1, **common)
    assert ssim(a, b) == pytest.approx(ref_luma, abs=1e-3)
    assert ssim(a, b, channels="rgb") == pytest.approx(ref_rgb, abs=1e-3)
    ref_gray = skm.structural_similarity(a[..., 1], b[..., 1], **common)
    assert ssim(a[..., 1], b[..., 1]) == pytest.approx(ref_gray, abs=1e-3)
    assert ssim(a, b) < 0.999


def test_metrics_order_degradations() -> None:
    a = _scene(seed=5)
    mild = np.asarray(cv2.GaussianBlur(a, (0, 0), 0.8), np.uint8)
    strong = np.asarray(cv2.GaussianBlur(a, (0, 0), 2.5), np.uint8)
    assert psnr(a, mild) > psnr(a, strong)
    assert ssim(a, mild) > ssim(a, strong)


def test_psnr_matches_scikit_image() -> None:
    skm = pytest.importorskip("skimage.metrics")
    a = _scene(seed=7)
    b = _degraded(a, "noise")
    assert psnr(a, b) == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=255))
