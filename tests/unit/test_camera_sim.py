"""The simulated camera: clocks, exposure latency and truthful metadata, faults, truth."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from frame_recorder import streaming

from deblurd.camera.base import CameraError, FrameMeta
from deblurd.camera.sim import SimCamera, expose_with_bank
from deblurd.settings.camera import SimCameraSection, SimCameraSettings, SimFaultSettings
from deblurd.sim.burst import make_renderer
from deblurd.sim.params import SimParams
from deblurd.sim.render import ShakeRenderer
from deblurd.sim.sensor import SensorModel


class Recorder:
    """Collects delivered frames with their delivery time."""

    def __init__(self, keep_images: bool = True) -> None:
        self.lock = threading.Lock()
        self.frames: list[tuple[np.ndarray | None, FrameMeta, int]] = []
        self.keep = keep_images

    def __call__(self, frame: np.ndarray, meta: FrameMeta) -> None:
        with self.lock:
            self.frames.append((frame.copy() if self.keep else None, meta, time.monotonic_ns()))

    def metas(self) -> list[FrameMeta]:
        with self.lock:
            return [m for _, m, _ in self.frames]

    def wait(self, n: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while len(self.metas()) < n:
            if time.monotonic() > end:
                raise AssertionError(f"only {len(self.metas())} of {n} frames")
            time.sleep(0.005)


def settings(**sim: Any) -> SimCameraSection:
    faults = sim.pop("faults", {})
    top = {k: sim.pop(k) for k in ("fps", "latency_frames", "exposure_us") if k in sim}
    return SimCameraSection(
        width=160,
        height=120,
        **top,
        sim=SimCameraSettings(**sim, faults=SimFaultSettings(**faults)),
    )


@pytest.fixture
def run() -> Iterator[Any]:
    cams: list[SimCamera] = []

    def start(
        cfg: SimCameraSection, keep: bool = True, renderer: Any = make_renderer
    ) -> tuple[SimCamera, Recorder]:
        cam, rec = SimCamera(cfg, renderer_factory=renderer), Recorder(keep)
        cams.append(cam)
        cam.start(rec)
        return cam, rec

    yield start
    for cam in cams:
        cam.stop()


def test_frames_numbers_timestamps_and_metadata(run: Any) -> None:
    cam, rec = run(settings())
    rec.wait(12)
    cam.stop()
    metas = rec.metas()
    assert [m.frame_number for m in metas] == list(range(len(metas)))
    gaps = np.diff([m.timestamp_ns for m in metas])
    assert np.all(np.abs(gaps - 1e9 / 30) <= 1)
    assert all(m.exposure_us == 8000 and m.analogue_gain == 4.0 for m in metas)
    frame = rec.frames[0][0]
    assert frame is not None and frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    assert cam.size == (120, 160) and cam.fps == 30.0
    # delivered once the exposure ended, on the monotonic clock (it keeps up at this size)
    for _, m, delivered in rec.frames:
        assert delivered >= m.timestamp_ns + m.exposure_us * 1000
    assert not cam.alive()


def test_exposure_change_lands_latency_frames_later_and_keeps_brightness(run: Any) -> None:
    cam, rec = run(settings(latency_frames=3, shake=0.0))
    rec.wait(6)
    last_before = rec.metas()[-1].frame_number
    cam.request_exposure(24000, 99.0)  # gain clamped by the sensor: metadata says so
    last_after = rec.metas()[-1].frame_number
    rec.wait(last_after + 12)
    first_new = next(m.frame_number for m in rec.metas() if m.exposure_us == 24000)
    assert last_before + 1 + 3 <= first_new <= last_after + 1 + 3
    cam.request_exposure(24000, 32000 / 24000)
    rec.wait(first_new + 12)
    cam.restore_preview()
    rec.wait(first_new + 24)
    metas = rec.metas()
    kinds = [(m.exposure_us, m.analogue_gain) for m in metas]
    assert (24000, 16.0) in kinds and (24000, pytest.approx(4 / 3)) in kinds
    assert kinds[-1] == (8000, 4.0)  # restored
    # a 24 ms exposure at 4/3 gain has the preview's brightness (less noise, same mean)
    images = {(m.exposure_us, round(m.analogue_gain, 2)): f for f, m, _ in rec.frames}
    preview, long = images[(8000, 4.0)], images[(24000, 1.33)]
    assert preview is not None and long is not None
    assert abs(float(long.mean()) - float(preview.mean())) < 2.0
    bright = images[(24000, 16.0)]
    assert bright is not None and bright.mean() > preview.mean() + 20


def test_long_exposure_lowers_frame_rate(run: Any) -> None:
    cam, rec = run(settings(latency_frames=0))
    rec.wait(3)
    cam.request_exposure(50000, 1.0)
    rec.wait(len(rec.metas()) + 5)
    metas = [m for m in rec.metas() if m.exposure_us == 50000]
    gaps = np.diff([m.timestamp_ns for m in metas])
    assert len(gaps) >= 2 and np.all(gaps == 50_500_000)


def test_ignore_exposure_fault(run: Any) -> None:
    cam, rec = run(settings(latency_frames=1, faults={"ignore_exposure": True}))
    rec.wait(3)
    cam.request_exposure(20000, 1.6)
    rec.wait(len(rec.metas()) + 8)
    assert all(m.exposure_us == 8000 for m in rec.metas())
    assert cam.requests == [(20000, 1.6)]


def test_dropped_frames_leave_gaps_with_honest_timestamps(run: Any) -> None:
    cfg = settings(fps=120.0, exposure_us=4000, faults={"drop_probability": 0.4})
    cam, rec = run(cfg, keep=False)
    rec.wait(40)
    metas = rec.metas()
    numbers = np.array([m.frame_number for m in metas])
    assert np.all(np.diff(numbers) >= 1) and np.any(np.diff(numbers) > 1)
    t0 = metas[0].timestamp_ns - numbers[0] * round(1e9 / 120)
    assert all(m.timestamp_ns == t0 + m.frame_number * round(1e9 / 120) for m in metas)
    assert 0.2 < cam.frames_skipped / numbers[-1] < 0.6


def test_stall_then_resumes_skipping_the_lost_frames(run: Any) -> None:
    _, rec = run(settings(faults={"stall_at_frame": 5, "stall_s": 0.4}), keep=False)
    rec.wait(12)
    frames = rec.frames
    numbers = [m.frame_number for _, m, _ in frames]
    assert numbers[:5] == [0, 1, 2, 3, 4]
    i = numbers.index(next(n for n in numbers if n >= 5))
    assert (frames[i][2] - frames[i - 1][2]) * 1e-9 >= 0.35  # nothing during the stall
    assert numbers[i] - numbers[i - 1] >= 0.3 * 30  # the frames of the stall are gone


def test_dead_camera_and_revival(run: Any) -> None:
    cam, rec = run(settings(faults={"die_at_frame": 4, "revive_after_s": 0.5}), keep=False)
    rec.wait(4)
    time.sleep(0.1)
    assert not cam.alive() and len(rec.metas()) == 4
    rec.wait(8, timeout=5.0)
    assert cam.alive()
    assert rec.metas()[4].frame_number >= 4 + 10  # half a second of frames lost


def test_dead_camera_stays_dead(run: Any) -> None:
    cam, rec = run(settings(faults={"die_at_frame": 2}), keep=False)
    rec.wait(2)
    time.sleep(0.3)
    assert len(rec.metas()) == 2 and not cam.alive()
    t0 = time.monotonic()
    cam.stop()
    assert time.monotonic() - t0 < 2.0


RENDER_COST_S = 0.025  # the injected renderer takes at least this long per frame


def slow_renderer(params: SimParams, scene: Any) -> ShakeRenderer:
    """The real renderer, made to take at least ``RENDER_COST_S`` per frame: slower than
    any camera period below, on any machine (a slower machine only makes it slower)."""
    renderer = make_renderer(params, scene)
    render = renderer.render

    def costly(*args: Any, **kwargs: Any) -> Any:
        time.sleep(RENDER_COST_S)
        return render(*args, **kwargs)

    renderer.render = costly  # type: ignore[method-assign]
    return renderer


def test_realtime_skips_frames_it_cannot_render(run: Any) -> None:
    # a renderer slower than the 4.2 ms period (injected: not this machine's speed)
    cfg = settings(fps=240.0, exposure_us=2000, realtime=True)
    cam, rec = run(cfg, keep=False, renderer=slow_renderer)
    rec.wait(8)
    cam.stop()
    metas = rec.metas()
    numbers = np.array([m.frame_number for m in metas])
    period = round(1e9 / 240)
    t0 = metas[0].timestamp_ns - numbers[0] * period
    assert all(m.timestamp_ns == t0 + m.frame_number * period for m in metas)
    for _, m, delivered in rec.frames:  # the sensor clock is the wall clock
        assert m.timestamp_ns + m.exposure_us * 1000 <= delivered
    assert cam.sensor_clock_ns(12345) == 12345
    assert len(metas) < numbers[-1] - numbers[0] + 1  # gaps: it could not keep up


def test_non_realtime_slows_its_clock_instead() -> None:
    """A renderer slower than the frame period (injected: its cost does not depend on this
    machine's speed) renders every frame, keeps the timestamps exactly 1/fps apart, and the
    sensor clock falls behind the wall clock by what the renderer could not keep up with."""
    cfg = settings(fps=240.0, exposure_us=2000)
    period_ns = round(1e9 / 240)
    cam, rec = SimCamera(cfg, renderer_factory=slow_renderer), Recorder(keep_images=False)
    with streaming(cam, rec):
        rec.wait(12)
    metas = rec.metas()
    n = len(metas)
    assert [m.frame_number for m in metas] == list(range(n))  # none skipped
    assert np.all(np.diff([m.timestamp_ns for m in metas]) == period_ns)
    # Frame k cannot be delivered before (k + 1) renders: it ends (k period + exposure) after
    # the start on the sensor clock, so the clock lags by at least this much.
    lower_ns = n * RENDER_COST_S * 1e9 - (n - 1) * period_ns - 2000 * 1000
    lag = time.monotonic_ns() - cam.sensor_clock_ns()
    assert lag >= lower_ns > 0.2e9
    # A trigger timestamped with the camera's clock at the instant the newest frame was
    # delivered lands exactly at that frame's end of exposure (not `lag` after it).
    delivered_at = cam._lag_walls[-1]
    assert cam.sensor_clock_ns(delivered_at) == metas[-1].timestamp_ns + 2000 * 1000


def test_truth_is_the_noiseless_sharp_frame(run: Any) -> None:
    cam, rec = run(settings(shake=0.0, noise=False, truth_frames=5))
    rec.wait(8)
    frame, meta, _ = rec.frames[7]
    truth = cam.truth_for(meta.frame_number)
    assert frame is not None
    assert np.abs(frame.astype(int) - truth.astype(int)).max() <= 1
    with pytest.raises(CameraError, match="no ground truth"):
        cam.truth_for(0)  # only the last 5 frames are remembered
    assert cam.stats_for(meta.frame_number).blur_extent_px == pytest.approx(0.0, abs=1e-6)


def test_noise_and_shake_psnr_against_truth(run: Any) -> None:
    cam, rec = run(settings(shake=25.0, seed=3))
    rec.wait(10)
    residuals = []
    for frame, meta, _ in rec.frames[2:10]:
        assert frame is not None
        truth = cam.truth_for(meta.frame_number).astype(np.float64)
        err = frame.astype(np.float64) - truth
        psnr = 10 * np.log10(255**2 / np.mean(err**2))
        assert 15 < psnr < 45, psnr  # noisy and a little blurred, but the same view
        residuals.append(err.ravel())
    # the noise bank gives independent noise from frame to frame
    corr = np.corrcoef(residuals[0], residuals[1])[0, 1]
    assert abs(corr) < 0.3


def test_bank_noise_matches_the_sensor_model() -> None:
    sensor = SensorModel(ref_exposure_us=32000.0)
    flat = np.full((200, 200, 3), 0.18, np.float32)
    z = np.random.default_rng(0).standard_normal(flat.shape, dtype=np.float32)
    ours = expose_with_bank(sensor, flat, 8000, 4.0, z)
    ref = sensor.expose(flat, 8000, 4.0, np.random.default_rng(1), approximate=True)
    assert abs(ours.mean() - ref.mean()) < 0.2
    assert ours.std() == pytest.approx(ref.std(), rel=0.05)
    clean = expose_with_bank(sensor, flat, 8000, 4.0, None)
    assert np.abs(clean.astype(int) - sensor.expose(flat, 8000, 4.0, None).astype(int)).max() <= 1


def test_start_twice_and_bad_request(run: Any) -> None:
    cam, rec = run(settings())
    with pytest.raises(CameraError, match="already started"):
        cam.start(rec)
    with pytest.raises(CameraError, match="bad exposure"):
        cam.request_exposure(0, 1.0)
