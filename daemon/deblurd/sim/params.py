"""Parameters of a simulated burst (:class:`SimParams`) and its frame schedule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from deblurd.burstdir import Role
from deblurd.errors import SimulationError
from deblurd.sim.isp import IspParams
from deblurd.sim.sensor import SensorModel

ShakeModel = Literal["tremor", "walk"]

DEFAULT_SHAKE_DEG_S = 25.0  # shake level 1: typical handheld, deg/s RMS (trajectory.py)
_EXTRA_GAP_US = 500  # minimum vertical blanking beyond the exposure when it sets the frame rate


@dataclass(frozen=True)
class SimParams:
    """Parameters of a simulated burst (units in the names or below).

    Defaults: a 1280×720 preview at 30 fps, 8 ms at gain 4 (a 32 ms·gain brightness
    reference), 9 ring frames with the trigger in the middle, a typical handheld shake of
    25 deg/s RMS (``DEFAULT_SHAKE_DEG_S``, ``--shake 1``; with ``focal_px`` = 1.2 × width
    ≈ a 45° horizontal field of view, ring frames blur by a median 3.5 px, 5–95 %
    0.8–10 px, ~1 px to ~6 px within a burst as the tremor's phase goes, and the 9 frames
    span ~0.9° (24 px) in the median; see :mod:`deblurd.sim.trajectory`), no extra
    frames; when asked for, extra frames at 32 ms (gain 1.0, same brightness, half the
    noise, 4× the blur) after a 6-frame exposure switch. Sensor noise per
    :mod:`deblurd.sim.sensor` (6000 e⁻ full well, 2.5 e⁻ read noise).

    ``shake``: RMS yaw/pitch angular speed of the camera, deg/s (0: tripod); nearly all
    of it hand tremor at 8–12 Hz, the rest slow sway and drift. ``subject``: a face-like
    subject moving on its own, at ``subject_speed`` frame heights/s RMS. ``noise``: False
    renders noiseless frames. ``max_substep_px``: the largest motion between two
    sub-steps of the exposure integral, px. ``fast``: the cheap render (one warp + PSF
    convolution, Gaussian shot noise). ``scene_margin``: spare scene around the view,
    fraction of the larger side.

    Real-camera options (all off by default; :mod:`deblurd.sim.isp`): ``isp``: the camera
    pipeline after the sensor (mosaic, demosaic, ISP denoise, tone curve, sharpening,
    4:2:0, JPEG/H.264-like coding), None = the plain sensor; the truth then goes through
    the same tone curve. ``flicker``: RMS relative brightness wobble between frames
    (auto-exposure drift the metadata does not show; the trigger frame is exact), None =
    the ISP's own (``isp.flicker``; 0 without an ISP). ``rolling_shutter_ms``: row
    readout time from the top row to the bottom one, ms (0: global shutter; phones and
    the Pi's sensors 10–30 ms). ``shake_model``: ``"tremor"`` (hand tremor, sway and
    drift, :class:`~deblurd.sim.trajectory.ShakeTrajectory`) or ``"walk"`` (a real-world
    random walk with inertia and jerks, :class:`~deblurd.sim.trajectory.WalkTrajectory`),
    both at the RMS speed ``shake``. ``defocus_px``: radius of a defocus disk applied on
    top of the motion blur, px (0: in focus).
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
    isp: IspParams | None = None
    flicker: float | None = None
    rolling_shutter_ms: float = 0.0
    shake_model: ShakeModel = "tremor"
    defocus_px: float = 0.0

    def __post_init__(self) -> None:
        problems: list[str] = []

        def need(ok: bool, what: str) -> None:
            if not ok:
                problems.append(what)

        need(
            16 <= self.width <= 8192 and 16 <= self.height <= 8192,
            f"frame size {self.width}x{self.height} must be within 16..8192 px",
        )
        need(1 <= self.ring_frames <= 1000, f"ring_frames {self.ring_frames} must be 1..1000")
        if self.trigger_index is not None:
            need(
                0 <= self.trigger_index < self.ring_frames,
                f"trigger_index {self.trigger_index} must index a ring frame "
                f"(0..{self.ring_frames - 1})",
            )
        need(
            math.isfinite(self.fps) and 0 < self.fps <= 1000, f"fps {self.fps} must be in (0, 1000]"
        )
        if math.isfinite(self.fps) and self.fps > 0:
            need(
                0 < self.ring_exposure_us <= 1e6 / self.fps,
                f"ring_exposure_us {self.ring_exposure_us} must be positive and fit the "
                f"frame period at {self.fps} fps ({1e6 / self.fps:.0f} µs)",
            )
        need(1.0 <= self.ring_gain <= 64.0, f"ring_gain {self.ring_gain} must be 1..64")
        need(0 <= self.extra_frames <= 1000, f"extra_frames {self.extra_frames} must be 0..1000")
        need(
            0 < self.extra_exposure_us <= 1_000_000,
            f"extra_exposure_us {self.extra_exposure_us} must be in (0, 1e6]",
        )
        if self.extra_gain is not None:
            need(1.0 <= self.extra_gain <= 64.0, f"extra_gain {self.extra_gain} must be 1..64")
        need(self.exposure_switch_frames >= 0, "exposure_switch_frames must be ≥ 0")
        need(
            math.isfinite(self.shake) and 0 <= self.shake <= 1000,
            f"shake {self.shake} deg/s must be in [0, 1000]",
        )
        need(
            math.isfinite(self.subject_speed) and 0 <= self.subject_speed <= 100,
            f"subject_speed {self.subject_speed} must be in [0, 100] heights/s",
        )
        need(self.seed >= 0, f"seed {self.seed} must be ≥ 0")
        if self.focal_px is not None:
            need(
                math.isfinite(self.focal_px) and self.focal_px > 0,
                f"focal_px {self.focal_px} must be > 0",
            )
        need(
            self.full_well_e > 0 and self.read_noise_e >= 0,
            f"full_well_e {self.full_well_e} must be > 0 and read_noise_e {self.read_noise_e} ≥ 0",
        )
        need(self.max_substep_px > 0, f"max_substep_px {self.max_substep_px} must be > 0")
        need(0 <= self.scene_margin <= 0.5, f"scene_margin {self.scene_margin} must be 0..0.5")
        need(
            self.isp is None or isinstance(self.isp, IspParams),
            f"isp must be IspParams or None, got {type(self.isp).__name__}",
        )
        if self.flicker is not None:
            need(
                math.isfinite(self.flicker) and 0 <= self.flicker <= 0.5,
                f"flicker {self.flicker} must be in [0, 0.5]",
            )
        need(
            math.isfinite(self.rolling_shutter_ms) and 0 <= self.rolling_shutter_ms <= 1000,
            f"rolling_shutter_ms {self.rolling_shutter_ms} must be in [0, 1000]",
        )
        need(
            self.shake_model in ("tremor", "walk"),
            f"shake_model {self.shake_model!r} must be 'tremor' or 'walk'",
        )
        need(
            math.isfinite(self.defocus_px) and 0 <= self.defocus_px <= 24,
            f"defocus_px {self.defocus_px} must be in [0, 24]",
        )
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

    @property
    def flicker_rms(self) -> float:
        """The brightness wobble in effect (``flicker``, else the ISP's, else 0)."""
        if self.flicker is not None:
            return float(self.flicker)
        return 0.0 if self.isp is None else self.isp.flicker

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
        gain = (
            self.extra_gain
            if self.extra_gain is not None
            else self.sensor().gain_for(self.extra_exposure_us)
        )
        extra_period_ns = max(period_ns, (self.extra_exposure_us + _EXTRA_GAP_US) * 1000)
        start = (self.ring_frames + self.exposure_switch_frames) * period_ns
        out += [
            ("extra", start + j * extra_period_ns, self.extra_exposure_us, float(gain))
            for j in range(self.extra_frames)
        ]
        return out

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # isp: a nested object (IspParams.to_json)

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
        doc = dict(doc)
        if isinstance(doc.get("isp"), dict):
            doc["isp"] = IspParams.from_json(doc["isp"])
        try:
            return cls(**doc)
        except TypeError as exc:
            raise SimulationError(f"bad simulation parameters: {exc}") from exc
