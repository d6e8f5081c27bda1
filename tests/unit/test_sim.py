"""The handheld-burst simulator: determinism, physics of blur and noise, files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from deblurd.burstdir import read_burst
from deblurd.errors import SimulationError
from deblurd.imaging import srgb_to_linear, to_gray, write_image
from deblurd.sim import (
    DEFAULT_SHAKE_DEG_S,
    SensorModel,
    ShakeRenderer,
    ShakeTrajectory,
    SimParams,
    homography,
    load_scene,
    procedural_scene,
    read_truth,
    simulate_burst,
    truth_dir_for,
    write_simulation,
)
from deblurd.sim.burst import make_renderer
from deblurd.sim.cli import simulate_command
from deblurd.sim.render import convolve, extent
from deblurd.sim.trajectory import homographies

W, H = 160, 120


def small(**kw: object) -> SimParams:
    base: dict[str, object] = {"width": W, "height": H, "ring_frames": 5}
    base.update(kw)
    return SimParams(**base)  # type: ignore[arg-type]


def grad_energy(img: np.ndarray) -> float:
    g = to_gray(img)
    gx = np.diff(g, axis=1)
    gy = np.diff(g, axis=0)
    return float((gx**2).mean() + (gy**2).mean())


# -- scene --------------------------------------------------------------------------------


def test_procedural_scene_is_deterministic_varied_and_in_range() -> None:
    a = procedural_scene(H, W, 7)
    b = procedural_scene(H, W, 7)
    c = procedural_scene(H, W, 8)
    assert a.shape == (H, W, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # Colours vary (not gray), and it has edges and texture.
    sat = (a.max(axis=2) - a.min(axis=2)).mean()
    assert sat > 0.05
    assert grad_energy(a) > 1e-3
    # Large and small scenes come from the same layout (resolution-independent).
    big = procedural_scene(4 * H, 4 * W, 7)
    down = cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA)
    assert float(np.abs(down - a).mean()) < 0.08


def test_load_scene_reads_a_photo_as_linear(tmp_path: Path) -> None:
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30] = (255, 128, 0)
    write_image(tmp_path / "p.png", rgb)
    lin = load_scene(tmp_path / "p.png")
    assert lin.dtype == np.float32 and lin.shape == (40, 60, 3)
    assert lin[0, 0, 0] == pytest.approx(1.0) and lin[0, 0, 1] == pytest.approx(0.2158, abs=1e-3)
    with pytest.raises(SimulationError):
        load_scene(tmp_path / "missing.png")
    # A photo of any size fits the view (covering it, aspect kept).
    sim = simulate_burst(small(ring_frames=1, noise=False), lin)
    assert sim.burst.frames[0].shape == (H, W, 3)


# -- geometry -----------------------------------------------------------------------------


def test_homography_identity_and_first_order_motion() -> None:
    f = 200.0
    assert np.allclose(homography((0, 0, 0), f, W, H), np.eye(3))
    c = np.array([(W - 1) / 2, (H - 1) / 2, 1.0])
    for pose, expect in [
        ((0.01, 0, 0), (f * math.tan(0.01), 0)),
        ((0, 0.01, 0), (0, f * math.tan(0.01))),
    ]:
        p = homography(pose, f, W, H) @ c
        assert np.allclose(p[:2] / p[2] - c[:2], expect, atol=1e-9)
    # Roll turns the image about the centre, clockwise on screen (y down).
    p = homography((0, 0, 0.1), f, W, H) @ (c + np.array([10.0, 0, 0]))
    d = p[:2] / p[2] - c[:2]
    assert d[1] > 0 and np.hypot(*d) == pytest.approx(10.0)


def test_trajectory_deterministic_smooth_and_scaled() -> None:
    a = ShakeTrajectory.random(30.0, 3)
    b = ShakeTrajectory.random(30.0, 3)
    t = np.linspace(0, 2, 4001)
    pa = a.poses(t)
    assert np.array_equal(pa, b.poses(t))
    assert a.pose_at(0.5) == tuple(a.poses([0.5])[0])
    assert not np.array_equal(pa, ShakeTrajectory.random(30.0, 4).poses(t))
    # RMS yaw/pitch speed close to the shake level (deg/s), over many seeds.
    speeds = []
    for seed in range(8):
        p = ShakeTrajectory.random(30.0, seed).poses(t)
        v = np.diff(p[:, :2], axis=0) / np.diff(t)[:, None]
        speeds.append(np.degrees(np.sqrt((v**2).sum(axis=1).mean())))
    assert 20.0 < float(np.mean(speeds)) < 42.0
    assert np.all(ShakeTrajectory.random(0.0, 3).poses(t) == 0.0)


def ring_motion(shake: float, seed: int) -> tuple[np.ndarray, float]:
    """Blur extents (px) of the ring frames of the default burst (1280x720, focal 1536 px,
    9 frames of 8 ms at 30 fps) and the burst's excursion: the largest distance between
    two ring frames' centres at their mean poses (px). Trajectory only, nothing rendered."""
    p = SimParams(shake=shake, seed=seed)
    traj = ShakeTrajectory.random(p.shake, p.seed)
    c = np.array([(p.width - 1) / 2, (p.height - 1) / 2, 1.0])

    def centres(poses: np.ndarray) -> np.ndarray:
        q = homographies(poses, p.focal, p.width, p.height) @ c
        out: np.ndarray = q[:, :2] / q[:, 2:3]
        return out

    blur, means = [], []
    for _, ts_ns, exposure_us, _ in p.schedule():
        poses = traj.poses(ts_ns * 1e-9 + exposure_us * 1e-6 * (np.arange(64) + 0.5) / 64)
        blur.append(extent(centres(poses)))
        means.append(poses.mean(axis=0))
    m = centres(np.array(means))
    return np.array(blur), float(np.linalg.norm(m[:, None] - m[None], axis=-1).max())


def test_default_shake_blurs_frames_but_keeps_the_burst_within_a_degree() -> None:
    # (a) 8 ms ring frames at the default shake: a few px of blur, nearly sharp frames
    # beside blurred ones; (b) the 9 frames of a burst span about a degree at most.
    one_deg_px = 1536 * math.tan(math.radians(1.0))
    blur, excursion, within = [], [], []
    for seed in range(100):
        b, e = ring_motion(DEFAULT_SHAKE_DEG_S, seed)
        blur += b.tolist()
        excursion.append(e)
        within.append(b.min() / b.max())
    p5, p50, p95 = np.percentile(blur, [5, 50, 95])
    assert 2.5 < p50 < 5.0 and p5 < 1.5 and 6.0 < p95 < 16.0
    assert float(np.median(within)) < 0.4  # the tremor's phase: sharp and blurred frames
    assert float(np.median(excursion)) < one_deg_px
    assert float(np.percentile(excursion, 90)) < 2.5 * one_deg_px
    # Twice the shake: twice the blur and twice the excursion, still ≲ 2°.
    strong = [ring_motion(2 * DEFAULT_SHAKE_DEG_S, seed)[1] for seed in range(100)]
    assert float(np.median(strong)) < 2.0 * one_deg_px
    assert float(np.median(strong)) == pytest.approx(2 * float(np.median(excursion)), rel=0.15)


def test_velocity_is_mostly_tremor() -> None:
    # Most of the angular velocity is in the tremor band (6-14 Hz); below 3 Hz (sway,
    # drift) the motion has displacement but little velocity.
    rate, n = 1000.0, 2**14
    t = np.arange(n) / rate
    tremor_share, slow_deg_s = [], []
    for seed in range(6):
        p = ShakeTrajectory.random(25.0, seed).poses(t)[:, :2]
        v = np.diff(p, axis=0) * rate
        power = (np.abs(np.fft.rfft(v, axis=0)) ** 2).sum(axis=1)
        f = np.fft.rfftfreq(v.shape[0], 1.0 / rate)
        rms_deg_s = math.degrees(math.sqrt(float((v**2).sum(axis=1).mean())))
        tremor_share.append(power[(f >= 6.0) & (f <= 14.0)].sum() / power.sum())
        slow_deg_s.append(rms_deg_s * math.sqrt(power[f < 3.0].sum() / power.sum()))
    assert min(tremor_share) > 0.9
    assert 0.3 < max(slow_deg_s) < 3.0  # RMS speed of sway and drift, deg/s


# -- rendering ----------------------------------------------------------------------------


def test_determinism_by_seed_and_seeds_differ() -> None:
    p = small(subject=True, extra_frames=1)
    a, b = simulate_burst(p), simulate_burst(p)
    arrays_a: list[np.ndarray] = [*a.burst.frames, *a.truth, *a.psfs]
    arrays_b: list[np.ndarray] = [*b.burst.frames, *b.truth, *b.psfs]
    for x, y in zip(arrays_a, arrays_b, strict=True):
        assert np.array_equal(x, y)
    assert a.subject_masks is not None and b.subject_masks is not None
    assert all(np.array_equal(x, y) for x, y in zip(a.subject_masks, b.subject_masks, strict=True))
    c = simulate_burst(small(subject=True, extra_frames=1, seed=1))
    assert not np.array_equal(a.burst.frames[0], c.burst.frames[0])
    assert a.stats[0].mean_pose != c.stats[0].mean_pose


def test_zero_shake_noiseless_frame_equals_truth() -> None:
    sim = simulate_burst(small(shake=0.0, noise=False, extra_frames=2))
    for frame, truth, psf, st in zip(sim.burst.frames, sim.truth, sim.psfs, sim.stats, strict=True):
        assert np.array_equal(frame, truth)
        assert st.blur_extent_px == 0.0 and st.substeps == 1
        assert psf.shape == (3, 3) and psf[1, 1] == pytest.approx(1.0)


def test_blurred_frame_has_no_shift_against_its_truth() -> None:
    # A point light: the blurred frame shows the PSF; its centroid (linear light) must sit
    # where the truth has the point.
    scene = np.zeros((H + 40, W + 40, 3), np.float32)
    yy, xx = np.mgrid[0 : H + 40, 0 : W + 40]
    for cx, cy in ((W / 2 + 20, H / 2 + 20), (45.0, 40.0)):
        scene += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5**2))[..., None]
    r = ShakeRenderer(scene.astype(np.float32), W, H, ShakeTrajectory.random(60.0, 2), 1.2 * W)

    def centroid(img: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        g = img[y0:y1, x0:x1, 0].astype(np.float64)
        ys, xs = np.mgrid[y0:y1, x0:x1]
        out: np.ndarray = np.array([(g * xs).sum(), (g * ys).sum()]) / g.sum()
        return out

    worst, blur = 0.0, 0.0
    for t in (0.0, 0.033, 0.067, 0.1):
        e = r.render(t, 0.016)
        blur = max(blur, e.stats.blur_extent_px)
        for x0, x1, y0, y1 in (
            (W // 2 - 30, W // 2 + 30, H // 2 - 30, H // 2 + 30),
            (0, 60, 0, 50),
        ):
            d = centroid(e.blurred, x0, x1, y0, y1) - centroid(e.truth, x0, x1, y0, y1)
            worst = max(worst, float(np.hypot(*d)))
    assert blur > 3.0 and worst < 0.1


def test_longer_exposure_under_shake_blurs_more() -> None:
    r = make_renderer(small(shake=30.0, seed=5))
    short_e, long_e, short_x, long_x = [], [], [], []
    for t in (0.0, 0.033, 0.066, 0.1):
        s = r.render(t, 0.004)
        lg = r.render(t, 0.032)
        assert lg.stats.blur_extent_px >= s.stats.blur_extent_px
        short_e.append(grad_energy(s.blurred) / grad_energy(s.truth))
        long_e.append(grad_energy(lg.blurred) / grad_energy(lg.truth))
        short_x.append(s.stats.blur_extent_px)
        long_x.append(lg.stats.blur_extent_px)
    assert np.mean(long_x) > 3 * np.mean(short_x)
    assert np.mean(long_e) < np.mean(short_e) < 1.0


def test_substeps_adapt_to_motion() -> None:
    r = make_renderer(small(shake=30.0, seed=5))
    e = r.render(0.0, 0.032, max_substep_px=0.5)
    assert e.stats.substeps >= math.ceil(e.stats.blur_path_px / 0.5)
    coarse = r.render(0.0, 0.032, max_substep_px=2.0)
    assert coarse.stats.substeps < e.stats.substeps
    # Fewer sub-steps: nearly the same image.
    assert float(np.abs(coarse.blurred - e.blurred).mean()) < 0.01


def test_psf_sums_to_one_explains_the_blur_and_grows_with_shake() -> None:
    extents = []
    for shake in (5.0, 40.0):
        sim = simulate_burst(small(shake=shake, noise=False, ring_frames=6, seed=3))
        for psf in sim.psfs:
            assert psf.dtype == np.float32 and psf.ndim == 2 and psf.shape[0] == psf.shape[1]
            assert psf.shape[0] % 2 == 1 and float(psf.sum()) == pytest.approx(1.0, abs=1e-5)
            assert float(psf.min()) >= 0.0
        extents.append(np.mean([s.blur_extent_px for s in sim.stats]))
        sizes = np.mean([p.shape[0] for p in sim.psfs])
        extents.append(sizes)
    assert extents[2] > 3 * extents[0] and extents[3] > extents[1]
    # Truth convolved with the PSF reproduces the blurred frame near the centre.
    r = make_renderer(small(shake=40.0, seed=3))
    e = max(
        (r.render(t, 0.032) for t in (0.0, 0.05, 0.1, 0.15)), key=lambda x: x.stats.blur_extent_px
    )
    assert e.stats.blur_extent_px > 4.0
    approx = convolve(e.truth, e.psf)
    c = np.s_[H // 4 : 3 * H // 4, W // 4 : 3 * W // 4]
    err = float(np.abs(approx[c] - e.blurred[c]).mean())
    base = float(np.abs(e.truth[c] - e.blurred[c]).mean())
    assert err < 0.25 * base


def test_fast_render_is_close_to_the_exact_one() -> None:
    r = make_renderer(small(shake=30.0, seed=4, subject=True))
    exact = r.render(0.1, 0.008)
    fast = r.render(0.1, 0.008, fast=True)
    assert np.allclose(exact.truth, fast.truth, atol=1e-3)
    c = np.s_[H // 4 : 3 * H // 4, W // 4 : 3 * W // 4]
    assert float(np.abs(exact.blurred[c] - fast.blurred[c]).mean()) < 0.01
    sim = simulate_burst(small(fast=True, ring_frames=2))
    assert sim.burst.frames[0].shape == (H, W, 3)


# -- sensor -------------------------------------------------------------------------------


def test_noise_grows_as_exposure_shortens_at_constant_brightness() -> None:
    flat = np.full((H, W, 3), 0.18, np.float32)
    sim = simulate_burst(small(shake=0.0, ring_frames=1, extra_frames=1), flat)
    ring, extra = (srgb_to_linear(f) for f in sim.burst.frames)
    assert sim.burst.infos[1].analogue_gain == pytest.approx(1.0)
    # Same brightness, and the 8 ms × 4 frame is about twice as noisy as 32 ms × 1.
    assert float(ring.mean()) == pytest.approx(float(extra.mean()), rel=0.03)
    assert 1.6 < float(ring.std()) / float(extra.std()) < 2.4
    sensor = SensorModel(ref_exposure_us=32000)
    stds = []
    for exposure in (2000, 8000, 32000):
        gain = sensor.gain_for(exposure)
        out = sensor.expose_linear(flat, exposure, gain, np.random.default_rng(0))
        assert float(out.mean()) == pytest.approx(0.18, rel=0.01)
        assert float(out.std()) == pytest.approx(sensor.noise_std(0.18, exposure, gain), rel=0.05)
        stds.append(float(out.std()))
    assert stds[0] > stds[1] > stds[2]
    # Deep shadows use exact Poisson counts: mean kept, variance λ (+ read noise).
    dark = np.full((200, 200), 0.004, np.float32)
    out = sensor.expose_linear(dark, 8000, 4.0, np.random.default_rng(1))
    assert float(out.mean()) == pytest.approx(0.004, rel=0.05)


def test_ring_noise_is_visible_but_moderate() -> None:
    sim = simulate_burst(small(shake=0.0, ring_frames=1))
    ref = simulate_burst(small(shake=0.0, ring_frames=1, noise=False))
    d = sim.burst.frames[0].astype(float) - ref.burst.frames[0].astype(float)
    assert 2.0 < float(d.std()) < 12.0  # 8-bit codes


# -- burst, extra frames, subject -------------------------------------------------------


def test_extra_frames_are_later_longer_and_marked() -> None:
    p = small(ring_frames=5, extra_frames=3, exposure_switch_frames=4)
    sim = simulate_burst(p)
    infos = sim.burst.infos
    assert [i.role for i in infos] == ["ring"] * 5 + ["extra"] * 3
    assert sim.burst.trigger_index == 2 and infos[2].role == "ring"
    ts = [i.timestamp_ns for i in infos]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    period = round(1e9 / 30.0)
    assert ts[5] - ts[4] == (1 + 4) * period  # the exposure switch takes frames
    for i in infos[5:]:
        assert i.exposure_us == 32000 and i.analogue_gain == pytest.approx(1.0)
    for i in infos[:5]:
        assert i.exposure_us == 8000 and i.analogue_gain == pytest.approx(4.0)
    # An exposure longer than the frame period lowers the frame rate.
    long = small(ring_frames=1, extra_frames=2, extra_exposure_us=50000).schedule()
    assert long[2][1] - long[1][1] >= 50000 * 1000
    assert long[1][3] == pytest.approx(1.0)  # gain never below 1: brighter, honestly


def test_subject_masks_exist_and_move() -> None:
    sim = simulate_burst(small(subject=True, ring_frames=5, subject_speed=0.5, shake=0.0))
    assert sim.subject_masks is not None and len(sim.subject_masks) == 5
    centres = []
    for m in sim.subject_masks:
        assert m.dtype == np.uint8 and m.shape == (H, W)
        assert set(np.unique(m).tolist()) <= {0, 255}
        assert 0.03 < float((m > 0).mean()) < 0.5
        ys, xs = np.nonzero(m)
        centres.append((xs.mean(), ys.mean()))
    steps = np.hypot(*np.diff(np.array(centres), axis=0).T)
    assert float(steps.max()) > 0.5
    assert sim.stats[0].subject_pose is not None and sim.stats[0].subject_blur_px is not None
    # Without a subject there are no masks.
    assert simulate_burst(small(ring_frames=1)).subject_masks is None


def test_subject_is_blurred_by_its_own_motion() -> None:
    p = small(
        subject=True,
        shake=0.0,
        noise=False,
        ring_frames=1,
        subject_speed=2.0,
        extra_frames=1,
        exposure_switch_frames=0,
    )
    sim = simulate_burst(p)
    m = sim.subject_masks[1] if sim.subject_masks else None
    assert m is not None
    inside = cv2.erode(m, np.ones((5, 5), np.uint8)) > 0
    diff = np.abs(sim.burst.frames[1].astype(float) - sim.truth[1].astype(float)).mean(axis=2)
    assert sim.stats[1].blur_extent_px == 0.0
    assert (
        float(diff[inside].mean()) > 2.0
        and float(diff[~(cv2.dilate(m, np.ones((15, 15), np.uint8)) > 0)].mean()) < 0.5
    )


def test_params_validation() -> None:
    for bad in (
        {"width": 4},
        {"ring_frames": 0},
        {"trigger_index": 9},
        {"ring_exposure_us": 40000},
        {"shake": -1.0},
        {"seed": -1},
        {"ring_gain": 0.5},
        {"fps": 0.0},
    ):
        with pytest.raises(SimulationError):
            small(**bad)
    p = small(trigger_index=1, extra_frames=1)
    assert SimParams.from_json(json.loads(json.dumps(p.to_json()))) == p
    with pytest.raises(SimulationError):
        SimParams.from_json({"width": 100, "colour": "red"})


# -- files --------------------------------------------------------------------------------


def test_written_burst_reads_back_with_truth_beside_it(tmp_path: Path) -> None:
    sim = simulate_burst(small(subject=True, extra_frames=1))
    out = tmp_path / "shot"
    burst_dir, truth_dir = write_simulation(out, sim)
    assert burst_dir == out and truth_dir == tmp_path / "shot.truth" == truth_dir_for(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "000.png",
        "001.png",
        "002.png",
        "003.png",
        "004.png",
        "005.png",
        "burst.json",
    ]
    burst = read_burst(out)
    assert burst.trigger_index == sim.burst.trigger_index
    assert burst.infos == sim.burst.infos
    for a, b in zip(burst.frames, sim.burst.frames, strict=True):
        assert np.array_equal(a, b)
    truth = read_truth(out)
    assert truth.params == sim.params
    assert truth.subject_masks is not None and sim.subject_masks is not None
    for i in range(len(sim.truth)):
        assert np.array_equal(truth.truth[i], sim.truth[i])
        assert np.array_equal(truth.psfs[i], sim.psfs[i])
        assert np.array_equal(truth.subject_masks[i], sim.subject_masks[i])
        assert truth.stats[i] == sim.stats[i]
    assert np.array_equal(truth.trajectory, sim.trajectory)
    assert truth.scene.shape == sim.scene.shape
    doc = json.loads((truth_dir / "truth.json").read_text())
    assert doc["frames"][0]["blur_extent_px"] == sim.stats[0].blur_extent_px
    assert len(doc["frames"][0]["mean_pose_deg"]) == 3
    # Never overwrites; no leftovers after a refusal.
    with pytest.raises(SimulationError):
        write_simulation(out, sim)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shot", "shot.truth"]
    with pytest.raises(SimulationError):
        read_truth(tmp_path / "nothing")


def simulate_small(out: Path, seed: int = 3, **args: Any) -> int:
    """``deblurd simulate`` into ``out`` at the tests' small size, 3 ring frames."""
    return simulate_command(str(out), seed=seed, width=W, height=H, frames=3, **args)


def test_simulate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b"
    rc = simulate_small(out, extra=1, shake=0.5)
    assert rc == 0
    text = capsys.readouterr().out
    assert str(out) in text and str(tmp_path / "b.truth") in text
    assert len(read_burst(out).frames) == 4
    # The command's shake is a level relative to the default (deg/s in the parameters).
    assert read_truth(out).params.shake == pytest.approx(0.5 * DEFAULT_SHAKE_DEG_S)
    with pytest.raises(SimulationError):
        simulate_small(out)
    with pytest.raises(SimulationError):
        simulate_small(tmp_path / "c", seed=0, scene=str(tmp_path / "nope.png"))


def test_renderer_truth_at_any_pose() -> None:
    r = make_renderer(small(shake=0.0))
    assert isinstance(r, ShakeRenderer)
    a, _ = r.render_truth((0.0, 0.0, 0.0))
    f = r.focal_px
    b, _ = r.render_truth((math.atan(3.0 / f), 0.0, 0.0))  # 3 px to the right at the centre
    c = np.s_[H // 2 - 10 : H // 2 + 10, W // 2 - 10 : W // 2 + 10]
    moved = np.roll(a, 3, axis=1)
    assert float(np.abs(b[c] - moved[c]).mean()) < 0.2 * float(np.abs(b[c] - a[c]).mean())
