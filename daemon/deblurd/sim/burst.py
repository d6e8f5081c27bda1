"""Simulated handheld bursts: the preview ring around a trigger, then optional extra
frames at a longer exposure, each with its ground truth, subject mask and PSF.

Timeline (honest sensor timestamps, start of exposure, ns; the first ring frame at 0):

* ring frame ``i`` starts at ``i / fps``; exposure ``ring_exposure_us`` at ``ring_gain``
  (the auto-exposed preview: ``exposure × gain`` is the brightness reference);
* the exposure switch takes ``exposure_switch_frames`` ring periods after the last ring
  frame (those frames carry neither the old nor the new settings for sure, and are not
  part of the burst);
* extra frame ``j`` then starts every ``max(1/fps, exposure + 0.5 ms)`` (a longer
  exposure than the frame period lowers the frame rate, as on Argus), at
  ``extra_exposure_us`` and the gain that keeps brightness (at least 1.0).

The burst directory is written with :func:`deblurd.burstdir.write_burst`; ground truth
lives beside it, never inside: ``<burst_dir>.truth/`` (see :mod:`deblurd.sim.truthdir`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deblurd.burstdir import Burst, FrameInfo, Role, frame_names
from deblurd.errors import SimulationError
from deblurd.imaging import F32Image, U8Image, linear_to_srgb
from deblurd.sim.render import ExposureStats, ShakeRenderer
from deblurd.sim.scene import fit_scene, procedural_scene
from deblurd.sim.sensor import SensorModel
from deblurd.sim.subject import Subject
from deblurd.sim.trajectory import F64, ShakeTrajectory

DEFAULT_SHAKE_DEG_S = 30.0
_EXTRA_GAP_US = 500  # minimum vertical blanking beyond the exposure when it sets the frame rate


@dataclass(frozen=True)
class SimParams:
    """Parameters of a simulated burst (units in the names or below).

    Defaults: a 1280×720 preview at 30 fps, 8 ms at gain 4 (a 32 ms·gain brightness
    reference), 9 ring frames with the trigger in the middle, strong handheld shake of
    30 deg/s RMS (with ``focal_px`` = 1.2 × width ≈ a 45° horizontal field of view, ring
    frames blur by ~1 px to ~8+ px, varying from frame to frame; see
    :mod:`deblurd.sim.trajectory`), no extra frames; when asked for, extra frames at
    32 ms (gain 1.0, same brightness, half the noise, 4× the blur) after a 6-frame
    exposure switch. Sensor noise per :mod:`deblurd.sim.sensor` (6000 e⁻ full well,
    2.5 e⁻ read noise).

    ``shake``: RMS yaw/pitch angular speed of the hand tremor, deg/s (0: tripod).
    ``subject``: a face-like subject moving on its own, at ``subject_speed`` frame
    heights/s RMS. ``noise``: False renders noiseless frames. ``max_substep_px``: the
    largest motion between two sub-steps of the exposure integral, px. ``fast``: the
    cheap render (one warp + PSF convolution, Gaussian shot noise). ``scene_margin``:
    spare scene around the view, fraction of the larger side.
    """

    width: int = 1280
    height: int = 720
    ring_frames: int = 9
    trigger_index: int | None = None
    fps: float = 30.0
    ring_exposure_us: int = 8000
    ring_gain: float = 4.0
    extra_frames: int = 0
    extra_exposure_us: int = 32000
    extra_gain: float | None = None
    exposure_switch_frames: int = 6
    shake: float = DEFAULT_SHAKE_DEG_S
    subject: bool = False
    subject_speed: float = 0.25
    seed: int = 0
    focal_px: float | None = None
    full_well_e: float = 6000.0
    read_noise_e: float = 2.5
    noise: bool = True
    max_substep_px: float = 0.5
    fast: bool = False
    scene_margin: float = 0.06

    def __post_init__(self) -> None:
        problems: list[str] = []

        def need(ok: bool, what: str) -> None:
            if not ok:
                problems.append(what)

        need(16 <= self.width <= 8192 and 16 <= self.height <= 8192,
             f"frame size {self.width}x{self.height} must be within 16..8192 px")  # fmt: skip
        need(1 <= self.ring_frames <= 1000, f"ring_frames {self.ring_frames} must be 1..1000")
        if self.trigger_index is not None:
            need(0 <= self.trigger_index < self.ring_frames,
                 f"trigger_index {self.trigger_index} must index a ring frame (0..{self.ring_frames - 1})")  # fmt: skip
        need(math.isfinite(self.fps) and 0 < self.fps <= 1000, f"fps {self.fps} must be in (0, 1000]")
        if math.isfinite(self.fps) and self.fps > 0:
            need(0 < self.ring_exposure_us <= 1e6 / self.fps,
                 f"ring_exposure_us {self.ring_exposure_us} must be positive and fit the "
                 f"frame period at {self.fps} fps ({1e6 / self.fps:.0f} µs)")  # fmt: skip
        need(1.0 <= self.ring_gain <= 64.0, f"ring_gain {self.ring_gain} must be 1..64")
        need(0 <= self.extra_frames <= 1000, f"extra_frames {self.extra_frames} must be 0..1000")
        need(0 < self.extra_exposure_us <= 1_000_000,
             f"extra_exposure_us {self.extra_exposure_us} must be in (0, 1e6]")  # fmt: skip
        if self.extra_gain is not None:
            need(1.0 <= self.extra_gain <= 64.0, f"extra_gain {self.extra_gain} must be 1..64")
        need(self.exposure_switch_frames >= 0, "exposure_switch_frames must be ≥ 0")
        need(math.isfinite(self.shake) and 0 <= self.shake <= 1000,
             f"shake {self.shake} deg/s must be in [0, 1000]")  # fmt: skip
        need(math.isfinite(self.subject_speed) and 0 <= self.subject_speed <= 100,
             f"subject_speed {self.subject_speed} must be in [0, 100] heights/s")  # fmt: skip
        need(self.seed >= 0, f"seed {self.seed} must be ≥ 0")
        if self.focal_px is not None:
            need(math.isfinite(self.focal_px) and self.focal_px > 0, f"focal_px {self.focal_px} must be > 0")
        need(self.full_well_e > 0 and self.read_noise_e >= 0,
             f"full_well_e {self.full_well_e} must be > 0 and read_noise_e {self.read_noise_e} ≥ 0")  # fmt: skip
        need(self.max_substep_px > 0, f"max_substep_px {self.max_substep_px} must be > 0")
        need(0 <= self.scene_margin <= 0.5, f"scene_margin {self.scene_margin} must be 0..0.5")
        if problems:
            raise SimulationError("bad simulation parameters: " + "; ".join(problems))

    @property
    def trigger(self) -> int:
        """The trigger's ring index (the middle one unless set)."""
        return self.ring_frames // 2 if self.trigger_index is None else self.trigger_index

    @property
    def focal(self) -> float:
        """Focal length, px (1.2 × width unless set)."""
        return 1.2 * self.width if self.focal_px is None else float(self.focal_px)

    def sensor(self) -> SensorModel:
        """The sensor model: the ring's exposure × gain is the brightness reference."""
        return SensorModel(
            full_well_e=self.full_well_e,
            read_noise_e=self.read_noise_e,
            ref_exposure_us=self.ring_exposure_us * self.ring_gain,
            max_gain=max(16.0, self.ring_gain),
        )

    def schedule(self) -> list[tuple[Role, int, int, float]]:
        """Every frame as ``(role, timestamp_ns, exposure_us, analogue_gain)``."""
        period_ns = round(1e9 / self.fps)
        out: list[tuple[Role, int, int, float]] = [
            ("ring", i * period_ns, self.ring_exposure_us, float(self.ring_gain))
            for i in range(self.ring_frames)
        ]
        gain = self.extra_gain if self.extra_gain is not None else self.sensor().gain_for(self.extra_exposure_us)
        extra_period_ns = max(period_ns, (self.extra_exposure_us + _EXTRA_GAP_US) * 1000)
        start = (self.ring_frames + self.exposure_switch_frames) * period_ns
        out += [
            ("extra", start + j * extra_period_ns, self.extra_exposure_us, float(gain))
            for j in range(self.extra_frames)
        ]
        return out

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> SimParams:
        """Parameters from :meth:`to_json`'s output; unknown or mistyped keys raise
        :class:`SimulationError`."""
        if not isinstance(doc, dict):
            raise SimulationError("simulation parameters must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise SimulationError(f"unknown simulation parameters: {', '.join(unknown)}")
        try:
            return cls(**doc)
        except TypeError as exc:
            raise SimulationError(f"bad simulation parameters: {exc}") from exc


@dataclass
class SimulatedBurst:
    """A simulated burst and everything known about it.

    ``burst``: frames ``uint8 (H, W, 3)`` sRGB and their :class:`FrameInfo`.
    ``truth``: per frame, the noiseless sharp view ``uint8 (H, W, 3)`` sRGB in that
    frame's geometry (mean pose over its exposure). ``subject_masks``: per frame
    ``uint8 (H, W)`` (255 where the subject is in the truth) or None without a subject.
    ``psfs``: per frame, the blur kernel at the frame centre ``float32 (k, k)`` summing
    to 1 (convolution convention, :mod:`deblurd.sim.render`). ``stats``: per frame
    :class:`ExposureStats` (mean pose, blur extent …). ``trajectory``: camera poses
    sampled at 1 kHz over the burst, ``float64 (N, 4)`` rows ``(t_s, yaw, pitch, roll)``
    (rad). ``renderer``: renders more views of the same scene (e.g. truth at any pose).
    """

    burst: Burst
    truth: list[U8Image]
    subject_masks: list[U8Image] | None
    psfs: list[F32Image]
    params: SimParams
    stats: list[ExposureStats]
    trajectory: F64
    renderer: ShakeRenderer

    @property
    def scene(self) -> F32Image:
        """The scene as rendered (linear ``float32``, view plus margin)."""
        return self.renderer.scene


def make_renderer(params: SimParams, scene: F32Image | None = None) -> ShakeRenderer:
    """The renderer of a simulation: ``scene`` (linear float32, any size; None: the
    procedural scene of ``params.seed``) fitted to the view plus margin, the shake
    trajectory and the subject (when ``params.subject``) of ``params.seed``."""
    h, w = params.height, params.width
    if scene is None:
        m = int(round(params.scene_margin * max(h, w)))
        fitted = procedural_scene(h + 2 * m, w + 2 * m, params.seed)
    else:
        fitted = fit_scene(scene, h, w, params.scene_margin)
    offset = ((fitted.shape[1] - w) // 2, (fitted.shape[0] - h) // 2)
    trajectory = ShakeTrajectory.random(params.shake, params.seed)
    subject = None
    if params.subject:
        subject = Subject.random(
            h, w, (float(offset[0]), float(offset[1])), params.seed,
            speed_heights_s=params.subject_speed,
        )  # fmt: skip
    return ShakeRenderer(fitted, w, h, trajectory, params.focal, subject)


def simulate_burst(params: SimParams, scene: F32Image | None = None) -> SimulatedBurst:
    """Simulate a handheld burst of ``scene`` (linear ``float32 (H, W, 3)``, any size, or
    None for the procedural scene). Deterministic: same parameters and scene → same
    bytes. Raises :class:`SimulationError` on parameters it cannot honour."""
    renderer = make_renderer(params, scene)
    sensor = params.sensor()
    frames: list[U8Image] = []
    infos: list[FrameInfo] = []
    truth: list[U8Image] = []
    masks: list[U8Image] = []
    psfs: list[F32Image] = []
    stats: list[ExposureStats] = []
    names = frame_names(params.ring_frames + params.extra_frames)
    for i, (role, ts_ns, exposure_us, gain) in enumerate(params.schedule()):
        exp = renderer.render(
            ts_ns * 1e-9, exposure_us * 1e-6, max_substep_px=params.max_substep_px, fast=params.fast
        )
        rng = np.random.default_rng([params.seed, 3, i]) if params.noise else None
        frames.append(sensor.expose(exp.blurred, exposure_us, gain, rng, approximate=params.fast))
        infos.append(FrameInfo(names[i], ts_ns, exposure_us, gain, role))
        truth.append(linear_to_srgb(exp.truth))
        if exp.mask is not None:
            masks.append(exp.mask)
        psfs.append(exp.psf)
        stats.append(exp.stats)
    end_s = (infos[-1].timestamp_ns + infos[-1].exposure_us * 1000) * 1e-9
    trajectory = renderer.trajectory.samples(0.0, end_s, 1000.0)
    burst = Burst(frames, infos, params.trigger, extra={"simulated": params.to_json()})
    return SimulatedBurst(
        burst=burst,
        truth=truth,
        subject_masks=masks if params.subject else None,
        psfs=psfs,
        params=params,
        stats=stats,
        trajectory=trajectory,
        renderer=renderer,
    )
