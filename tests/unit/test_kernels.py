"""Random blur kernels (deblurd.sim.kernels): shape, normalisation, extent, centring,
convolution convention, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from deblurd.errors import SimulationError
from deblurd.sim.kernels import (
    combine_kernels,
    defocus_kernel,
    kernel_extent,
    motion_kernel,
    random_kernel,
    random_motion_kernel,
    shake_trajectory,
)
from deblurd.sim.render import convolve


def _check_kernel(k: np.ndarray) -> None:
    assert k.dtype == np.float32
    assert k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert float(k.min()) >= 0.0
    assert abs(float(k.sum(dtype=np.float64)) - 1.0) < 1e-5


def _centroid(k: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
    c = k.shape[0] // 2
    return float((xs * k).sum() - c), float((ys * k).sum() - c)


@pytest.mark.parametrize("extent_px", [3.0, 10.0, 25.0, 40.0])
def test_motion_kernel_reaches_the_requested_extent_and_is_centred(extent_px: float) -> None:
    for seed in range(6):
        k = random_motion_kernel(np.random.default_rng(seed), extent_px, min_extent_px=extent_px)
        _check_kernel(k)
        # Bilinear splatting widens the support by up to ~1.5 px.
        assert extent_px - 0.5 <= kernel_extent(k) <= extent_px + 2.0
        cx, cy = _centroid(k)
        assert abs(cx) < 0.05 and abs(cy) < 0.05  # blurs without shifting


def test_motion_extents_spread_over_the_range() -> None:
    rng = np.random.default_rng(0)
    ext = [kernel_extent(random_motion_kernel(rng, 40.0)) for _ in range(60)]
    assert min(ext) < 5.0
    assert max(ext) > 30.0
    assert max(ext) <= 42.0


def test_trajectories_are_not_straight_lines() -> None:
    # Boracchi–Foi paths curve: the extent of a full path is well under its length.
    ratios = []
    for seed in range(10):
        path = shake_trajectory(np.random.default_rng(seed))
        length = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        span = float(np.linalg.norm(path.max(axis=0) - path.min(axis=0)))
        ratios.append(span / length)
    assert np.median(ratios) < 0.8
    # and no anxiety gives a straight line
    straight = shake_trajectory(np.random.default_rng(1), anxiety=0.0)
    length = float(np.linalg.norm(np.diff(straight, axis=0), axis=1).sum())
    assert np.linalg.norm(straight[-1] - straight[0]) == pytest.approx(length, rel=1e-6)


def test_kernels_are_deterministic_by_seed() -> None:
    a = random_kernel(np.random.default_rng(7))
    b = random_kernel(np.random.default_rng(7))
    c = random_kernel(np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_convolution_convention_matches_render() -> None:
    path = np.stack([np.linspace(0, 1, 50), np.zeros(50)], axis=1)  # a horizontal smear
    k = motion_kernel(path, 8.0)
    _check_kernel(k)
    img = np.zeros((41, 41), np.float32)
    img[20, 20] = 1.0
    out = convolve(img, k)
    c = k.shape[0] // 2
    assert np.allclose(out[20 - c : 20 + c + 1, 20 - c : 20 + c + 1], k, atol=1e-6)
    assert out.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("radius", [0.0, 1.0, 3.0, 8.0])
def test_defocus_kernel_is_a_soft_disk(radius: float) -> None:
    k = defocus_kernel(radius)
    _check_kernel(k)
    assert np.allclose(k, k[::-1, ::-1]) and np.allclose(k, k.T)
    if radius == 0.0:
        assert float(k.max()) == pytest.approx(1.0)
        return
    assert abs(kernel_extent(k) - 2 * radius) <= 1.5
    c = k.shape[0] // 2
    inner = k[c - int(radius / 2) : c + int(radius / 2) + 1, c]
    assert np.allclose(inner, k[c, c])  # flat inside
    edge = k[c, c + int(np.ceil(radius))]
    assert 0.0 < edge < k[c, c] or k[c, c + int(radius) + 1] == 0.0  # soft edge


def test_combined_kernel_adds_variances() -> None:
    a = random_motion_kernel(np.random.default_rng(3), 15.0, min_extent_px=15.0)
    b = defocus_kernel(4.0)
    ab = combine_kernels(a, b)
    _check_kernel(ab)
    assert ab.shape[0] == a.shape[0] + b.shape[0] - 1

    def var(k: np.ndarray) -> float:
        ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
        mx, my = (xs * k).sum(), (ys * k).sum()
        return float((((xs - mx) ** 2 + (ys - my) ** 2) * k).sum())

    assert var(ab) == pytest.approx(var(a) + var(b), rel=0.02)


def test_random_kernel_mixes_motion_and_defocus() -> None:
    rng = np.random.default_rng(11)
    ks = [random_kernel(rng, 40.0, 8.0) for _ in range(40)]
    for k in ks:
        _check_kernel(k)
    assert max(k.shape[0] for k in ks) >= 30
    assert sum(k.shape == (1, 1) for k in ks) < 10


def test_bad_arguments_raise() -> None:
    with pytest.raises(SimulationError):
        defocus_kernel(-1.0)
    with pytest.raises(SimulationError):
        random_motion_kernel(np.random.default_rng(0), 500.0)
    with pytest.raises(SimulationError):
        random_motion_kernel(np.random.default_rng(0), 10.0, min_extent_px=20.0)
