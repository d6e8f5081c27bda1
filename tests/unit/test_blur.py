"""Stage 1a: the frequency-domain blur score (deblurd.pipeline.blur).

Scenes: seeded procedural natural-like images (1/f noise with a random spectral slope,
"dead leaves" occlusion scenes) and scikit-image's photos (evaluation only). Blur is applied
in linear light (motion line at any angle, disk, Gaussian of a given FWHM), then sensor-like
Gaussian noise is added to the sRGB values and the frame is quantised to 8 bits.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deblurd.errors import ImageError
from deblurd.imaging import F32, F64, U8, linear_to_srgb_float, srgb_to_linear, to_gray
from deblurd.pipeline.blur import (
    HIGH_BAND,
    LOW_BAND,
    MAX_SCORE_DB,
    analysis_image,
    blur_score,
    blur_scores,
)

PHOTOS = ("astronaut", "camera", "coffee", "chelsea")
KINDS = ("motion", "disk", "gaussian")


# --------------------------------------------------------------------------- scenes, blur


@functools.cache
def photo(name: str) -> U8:
    data = pytest.importorskip("skimage.data")
    img = np.asarray(getattr(data, name)())
    rgb = np.stack([img] * 3, -1) if img.ndim == 2 else img[..., :3]
    return np.ascontiguousarray(rgb, dtype=np.uint8)


@functools.cache
def pink_scene(seed: int, slope: float, h: int = 512, w: int = 512) -> U8:
    """Gray-ish RGB 1/f^slope noise (natural images: slope ≈ 0.8 - 1.4), sRGB uint8."""
    rng = np.random.default_rng(seed)
    radius = np.hypot(np.fft.rfftfreq(w)[None, :], np.fft.fftfreq(h)[:, None])
    radius[0, 0] = 1.0
    channels = []
    for _ in range(3):
        spec = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius**slope
        spec[0, 0] = 0.0
        img = np.fft.irfft2(spec, s=(h, w))
        channels.append((img - img.mean()) / (6.0 * img.std()) + 0.5)
    return np.clip(np.round(np.stack(channels, -1) * 255.0), 0, 255).astype(np.uint8)


@functools.cache
def leaves_scene(seed: int, h: int = 512, w: int = 512, count: int = 1500) -> U8:
    """Dead-leaves scene: opaque disks with power-law radii (hard edges, 1/f² spectrum)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 0.5, np.float32)
    rmin, rmax = 2.0, min(h, w) / 4.0
    radii = (rmin**-2 - rng.uniform(size=count) * (rmin**-2 - rmax**-2)) ** -0.5
    for r in radii:
        centre = (int(rng.uniform(0, w) * 16), int(rng.uniform(0, h) * 16))
        colour = tuple(float(c) for c in rng.uniform(0.05, 0.95, 3))
        cv2.circle(img, centre, int(r * 16), colour, -1, cv2.LINE_AA, 4)
    return np.round(img * 255.0).astype(np.uint8)


def scene(kind: str, seed: int) -> U8:
    if kind in PHOTOS:
        return photo(kind)
    if kind == "pink":
        return pink_scene(seed, round(0.8 + 0.6 * (seed % 7) / 6.0, 2))
    return leaves_scene(seed)


def _splat(xs: F64, ys: F64, half: int) -> F32:
    """Points (relative to the kernel centre) splatted bilinearly into a normalised kernel."""
    kernel = np.zeros((2 * half + 2, 2 * half + 2), np.float64)
    x0, y0 = np.floor(xs + half).astype(int), np.floor(ys + half).astype(int)
    fx, fy = xs + half - x0, ys + half - y0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            np.add.at(kernel, (y0 + dy, x0 + dx), wy * wx)
    out: F32 = (kernel[:-1, :-1] / kernel.sum()).astype(np.float32)
    return out


def kernel(kind: str, size: float, angle_deg: float = 0.0) -> F32:
    """Blur kernel of ``size`` px: motion line length, disk diameter or Gaussian FWHM.

    Size 0 is the identity. Line and disk are continuous shapes splatted bilinearly (so
    every size, also fractional, changes the kernel).
    """
    half = int(np.ceil(size)) + 2
    if kind == "gaussian":
        if size < 0.05:  # narrower than that: the identity (and no 0/0 below)
            return _splat(np.zeros(1), np.zeros(1), half)
        x = np.arange(-half, half + 1, dtype=np.float64)
        g = np.exp(-(x**2) / (2.0 * (size / 2.3548) ** 2))
        k = np.outer(g, g)
        out: F32 = (k / k.sum()).astype(np.float32)
        return out
    if kind == "motion":
        n = max(int(size * 16), 1)
        t = ((np.arange(n) + 0.5) / n - 0.5) * size
        a = np.deg2rad(angle_deg)
        return _splat(t * np.cos(a), -t * np.sin(a), half)
    grid = (np.arange(-8 * half, 8 * half + 1) + 0.0) / 8.0
    xx, yy = np.meshgrid(grid, grid)
    inside = xx**2 + yy**2 <= (size / 2.0) ** 2
    if not inside.any():
        return _splat(np.zeros(1), np.zeros(1), half)
    return _splat(xx[inside], yy[inside], half)


def render(img: U8, k: F32, noise: float, seed: int) -> U8:
    """Blur ``img`` with ``k`` in linear light, add N(0, noise) to sRGB values, quantise."""
    lin = np.asarray(
        cv2.filter2D(srgb_to_linear(img), -1, k, borderType=cv2.BORDER_REFLECT), np.float32
    )
    out = linear_to_srgb_float(lin)
    out = out + np.random.default_rng(seed).normal(0.0, noise, out.shape).astype(np.float32)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def literal_high_minus_low(img: U8) -> float:
    """The *literal* statistic: mean |F| in the high band minus mean |F| in the low band
    (same analysis image, window and bands as the score; higher would mean sharper)."""
    g = analysis_image(img)
    h, w = g.shape
    amp = np.abs(np.fft.rfft2((g - g.mean()) * np.outer(np.hanning(h), np.hanning(w))))
    r = np.hypot(np.fft.rfftfreq(w)[None, :], np.fft.fftfreq(h)[:, None])
    high = amp[(r >= HIGH_BAND[0]) & (r < HIGH_BAND[1])].mean()
    low = amp[(r >= LOW_BAND[0]) & (r < LOW_BAND[1])].mean()
    return float(high - low)


# --------------------------------------------------------------------------- monotonicity


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    scene_kind=st.sampled_from((*PHOTOS, "pink", "leaves")),
    scene_seed=st.integers(0, 1000),
    blur_kind=st.sampled_from(KINDS),
    angle=st.floats(0.0, 180.0),
    size1=st.floats(0.0, 6.5),
    gap=st.floats(1.5, 8.0),
    noise=st.floats(0.0, 0.03),
    noise_seed=st.integers(0, 2**16),
)
def test_score_grows_with_blur_size_for_any_scene_blur_and_noise(
    scene_kind: str,
    scene_seed: int,
    blur_kind: str,
    angle: float,
    size1: float,
    gap: float,
    noise: float,
    noise_seed: int,
) -> None:
    """Property: at a fixed noise level (σ up to 0.03 ≈ 8 codes, independent noise in each
    frame), a blur larger by ≥ 1.5 px always scores higher, for blur sizes up to 8 px on the
    scored 512-px (or smaller, un-resized) image: about 1.5 % of the short side."""
    size2 = min(size1 + gap, 8.0)
    img = scene(scene_kind, scene_seed)
    s1 = blur_score(render(img, kernel(blur_kind, size1, angle), noise, noise_seed))
    s2 = blur_score(render(img, kernel(blur_kind, size2, angle), noise, noise_seed + 1))
    assert s2 > s1, f"{blur_kind} {size1:.2f} px -> {s1:.2f} dB, {size2:.2f} px -> {s2:.2f} dB"


@pytest.mark.parametrize("blur_kind", KINDS)
def test_photos_rank_strictly_by_blur_size(blur_kind: str) -> None:
    sizes = [0.0, 1.5, 3.0, 4.5, 6.0, 8.0]
    for name in PHOTOS:
        img = photo(name)
        scores = [
            blur_score(render(img, kernel(blur_kind, s, 30.0), 0.01, i))
            for i, s in enumerate(sizes)
        ]
        steps = np.diff(scores)
        assert (steps > 0.3).all(), f"{name} {blur_kind}: {np.round(scores, 2)}"


def test_motion_blur_at_1080p_ranks_up_to_20_px() -> None:
    """A 1080p frame (scored after a 2x area reduction): 0 < 2 < 5 < 10 < 20 px motion blur,
    with moderate sensor noise (σ = 4 codes)."""
    base = cv2.resize(pink_scene(3, 1.1), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    detail = pink_scene(4, 1.0, 1080, 1920)  # content up to the 1080p pixel scale
    img = np.clip(0.5 * base.astype(np.int16) + 0.5 * detail, 0, 255).astype(np.uint8)
    scores = [
        blur_score(render(img, kernel("motion", n, 70.0), 0.016, n)) for n in (0, 2, 5, 10, 20)
    ]
    assert (np.diff(scores) > 0.3).all(), np.round(scores, 2)


def test_literal_high_minus_low_is_not_monotonic_but_the_score_is() -> None:
    """Why the literal "mean high minus mean low amplitude" is not used: heavy blur also
    shrinks the low-frequency term, which dominates, so a 16 px blur looks *sharper* than
    the sharp photo to it (higher value). The normalised dB score orders them correctly."""
    img = photo("astronaut")
    sharp, heavy = (render(img, kernel("motion", n, 30.0), 0.0, 0) for n in (0.0, 16.0))
    assert literal_high_minus_low(heavy) > literal_high_minus_low(sharp)
    assert blur_score(heavy) > blur_score(sharp) + 5.0


# --------------------------------------------------------------------------- scale


@pytest.mark.parametrize("blur_px", [0.0, 4.0, 8.0])
@pytest.mark.parametrize("blur_kind", ["motion", "disk"])
def test_resolution_independent_within_1_db(blur_px: float, blur_kind: str) -> None:
    """One scene and blur (applied at 1080p), captured at 1080p, 720p and 540p: the blur in
    pixels scales with the frame, the score stays within 1 dB."""
    base = cv2.resize(pink_scene(7, 1.2), (1920, 1080), interpolation=cv2.INTER_CUBIC)
    img = np.clip(0.5 * base.astype(np.int16) + 0.5 * pink_scene(8, 1.0, 1080, 1920), 0, 255)
    full = render(img.astype(np.uint8), kernel(blur_kind, blur_px, 30.0), 0.002, 0)
    scores = [blur_score(full)] + [
        blur_score(cv2.resize(full, (h * 16 // 9, h), interpolation=cv2.INTER_AREA))
        for h in (720, 540)
    ]
    assert max(scores) - min(scores) < 1.0, np.round(scores, 2)


def test_typical_values_match_the_documentation() -> None:
    """The module docstring's scale: sharp photos ~19-31 dB; 1080p motion blur adds about
    1 dB at 2 px, 3 dB at 5 px, 5.5 dB at 10 px (photos upscaled to 1080 rows)."""
    rises = []
    for name in PHOTOS:
        img = photo(name)
        scale = 1080 / img.shape[0]
        size = (round(img.shape[1] * scale), 1080)
        big = np.asarray(cv2.resize(img, size, interpolation=cv2.INTER_CUBIC), np.uint8)
        s = [blur_score(render(big, kernel("motion", n, 30.0), 0.004, n)) for n in (0, 2, 5, 10)]
        assert 19.0 < s[0] < 31.0, (name, s)
        rises.append(np.array(s[1:]) - s[0])
    mean_rise = np.mean(rises, axis=0)
    assert 0.5 < mean_rise[0] < 1.5 and 2.0 < mean_rise[1] < 3.5 and 4.5 < mean_rise[2] < 7.0


def test_independent_of_brightness_and_contrast() -> None:
    """A ratio of spectral levels: exposure × gain (a gain on the values) and an offset do
    not change it."""
    g = to_gray(render(photo("camera"), kernel("disk", 3.0), 0.0, 0))
    assert blur_score(0.4 * g + 0.1) == pytest.approx(blur_score(g), abs=1e-3)
    assert blur_score(g * 255.0) == pytest.approx(blur_score(g), abs=1e-3)


def test_uint8_rgb_and_float_gray_agree() -> None:
    frame = render(photo("coffee"), kernel("motion", 3.0, 10.0), 0.005, 0)
    as_float = to_gray(frame)
    assert blur_score(frame) == pytest.approx(blur_score(as_float), abs=0.1)
    rgb_float = frame.astype(np.float32) / 255.0
    assert blur_score(frame) == pytest.approx(blur_score(rgb_float), abs=0.1)


def test_frames_smaller_than_size_are_not_upsampled() -> None:
    chelsea = photo("chelsea")  # 300 x 451
    assert analysis_image(chelsea).shape == (300, 300)
    assert analysis_image(chelsea, 256).shape == (256, 256)
    big = np.zeros((1500, 2000, 3), np.uint8)
    assert analysis_image(big).shape == (512, 512)
    assert analysis_image(big, 384).shape == (384, 384)


# --------------------------------------------------------------------------- edge cases


def test_flat_and_featureless_images_score_the_maximum() -> None:
    assert blur_score(np.full((200, 300, 3), 128, np.uint8)) == MAX_SCORE_DB
    assert blur_score(np.zeros((100, 100), np.float32)) == MAX_SCORE_DB
    rng = np.random.default_rng(0)
    assert blur_score(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) > 40.0


def test_small_frames_still_get_a_finite_score() -> None:
    frame = render(photo("astronaut")[::8, ::8].copy(), kernel("motion", 0.0), 0.0, 0)
    score = blur_score(frame)  # 64 x 64: the smallest accepted
    assert np.isfinite(score) and score <= MAX_SCORE_DB


def test_blur_scores_keeps_order() -> None:
    img = photo("camera")
    frames = [render(img, kernel("motion", n, 45.0), 0.0, 0) for n in (6.0, 0.0, 3.0)]
    scores = blur_scores(frames)
    assert scores == [blur_score(f) for f in frames]
    assert scores[1] < scores[2] < scores[0]


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((100, 100, 4), np.uint8),
        np.zeros((100,), np.uint8),
        np.zeros((32, 300, 3), np.uint8),
        np.zeros((100, 100), np.int32),
    ],
    ids=["rgba", "1-d", "too-small", "int32"],
)
def test_bad_images_raise_image_error(bad: npt.NDArray[np.generic]) -> None:
    with pytest.raises(ImageError):
        blur_score(bad)


def test_non_finite_values_raise_image_error() -> None:
    img = np.full((128, 128), 0.5, np.float32)
    img[60, 60] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        blur_score(img)


def test_bad_size_raises_value_error() -> None:
    with pytest.raises(ValueError, match="size"):
        blur_score(np.zeros((128, 128), np.float32), size=16)


def test_input_is_not_modified() -> None:
    img = render(photo("camera"), kernel("disk", 2.0), 0.01, 0)
    gray = to_gray(img)
    copies = img.copy(), gray.copy()
    blur_score(img)
    blur_score(gray)
    assert np.array_equal(img, copies[0]) and np.array_equal(gray, copies[1])
