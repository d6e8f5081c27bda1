"""Camera shake of a handheld camera: a smooth random rotation over time.

The camera only rotates (a hand shakes the camera by a fraction of a degree; the
translation of a few millimetres is negligible for anything farther than a metre), so a
view is a homography of the reference view: ``H = K R K⁻¹``.

**Pose** ``(yaw, pitch, roll)``, radians: the rotation that maps the reference view's
rays onto the current view's rays. To first order, scene content moves by
``(f·yaw, f·pitch)`` px (``f`` the focal length in px; +x right, +y down) and turns by
``roll`` about the principal point (positive: clockwise on screen, y pointing down).

**Motion model**: three bands, each a sum of random-phase sinusoids (smooth,
deterministic by seed). What blurs a short exposure is the angular *velocity*; what
moves the frames of a burst apart is the angular *displacement*; the bands split the two
as a real hand does:

* *tremor* (6–14 Hz, peak near 10 Hz): physiological hand tremor. It carries almost all
  the velocity (``shake_deg_s`` minus the little the slower bands have) but, being fast,
  a small displacement: RMS angle ≈ speed / (2π · 10 Hz), ≈ 0.45° at 30 deg/s (0.05–0.5°
  for calm to strong hands). It is elliptical in the yaw/pitch plane (a hand shakes
  mostly along one direction): a major component along a random direction and a minor
  one (``minor_ratio`` of it) across. Its amplitude is modulated by a slow log-normal
  envelope (0.2–1.2 Hz, ``envelope_sigma``), so some moments are calmer than others.
  Because the tremor oscillates, its speed passes through near zero at the turning
  points: some frames are almost sharp and their neighbours are not, as in real
  handheld bursts.
* *sway* (0.5–3 Hz): the arm and body swaying. Its components have equal
  *displacement* amplitudes (velocity ∝ frequency), so it moves the view by more than
  the tremor over a second but hardly blurs an exposure. RMS yaw/pitch angle
  ``sway_s · shake_deg_s`` (0.21° at 30 deg/s; its RMS speed ≈ 2 deg/s).
* *drift* (0.1–0.5 Hz): a slow wander of the aim, RMS angle ``drift_s · shake_deg_s``
  (0.3° at 30 deg/s, RMS speed ≈ 0.5 deg/s): nearly a constant rate over a burst.
* *roll*: the same three processes about the optical axis at ``roll_ratio`` of the
  yaw/pitch amplitude (roll blurs the corners, not the centre).

**Shake level** ``shake_deg_s``: the RMS angular speed of the yaw/pitch motion, deg/s,
all bands together (the tremor gets ``√(shake² − sway² − drift²)`` of it; the envelope is
normalised to unit mean square). All amplitudes scale with it; 0 is a tripod. The
image-plane speed at the centre is about ``shake · π/180 · f`` px/s, so an exposure
``T`` smears the centre over up to ``shake · π/180 · f · T`` px at RMS speed.

Measured over 40 seeds (``tools/bench_sim.py --motion-seeds 40``) at ``f`` = 1536 px
(1280 px wide, 45° field of view), 8 ms ring frames at 30 fps, 9 frames:

=========  ==========================  ===========================================
shake      blur extent, px             max pairwise displacement of frame centres
deg/s      median (5–95 %)             median (95 %), px and degrees
=========  ==========================  ===========================================
15         MEASURED_05                 EXC_05
30         MEASURED_10                 EXC_10
60         MEASURED_20                 EXC_20
=========  ==========================  ===========================================

The default 30 deg/s is a strong shake (one-handed, tapping the shutter): the regime
the burst method is for; a careful two-handed grip is a few deg/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from deblurd.errors import SimulationError

F64 = npt.NDArray[np.float64]
Pose = tuple[float, float, float]

_TREMOR_BAND_HZ = (8.0, 12.0)
_JITTER_BAND_HZ = (0.3, 1.5)
_ENVELOPE_BAND_HZ = (0.1, 0.5)
_SWAY_BAND_HZ = (0.5, 3.0)
_DRIFT_BAND_HZ = (0.1, 0.5)


@dataclass(frozen=True)
class Sines:
    """A sum of sinusoids ``Σ a·sin(2π f t + φ)``: ``freq_hz``, ``amp``, ``phase`` of shape (K,)."""

    freq_hz: F64
    amp: F64
    phase: F64

    def value(self, t_s: F64) -> F64:
        """Value at times ``t_s`` (N,) → (N,)."""
        arg = 2.0 * np.pi * np.outer(t_s, self.freq_hz) + self.phase
        out: F64 = np.sin(arg) @ self.amp
        return out

    def scaled(self, factor: float) -> Sines:
        return Sines(self.freq_hz, self.amp * factor, self.phase)

    def mean_square_speed(self) -> float:
        """Time-averaged square of the derivative, (units/s)²."""
        return float(np.sum((2.0 * np.pi * self.freq_hz * self.amp) ** 2) / 2.0)


def random_sines(
    rng: np.random.Generator,
    count: int,
    band_hz: tuple[float, float],
    *,
    rms_speed: float | None = None,
    rms_value: float | None = None,
    peak_hz: float | None = None,
    peak_width_hz: float = 3.0,
) -> Sines:
    """``count`` sinusoids with log-uniform frequencies in ``band_hz`` and random phases.

    Exactly one of ``rms_speed`` (RMS of the derivative, units/s: the components share
    the speed) or ``rms_value`` (RMS of the value: they share the displacement, so the
    speed grows with frequency) sets the scale. ``peak_hz`` weights the components by a
    Gaussian bump of standard deviation ``peak_width_hz`` around that frequency (over a
    floor of 0.3: a band-limited spectrum, like hand tremor's).
    """
    lo, hi = band_hz
    freq = np.exp(rng.uniform(math.log(lo), math.log(hi), count))
    phase = rng.uniform(0.0, 2.0 * np.pi, count)
    weight = rng.uniform(0.5, 1.0, count)
    if peak_hz is not None:
        weight = weight * (0.3 + np.exp(-0.5 * ((freq - peak_hz) / peak_width_hz) ** 2))
    weight = weight / math.sqrt(float(np.sum(weight**2)) / 2.0)  # unit RMS of the weighted sum
    if rms_speed is not None:
        amp = weight * rms_speed / (2.0 * np.pi * freq)
    elif rms_value is not None:
        amp = weight * rms_value
    else:
        raise SimulationError("random_sines needs rms_speed or rms_value")
    return Sines(freq, amp, phase)


import os
_EXP = {k: float(v) for k, v in (x.split("=") for x in os.environ.get("TREMOR", "").split(",") if x)}


@dataclass(frozen=True)
class ShakeTrajectory:
    """A handheld camera's rotation over time (see the module docstring for the model).

    Build with :meth:`random`; evaluate with :meth:`pose_at` (one time) or :meth:`poses`
    (vectorised). Times are seconds on any axis (the burst's first frame starts at 0).

    Fields: the tremor's carrier phase ``2π·tremor_hz·t + jitter(t)`` (rad), its
    amplitudes ``tremor_amp`` (major, minor, roll; rad) and phases ``tremor_phase``
    (rad), the major axis along ``direction_rad`` in the yaw/pitch plane, the envelope
    ``exp(σ·envelope(t) − σ²)`` (σ = ``envelope_sigma``); ``sway_*`` and ``drift_*``
    (rad) are added unmodulated.
    """

    shake_deg_s: float
    tremor_hz: float
    tremor_amp: tuple[float, float, float]
    tremor_phase: tuple[float, float, float]
    direction_rad: float
    jitter: Sines
    envelope: Sines
    envelope_sigma: float
    sway_yaw: Sines
    sway_pitch: Sines
    sway_roll: Sines
    drift_yaw: Sines
    drift_pitch: Sines
    drift_roll: Sines

    @classmethod
    def random(
        cls,
        shake_deg_s: float,
        seed: int,
        *,
        minor_ratio: float = 0.5,
        roll_ratio: float = 0.3,
        sway_s: float = 0.007,
        drift_s: float = 0.01,
        envelope_sigma: float = 0.6,
        jitter_hz: float = 0.7,
    ) -> ShakeTrajectory:
        """A trajectory with RMS yaw/pitch speed ``shake_deg_s`` (deg/s), by seed.

        ``minor_ratio``: the tremor's minor/major axis ratio. ``roll_ratio``: roll
        amplitude over yaw/pitch amplitude, every band. ``sway_s``/``drift_s``: RMS
        yaw/pitch angle of the sway/drift over ``shake_deg_s``, s (deg per deg/s).
        ``envelope_sigma``: log-standard deviation of the tremor's envelope.
        ``jitter_hz``: RMS wander of the tremor's frequency, Hz.
        """
        if not math.isfinite(shake_deg_s) or shake_deg_s < 0:
            raise SimulationError(f"shake must be a finite level ≥ 0 deg/s, got {shake_deg_s}")
        if seed < 0:
            raise SimulationError(f"seed must be ≥ 0, got {seed}")
        if min(minor_ratio, roll_ratio, sway_s, drift_s, envelope_sigma, jitter_hz) < 0:
            raise SimulationError("shake model ratios must be ≥ 0")
        rng = np.random.default_rng([seed, 1])
        speed = math.radians(shake_deg_s)
        # Slow bands: set by displacement (rad), each axis half the yaw/pitch variance.
        sway = math.radians(sway_s * shake_deg_s)
        drift = math.radians(drift_s * shake_deg_s)
        axis = 1.0 / math.sqrt(2.0)
        sway_yaw = random_sines(rng, 6, _SWAY_BAND_HZ, rms_value=sway * axis)
        sway_pitch = random_sines(rng, 6, _SWAY_BAND_HZ, rms_value=sway * axis)
        sway_roll = random_sines(rng, 6, _SWAY_BAND_HZ, rms_value=sway * roll_ratio)
        drift_yaw = random_sines(rng, 4, _DRIFT_BAND_HZ, rms_value=drift * axis)
        drift_pitch = random_sines(rng, 4, _DRIFT_BAND_HZ, rms_value=drift * axis)
        drift_roll = random_sines(rng, 4, _DRIFT_BAND_HZ, rms_value=drift * roll_ratio)
        slow_ms = sum(s.mean_square_speed() for s in (sway_yaw, sway_pitch, drift_yaw, drift_pitch))
        tremor = math.sqrt(max(speed * speed - slow_ms, 0.0))
        lo, hi = _EXP.get("lo", _TREMOR_BAND_HZ[0]), _EXP.get("hi", _TREMOR_BAND_HZ[1])
        f0 = float(rng.uniform(lo, hi))
        # A sinusoid of amplitude A at f0 has RMS speed 2π·f0·A/√2; major² + minor² = 1.
        major = math.sqrt(2.0) * tremor / (2.0 * math.pi * f0) / math.sqrt(1.0 + minor_ratio**2)
        amp = (major, major * minor_ratio, major * math.sqrt(1.0 + minor_ratio**2) * roll_ratio)
        ph = rng.uniform(0.0, 2.0 * np.pi, 3)
        direction = float(rng.uniform(0.0, np.pi))
        jitter = random_sines(rng, 3, _JITTER_BAND_HZ, rms_speed=2.0 * math.pi * jitter_hz)
        envelope = random_sines(rng, 4, (_EXP.get("elo", _ENVELOPE_BAND_HZ[0]), _EXP.get("ehi", _ENVELOPE_BAND_HZ[1])), rms_value=1.0)
        return cls(
            shake_deg_s=shake_deg_s,
            tremor_hz=f0,
            tremor_amp=amp,
            tremor_phase=(float(ph[0]), float(ph[1]), float(ph[2])),
            direction_rad=direction,
            jitter=jitter,
            envelope=envelope,
            envelope_sigma=envelope_sigma,
            sway_yaw=sway_yaw,
            sway_pitch=sway_pitch,
            sway_roll=sway_roll,
            drift_yaw=drift_yaw,
            drift_pitch=drift_pitch,
            drift_roll=drift_roll,
        )

    def poses(self, t_s: npt.ArrayLike) -> F64:
        """Poses at times ``t_s`` (N,) s → ``float64 (N, 3)``: yaw, pitch, roll in radians.
        The pose at ``t = 0`` is ``(0, 0, 0)`` (the burst starts at the reference view)."""
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        out: F64 = self._raw(t) - self._raw(np.zeros(1))
        return out

    def _raw(self, t: F64) -> F64:
        s = self.envelope_sigma
        env = np.exp(s * self.envelope.value(t) - s * s)  # log-normal, unit mean square
        carrier = 2.0 * np.pi * self.tremor_hz * t + self.jitter.value(t)
        a, b, r = (
            amp * np.sin(carrier + ph) * env
            for amp, ph in zip(self.tremor_amp, self.tremor_phase, strict=True)
        )
        c, d = math.cos(self.direction_rad), math.sin(self.direction_rad)
        out = np.empty((t.size, 3), dtype=np.float64)
        out[:, 0] = c * a - d * b + self.sway_yaw.value(t) + self.drift_yaw.value(t)
        out[:, 1] = d * a + c * b + self.sway_pitch.value(t) + self.drift_pitch.value(t)
        out[:, 2] = r + self.sway_roll.value(t) + self.drift_roll.value(t)
        return out

    def pose_at(self, t_s: float) -> Pose:
        """The pose ``(yaw, pitch, roll)`` in radians at time ``t_s`` (s)."""
        p = self.poses(np.array([t_s]))[0]
        return float(p[0]), float(p[1]), float(p[2])

    def samples(self, t0_s: float, t1_s: float, rate_hz: float = 1000.0) -> F64:
        """The trajectory sampled on ``[t0_s, t1_s]``: ``float64 (N, 4)`` rows
        ``(t_s, yaw, pitch, roll)``, angles in radians."""
        n = max(2, math.ceil((t1_s - t0_s) * rate_hz) + 1)
        t = np.linspace(t0_s, t1_s, n)
        return np.column_stack([t, self.poses(t)])


def intrinsics(focal_px: float, width: int, height: int) -> F64:
    """Camera matrix ``K`` (3, 3): focal ``focal_px`` px, principal point at the image
    centre ``((W−1)/2, (H−1)/2)`` (pixel centres at integer coordinates, as in OpenCV)."""
    return np.array(
        [[focal_px, 0.0, (width - 1) / 2.0], [0.0, focal_px, (height - 1) / 2.0], [0, 0, 1]],
        dtype=np.float64,
    )


def rotations(poses: npt.ArrayLike) -> F64:
    """Rotation matrices ``(N, 3, 3)`` of poses ``(N, 3)`` (yaw, pitch, roll; rad):
    ``R = Rz(roll) · Rx(pitch) · Ry(yaw)``, oriented so that positive yaw moves content
    to +x, positive pitch to +y (down), positive roll turns it clockwise on screen."""
    p = np.atleast_2d(np.asarray(poses, dtype=np.float64))
    yaw, pitch, roll = p[:, 0], p[:, 1], p[:, 2]
    n = p.shape[0]
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    zero, one = np.zeros(n), np.ones(n)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], axis=1).reshape(n, 3, 3)
    rx = np.stack([one, zero, zero, zero, cp, sp, zero, -sp, cp], axis=1).reshape(n, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], axis=1).reshape(n, 3, 3)
    out: F64 = rz @ rx @ ry
    return out


def homographies(poses: npt.ArrayLike, focal_px: float, width: int, height: int) -> F64:
    """``K R K⁻¹`` for poses ``(N, 3)`` → ``(N, 3, 3)``: maps reference-view pixels to the
    posed view's pixels (the forward map ``cv2.warpPerspective`` expects)."""
    k = intrinsics(focal_px, width, height)
    out: F64 = k @ rotations(poses) @ np.linalg.inv(k)
    return out


def homography(pose: Pose | npt.ArrayLike, focal_px: float, width: int, height: int) -> F64:
    """The homography ``K R K⁻¹`` (3, 3) of one pose (yaw, pitch, roll; rad) for a
    rotation-only camera of focal ``focal_px`` px and image size ``width × height`` px."""
    if focal_px <= 0 or width <= 0 or height <= 0:
        raise SimulationError(f"bad camera: focal {focal_px} px, size {width}x{height}")
    out: F64 = homographies(
        np.asarray(pose, dtype=np.float64).reshape(1, 3), focal_px, width, height
    )[0]
    return out
