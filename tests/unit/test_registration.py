"""Stage 4a: persistent corners, pyramidal LK, robust homography, quality gate, warp."""

from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deblurd.errors import RegistrationError
from deblurd.evaluation.pairs import (
    degrade,
    grid_error,
    handheld_pairs,
    mosaic,
    photo_gray,
    warp_to_moving,
)
from deblurd.evaluation.pairs import handheld_homography as shake
from deblurd.imaging import F32, F64
from deblurd.pipeline.corners import CornerParams, persistent_corners, persists, spread
from deblurd.pipeline.pyramid import PyramidBuilder, coarsest_level, tracking_level
from deblurd.pipeline.registration import (
    OpenCVRegistrar,
    Registrar,
    Registration,
    implausible,
    scale_homography,
    valid_mask,
)
from deblurd.settings.registration import RegistrationSettings

pytest.importorskip("skimage.data")  # photo_gray() loads scikit-image photos


DEFAULTS = RegistrationSettings()


# --- synthetic handheld pairs -------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut() -> F32:
    return photo_gray("astronaut")


@pytest.fixture(scope="module")
def scene_1080p() -> F32:
    return mosaic(1920, 1080)


# --- accuracy -------------------------------------------------------------------------------


@pytest.mark.parametrize(("scene", "pairs"), [("astronaut", 8), ("scene_1080p", 5)])
def test_shake_with_blur_and_noise_is_registered_within_a_quarter_pixel(
    scene: str, pairs: int, request: pytest.FixtureRequest
) -> None:
    clean: F32 = request.getfixturevalue(scene)
    h, w = clean.shape
    rng = np.random.default_rng(7)
    reg = OpenCVRegistrar(DEFAULTS)
    reg.set_reference(degrade(rng, clean, 0.0, 0.01))
    assert reg.tracking_level == (0 if scene == "astronaut" else 1)
    assert len(reg.corners) >= 100
    errors = []
    for H, moving in handheld_pairs(rng, clean, pairs):
        r = reg.register(moving)
        assert r.accepted, r.reason
        assert r.reason is None
        assert r.homography.shape == (3, 3) and r.homography.dtype == np.float64
        assert r.homography[2, 2] == pytest.approx(1.0)
        assert r.inliers >= DEFAULTS.min_inliers and r.inliers <= r.tracked <= len(reg.corners)
        assert 0 < r.residual_px <= DEFAULTS.max_residual_px * 2**reg.tracking_level
        errors.append(grid_error(r.homography, H, w, h))
    assert float(np.median(errors)) <= 0.25, errors
    assert max(errors) <= 0.25, errors


def test_homography_maps_moving_coordinates_to_reference_and_warp_aligns(astronaut: F32) -> None:
    h, w = astronaut.shape
    H = np.array([[1.0, 0.0, 6.5], [0.0, 1.0, -4.25], [0.0, 0.0, 1.0]])  # ref = moving + t
    moving = warp_to_moving(astronaut, H)
    reg = OpenCVRegistrar(DEFAULTS)
    reg.set_reference(astronaut)
    r = reg.register(moving)
    assert r.accepted, r.reason
    assert grid_error(r.homography, H, w, h) < 0.05
    p = cv2.perspectiveTransform(np.array([[[256.0, 256.0]]]), r.homography)
    np.testing.assert_allclose(p.ravel(), [262.5, 251.75], atol=0.05)

    warped, valid = reg.warp(moving, r)
    inside = valid > 0
    assert warped.shape == moving.shape and warped.dtype == np.float32
    before = float(np.abs(moving - astronaut)[inside].mean())
    after = float(np.abs(warped - astronaut)[inside].mean())
    assert after < 0.01 < before
    # the band the shift uncovers has no source: x_moving = x - 6.5 < 0 in the left 7
    # columns, y_moving = y + 4.25 > h - 1 in the bottom 5 rows
    assert not valid[:, :6].any() and not valid[h - 4 :, :].any()
    assert valid[10 : h - 10, 10 : w - 10].all()


def test_shift_beyond_the_lk_window_is_caught_by_the_global_prior(astronaut: F32) -> None:
    """70 px is more than the coarsest level's LK window reaches (7 px x 8 = 56 px)."""
    h, w = astronaut.shape
    rng = np.random.default_rng(5)
    c = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1.0]])
    H = (
        np.array([[1, 0, 70.0], [0, 1, -45.0], [0, 0, 1]])
        @ c
        @ np.vstack([cv2.getRotationMatrix2D((0, 0), 0.8, 1.0), [0, 0, 1]])
        @ np.linalg.inv(c)
    )
    reg = OpenCVRegistrar(DEFAULTS)
    reg.set_reference(degrade(rng, astronaut, 0.0, 0.01))
    r = reg.register(degrade(rng, warp_to_moving(astronaut, H), 3.0, 0.01))
    assert r.accepted, r.reason
    assert grid_error(r.homography, H, w, h) <= 0.25


# --- rejection: a result with a reason, never an exception ------------------------------------


def test_unrelated_noise_flat_and_heavily_blurred_frames_are_rejected(astronaut: F32) -> None:
    rng = np.random.default_rng(3)
    h, w = astronaut.shape
    reg = OpenCVRegistrar(DEFAULTS)
    reg.set_reference(degrade(rng, astronaut, 0.0, 0.01))
    H = shake(rng, w, h)
    moving = warp_to_moving(astronaut, H)
    other = np.asarray(cv2.resize(photo_gray("coffee"), (w, h)), np.float32)
    frames = {
        "unrelated": degrade(rng, other, 3.0, 0.01),
        "noise": rng.random((h, w), dtype=np.float32),
        "flat": np.full((h, w), 0.5, np.float32),
        "motion blur 41 px": degrade(rng, moving, 41.0, 0.01),
        "gaussian blur 10 px": degrade(
            rng, np.asarray(cv2.GaussianBlur(moving, (0, 0), 10.0), np.float32), 0, 0.01
        ),
    }
    for name, frame in frames.items():
        r = reg.register(frame)
        assert not r.accepted, name
        assert r.reason, name
        assert r.homography.shape == (3, 3)
        assert r.inliers < DEFAULTS.min_inliers or r.tracked < 0.3 * len(reg.corners), name
    # the same registrar still accepts a good frame afterwards
    assert reg.register(degrade(rng, moving, 3.0, 0.01)).accepted


def test_reference_without_corners_rejects_every_frame() -> None:
    flat = np.full((120, 160), 0.4, np.float32)
    reg = OpenCVRegistrar(DEFAULTS)
    reg.set_reference(flat)
    assert len(reg.corners) == 0
    r = reg.register(flat.copy())
    assert not r.accepted and r.reason is not None and "reference has 0 corners" in r.reason
    np.testing.assert_array_equal(r.homography, np.eye(3))
    assert r.residual_px == math.inf


C = np.array([[1.0, 0.0, 320.0], [0.0, 1.0, 240.0], [0.0, 0.0, 1.0]])  # centre of 640 x 480


@pytest.mark.parametrize(
    ("H", "words"),
    [
        (np.diag([1.3, 1.3, 1.0]), "scale"),
        (np.diag([1.0, 1.15, 1.0]), "scale"),  # anisotropic: shear/stretch
        (np.diag([-1.0, 1.0, 1.0]), "mirror"),
        (cv2.getRotationMatrix2D((320, 240), 12.0, 1.0), "rotation"),
        (C @ np.array([[1, 0, 0], [0, 1, 0], [3e-4, 0, 1.0]]) @ np.linalg.inv(C), "perspective"),
        (np.array([[1, 0, 150], [0, 1, 0], [0, 0, 1.0]]), "shift"),
    ],
)
def test_homographies_no_handheld_shake_produces_are_implausible(H: F64, words: str) -> None:
    if H.shape == (2, 3):
        H = np.vstack([H, [0, 0, 1]])
    reason = implausible(np.asarray(H, np.float64), (480, 640), DEFAULTS)
    assert reason is not None and words in reason


def test_handheld_shake_is_plausible() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert implausible(shake(rng, 1920, 1080), (1080, 1920), DEFAULTS) is None


# --- bad input: RegistrationError -------------------------------------------------------------


def test_unprocessable_inputs_raise_registration_error(astronaut: F32) -> None:
    reg = OpenCVRegistrar(DEFAULTS)
    with pytest.raises(RegistrationError, match="before set_reference"):
        reg.register(astronaut)
    with pytest.raises(RegistrationError, match="float32"):
        reg.set_reference((astronaut * 255).astype(np.uint8))
    with pytest.raises(RegistrationError, match="float32"):
        reg.set_reference(np.dstack([astronaut] * 3))
    with pytest.raises(RegistrationError, match="smaller"):
        reg.set_reference(np.zeros((16, 400), np.float32))
    reg.set_reference(astronaut)
    with pytest.raises(RegistrationError, match="reference is"):
        reg.register(astronaut[:-2])
    r = reg.register(astronaut)
    # strided views are fine (copied where OpenCV needs contiguous memory)
    wide = np.repeat(astronaut, 2, axis=1)
    assert reg.register(wide[:, ::2]).accepted
    assert reg.warp(np.dstack([astronaut] * 3)[..., ::-1], r)[0].shape == (*astronaut.shape, 3)
    with pytest.raises(RegistrationError, match="warp expects"):
        reg.warp(astronaut[:, :-1], r)
    with pytest.raises(RegistrationError, match="warp expects"):
        reg.warp(astronaut.astype(np.float64), r)


# --- warp -------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [None, 1, 3, 6])
def test_warp_keeps_shape_and_dtype(astronaut: F32, channels: int | None) -> None:
    reg = OpenCVRegistrar(DEFAULTS)
    reg.set_reference(astronaut)
    H = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])
    r = Registration(
        homography=H, accepted=True, reason=None, tracked=100, inliers=100, residual_px=0.1
    )
    image = (
        astronaut if channels is None else np.dstack([astronaut * (c + 1) for c in range(channels)])
    )
    warped, valid = reg.warp(image, r)
    assert warped.shape == image.shape and warped.dtype == np.float32
    assert valid.shape == astronaut.shape and valid.dtype == np.float32
    assert set(np.unique(valid)) <= {0.0, 1.0}
    # warped(x) = image(H^-1 x): pixel (x, y) of the result is pixel (x - 3, y - 2) of image
    last = image if channels is None else image[..., -1]
    got = warped if channels is None else warped[..., -1]
    np.testing.assert_allclose(got[100:200, 100:200], last[98:198, 97:197], atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    st.floats(-3.0, 3.0),
    st.floats(-15.0, 15.0),
    st.floats(-15.0, 15.0),
    st.floats(-3e-4, 3e-4),
    st.floats(-3e-4, 3e-4),
    st.floats(0.95, 1.05),
)
def test_valid_mask_marks_only_pixels_whose_source_is_inside(
    angle: float, tx: float, ty: float, p0: float, p1: float, zoom: float
) -> None:
    h, w = 48, 64
    a = math.radians(angle)
    H = np.array(
        [
            [zoom * math.cos(a), -zoom * math.sin(a), tx],
            [zoom * math.sin(a), zoom * math.cos(a), ty],
            [p0, p1, 1.0],
        ]
    )
    valid = valid_mask(H, (h, w))
    ys, xs = np.mgrid[0:h, 0:w]
    src = np.stack([xs, ys, np.ones_like(xs)], -1).reshape(-1, 3) @ np.linalg.inv(H).T
    sx, sy = src[:, 0] / src[:, 2], src[:, 1] / src[:, 2]
    exact = ((sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)).reshape(h, w)
    inner = ((sx >= 1.5) & (sx <= w - 2.5) & (sy >= 1.5) & (sy <= h - 2.5)).reshape(h, w)
    assert not (valid.astype(bool) & ~exact).any()  # never claims a pixel from outside
    assert not (inner & ~valid.astype(bool)).any()  # gives up at most the border band


# --- corners: persistence, spreading ----------------------------------------------------------


def test_persistence_radius_is_measured_in_coarse_pixels() -> None:
    coarse = np.array([[10.0, 10.0]], np.float32)  # level k = 2 (4x coarser)
    points = np.array(
        [[40.0 + 4 * 1.9, 40.0], [40.0 + 4 * 2.1, 40.0], [40.0, 40.0 - 4 * 1.4]], np.float32
    )
    hit = persists(points, coarse, (30, 30), 4.0, 2.0)
    assert hit.tolist() == [True, False, True]
    assert not persists(points, coarse[:0], (30, 30), 4.0, 2.0).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_corners_do_not_persist_but_corners_of_shapes_do(seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.full((256, 512), 0.5, np.float32)
    for _ in range(25):  # left: blocks of 24-48 px, corners at every pyramid scale
        x, y = int(rng.integers(20, 200)), int(rng.integers(20, 200))
        img[y : y + int(rng.integers(24, 48)), x : x + int(rng.integers(24, 48))] = rng.uniform(
            0.2, 0.8
        )
    img[:, :280] += rng.normal(0.0, 0.005, (256, 280)).astype(np.float32)
    img[:, 280:] += rng.normal(0.0, 0.05, (256, 232)).astype(np.float32)  # right: flat + noise
    pyr = PyramidBuilder(img.shape, 0, 3).build(np.clip(img, 0.0, 1.0))
    params = CornerParams(
        max_corners=400,
        quality=DEFAULTS.corner_quality,
        min_distance_px=5.0,
        margin_px=8,
        persistence_levels=2,
        radius_px=2.0,
        grid=8,
    )
    corners = persistent_corners(pyr, params)
    assert len(corners) >= 30
    assert (corners[:, 0] >= 275).sum() == 0, "no persistent corner in the noise"
    no_test = persistent_corners(pyr, replace(params, persistence_levels=0))
    assert (no_test[:, 0] >= 275).mean() > 0.5, "without the test the noise takes the budget"


def test_spread_gives_every_cell_its_turn() -> None:
    rng = np.random.default_rng(1)
    dense = rng.uniform(0, 50, (200, 2)).astype(np.float32)  # strongest, all in one cell
    sparse = np.array([[300.0, 300.0], [700.0, 100.0], [900.0, 450.0]], np.float32)
    points = np.vstack([dense, sparse])
    kept = spread(points, (500, 1000), grid=8, cap=20)
    assert len(kept) == 20
    for p in sparse:
        assert (np.abs(kept - p).sum(axis=1) == 0).any()
    assert len(spread(points, (500, 1000), grid=8, cap=500)) == len(points)


def test_corners_are_capped_and_refined_to_subpixel(astronaut: F32) -> None:
    reg = OpenCVRegistrar(DEFAULTS.model_copy(update={"max_corners": 50}))
    reg.set_reference(astronaut)
    c = reg.corners
    assert 30 <= len(c) <= 50
    assert (np.abs(c - np.rint(c)) > 1e-3).any(), "cornerSubPix moved corners off the grid"


# --- pyramid ----------------------------------------------------------------------------------


def test_tracking_level_and_pyramid_geometry() -> None:
    assert tracking_level((1080, 1920), 1024, 4) == 1
    assert tracking_level((3000, 4000), 1024, 4) == 2
    assert tracking_level((512, 512), 1024, 4) == 0
    assert tracking_level((3000, 4000), 1024, 2) == 1  # clamped to the coarsest level
    assert coarsest_level(4, 2) == 4 and coarsest_level(4, 0) == 3
    g = np.random.default_rng(0).random((101, 203), dtype=np.float32)
    pyr = PyramidBuilder(g.shape, 1, 3).build(g)
    assert [p.shape for p in pyr] == [(51, 102), (26, 51), (13, 26)]
    assert all(p.dtype == np.uint8 for p in pyr)
    # a dot at full-resolution (2x, 2y) is at (x, y) one level down: a pure scale
    dot = np.zeros((64, 64), np.float32)
    dot[40, 24] = 1.0
    level1 = cv2.pyrDown(dot)
    assert tuple(int(i) for i in np.unravel_index(np.argmax(level1), level1.shape)) == (20, 12)


def test_pyramid_base_level_is_normalised_for_exposure() -> None:
    g = np.random.default_rng(0).random((120, 160), dtype=np.float32)
    levels = [
        PyramidBuilder(g.shape, 0, 2).build(g * gain + offset)[0].copy()
        for gain, offset in [(1.0, 0.0), (0.3, 0.05), (0.5, 0.5)]
    ]
    for level in levels:
        assert abs(float(level.mean()) - 0.5 * 255) < 2
        assert abs(float(level.std()) - 0.16 * 255) < 2
    assert np.abs(levels[0].astype(int) - levels[1]).max() <= 1


def test_scale_homography_commutes_with_scaling() -> None:
    rng = np.random.default_rng(2)
    H = shake(rng, 960, 540)
    big = scale_homography(H, 2.0)
    p = np.array([[[100.0, 200.0]]])
    np.testing.assert_allclose(
        cv2.perspectiveTransform(p * 2, big), cv2.perspectiveTransform(p, H) * 2, atol=1e-9
    )


def test_opencv_registrar_is_a_registrar() -> None:
    reg: Registrar = OpenCVRegistrar(DEFAULTS)
    assert reg is not None


@pytest.mark.parametrize("gain", [0.5, 1.6])
def test_a_frame_of_another_exposure_registers_as_well(astronaut: F32, gain: float) -> None:
    rng = np.random.default_rng(11)
    h, w = astronaut.shape
    reg = OpenCVRegistrar(DEFAULTS)
    reg.set_reference(degrade(rng, astronaut * 0.6, 0.0, 0.01))
    H = shake(rng, w, h)
    moving = degrade(rng, warp_to_moving(astronaut * 0.6 * gain, H), 3.0, 0.01)
    r = reg.register(moving)
    assert r.accepted, r.reason
    assert grid_error(r.homography, H, w, h) <= 0.25
