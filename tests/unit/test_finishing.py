"""Stage 5: unsharp-mask sharpening (plain and noise-aware) and ``finish``."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deblurd.errors import ImageError
from deblurd.imaging import F32
from deblurd.pipeline.finishing import finish, sharpen
from deblurd.pipeline.noise import NoiseModel
from deblurd.settings.fusion import FinishingSettings


def soft_edge(h: int = 64, w: int = 64, lo: float = 0.2, hi: float = 0.6) -> F32:
    """A vertical step from ``lo`` to ``hi`` blurred a little, ``(h, w, 3)``."""
    img = np.full((h, w, 3), lo, np.float32)
    img[:, w // 2 :] = hi
    return np.asarray(cv2.GaussianBlur(img, (0, 0), 1.5), dtype=np.float32)


def edge_contrast(img: npt.NDArray[np.generic]) -> float:
    """Steepest horizontal step on the middle row (mean over channels)."""
    row = np.asarray(img, dtype=np.float32)[img.shape[0] // 2].mean(axis=1)
    return float(np.max(np.abs(np.diff(row))))


def test_amount_zero_is_identity_and_returns_the_input() -> None:
    img = soft_edge()
    assert sharpen(img, 0.0, 1.0) is img
    out_of_range = img * 1.5 - 0.1  # even values outside [0, 1] are left alone
    assert sharpen(out_of_range, 0.0, 2.0) is out_of_range
    assert finish(img, FinishingSettings()) is img  # default: off


def test_sharpen_increases_edge_contrast() -> None:
    img = soft_edge()
    out = sharpen(img, 1.0, 1.0)
    assert out.dtype == np.float32 and out.shape == img.shape
    assert edge_contrast(out) > 1.12 * edge_contrast(img)
    assert edge_contrast(sharpen(img, 2.0, 1.0)) > edge_contrast(out)
    # far from the edge nothing changes (a flat area has no detail)
    np.testing.assert_allclose(out[:, :10], img[:, :10], atol=1e-6)


def test_constant_image_is_unchanged() -> None:
    img = np.full((32, 48, 3), 0.37, np.float32)
    np.testing.assert_allclose(sharpen(img, 2.5, 3.0), img, atol=1e-6)
    np.testing.assert_allclose(sharpen(img, 2.5, 3.0, noise_sigma=0.01), img, atol=1e-6)


def test_range_is_kept_and_no_nans() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((40, 40, 3)).astype(np.float32)
    img[:5] = 0.0
    img[-5:] = 1.0
    for noise in (None, 0.02, NoiseModel(1e-5, 2e-3)):
        out = sharpen(img, 3.0, 2.0, noise_sigma=noise)
        assert np.isfinite(out).all()
        assert out.min() >= 0.0 and out.max() <= 1.0
    # a step from black to white overshoots in the unsharp mask: clipped, not wrapped
    step = soft_edge(lo=0.0, hi=1.0)
    out = sharpen(step, 2.0, 2.0)
    assert out.min() == 0.0 and out.max() == 1.0


@settings(max_examples=25, deadline=None)
@given(
    amount=st.floats(0.0, 3.0),
    sigma=st.floats(0.3, 10.0),
    level=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_sharpen_properties(amount: float, sigma: float, level: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.clip(level + 0.1 * rng.standard_normal((17, 23, 3)), 0.0, 1.0).astype(np.float32)
    for noise in (None, 0.01):
        out = sharpen(img, amount, sigma, noise_sigma=noise)
        assert out.shape == img.shape and np.isfinite(out).all()
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        # the mean brightness barely moves (unsharp masking is zero-mean up to clipping)
        assert abs(float(out.mean()) - float(img.mean())) < 0.05 + 0.05 * amount


def test_noise_aware_leaves_flat_noise_alone_but_sharpens_edges() -> None:
    rng = np.random.default_rng(1)
    sigma = 0.01
    flat = (0.4 + sigma * rng.standard_normal((96, 96, 3))).astype(np.float32)
    plain = sharpen(flat, 1.5, 1.0)
    aware = sharpen(flat, 1.5, 1.0, noise_sigma=sigma)
    assert np.std(plain) > 1.8 * np.std(flat)  # the plain mask amplifies noise ...
    assert np.std(aware) < 1.1 * np.std(flat)  # ... the noise-aware one does not
    edge = (soft_edge(96, 96) + sigma * rng.standard_normal((96, 96, 3))).astype(np.float32)
    clean = soft_edge(96, 96)
    gain_plain = edge_contrast(sharpen(clean, 1.5, 1.0)) / edge_contrast(clean)
    out = sharpen(edge, 1.5, 1.0, noise_sigma=sigma)
    smooth = cv2.GaussianBlur(out, (0, 0), 0.8)  # measure the edge, not the noise
    ref = cv2.GaussianBlur(edge, (0, 0), 0.8)
    assert edge_contrast(smooth) / edge_contrast(ref) > 0.8 * gain_plain**0.8


def test_noise_map_per_pixel() -> None:
    rng = np.random.default_rng(2)
    img = (0.5 + 0.01 * rng.standard_normal((64, 64, 3))).astype(np.float32)
    sigma_map = np.full((64, 64), 0.01, np.float32)
    sigma_map[:, 32:] = 0.001  # pretend the right half was averaged far more: noise is "detail"
    out = sharpen(img, 1.5, 1.0, noise_sigma=sigma_map)
    assert np.std(out[:, :28]) < 1.1 * np.std(img[:, :28])
    assert np.std(out[:, 36:]) > 1.5 * np.std(img[:, 36:])
    with pytest.raises(ImageError):
        sharpen(img, 1.0, 1.0, noise_sigma=np.ones((3, 3), np.float32))


def test_finish_uses_its_settings() -> None:
    rng = np.random.default_rng(3)
    img = (soft_edge() + 0.01 * rng.standard_normal((64, 64, 3))).astype(np.float32)
    s_plain = FinishingSettings(sharpen_amount=1.0, sharpen_noise_aware=False)
    np.testing.assert_array_equal(finish(img, s_plain), sharpen(img, 1.0, 1.0))
    s_aware = FinishingSettings(sharpen_amount=1.0, sharpen_sigma_px=1.0)
    aware = finish(img, s_aware)  # noise estimated from the image
    assert np.std(aware[:, :20]) < 1.15 * np.std(img[:, :20])
    assert edge_contrast(cv2.GaussianBlur(aware, (0, 0), 1.0)) > edge_contrast(
        cv2.GaussianBlur(img, (0, 0), 1.0)
    )
    np.testing.assert_array_equal(
        finish(img, s_aware, noise_sigma=0.01), sharpen(img, 1.0, 1.0, noise_sigma=0.01)
    )


def test_gray_images_work() -> None:
    img = soft_edge()[..., 0].copy()
    out = sharpen(img, 1.0, 1.0)
    assert out.shape == img.shape
    assert edge_contrast(out[..., None]) > edge_contrast(img[..., None])


def test_bad_arguments_raise_image_error() -> None:
    img = soft_edge()
    with pytest.raises(ImageError):
        sharpen(img, -1.0, 1.0)
    with pytest.raises(ImageError):
        sharpen(img, float("nan"), 1.0)
    with pytest.raises(ImageError):
        sharpen(img, 1.0, 0.0)
    with pytest.raises(ImageError):
        sharpen((img * 255).astype(np.uint8), 1.0, 1.0)
    with pytest.raises(ImageError):
        sharpen(np.zeros((4, 4, 4), np.float32), 1.0, 1.0)
    with pytest.raises(ImageError):
        sharpen(img, 1.0, 1.0, noise_sigma=-0.1)
