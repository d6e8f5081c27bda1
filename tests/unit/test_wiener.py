"""Tests of deblurd.evaluation.wiener: the multi-frame Wiener reference with true kernels."""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from deblurd.errors import ImageError
from deblurd.evaluation.metrics import psnr
from deblurd.evaluation.pairs import motion_kernel
from deblurd.evaluation.wiener import (
    Oracle,
    fit_power_law,
    multiframe_wiener,
    oracle_stack,
    otf,
    wiener_reference,
    wiener_true_kernels,
)
from deblurd.imaging import F32, srgb_to_linear
from deblurd.sim.burst import SimParams, read_truth, simulate_burst, write_simulation
from deblurd.sim.render import convolve
from deblurd.sim.scene import procedural_scene


def _scene(n: int, alpha: float, seed: int = 0) -> F32:
    """A periodic ``n × n`` random texture with power spectrum ∝ ``|f|^(−alpha)``, in
    [0.1, 0.9] (linear light)."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.fftfreq(n)[None, :])
    f[0, 0] = 1.0
    spec = np.fft.fft2(rng.standard_normal((n, n))) * f ** (-alpha / 2)
    spec[0, 0] = 0.0
    x = np.fft.ifft2(spec).real
    x = (x - x.min()) / (x.max() - x.min())
    return (0.1 + 0.8 * x).astype(np.float32)


def _circular_blur(x: F32, psf: F32) -> F32:
    """``psf ⊛ x`` on the periodic grid (the convolution convention of the simulator)."""
    return np.fft.irfft2(np.fft.rfft2(x) * otf(psf, x.shape), x.shape).astype(np.float32)


def _lin_psnr(a: F32, b: F32, border: int = 16) -> float:
    d = (a - b)[border:-border, border:-border]
    return float(-10.0 * math.log10(float(np.mean(d.astype(np.float64) ** 2))))


SIGMA = 0.01
ANGLES = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)


@pytest.fixture(scope="module")
def blurred_set() -> tuple[F32, list[F32], list[F32]]:
    """A scene, four 9-px motion kernels in four directions, and the four noisy frames."""
    x = _scene(160, 3.0)
    rng = np.random.default_rng(1)
    kernels = [motion_kernel(9.0, a) for a in ANGLES]
    frames = [(convolve(x, k) + rng.normal(0, SIGMA, x.shape)).astype(np.float32) for k in kernels]
    return x, kernels, frames


def test_otf_of_a_centred_kernel_does_not_shift() -> None:
    x = _scene(64, 2.0)
    psf = np.zeros((5, 5), np.float32)
    psf[2, 3] = 1.0  # blurred(x) = truth(x − (0, 1)): one pixel to the right
    moved = _circular_blur(x, psf)
    np.testing.assert_allclose(moved, np.roll(x, 1, axis=1), atol=1e-5)
    np.testing.assert_allclose(
        _circular_blur(x, np.pad(np.ones((1, 1), np.float32), 2)), x, atol=1e-5
    )


def test_power_law_fit_recovers_the_exponent() -> None:
    for alpha in (2.0, 3.0):
        a, fitted = fit_power_law(_scene(256, alpha, seed=3))
        assert a > 0
        assert fitted == pytest.approx(alpha, abs=0.25)


def test_multi_frame_beats_every_single_frame_and_the_mean(
    blurred_set: tuple[F32, list[F32], list[F32]],
) -> None:
    x, kernels, frames = blurred_set
    prior = [fit_power_law(x)]
    multi = multiframe_wiener(frames, kernels, [SIGMA**2] * 4, prior)
    singles = [
        multiframe_wiener([y], [k], [SIGMA**2], prior) for y, k in zip(frames, kernels, strict=True)
    ]
    mean = np.mean(frames, axis=0)
    p_multi = _lin_psnr(multi, x)
    best_single = max(_lin_psnr(s, x) for s in singles)
    best_frame = max(_lin_psnr(y, x) for y in frames)
    assert p_multi > best_single + 2.0
    assert p_multi > _lin_psnr(mean, x) + 3.0
    assert p_multi > best_frame + 5.0
    # every single-frame Wiener already beats its own blurred frame
    for s, y in zip(singles, frames, strict=True):
        assert _lin_psnr(s, x) > _lin_psnr(y, x)


def test_one_frame_is_the_single_frame_wiener() -> None:
    """One frame: the textbook conj(K) Y / (|K|² + σ²/S) on the periodic grid (where the
    module's mirror padding differs only near the border)."""
    n = 128
    x = _scene(n, 3.0, seed=5)
    k = motion_kernel(7.0, 0.6)
    y = _circular_blur(x, k) + np.random.default_rng(2).normal(0, SIGMA, x.shape)
    a, alpha = fit_power_law(x)
    got = multiframe_wiener([y.astype(np.float32)], [k], [SIGMA**2], [(a, alpha)], passes=0)

    f = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :])
    s = np.where(f > 0, a * np.where(f > 0, f, 1.0) ** (-alpha), np.inf)
    kf = otf(k, (n, n)).astype(np.complex128)
    want = np.fft.irfft2(np.conj(kf) * np.fft.rfft2(y) / (np.abs(kf) ** 2 + SIGMA**2 / s), (n, n))
    inner = (slice(24, -24), slice(24, -24))
    assert float(np.abs(got - want)[inner].max()) < 5e-3
    assert _lin_psnr(got, want.astype(np.float32), 24) > 55.0

    # N identical frames with N times the noise variance: the same filter exactly
    three = multiframe_wiener(
        [y.astype(np.float32)] * 3, [k] * 3, [3 * SIGMA**2] * 3, [(a, alpha)], passes=0
    )
    np.testing.assert_allclose(three, got, atol=1e-5)


def test_a_wrong_kernel_scores_worse(blurred_set: tuple[F32, list[F32], list[F32]]) -> None:
    x, kernels, frames = blurred_set
    prior = [fit_power_law(x)]
    right = _lin_psnr(multiframe_wiener(frames, kernels, [SIGMA**2] * 4, prior), x)
    turned = [motion_kernel(9.0, a + math.pi / 2) for a in ANGLES[:2]] + kernels[2:]
    wrong = _lin_psnr(multiframe_wiener(frames, turned, [SIGMA**2] * 4, prior), x)
    assert right > wrong + 1.5
    shifted = [np.roll(np.pad(k, 2), 2, axis=1) for k in kernels]
    off = _lin_psnr(multiframe_wiener(frames, shifted, [SIGMA**2] * 4, prior), x)
    assert right > off + 3.0


def test_missing_data_is_filled_not_averaged(
    blurred_set: tuple[F32, list[F32], list[F32]],
) -> None:
    """A frame that has garbage where it says it has no data does not spoil the result."""
    x, kernels, frames = blurred_set
    prior = [fit_power_law(x)]
    clean = multiframe_wiener(frames, kernels, [SIGMA**2] * 4, prior)
    bad = [f.copy() for f in frames]
    valid = [np.ones(x.shape, np.bool_) for _ in frames]
    bad[1][:, 100:] = 0.0
    valid[1][:, 100:] = False
    filled = multiframe_wiener(bad, kernels, [SIGMA**2] * 4, prior, valid=valid, passes=3)
    ignored = multiframe_wiener(bad, kernels, [SIGMA**2] * 4, prior, passes=0)
    assert _lin_psnr(filled, x) > _lin_psnr(ignored, x) + 5.0
    assert _lin_psnr(filled, x) > _lin_psnr(clean, x) - 1.0


def test_bad_inputs() -> None:
    y = np.zeros((32, 32), np.float32)
    k = np.ones((1, 1), np.float32)
    with pytest.raises(ImageError):
        multiframe_wiener([y], [k, k], [1e-4], [(1.0, 2.0)])
    with pytest.raises(ImageError):
        multiframe_wiener([y], [k], [0.0], [(1.0, 2.0)])
    with pytest.raises(ImageError):
        multiframe_wiener([y, np.zeros((16, 16), np.float32)], [k, k], [1e-4] * 2, [(1.0, 2.0)])


# ------------------------------------------------------------------ simulated bursts


@pytest.fixture(scope="module")
def sim_burst():  # type: ignore[no-untyped-def]
    """A small burst at 2× shake with two extra frames, of a scene without pixel-sharp
    edges (on those, resampling the frames limits every multi-frame method, module doc)."""
    scene = cv2.GaussianBlur(procedural_scene(160, 212, 11), (0, 0), 1.5)
    params = SimParams(width=192, height=144, seed=11, shake=50.0, extra_frames=2)
    return simulate_burst(params, scene)


def test_oracle_geometry_and_kernels(sim_burst) -> None:  # type: ignore[no-untyped-def]
    oracle = Oracle.from_simulation(sim_burst)
    assert oracle.applies()
    h, w = oracle.burst.size
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    for i in range(len(oracle.burst.frames)):
        k = oracle.kernel_at(i, i, centre)
        assert k.shape == oracle.psfs[i].shape
        assert float(np.abs(k - oracle.psfs[i]).sum()) < 0.1
    ref = oracle.burst.trigger_index
    stack = oracle_stack(oracle, ref)
    assert stack.indices[0] == ref and sorted(stack.indices) == list(range(len(stack.indices)))
    # the truth views, warped by the oracle homography, land on the reference's truth
    truth_ref = srgb_to_linear(oracle.truth[ref])
    for i in stack.indices[1:]:
        m = oracle.homography(i, ref)
        moved = cv2.warpPerspective(
            srgb_to_linear(oracle.truth[i]), m, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
        )
        unmoved = _lin_psnr(srgb_to_linear(oracle.truth[i]), truth_ref, 24)
        assert _lin_psnr(moved, truth_ref, 24) > max(30.0, unmoved + 12.0)
    # the measured noise holds the sensor's, and not much more on a ring frame
    measured = oracle.noise_variance(ref, ref)
    model = oracle.noise_variance(ref, ref, how="sensor")
    assert np.all(measured > 0.9 * model) and np.all(measured < 2.0 * model)


def test_reference_beats_the_sharpest_frame(sim_burst) -> None:  # type: ignore[no-untyped-def]
    oracle = Oracle.from_simulation(sim_burst)
    ring = oracle.burst.indices("ring")
    ref = min(ring, key=lambda i: sim_burst.stats[i].blur_extent_px)
    truth = oracle.truth[ref]

    def score(img: npt.NDArray[np.uint8]) -> float:
        return psnr(img, truth, border=8)

    out = score(wiener_true_kernels(oracle, ref))
    assert out > score(wiener_true_kernels(oracle, ref, [ref])) + 2.0
    assert out > score(oracle.burst.frames[ref]) + 5.0
    assert score(wiener_true_kernels(oracle, ref, tile=72, overlap=12)) > out - 1.0
    # wrong kernels (turned by 180°: the blur paths reversed) score worse than true ones
    flipped = Oracle.from_simulation(sim_burst)
    flipped.psfs = [np.ascontiguousarray(k[::-1, ::-1]) for k in oracle.psfs]
    right = score(wiener_true_kernels(oracle, ref, noise="sensor"))
    assert score(wiener_true_kernels(flipped, ref, noise="sensor")) < right - 1.0
    # the evaluation's pick is at least as good as any single setting it tries
    best, choice = wiener_reference(oracle, ref, ring, scales=(1.0, 4.0), border=8)
    assert choice.frames in ("candidates", "all") and choice.regularisation in (1.0, 4.0)
    assert set(choice.tried) == {"candidates x1", "candidates x4", "all x1", "all x4"}
    assert score(best) == pytest.approx(max(choice.tried.values()), abs=1e-3)
    assert score(best) >= out - 1e-6


def test_from_truth_folder_matches_memory(sim_burst, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from deblurd.burstdir import read_burst

    burst_dir, _ = write_simulation(tmp_path / "b", sim_burst)
    disk = Oracle.from_truth(read_burst(burst_dir), read_truth(burst_dir))
    memory = Oracle.from_simulation(sim_burst)
    ref = sim_burst.burst.trigger_index
    np.testing.assert_array_equal(wiener_true_kernels(disk, ref), wiener_true_kernels(memory, ref))


def test_does_not_apply_through_a_camera() -> None:
    from deblurd.sim.isp import isp_for_seed

    params = SimParams(width=96, height=72, seed=3, isp=isp_for_seed(3), rolling_shutter_ms=20.0)
    assert not Oracle.from_simulation(simulate_burst(params)).applies()
    plain = SimParams(width=96, height=72, seed=3, rolling_shutter_ms=20.0)
    assert not Oracle.from_simulation(simulate_burst(plain)).applies()
