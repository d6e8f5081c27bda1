"""The simulated handheld camera: the burst simulator (``deblurd.sim``), rendered live.

A sensor that runs forever: sensor frame ``k`` starts at ``V_k`` on the sensor clock and
lasts ``max(1/fps, exposure + 0.5 ms)`` (a long exposure lowers the frame rate, as on
Argus), is rendered with the simulator's cheap path (one warp at the mean pose convolved
with the exposure's PSF, :mod:`deblurd.sim.render`) and exposed by the sensor model of
:mod:`deblurd.sim.sensor` (Gaussian shot + read noise, gain, clipping, sRGB, 8 bits).

**Clocks.** Rendering a 720p frame costs ~35–45 ms here (more at 1080p), so the renderer
cannot always keep up with the configured frame rate. Two honest ways out:

* ``realtime = true``: the sensor clock *is* ``time.monotonic_ns``. The camera renders the
  latest sensor frame that has started, delivers it once its exposure has ended, and
  skips the frames it had no time for: they show up as gaps in ``frame_number``, exactly
  as frames dropped by a real camera.
* ``realtime = false`` (default): every sensor frame is rendered (numbers without gaps,
  timestamps exactly ``1/fps`` apart). When the renderer keeps up, the sensor clock runs
  with the wall clock; when it falls behind, the simulated world slows down: the sensor
  clock lags the wall clock by a growing ``lag`` (:meth:`SimCamera.sensor_clock_ns` maps
  a wall-clock instant to sensor time, for timestamping triggers).

**Exposure requests** take effect ``camera.latency_frames`` sensor frames after the frame
in progress when they are made; each frame's metadata reports what that frame used (gain
clamped to the sensor's range). **Noise** comes from a bank of standard normals drawn once
and sliced at a random offset per frame (≈3× cheaper than drawing; values within a frame
are independent). **Faults** (``camera.sim.faults``) drop frames, stall once, die (and
come back), ignore exposure requests, or step the metadata timestamps back (a sensor
clock that jumps backwards; the frames themselves are unchanged). **Ground truth** of the last
``camera.sim.truth_frames`` frames is re-rendered on demand by :meth:`SimCamera.truth_for`
(noiseless, sharp, at the frame's mean pose: the simulator's definition).

**A real camera** (``camera.sim``: ``isp``, ``rolling_shutter_ms``, ``flicker``,
``shake_model``, ``defocus_px``; all off by default): frames go through the camera
pipeline of :mod:`deblurd.sim.isp` (noise drawn per photosite, not from the bank; about
twice the render cost), rows are read out over ``rolling_shutter_ms``, the brightness
wobbles smoothly in time (0.3–3 Hz, ``flicker`` RMS) while the metadata stays, the
shake follows the chosen model, and a defocus disk blurs on top. The truth of a frame
then has the frame's rolling-shutter geometry, tone curve and brightness.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import numpy as np

from deblurd.camera.base import CameraError, FrameCallback, FrameMeta
from deblurd.camera.thread import ThreadedCamera
from deblurd.errors import ConfigError, SimulationError
from deblurd.imaging import F32, U8, linear_to_srgb
from deblurd.settings.camera import SimCameraSection
from deblurd.sim.burst import make_renderer
from deblurd.sim.isp import camera_frame, isp_by_name, tone_map
from deblurd.sim.kernels import defocus_kernel
from deblurd.sim.params import SimParams
from deblurd.sim.render import Exposure, ExposureStats, ShakeRenderer, convolve
from deblurd.sim.scene import load_scene
from deblurd.sim.sensor import SensorModel
from deblurd.sim.trajectory import random_sines

log = logging.getLogger(__name__)

_GAP_NS = 500_000  # blanking beyond the exposure when the exposure sets the frame period
_LAG_HISTORY = 1024


_LUT_SCALE = 65535.0
# Linear [0, 1] quantised to 16 bits (bin centres) -> 8-bit sRGB: one table lookup instead
# of pow/round passes; differs from ``linear_to_srgb`` by 1 code on ~0.1 % of pixels.
_SRGB_LUT: U8 = linear_to_srgb((np.arange(65536, dtype=np.float64) + 0.5) / _LUT_SCALE)


def expose_with_bank(
    sensor: SensorModel,
    radiance: F32,
    exposure_us: float,
    gain: float,
    z: F32 | None,
) -> U8:
    """An 8-bit sRGB frame ``uint8 (H, W, 3)`` of linear ``radiance`` ``float32 (H, W, 3)``:
    the sensor model's Gaussian path (``SensorModel.expose(..., approximate=True)``: shot +
    read noise of variance ``λ + σr²`` electrons, gain, clipping) with the standard normals
    ``z`` (same shape) supplied by the caller; ``z`` None: noiseless."""
    to_code = np.float32(gain / sensor.full_well_e * _LUT_SCALE)
    lam = radiance * np.float32(sensor.electrons_at_white(exposure_us))
    np.maximum(lam, 0.0, out=lam)
    if z is None:
        out = lam
    else:
        out = lam + np.float32(sensor.read_noise_e**2)
        np.sqrt(out, out=out)
        out *= z
        out += lam
    out *= to_code
    np.clip(out, 0.0, _LUT_SCALE, out=out)
    codes: U8 = np.take(_SRGB_LUT, out.astype(np.uint16))
    return codes


class SimCamera(ThreadedCamera):
    """The simulated camera (module docstring). ``settings``: the camera section (size,
    fps, preview exposure/gain, ``latency_frames``, ``sim``). ``scene``: a linear
    ``float32 (H, W, 3)`` scene overriding ``sim.scene`` (tests). ``renderer_factory``:
    makes the renderer from the parameters and scene (default
    :func:`deblurd.sim.burst.make_renderer`); tests inject one of known cost, so that what
    depends on the renderer's speed is tested without depending on the machine's."""

    name = "sim"
    settings: SimCameraSection

    def __init__(
        self,
        settings: SimCameraSection,
        scene: F32 | None = None,
        renderer_factory: Callable[[SimParams, F32 | None], ShakeRenderer] = make_renderer,
    ) -> None:
        super().__init__()
        self.settings = settings
        sim = settings.sim
        try:
            self.params = SimParams(
                width=settings.width,
                height=settings.height,
                fps=settings.fps,
                ring_exposure_us=settings.exposure_us,
                ring_gain=settings.analogue_gain,
                shake=sim.shake,
                subject=sim.subject,
                seed=sim.seed,
                noise=sim.noise,
                fast=True,
                isp=isp_by_name(sim.isp, sim.seed),
                flicker=sim.flicker,
                rolling_shutter_ms=sim.rolling_shutter_ms,
                shake_model=sim.shake_model,
                defocus_px=sim.defocus_px,
            )
        except SimulationError as exc:
            raise ConfigError(f"camera: the sim camera cannot run these settings: {exc}") from exc
        self._disk = defocus_kernel(sim.defocus_px) if sim.defocus_px > 0 else None
        self._flicker = random_sines(
            np.random.default_rng([sim.seed, 9]), 6, (0.3, 3.0), rms_value=1.0
        )
        self._previous: U8 | None = None  # last frame handed over (H.264-like skips)
        self._scene = scene
        self._renderer_factory = renderer_factory
        self.sensor = self.params.sensor()
        self._period_ns = round(1e9 / settings.fps)
        self._lock = threading.Lock()
        self._renderer: ShakeRenderer | None = None
        self._bank: F32 | None = None
        self._rng = np.random.default_rng([sim.seed, 7])
        self._fault_rng = np.random.default_rng([sim.seed, 8])
        self._preview = (settings.exposure_us, settings.analogue_gain)
        self._active = self._preview
        self._pending: list[tuple[int, int, float]] = []  # (from frame, exposure µs, gain)
        self._slot = 0  # next sensor frame number
        self._next_start_ns = 0  # its start on the sensor clock
        self._clock0_ns = 0  # sensor time of frame 0 (trajectory time 0)
        self._lag_walls: list[int] = [0]  # wall times at which the lag changed …
        self._lag_values: list[int] = [0]  # … and its new values, ns
        self._last_delivery_ns = 0
        self._dead = False
        self._stalled = False
        self._died = False
        self._stats: OrderedDict[int, ExposureStats] = OrderedDict()
        self.frames_delivered = 0
        self.frames_skipped = 0
        self.callback_errors = 0
        self.requests: list[tuple[int, float]] = []  # every request_exposure, in order

    # -- CameraBackend ------------------------------------------------------------------
    def start(self, on_frame: FrameCallback) -> None:
        self._refuse_if_started()
        self._renderer = self._make_renderer()
        if self.params.noise:
            n = self.settings.height * self.settings.width * 3
            bank_n = max(2 * n, n + (1 << 22))
            self._bank = self._rng.standard_normal(bank_n, dtype=np.float32)
        now = time.monotonic_ns()
        self._clock0_ns = self._next_start_ns = now
        self._last_delivery_ns = now
        self._start_thread(on_frame)

    def stop(self) -> None:
        self._stop_thread()

    def request_exposure(self, exposure_us: int, analogue_gain: float) -> None:
        if exposure_us <= 0 or analogue_gain <= 0:
            raise CameraError(f"bad exposure request: {exposure_us} µs at gain {analogue_gain}")
        with self._lock:
            self.requests.append((exposure_us, analogue_gain))
            if self.settings.sim.faults.ignore_exposure:
                return
            # The frame in progress is _slot (rendering or waiting): it keeps its settings.
            at = self._slot + self.settings.latency_frames
            self._pending.append((at, int(exposure_us), float(analogue_gain)))

    def restore_preview(self) -> None:
        self.request_exposure(*self._preview)

    def alive(self) -> bool:
        if self._thread is None or self._dead:
            return False
        quiet_ns = time.monotonic_ns() - self._last_delivery_ns
        return quiet_ns < max(2.0, 10.0 / self.settings.fps) * 1e9

    def sensor_clock_ns(self, monotonic_ns: int | None = None) -> int:
        wall = time.monotonic_ns() if monotonic_ns is None else monotonic_ns
        with self._lock:
            i = bisect.bisect_right(self._lag_walls, wall) - 1
            return wall - self._lag_values[max(i, 0)]

    # -- ground truth -------------------------------------------------------------------
    def stats_for(self, frame_number: int) -> ExposureStats:
        """What the simulator knows of a recent frame (mean pose, blur extent in px …).
        Raises :class:`CameraError` for a frame not delivered or no longer remembered."""
        with self._lock:
            stats = self._stats.get(frame_number)
        if stats is None:
            raise CameraError(f"sim camera: no ground truth for frame {frame_number}")
        return stats

    def truth_for(self, frame_number: int) -> U8:
        """The ground truth of a recent frame: ``uint8 (H, W, 3)`` sRGB, noiseless and
        sharp at the frame's mean pose (camera and subject). Raises :class:`CameraError`
        when the frame is not remembered."""
        stats = self.stats_for(frame_number)
        if self._renderer is None:
            raise CameraError("sim camera: not started")
        if self.params.rolling_shutter_ms > 0:  # the frame's rolling-shutter geometry
            truth = self._exposure(self._renderer, stats.t_start_s, stats.exposure_s).truth
        else:
            truth, _ = self._renderer.render_truth(stats.mean_pose, stats.subject_pose)
        bright = self._brightness_at(stats.t_start_s)
        if self.params.isp is not None:
            return tone_map(truth, self.params.isp, bright)
        if bright != 1.0:
            truth = truth * np.float32(bright)
        return linear_to_srgb(truth)  # radiance at the preview's brightness reference

    def _brightness_at(self, t_s: float) -> float:
        """The flicker factor of a frame that starts at ``t_s`` (trajectory time, s)."""
        rms = self.params.flicker_rms
        if rms <= 0:
            return 1.0
        return float(np.exp(rms * self._flicker.value(np.array([t_s]))[0]))

    def _exposure(self, renderer: ShakeRenderer, t_s: float, exposure_s: float) -> Exposure:
        readout_s = self.params.rolling_shutter_ms * 1e-3
        if readout_s > 0:
            return renderer.render(t_s, exposure_s, fast=True, readout_s=readout_s)
        return renderer.render(t_s, exposure_s, fast=True)

    # -- internals ----------------------------------------------------------------------
    def _make_renderer(self) -> ShakeRenderer:
        scene = self._scene
        if scene is None and self.settings.sim.scene is not None:
            try:
                scene = load_scene(self.settings.sim.scene)
            except SimulationError as exc:
                raise CameraError(f"camera.sim.scene: {exc}") from exc
        try:
            return self._renderer_factory(self.params, scene)
        except SimulationError as exc:
            raise CameraError(f"sim camera: {exc}") from exc

    def _settings_for(self, frame: int) -> tuple[int, float]:
        """Exposure and gain of sensor frame ``frame`` (applies due requests). Lock held."""
        while self._pending and self._pending[0][0] <= frame:
            _, exposure, gain = self._pending.pop(0)
            gain = min(max(gain, self.sensor.min_gain), self.sensor.max_gain)
            self._active = (exposure, gain)
        return self._active

    def _frame_period_ns(self, exposure_us: int) -> int:
        return max(self._period_ns, exposure_us * 1000 + _GAP_NS)

    def _advance(self, exposure_us: int) -> None:
        """Move to the next sensor frame. Lock held."""
        self._next_start_ns += self._frame_period_ns(exposure_us)
        self._slot += 1

    def _skip_to(self, sensor_now_ns: int) -> None:
        """Skip sensor frames that ended before ``sensor_now_ns``: after a stall, a death,
        or (realtime) a slow render. Lock held."""
        while True:
            exposure, _ = self._settings_for(self._slot)
            if self._next_start_ns + self._frame_period_ns(exposure) > sensor_now_ns:
                return
            self._advance(exposure)
            self.frames_skipped += 1

    def _set_lag(self, wall_ns: int, lag_ns: int) -> None:
        with self._lock:
            self._lag_walls.append(wall_ns)
            self._lag_values.append(lag_ns)
            if len(self._lag_walls) > _LAG_HISTORY:
                del self._lag_walls[0], self._lag_values[0]

    def _sleep_until(self, wall_ns: int) -> bool:
        """Sleep until ``wall_ns`` (monotonic, ns); False when stopped meanwhile."""
        left = (wall_ns - time.monotonic_ns()) * 1e-9
        return not self._stop.wait(left) if left > 0 else not self._stop.is_set()

    def _faults(self, frame: int) -> Literal["deliver", "drop", "paused"]:
        """Apply the faults due at ``frame``: deliver it, drop it (a gap in frame numbers),
        or ``paused`` (the camera stalled or died and has skipped to the present since)."""
        faults = self.settings.sim.faults
        if faults.die_at_frame is not None and frame >= faults.die_at_frame and not self._died:
            self._died = self._dead = True
            log.warning("sim camera: dying at frame %d (fault injection)", frame)
            if faults.revive_after_s is None:
                self._stop.wait()
                return "paused"
            if self._sleep_until(time.monotonic_ns() + round(faults.revive_after_s * 1e9)):
                self._dead = False
                self._resync()
            return "paused"
        stall = faults.stall_at_frame
        if stall is not None and frame >= stall and not self._stalled:
            self._stalled = True
            log.warning(
                "sim camera: stalling %.2f s at frame %d (fault injection)", faults.stall_s, frame
            )
            self._sleep_until(time.monotonic_ns() + round(faults.stall_s * 1e9))
            self._resync()
            return "paused"
        p = faults.drop_probability
        return "drop" if p > 0 and self._fault_rng.random() < p else "deliver"

    def _resync(self) -> None:
        """After a pause in real time, skip the sensor frames that passed meanwhile."""
        wall = time.monotonic_ns()
        with self._lock:
            now = wall - self._lag_values[-1]
            self._skip_to(now)

    def _run(self, on_frame: FrameCallback) -> None:
        realtime = self.settings.sim.realtime
        try:
            while not self._stop.is_set():
                wall = time.monotonic_ns()
                with self._lock:
                    if realtime:
                        self._skip_to(wall)
                    frame = self._slot
                    start = self._next_start_ns
                    exposure, gain = self._settings_for(frame)
                fate = self._faults(frame)
                if fate == "drop":
                    with self._lock:
                        self._advance(exposure)
                        self.frames_skipped += 1
                if fate != "deliver":
                    continue
                image, stats = self._render(frame, start, exposure, gain)
                # A real sensor delivers a frame once its exposure has ended.
                due = start + exposure * 1000 + self._lag_values[-1]
                ready = time.monotonic_ns()
                if ready > due and not realtime:
                    self._set_lag(ready, self._lag_values[-1] + ready - due)
                elif not self._sleep_until(due):
                    break
                jump_at = self.settings.sim.faults.timestamp_jump_at_frame
                if jump_at is not None and frame >= jump_at:  # fault: clock went back
                    stamp = start - round(self.settings.sim.faults.timestamp_jump_s * 1e9)
                else:
                    stamp = start
                meta = FrameMeta(frame, stamp, exposure, gain)
                with self._lock:
                    self._stats[frame] = stats
                    while len(self._stats) > self.settings.sim.truth_frames:
                        self._stats.popitem(last=False)
                    self._advance(exposure)
                self._last_delivery_ns = time.monotonic_ns()
                self.frames_delivered += 1
                try:
                    on_frame(image, meta)
                except Exception:  # the consumer's bug must not kill the camera
                    self.callback_errors += 1
                    if self.callback_errors == 1 or self.callback_errors % 1000 == 0:
                        log.exception("sim camera: frame callback failed")
        except Exception:
            log.exception("sim camera: the render thread failed")
            self._dead = True

    def _render(
        self, frame: int, start_ns: int, exposure_us: int, gain: float
    ) -> tuple[U8, ExposureStats]:
        renderer = self._renderer
        if renderer is None:
            raise CameraError("sim camera: not started")
        t_s = (start_ns - self._clock0_ns) * 1e-9
        exp = self._exposure(renderer, t_s, exposure_us * 1e-6)
        blurred = exp.blurred if self._disk is None else convolve(exp.blurred, self._disk)
        bright = self._brightness_at(t_s)
        if self.params.isp is not None:
            rng = (
                np.random.default_rng([self.params.seed, 10, frame]) if self.params.noise else None
            )
            image = camera_frame(
                blurred,
                self.params.isp,
                self.sensor,
                exposure_us,
                gain,
                rng,
                brightness=bright,
                previous=self._previous,
            )
            self._previous = image
            return image, exp.stats
        if bright != 1.0:
            blurred = blurred * np.float32(bright)
        z: F32 | None = None
        if self._bank is not None:
            n = blurred.size
            off = int(self._rng.integers(0, self._bank.size - n + 1))
            z = self._bank[off : off + n].reshape(blurred.shape)
        return expose_with_bank(self.sensor, blurred, exposure_us, gain, z), exp.stats
