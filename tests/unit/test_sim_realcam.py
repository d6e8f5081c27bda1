"""Real-camera options of the simulator: ISP, flicker, rolling shutter, walk shake, defocus."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from deblurd.errors import SimulationError
from deblurd.evaluation.metrics import psnr
from deblurd.sim import SimParams, read_truth, simulate_burst, write_simulation
from deblurd.sim.burst import _brightness, _linear_truth, camera_truth, make_renderer
from deblurd.sim.isp import IspParams, tone_map
from deblurd.sim.trajectory import WalkTrajectory

SMALL = {"width": 160, "height": 120, "ring_frames": 5, "fast": True}


def test_defaults_are_unchanged_by_the_new_options() -> None:
    a = simulate_burst(SimParams(seed=2, **SMALL))  # type: ignore[arg-type]
    b = simulate_burst(
        SimParams(seed=2, flicker=0.0, rolling_shutter_ms=0.0, defocus_px=0.0, **SMALL)  # type: ignore[arg-type]
    )
    for x, y in zip(a.burst.frames + a.truth, b.burst.frames + b.truth, strict=True):
        assert np.array_equal(x, y)


def test_isp_burst_truth_shares_the_frames_radiometry(tmp_path: Path) -> None:
    isp = IspParams.typical()
    params = SimParams(seed=5, isp=isp, flicker=0.04, shake=5.0, **SMALL)  # type: ignore[arg-type]
    sim = simulate_burst(params)
    means = []
    for frame, truth in zip(sim.burst.frames, sim.truth, strict=True):
        assert frame.dtype == np.uint8 and frame.shape == (120, 160, 3)
        # blur, noise and compression keep the mean: truth and frame agree in brightness
        assert abs(float(frame.mean()) - float(truth.mean())) < 2.0
        means.append(float(frame.mean()))
    assert max(means) - min(means) > 1.0  # the flicker shows between frames
    # stored and read back, ISP parameters included
    write_simulation(tmp_path / "b", sim)
    back = read_truth(tmp_path / "b")
    assert back.params == params and back.params.isp == isp


def test_rolling_shutter_delays_the_lower_rows() -> None:
    params = SimParams(seed=3, shake=60.0, width=200, height=160, fast=True)
    r = make_renderer(params)
    glob = r.render(0.1, 0.008, fast=True)
    tiny = r.render(0.1, 0.008, fast=True, readout_s=1e-9)
    roll = r.render(0.1, 0.008, fast=True, readout_s=0.03)
    assert np.abs(tiny.truth - glob.truth).mean() < 1e-4
    # the top rows are read out with the global shutter's window, the bottom ones 30 ms later
    top = np.abs(roll.truth[:16] - glob.truth[:16]).mean()
    bottom = np.abs(roll.truth[-16:] - glob.truth[-16:]).mean()
    assert bottom > 3 * top
    assert roll.blurred.shape == glob.blurred.shape and roll.psf.sum() == pytest.approx(1.0)


def test_rolling_shutter_slow_path_and_subject() -> None:
    params = SimParams(seed=1, shake=25.0, width=96, height=64, subject=True)
    r = make_renderer(params)
    exp = r.render(0.0, 0.008, readout_s=0.02)
    assert exp.mask is not None and exp.mask.max() == 255
    assert exp.blurred.shape == (64, 96, 3) and np.isfinite(exp.blurred).all()


def test_walk_trajectory_speed_and_blur() -> None:
    for seed in range(3):
        w = WalkTrajectory.random(50.0, seed)
        assert w.poses(np.zeros(1)) == pytest.approx(np.zeros((1, 3)))
        v = np.diff(w.table[:, :2], axis=0) * w.rate_hz
        rms = math.degrees(float(np.sqrt((v**2).sum(axis=1).mean())))
        assert rms == pytest.approx(50.0, rel=0.1)
        # periodic: wrapping does not jump
        assert np.abs(w.poses([w.period_s]) - w.poses([0.0])).max() < 1e-9
    # blur of 8 ms frames at 1080p (f = 2304 px), shake 50 deg/s: a wide spread
    w = WalkTrajectory.random(50.0, 7)
    blurs = []
    for k in range(60):
        t = k / 30 + np.linspace(0, 0.008, 64)
        q = w.poses(t)[:, :2] * 2304.0
        blurs.append(float(np.linalg.norm(q[:, None] - q[None], axis=-1).max()))
    assert np.percentile(blurs, 10) < 10 and np.percentile(blurs, 90) > 17
    a, b = WalkTrajectory.random(25.0, 3), WalkTrajectory.random(25.0, 3)
    assert np.array_equal(a.table, b.table)


def test_walk_burst_and_defocus() -> None:
    base = SimParams(seed=4, shake_model="walk", noise=False, **SMALL)  # type: ignore[arg-type]
    sharp = simulate_burst(base)
    soft = simulate_burst(SimParams(**{**base.to_json(), "defocus_px": 3.0}))
    k0, k1 = sharp.psfs[0], soft.psfs[0]
    assert k1.shape[0] == k0.shape[0] + 8 and k1.sum() == pytest.approx(1.0, abs=1e-5)

    def grad(img: np.ndarray) -> float:
        g = img.astype(np.float32)
        return float(np.abs(np.diff(g, axis=1)).mean())

    assert grad(soft.burst.frames[0]) < 0.8 * grad(sharp.burst.frames[0])
    assert np.array_equal(soft.truth[0], sharp.truth[0])  # the truth stays in focus


def test_bad_options_raise() -> None:
    with pytest.raises(SimulationError):
        SimParams(rolling_shutter_ms=-1.0)
    with pytest.raises(SimulationError):
        SimParams(shake_model="jog")  # type: ignore[arg-type]
    with pytest.raises(SimulationError):
        SimParams(defocus_px=100.0)
    with pytest.raises(SimulationError):
        SimParams.from_json({"isp": {"codec": "mpeg"}})


def test_simulate_command_line_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deblurd.cli import main

    out = tmp_path / "b"
    args = ["simulate", str(out), "--width", "96", "--height", "64", "--frames", "3"]
    args += ["--isp", "--rolling-shutter", "15", "--flicker", "2", "--defocus", "1.5"]
    args += ["--shake-model", "walk", "--exposure", "16", "--seed", "4"]
    assert main(args) == 0
    p = read_truth(out).params
    assert p.isp is not None and p.isp.mosaic
    assert (p.rolling_shutter_ms, p.flicker, p.defocus_px) == (15.0, 0.02, 1.5)
    assert p.shake_model == "walk" and p.ring_exposure_us == 16000 and p.ring_gain == 2.0
    assert "rolling shutter 15 ms" in capsys.readouterr().out


def test_sim_camera_as_a_real_camera() -> None:
    import time

    from deblurd.camera.sim import SimCamera
    from deblurd.settings.camera import SimCameraSection, SimCameraSettings

    cfg = SimCameraSection(
        width=160,
        height=120,
        sim=SimCameraSettings(
            seed=2,
            shake=10.0,
            isp="typical",
            rolling_shutter_ms=15.0,
            flicker=0.03,
            shake_model="walk",
            defocus_px=1.0,
        ),
    )
    cam = SimCamera(cfg)
    assert cam.params.isp is not None and cam.params.rolling_shutter_ms == 15.0
    got: list[tuple[np.ndarray, int]] = []
    cam.start(lambda frame, meta: got.append((frame.copy(), meta.frame_number)))
    try:
        end = time.monotonic() + 10.0
        while len(got) < 4 and time.monotonic() < end:
            time.sleep(0.01)
    finally:
        cam.stop()
    assert len(got) >= 4
    for frame, number in got[1:4]:
        assert frame.dtype == np.uint8 and frame.shape == (120, 160, 3)
        truth = cam.truth_for(number)
        # same view, brightness and tone curve; blur (which raises the mean of sRGB codes:
        # the curve is concave), JPEG, sharpening and noise apart
        assert abs(float(frame.mean()) - float(truth.mean())) < 4.0
        err = frame.astype(np.float64) - truth
        assert 10 * np.log10(255**2 / np.mean(err**2)) > 20
    # the brightness wobbles smoothly in time at the configured RMS
    logs = np.log([cam._brightness_at(t) for t in np.linspace(0.0, 60.0, 3000)])
    assert float(np.std(logs)) == pytest.approx(0.03, rel=0.35)


def test_camera_truth_re_renders_the_frames_own_truth() -> None:
    # slow path, rolling shutter, subject, flicker: the re-rendered linear truth is the one
    # simulate_burst tone-mapped, bit for bit
    isp = IspParams.typical()
    params = SimParams(
        seed=6, isp=isp, flicker=0.04, shake=40.0, rolling_shutter_ms=20.0, subject=True,
        width=96, height=64, ring_frames=3, extra_frames=1,
    )  # fmt: skip
    sim = simulate_burst(params)
    brightness = _brightness(params)
    assert brightness.std() > 0  # the flicker is on
    for i in range(4):
        assert np.array_equal(tone_map(_linear_truth(sim, i), isp, brightness[i]), sim.truth[i])
    with pytest.raises(SimulationError):
        camera_truth(sim, 4)


def test_camera_truth_is_the_cameras_noiseless_look() -> None:
    isp = dataclasses.replace(IspParams.typical(), sharpen=1.5)
    params = SimParams(seed=5, isp=isp, flicker=0.04, shake=3.0, **SMALL)  # type: ignore[arg-type]
    sim = simulate_burst(params)
    i = params.trigger
    cam = camera_truth(sim, i)
    assert cam.dtype == np.uint8 and cam.shape == (120, 160, 3)
    assert np.array_equal(cam, camera_truth(sim, i))  # deterministic, noiseless
    # the ISP's sharpening and demosaic show: on a textured scene it is not the tone truth
    diff = np.abs(cam.astype(np.int16) - sim.truth[i].astype(np.int16))
    assert float(diff.mean()) > 3.0 and int(diff.max()) > 50
    # same brightness as the tone truth (the same tone curve and flicker)
    assert abs(float(cam.mean()) - float(sim.truth[i].mean())) < 1.5
    # aligned with frame i: closer to it than to a 2 px shifted copy, closer than nothing
    frame = sim.burst.frames[i]
    shifted = np.roll(frame, 2, axis=1)
    assert psnr(cam[:, 4:-4], frame[:, 4:-4]) > psnr(cam[:, 4:-4], shifted[:, 4:-4]) + 2.0
    assert psnr(cam, frame) > psnr(np.full_like(cam, 128), frame) + 10.0

    # with sharpening on, the camera look is sharper than the tone truth: more gradient energy
    def grad(x: np.ndarray) -> float:
        g = x.astype(np.float64).mean(axis=2)
        return float(np.abs(np.diff(g, axis=1)).mean())

    assert grad(cam) > grad(sim.truth[i])


def test_camera_truth_is_the_tone_truth_on_a_flat_scene_and_needs_an_isp() -> None:
    flat = np.full((120, 160, 3), 0.18, np.float32)
    isp = dataclasses.replace(IspParams.typical(), sharpen=1.5)
    sim = simulate_burst(SimParams(seed=5, isp=isp, **SMALL), flat)  # type: ignore[arg-type]
    for i in (0, 2):
        diff = np.abs(camera_truth(sim, i).astype(np.int16) - sim.truth[i].astype(np.int16))
        assert int(diff.max()) <= 1
    plain = simulate_burst(SimParams(seed=5, **SMALL))  # type: ignore[arg-type]
    with pytest.raises(SimulationError, match="no camera ISP"):
        camera_truth(plain, 0)
