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

Real-camera options (:class:`SimParams`; all off by default): the frames of a burst come
from the camera pipeline of :mod:`deblurd.sim.isp` (``isp``), with per-frame brightness
flicker (the trigger frame exact), rolling-shutter readout (``rolling_shutter_ms``),
defocus (``defocus_px``, a disk on top of the motion blur, also in the recorded PSF) and
the real-world ``"walk"`` shake model. The truth then goes through the frame's tone curve
and brightness (:func:`deblurd.sim.isp.tone_map`): truth and frame share radiometry. With
an H.264-like codec, each frame is coded against the previous one of the burst (skip
blocks).

The burst directory is written with :func:`deblurd.burstdir.write_burst`; ground truth
lives beside it, never inside: ``<burst_dir>.truth/`` (see :mod:`deblurd.sim.truthdir`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from deblurd.burstdir import Burst, FrameInfo, frame_names
from deblurd.errors import SimulationError
from deblurd.imaging import F32, F64, U8, linear_to_srgb
from deblurd.sim.isp import camera_frame, flicker_factors, tone_map
from deblurd.sim.kernels import combine_kernels, defocus_kernel
from deblurd.sim.params import DEFAULT_SHAKE_DEG_S, SimParams
from deblurd.sim.render import Exposure, ExposureStats, ShakeRenderer, convolve
from deblurd.sim.scene import fit_scene, procedural_scene
from deblurd.sim.subject import Subject
from deblurd.sim.trajectory import make_trajectory
from deblurd.sim.truthdir import Truth, read_truth, truth_dir_for, write_simulation

__all__ = [
    "DEFAULT_SHAKE_DEG_S",
    "SimParams",
    "SimulatedBurst",
    "Truth",
    "camera_truth",
    "make_renderer",
    "read_truth",
    "simulate_burst",
    "truth_dir_for",
    "write_simulation",
]


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
    truth: list[U8]
    subject_masks: list[U8] | None
    psfs: list[F32]
    params: SimParams
    stats: list[ExposureStats]
    trajectory: F64
    renderer: ShakeRenderer

    @property
    def scene(self) -> F32:
        """The scene as rendered (linear ``float32``, view plus margin)."""
        return self.renderer.scene


def make_renderer(params: SimParams, scene: F32 | None = None) -> ShakeRenderer:
    """The renderer of a simulation: ``scene`` (linear float32, any size; None: the
    procedural scene of ``params.seed``) fitted to the view plus margin, the shake
    trajectory and the subject (when ``params.subject``) of ``params.seed``."""
    h, w = params.height, params.width
    if scene is None:
        m = round(params.scene_margin * max(h, w))
        fitted = procedural_scene(h + 2 * m, w + 2 * m, params.seed)
    else:
        fitted = fit_scene(scene, h, w, params.scene_margin)
    offset = ((fitted.shape[1] - w) // 2, (fitted.shape[0] - h) // 2)
    trajectory = make_trajectory(params.shake_model, params.shake, params.seed)
    subject = None
    if params.subject:
        subject = Subject.random(
            h,
            w,
            (float(offset[0]), float(offset[1])),
            params.seed,
            speed_heights_s=params.subject_speed,
        )
    return ShakeRenderer(fitted, w, h, trajectory, params.focal, subject)


def _brightness(params: SimParams) -> F64:
    """Per-frame flicker factors ``float64 (frames,)`` of a simulation (1 without flicker)."""
    n_frames = params.ring_frames + params.extra_frames
    if params.flicker_rms > 0:
        return flicker_factors(
            np.random.default_rng([params.seed, 13]), n_frames, params.flicker_rms, params.trigger
        )
    return np.ones(n_frames)


def _render(
    renderer: ShakeRenderer, params: SimParams, ts_ns: int, exposure_us: float, fast: bool
) -> Exposure:
    """The noiseless exposure of one scheduled frame (its truth does not depend on
    ``fast``: the mean pose and the rolling-shutter bands do not)."""
    return renderer.render(
        ts_ns * 1e-9,
        exposure_us * 1e-6,
        max_substep_px=params.max_substep_px,
        fast=fast,
        readout_s=params.rolling_shutter_ms * 1e-3,
    )


def _linear_truth(sim: SimulatedBurst, index: int) -> F32:
    """Frame ``index``'s linear truth ``float32 (H, W, 3)``, re-rendered: the same array
    :func:`simulate_burst` tone-mapped for ``sim.truth[index]`` (same pose, same bands;
    the cheap ``fast`` blur path, which the truth does not depend on)."""
    schedule = sim.params.schedule()
    if not 0 <= index < len(schedule):
        raise SimulationError(f"frame index {index} out of range 0..{len(schedule) - 1}")
    _, ts_ns, exposure_us, _ = schedule[index]
    return _render(sim.renderer, sim.params, ts_ns, exposure_us, True).truth


def camera_truth(sim: SimulatedBurst, index: int) -> U8:
    """The camera's own look of frame ``index``: ``uint8 (H, W, 3)`` sRGB.

    The noiseless sharp view of that frame (the linear truth at its mean pose, per
    rolling-shutter band, that ``sim.truth[index]`` tone-maps) through the burst's own
    ISP (:func:`~deblurd.sim.isp.camera_frame`) with the codec off (``codec="none"``) and
    no noise (``rng`` None), at the frame's flicker brightness and with its sensor,
    exposure (µs) and gain, so the ISP denoise and sharpening are tuned as for the frame.
    Unlike ``sim.truth[index]`` (tone curve only) it carries the demosaic, denoise,
    sharpening and 4:2:0 of the camera. Deterministic; re-renders the frame's truth
    (no blur sub-steps), so it costs about a fast render plus one ISP pass.

    Raises :class:`~deblurd.errors.SimulationError` when the burst has no ISP
    (``sim.params.isp`` None) or ``index`` is out of range.
    """
    params = sim.params
    if params.isp is None:
        raise SimulationError("camera_truth: the burst went through no camera ISP (isp None)")
    linear = _linear_truth(sim, index)
    _, _, exposure_us, gain = params.schedule()[index]
    clean = dataclasses.replace(params.isp, codec="none")
    bright = float(_brightness(params)[index])
    return camera_frame(linear, clean, params.sensor(), exposure_us, gain, None, brightness=bright)


def simulate_burst(params: SimParams, scene: F32 | None = None) -> SimulatedBurst:
    """Simulate a handheld burst of ``scene`` (linear ``float32 (H, W, 3)``, any size, or
    None for the procedural scene). Deterministic: same parameters and scene → same
    bytes. Raises :class:`SimulationError` on parameters it cannot honour."""
    renderer = make_renderer(params, scene)
    sensor = params.sensor()
    frames: list[U8] = []
    infos: list[FrameInfo] = []
    truth: list[U8] = []
    masks: list[U8] = []
    psfs: list[F32] = []
    stats: list[ExposureStats] = []
    n_frames = params.ring_frames + params.extra_frames
    names = frame_names(n_frames)
    brightness = _brightness(params)
    disk = defocus_kernel(params.defocus_px) if params.defocus_px > 0 else None
    isp = params.isp
    for i, (role, ts_ns, exposure_us, gain) in enumerate(params.schedule()):
        exp = _render(renderer, params, ts_ns, exposure_us, params.fast)
        blurred, psf = exp.blurred, exp.psf
        if disk is not None:
            blurred = convolve(blurred, disk)
            psf = combine_kernels(psf, disk)
        rng = np.random.default_rng([params.seed, 3, i]) if params.noise else None
        bright = float(brightness[i])
        if isp is not None:
            frame = camera_frame(
                blurred,
                isp,
                sensor,
                exposure_us,
                gain,
                rng,
                brightness=bright,
                previous=frames[-1] if frames else None,
            )
            truth.append(tone_map(exp.truth, isp, bright))
        else:
            if bright != 1.0:
                blurred = blurred * np.float32(bright)
            frame = sensor.expose(blurred, exposure_us, gain, rng, approximate=params.fast)
            sharp = exp.truth if bright == 1.0 else exp.truth * np.float32(bright)
            truth.append(linear_to_srgb(sharp))
        frames.append(frame)
        infos.append(FrameInfo(names[i], ts_ns, exposure_us, gain, role))
        if exp.mask is not None:
            masks.append(exp.mask)
        psfs.append(psf)
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
