"""Camera shake of a handheld camera: a smooth random rotation over time.

The camera only rotates (a hand shakes the camera by a fraction of a degree; the
translation of a few millimetres is negligible for anything farther than a metre), so a
view is a homography of the reference view: ``H = K R K⁻¹``.

**Pose** ``(yaw, pitch, roll)``, radians: the rotation that maps the reference view's
rays onto the current view's rays. To first order, scene content moves by
``(f·yaw, f·pitch)`` px (``f`` the focal length in px; +x right, +y down) and turns by
``roll`` about the principal point (positive: clockwise on screen, y pointing down).

**Motion model.** What blurs a short exposure is the angular *velocity*; what moves the
frames of a burst apart is the angular *displacement*. A hand splits the two between
frequency bands, and so does the model (every band smooth and deterministic by seed;
amplitudes below at the default 25 deg/s, all proportional to the shake level):

* *Tremor*, 8–12 Hz: physiological hand tremor, a quasi-periodic oscillation at the
  hand's tremor frequency ``f₀`` (drawn per seed, uniform in 8–12 Hz) whose frequency
  wanders by ``jitter_hz`` RMS (0.7 Hz; the wander itself varies at 0.3–1.5 Hz). It
  carries almost all the velocity but, being fast, little displacement: RMS angle
  ``≈ v / (2π f₀)``, 0.4° at 25 deg/s and 10 Hz (amplitude 0.2–1° as the envelope
  goes, 5–95 %; for a calm hand, 0.05–0.2° at a few deg/s). It is elliptical in
  the yaw/pitch plane (a hand shakes mostly along one direction): a major axis along a
  random direction and a minor one ``minor_ratio`` (0.25) of it, at a random phase
  offset. Its amplitude follows a slow log-normal envelope ``exp(σ·e(t) − σ²)``
  (``e`` a unit-RMS sum of sinusoids at 0.2–1.0 Hz, σ = ``envelope_sigma`` = 0.5: unit
  mean square), so some moments are calmer than others. Because the tremor oscillates,
  its speed passes through near zero at the turning points: within a burst some frames
  are almost sharp and their neighbours are not, as in real handheld bursts.
* *Sway*, 0.5–3 Hz: arm and body. Its components share the *displacement* (velocity
  ∝ frequency): RMS yaw/pitch angle ``sway_s · shake`` (0.005 s → 0.125°), RMS speed
  about 1.2 deg/s: it moves the view over a second but hardly blurs an exposure.
* *Drift*, 0.1–0.5 Hz: a slow wander of the aim, RMS angle ``drift_s · shake``
  (0.01 s → 0.25°, RMS speed about 0.4 deg/s): nearly a constant rate over a burst.
* *Roll*: each band again about the optical axis at ``roll_ratio`` (0.3) of the
  yaw/pitch amplitude (roll blurs the corners, not the centre).

**Shake level** ``shake_deg_s``: the RMS angular speed of the yaw/pitch motion, deg/s,
all bands together (the tremor gets ``√(shake² − sway² − drift²)`` of it, sway and
drift speeds as RMS). 0 is a tripod. The image-plane speed at the centre is about
``shake · π/180 · f`` px/s, so an exposure ``T`` smears the centre over up to
``shake · π/180 · f · T`` px at RMS speed.

Measured over 200 seeds (``tools/bench_sim.py --no-timing --motion-seeds 200``),
``f`` = 1536 px (1280 px wide, 45° field of view), 9 ring frames of 8 ms at 30 fps.
*Blur*: diameter of the frame centre's path during the exposure, px, pooled over frames
(and the median of each burst's sharpest and most blurred frame). *Excursion*: per
burst, the largest distance between two ring frames' centres at their mean poses.

======  ===========================  ===========  ===============  ==============
shake   blur px: median (5–95 %)     burst min,   excursion px:    in degrees
deg/s                                max          median, 95 %     median, 95 %
======  ===========================  ===========  ===============  ==============
12.5    1.8 (0.4–4.9)                0.5, 2.9     12, 26           0.44, 0.98
25      3.5 (0.8–9.8)                1.1, 5.7     24, 53           0.89, 1.96
50      7.0 (1.5–19.7)               2.2, 11.5    48, 105          1.78, 3.92
======  ===========================  ===========  ===============  ==============

The default 25 deg/s (``--shake 1``) is a typical, fairly strong handheld shake
(one-handed, tapping the shutter): the regime the burst method is for. Its ring frames
blur by ~1 to ~6 px within a burst and the burst spans about 1°.

**Real-world shake** (:class:`WalkTrajectory`, ``shake_model = "walk"``): hand tremor is
not all there is. Recorded handheld trajectories (walking, one hand, a tap on the
screen, long exposures) are irregular paths that curve, kink and double back. They are
modelled as G. Boracchi and A. Foi's random walk with inertia ("Modeling the performance
of image restoration from motion blur", IEEE TIP 21(8), 2012; :mod:`deblurd.sim.kernels`
builds single kernels from the same model), run in time: the yaw/pitch velocity keeps
its direction but turns by Gaussian random accelerations (the heading decorrelates over
``turn_s``, 60 ms), is pulled back towards the aim (centripetal, the excursion stays
around ``excursion_s`` × shake, 0.03 s → 0.75° at 25 deg/s) and now and then reverses
abruptly (jerks, 0–2 per second). Its speed follows a log-normal envelope at 1–5 Hz
(σ 0.6: within a burst some frames are nearly sharp, others smeared) whose mean square
is ``shake²``. Blur per exposure: ``shake · π/180 · f · T`` px at the RMS speed, i.e.
at 1080p (f ≈ 2300 px), 8 ms and 25 deg/s about 8 px, and 7–40 px over shake levels 1–2
and exposures 8–33 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from deblurd.errors import SimulationError
from deblurd.imaging import F64

Pose = tuple[float, float, float]

_TREMOR_BAND_HZ = (8.0, 12.0)  # the tremor frequency f₀ is drawn uniformly in it
_JITTER_BAND_HZ = (0.3, 1.5)  # how fast the tremor frequency wanders
_ENVELOPE_BAND_HZ = (0.2, 1.0)
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
        """Time average of the squared derivative, (units/s)²."""
        return float(np.sum((2.0 * np.pi * self.freq_hz * self.amp) ** 2) / 2.0)


def random_sines(
    rng: np.random.Generator,
    count: int,
    band_hz: tuple[float, float],
    *,
    rms_speed: float | None = None,
    rms_value: float | None = None,
    peak_hz: float | None = None,
) -> Sines:
    """``count`` sinusoids with log-uniform frequencies in ``band_hz`` and random phases.

    Exactly one of ``rms_speed`` (RMS of the derivative, units/s: the components share
    the speed) or ``rms_value`` (RMS of the value: they share the displacement, so the
    speed grows with frequency) sets the scale. ``peak_hz`` weights the components'
    speed by a bump around that frequency (a band-limited spectrum).
    """
    lo, hi = band_hz
    freq = np.exp(rng.uniform(math.log(lo), math.log(hi), count))
    phase = rng.uniform(0.0, 2.0 * np.pi, count)
    weight = rng.uniform(0.5, 1.0, count)
    if peak_hz is not None:
        weight = weight * (0.3 + np.exp(-0.5 * ((freq - peak_hz) / 3.0) ** 2))
    weight = weight / math.sqrt(float(np.sum(weight**2)) / 2.0)  # unit RMS of the weighted sum
    if rms_speed is not None:
        amp = weight * rms_speed / (2.0 * np.pi * freq)
    elif rms_value is not None:
        amp = weight * rms_value
    else:
        raise SimulationError("random_sines needs rms_speed or rms_value")
    return Sines(freq, amp, phase)


class _Sampled:
    """What every trajectory derives from its ``poses``: one pose and a sampled table."""

    def poses(self, t_s: npt.ArrayLike) -> F64:
        raise NotImplementedError

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


@dataclass(frozen=True)
class ShakeTrajectory(_Sampled):
    """A handheld camera's rotation over time (see the module docstring for the model).

    Build with :meth:`random`; evaluate with :meth:`pose_at` (one time) or :meth:`poses`
    (vectorised). Times are seconds on any axis (the burst's first frame starts at 0).

    Tremor: carrier phase ``2π·tremor_hz·t + jitter(t)`` (rad); ``tremor_amp`` (major,
    minor, roll; rad) and ``tremor_phase`` (rad) of its three components, the major axis
    along ``direction_rad`` in the yaw/pitch plane; all three scaled by the envelope
    ``exp(σ·envelope(t) − σ²)``, σ = ``envelope_sigma``. ``sway_*`` and ``drift_*``
    (rad) add to yaw, pitch and roll unmodulated.
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
        minor_ratio: float = 0.25,
        roll_ratio: float = 0.3,
        sway_s: float = 0.005,
        drift_s: float = 0.01,
        envelope_sigma: float = 0.5,
        jitter_hz: float = 0.7,
    ) -> ShakeTrajectory:
        """A trajectory with RMS yaw/pitch speed ``shake_deg_s`` (deg/s), by seed.

        ``minor_ratio``: the tremor's minor/major axis ratio. ``roll_ratio``: roll
        amplitude over yaw/pitch amplitude, every band. ``sway_s``/``drift_s``: RMS
        yaw/pitch angle of the sway/drift per unit of ``shake_deg_s``, s (deg per
        deg/s). ``envelope_sigma``: log-standard deviation of the tremor's amplitude.
        ``jitter_hz``: RMS wander of the tremor's frequency, Hz.
        """
        if not math.isfinite(shake_deg_s) or shake_deg_s < 0:
            raise SimulationError(f"shake must be a finite level ≥ 0 deg/s, got {shake_deg_s}")
        if seed < 0:
            raise SimulationError(f"seed must be ≥ 0, got {seed}")
        shape = (minor_ratio, roll_ratio, sway_s, drift_s, envelope_sigma, jitter_hz)
        if not all(math.isfinite(v) and v >= 0 for v in shape):
            raise SimulationError(f"shake model parameters must be finite and ≥ 0, got {shape}")
        rng = np.random.default_rng([seed, 1])
        # Slow bands, set by displacement (rad): yaw and pitch each half the variance.
        sway = math.radians(sway_s * shake_deg_s)
        drift = math.radians(drift_s * shake_deg_s)
        half = 1.0 / math.sqrt(2.0)
        sway_yaw = random_sines(rng, 6, _SWAY_BAND_HZ, rms_value=sway * half)
        sway_pitch = random_sines(rng, 6, _SWAY_BAND_HZ, rms_value=sway * half)
        sway_roll = random_sines(rng, 6, _SWAY_BAND_HZ, rms_value=sway * roll_ratio)
        drift_yaw = random_sines(rng, 4, _DRIFT_BAND_HZ, rms_value=drift * half)
        drift_pitch = random_sines(rng, 4, _DRIFT_BAND_HZ, rms_value=drift * half)
        drift_roll = random_sines(rng, 4, _DRIFT_BAND_HZ, rms_value=drift * roll_ratio)
        # The tremor takes the rest of the mean-square speed (rad/s).
        slow = (sway_yaw, sway_pitch, drift_yaw, drift_pitch)
        speed = math.radians(shake_deg_s)
        tremor = math.sqrt(max(speed * speed - sum(s.mean_square_speed() for s in slow), 0.0))
        f0 = float(rng.uniform(*_TREMOR_BAND_HZ))
        # A sinusoid of amplitude A at f₀ has RMS speed 2π·f₀·A/√2; major² + minor² = 1.
        yaw_pitch = math.sqrt(2.0) * tremor / (2.0 * math.pi * f0)
        major = yaw_pitch / math.sqrt(1.0 + minor_ratio**2)
        amp = (major, major * minor_ratio, yaw_pitch * roll_ratio)
        ph = rng.uniform(0.0, 2.0 * np.pi, 3)
        direction = float(rng.uniform(0.0, np.pi))
        jitter = random_sines(rng, 3, _JITTER_BAND_HZ, rms_speed=2.0 * math.pi * jitter_hz)
        envelope = random_sines(rng, 4, _ENVELOPE_BAND_HZ, rms_value=1.0)
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


class Trajectory(Protocol):
    """What the renderer needs of a camera trajectory (poses in radians, times in s)."""

    @property
    def shake_deg_s(self) -> float: ...

    def poses(self, t_s: npt.ArrayLike) -> F64: ...

    def pose_at(self, t_s: float) -> Pose: ...

    def samples(self, t0_s: float, t1_s: float, rate_hz: float = 1000.0) -> F64: ...


@dataclass(frozen=True)
class WalkTrajectory(_Sampled):
    """Real-world handheld shake: a Boracchi–Foi random walk with inertia and jerks, in
    time (module docstring). Build with :meth:`random`.

    ``table``: poses ``float64 (N + 1, 3)`` (yaw, pitch, roll; rad) at ``t = i / rate_hz``
    over one period ``period_s`` = ``N / rate_hz``, made periodic (a linear ramp removes
    the end's offset) and starting at pose 0; times beyond it wrap, so a live camera can
    run for ever. Poses between samples are linearly interpolated.
    """

    shake_deg_s: float
    rate_hz: float
    table: F64

    @property
    def period_s(self) -> float:
        return float((self.table.shape[0] - 1) / self.rate_hz)

    @classmethod
    def random(
        cls,
        shake_deg_s: float,
        seed: int,
        *,
        period_s: float = 20.0,
        rate_hz: float = 1000.0,
        turn_s: float = 0.06,
        excursion_s: float = 0.03,
        roll_ratio: float = 0.3,
        envelope_sigma: float = 0.6,
    ) -> WalkTrajectory:
        """A walk of RMS yaw/pitch speed ``shake_deg_s`` (deg/s), by seed.

        ``turn_s``: time over which the heading decorrelates, s. ``excursion_s``: scale
        of the excursion from the aim per unit of shake, s (deg per deg/s).
        ``roll_ratio``: RMS roll speed over yaw/pitch speed. ``envelope_sigma``:
        log-standard deviation of the speed."""
        if not math.isfinite(shake_deg_s) or shake_deg_s < 0:
            raise SimulationError(f"shake must be a finite level ≥ 0 deg/s, got {shake_deg_s}")
        if seed < 0:
            raise SimulationError(f"seed must be ≥ 0, got {seed}")
        shape = (period_s, rate_hz, turn_s, excursion_s)
        if not all(math.isfinite(v) and v > 0 for v in shape) or period_s * rate_hz > 1e7:
            raise SimulationError(f"walk parameters must be finite and > 0, got {shape}")
        rng = np.random.default_rng([seed, 5])
        n = round(period_s * rate_hz)
        dt = 1.0 / rate_hz
        # Boracchi & Foi's per-trajectory draws (the centripetal pull kept above zero, so
        # that the walk stays near the aim over a long period).
        centripetal = 0.1 + 0.6 * rng.uniform()
        jerk_rate_hz = 10.0 * (0.2 * rng.uniform())
        gaussian = 10.0 * rng.uniform() + 1.0
        # Heading diffusion 1/turn_s rad²/s at the mean Gaussian term (≈ 6).
        anxiety = math.sqrt(dt / turn_s) / 6.0
        scale = max(math.radians(excursion_s * shake_deg_s), 1e-9)
        noise = rng.standard_normal((n, 2))
        g = gaussian * (noise[:, 0] + 1j * noise[:, 1])
        jerk = rng.uniform(size=n) < jerk_rate_hz * dt
        jerk_rot = np.exp(1j * (math.pi + rng.uniform(size=n) - 0.5))
        envelope = random_sines(rng, 6, (1.0, 5.0), rms_value=1.0)
        t = np.arange(n, dtype=np.float64) * dt
        s2 = envelope_sigma * envelope_sigma
        speed = math.radians(shake_deg_s) * np.exp(envelope_sigma * envelope.value(t) - s2)
        angle = rng.uniform(0.0, 2.0 * math.pi)
        v = complex(math.cos(angle), math.sin(angle))
        x = np.zeros(n + 1, np.complex128)
        pos = 0j
        for k in range(n):
            dv = anxiety * (g[k] - 20.0 * centripetal * pos / scale)
            if jerk[k]:
                dv += 2.0 * v * jerk_rot[k]
            v = v + dv
            mod = abs(v)
            if mod > 1e-12:
                v = v / mod
            pos = pos + v * (speed[k] * dt)
            x[k + 1] = pos
        roll_s = random_sines(rng, 8, (0.5, 8.0), rms_speed=roll_ratio * math.radians(shake_deg_s))
        tt = np.arange(n + 1, dtype=np.float64) * dt
        roll = roll_s.value(tt) - roll_s.value(np.zeros(1))
        table = np.stack([x.real, x.imag, roll], axis=1)
        table -= np.outer(tt / tt[-1], table[-1] - table[0])  # periodic
        return cls(shake_deg_s=shake_deg_s, rate_hz=rate_hz, table=table)

    def poses(self, t_s: npt.ArrayLike) -> F64:
        """Poses at times ``t_s`` (N,) s → ``float64 (N, 3)`` (yaw, pitch, roll; rad),
        pose 0 at ``t = 0``."""
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        n = self.table.shape[0] - 1
        u = np.mod(t * self.rate_hz, n)
        i0 = np.minimum(np.floor(u).astype(np.intp), n - 1)
        f = (u - i0)[:, None]
        out: F64 = self.table[i0] * (1.0 - f) + self.table[i0 + 1] * f
        return out


def make_trajectory(model: str, shake_deg_s: float, seed: int) -> Trajectory:
    """The trajectory of ``model`` (``"tremor"``: :class:`ShakeTrajectory`, ``"walk"``:
    :class:`WalkTrajectory`) at ``shake_deg_s`` RMS, by seed."""
    if model == "tremor":
        return ShakeTrajectory.random(shake_deg_s, seed)
    if model == "walk":
        return WalkTrajectory.random(shake_deg_s, seed)
    raise SimulationError(f"unknown shake model {model!r} (tremor or walk)")


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
