"""The simulated camera ISP (deblurd.sim.isp): measured effects of each stage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deblurd.errors import SimulationError
from deblurd.imaging import linear_to_srgb_float
from deblurd.sim.isp import (
    IspParams,
    block_compress,
    camera_frame,
    demosaic,
    flicker_factors,
    jpeg_roundtrip,
    mosaic_rggb,
    tone_curve,
    tone_map,
)
from deblurd.sim.scene import procedural_scene
from deblurd.sim.sensor import SensorModel

SENSOR = SensorModel()
EXPO, GAIN = 8000, 4.0


def _flat(level: tuple[float, float, float], h: int = 96, w: int = 128) -> np.ndarray:
    return np.broadcast_to(np.array(level, np.float32), (h, w, 3)).copy()


def _haar_mad(frame: np.ndarray) -> float:
    """Noise σ (codes) from the MAD of the finest diagonal Haar band of the luma."""
    g = frame.astype(np.float32).mean(axis=2)
    g = g[: g.shape[0] // 2 * 2, : g.shape[1] // 2 * 2]
    hh = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) / 2
    return float(np.median(np.abs(hh)) / 0.6745)


def _neighbour_corr(noise: np.ndarray) -> float:
    a, b = noise[:, :-1].ravel(), noise[:, 1:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def _block_ratio(frame: np.ndarray, b: int = 8) -> float:
    """Mean |horizontal step| across b×b block edges over the mean step inside blocks."""
    g = frame.astype(np.float32).mean(axis=2)
    d = np.abs(np.diff(g, axis=1))
    cols = np.arange(d.shape[1])
    edge = (cols % b) == b - 1
    return float(d[:, edge].mean() / d[:, ~edge].mean())


def test_all_off_is_the_plain_sensor() -> None:
    scene = procedural_scene(64, 96, 1)
    a = camera_frame(scene, IspParams(), SENSOR, EXPO, GAIN, np.random.default_rng(2))
    b = SENSOR.expose(scene, EXPO, GAIN, np.random.default_rng(2))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("method", ["bilinear", "ea", "vng"])
def test_demosaic_of_a_flat_field_is_flat(method: str) -> None:
    rgb = _flat((0.6, 0.3, 0.15))
    out = demosaic(mosaic_rggb(rgb), method)  # type: ignore[arg-type]
    assert np.abs(out - rgb).max() < 1e-4


def test_demosaic_restores_channels_at_their_sites() -> None:
    rgb = procedural_scene(64, 64, 4)
    out = demosaic(mosaic_rggb(rgb), "bilinear")
    inner = (slice(2, -2), slice(2, -2))  # OpenCV extrapolates the outermost pixel
    assert np.allclose(out[0::2, 0::2, 0][inner], rgb[0::2, 0::2, 0][inner], atol=1e-4)
    assert np.allclose(out[1::2, 1::2, 2][inner], rgb[1::2, 1::2, 2][inner], atol=1e-4)


def test_tone_only_equals_the_pipeline_on_a_noiseless_flat_frame() -> None:
    rng = np.random.default_rng(0)
    for _ in range(6):
        isp = IspParams.random(rng).without_artefacts()
        for level in [(0.05, 0.05, 0.05), (0.18, 0.18, 0.18), (0.4, 0.3, 0.2)]:
            radiance = _flat(level, 64, 64)
            frame = camera_frame(radiance, isp, SENSOR, EXPO, GAIN, None, brightness=1.03)
            truth = tone_map(radiance, isp, brightness=1.03)
            assert np.array_equal(frame, truth)


def test_default_tone_curve_is_srgb_and_curves_are_monotonic() -> None:
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.allclose(tone_curve(x, IspParams()), linear_to_srgb_float(x), atol=1e-6)
    for g, c in [(0.85, 0.4), (1.15, 0.0), (1.0, 1.0)]:
        y = tone_curve(x, IspParams(gamma=g, contrast=c))
        assert np.all(np.diff(y) >= -1e-6)
        assert y[0] == pytest.approx(0.0, abs=1e-6) and y[-1] == pytest.approx(1.0, abs=1e-6)


def test_isp_denoise_lowers_and_correlates_the_noise() -> None:
    radiance = _flat((0.18, 0.18, 0.18), 128, 160)
    base = IspParams(mosaic=True, demosaic="ea", wb_red=1.8, wb_blue=1.5)
    clean = camera_frame(radiance, base, SENSOR, EXPO, GAIN, None).astype(np.float32)

    def measure(isp: IspParams) -> tuple[float, float]:
        f = camera_frame(radiance, isp, SENSOR, EXPO, GAIN, np.random.default_rng(5))
        noise = (f.astype(np.float32) - clean).mean(axis=2)
        return _haar_mad(f), _neighbour_corr(noise)

    plain_sigma, plain_corr = measure(IspParams())
    raw_sigma, _ = measure(base)
    den_sigma, den_corr = measure(dataclasses.replace(base, denoise=1.0, chroma_denoise=1.0))
    assert plain_sigma > 1.5 and abs(plain_corr) < 0.1  # the plain sensor: white noise
    assert den_sigma < 0.6 * raw_sigma
    assert den_corr > 0.3


def test_sharpening_overshoots_an_edge() -> None:
    radiance = _flat((0.1, 0.1, 0.1), 32, 64)
    radiance[:, 32:] = 0.5
    soft = camera_frame(radiance, IspParams(denoise=0.0), SENSOR, EXPO, GAIN, None)
    sharp = camera_frame(
        radiance, IspParams(sharpen=1.5, sharpen_radius_px=1.5), SENSOR, EXPO, GAIN, None
    )
    row_s, row = sharp[16, :, 1].astype(int), soft[16, :, 1].astype(int)
    assert row_s.max() > row.max() + 5  # halo on the bright side
    assert row_s.min() < row.min() - 5  # and on the dark side


def test_jpeg_and_block_coding_introduce_8x8_block_energy() -> None:
    radiance = _flat((0.25, 0.22, 0.2), 128, 160)
    noisy = camera_frame(radiance, IspParams(), SENSOR, EXPO, GAIN, np.random.default_rng(1))
    assert _block_ratio(noisy) == pytest.approx(1.0, abs=0.1)
    assert _block_ratio(jpeg_roundtrip(noisy, 60)) > 1.3
    coded = block_compress(noisy, 8.0, 8, deblock=False)
    assert _block_ratio(coded) > 1.3
    # coarse quantisation flattens the noise inside the blocks
    assert _haar_mad(coded) < 0.5 * _haar_mad(noisy)


def test_block_coding_skips_unchanged_blocks() -> None:
    radiance = _flat((0.3, 0.3, 0.3), 64, 64)
    first = camera_frame(radiance, IspParams(), SENSOR, EXPO, GAIN, np.random.default_rng(1))
    second = camera_frame(radiance, IspParams(), SENSOR, EXPO, GAIN, np.random.default_rng(2))
    prev = block_compress(first, 10.0, 8)
    cur = block_compress(second, 10.0, 8, previous=prev)
    fresh = block_compress(second, 10.0, 8)
    assert np.mean(cur == prev) > 0.9  # the noise freezes between frames
    assert np.mean(fresh == prev) < np.mean(cur == prev)


def test_chroma_420_smears_a_colour_stripe() -> None:
    radiance = _flat((0.2, 0.2, 0.2), 32, 32)
    radiance[:, 15, 0] = 0.8  # one red column
    full = camera_frame(radiance, IspParams(), SENSOR, EXPO, GAIN, None)
    sub = camera_frame(radiance, IspParams(chroma_420=True), SENSOR, EXPO, GAIN, None)

    def redness(f: np.ndarray) -> np.ndarray:
        out: np.ndarray = f[16, :, 0].astype(int) - f[16, :, 1].astype(int)
        return out

    assert redness(sub)[15] < redness(full)[15] - 10
    assert redness(sub)[14] > redness(full)[14] + 5  # shared with its 2×2 neighbour


def test_flicker_factors() -> None:
    f = flicker_factors(np.random.default_rng(0), 2000, 0.03, reference=5)
    assert f[5] == 1.0
    assert np.std(np.log(f)) == pytest.approx(0.03, rel=0.15)
    assert np.array_equal(f, flicker_factors(np.random.default_rng(0), 2000, 0.03, 5))
    assert np.all(flicker_factors(np.random.default_rng(0), 9, 0.0, 4) == 1.0)


def test_random_isp_is_deterministic_and_varied() -> None:
    a = [IspParams.random(np.random.default_rng(s)) for s in range(30)]
    b = [IspParams.random(np.random.default_rng(s)) for s in range(30)]
    assert a == b
    assert {p.codec for p in a} == {"none", "jpeg", "h264"}
    assert {p.demosaic for p in a} == {"bilinear", "ea", "vng"}
    scene = procedural_scene(48, 64, 2)
    for p in a[:4]:
        f1 = camera_frame(scene, p, SENSOR, EXPO, GAIN, np.random.default_rng(9))
        f2 = camera_frame(scene, p, SENSOR, EXPO, GAIN, np.random.default_rng(9))
        assert f1.dtype == np.uint8 and f1.shape == (48, 64, 3)
        assert np.array_equal(f1, f2)


def test_odd_sizes_and_json_roundtrip() -> None:
    scene = procedural_scene(33, 47, 3)
    f = camera_frame(scene, IspParams.typical(), SENSOR, EXPO, GAIN, np.random.default_rng(0))
    assert f.shape == (33, 47, 3)
    p = IspParams.random(np.random.default_rng(3))
    assert IspParams.from_json(p.to_json()) == p
    with pytest.raises(SimulationError):
        IspParams.from_json({"nope": 1})
    with pytest.raises(SimulationError):
        IspParams(codec="mpeg")  # type: ignore[arg-type]
    with pytest.raises(SimulationError):
        IspParams(denoise=2.0)
