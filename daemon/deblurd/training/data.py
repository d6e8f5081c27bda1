"""Synthetic training pairs for the U-Net: sharp photo crops blurred with the simulator's physics.

A sample is made from a sharp photo crop (linear light) as :mod:`deblurd.sim` renders a
frame (the ``fast`` path: one PSF at the frame centre):

* **blur**: a camera-shake kernel — a :class:`~deblurd.sim.trajectory.ShakeTrajectory` at a
  random shake level, a random exposure window, the centre's path ``f·(yaw, pitch)`` px
  relative to its mean (the truth's pose, as in :mod:`deblurd.sim.render`), rasterised
  by :func:`~deblurd.sim.render.rasterise_psf` and applied by
  :func:`~deblurd.sim.render.convolve`;
* **noise**: :class:`~deblurd.sim.sensor.SensorModel` (Poisson–Gaussian, gain, clipping);
* **first pass**: one 8 ms ring frame at a random gain (2–8), sRGB-encoded
  and rounded to 8 bits, exactly as the camera writes it;
* **second pass**: what the pipeline's stage 5 sees — the average of the raw
  selected frame and ``K`` registered raw second frames: the blur is the mean of their
  ``K + 1`` re-centred kernels (1/30 s apart on one shake trajectory), the
  noise that of ``K + 1`` frames (``SensorModel`` at a ``K + 1`` times longer exposure
  and lower gain: same brightness), not quantised (the fused image is float);
* **target**: the sharp crop (same brightness), sRGB-encoded, float;
* **noise map**: the input's noise std measured by the runtime's own estimator
  (:func:`deblurd.inference.base.input_noise_sigma`), so training sees the values, and the
  estimator's biases, that inference will.

Random crops, flips and 90° turns; half the crops enlarged 1–2× (bicubic, in linear
light: band-limited scenes — digital zoom, a soft lens, an upscaled photo — where noise
must be told from missing detail); brightness scaled by 0.5–1.1; half the scenes softened
by a Gaussian of 0.3–1.2 px (lens and demosaicing: a camera's sharp image is not
pixel-sharp; the target is softened alike). Everything is drawn
from one ``numpy.random.Generator`` (reproducible by seed).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F32, U8, linear_to_srgb, linear_to_srgb_float, srgb_to_linear
from deblurd.inference.base import input_noise_sigma
from deblurd.sim.render import convolve, rasterise_psf
from deblurd.sim.sensor import SensorModel
from deblurd.sim.trajectory import ShakeTrajectory

if TYPE_CHECKING:
    from deblurd.training.fused import FusedPairs

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
RING_EXPOSURE_US = 8000


@dataclass(frozen=True)
class BlurConfig:
    """Ranges of the synthetic degradations (log-uniform where marked)."""

    shake_deg_s: tuple[float, float] = (6.0, 70.0)  # log-uniform
    focal_px: tuple[float, float] = (600.0, 2000.0)  # log-uniform
    ring_gain: tuple[float, float] = (2.0, 8.0)  # log-uniform; exposure × gain = brightness ref
    brightness: tuple[float, float] = (0.5, 1.1)
    second_frames: tuple[int, int] = (2, 8)  # K second frames fused with the selected one
    second_fraction: float = 0.4  # share of second-pass samples
    soft_fraction: float = 0.5  # share of scenes softened by a lens/demosaic Gaussian
    soft_sigma_px: tuple[float, float] = (0.3, 1.2)
    fused_fraction: float = 0.5  # share of second-pass samples from real fused pairs, if any
    zoom_fraction: float = 0.5  # share of scenes enlarged (bicubic): band-limited content
    zoom: tuple[float, float] = (1.0, 2.0)
    camera_fraction: float = 0.0  # share of samples through a random camera ISP (sim.isp)
    camera_max_motion_px: float = 40.0  # largest real-world shake extent of those, px
    camera_max_defocus_px: float = 6.0  # largest defocus radius of those, px
    # target of the camera samples: "tone" = the sharp scene through the tone curve only;
    # "isp" = the sharp scene through the sample's whole ISP without noise and codec (the
    # camera's own look: demosaic, sharpening, 4:2:0 kept, so the network only deblurs and
    # denoises and never learns to undo a colour pipeline it cannot know)
    camera_target: Literal["tone", "isp"] = "tone"
    # share of first-pass camera samples whose exposure is the mean of 7–13 video frames
    # (an action camera's synthesised blur: noise lower by sqrt(k), same blur)
    camera_averaged: float = 0.0


def load_photos(folder: str | Path, short_sides: tuple[int, ...] = (720, 1080)) -> list[U8]:
    """Every photo in ``folder`` (jpg/png), downscaled (INTER_AREA) so its shorter side is
    each of ``short_sides`` px (camera-like sharpness): ``uint8 (H, W, 3)`` sRGB RGB.

    Raises :class:`ImageError` naming the folder when it holds no usable photo."""
    root = Path(folder)
    files = (
        sorted(p for p in root.glob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
        if root.is_dir()
        else []
    )
    out: list[U8] = []
    for path in files:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None or min(bgr.shape[:2]) < 256:
            continue
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        for side in short_sides:
            s = side / min(rgb.shape[:2])
            if s < 1.0:
                size = (round(rgb.shape[1] * s), round(rgb.shape[0] * s))
                out.append(
                    np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), np.uint8)
                )
    if not out:
        raise ImageError(
            f"{root}: no usable training photos (jpg/png, at least 256 px); "
            "run tools/prepare_training_photos.sh to fetch them"
        )
    return out


#: Procedural training scenes use seeds from here on: the daemon's simulated camera, the
#: tests and the tools use small seeds (0 by default), which therefore stay unseen.
PROCEDURAL_TRAIN_SEED = 1_000_000
#: Sizes (H, W) the procedural training scenes are drawn at: their objects scale with the
#: frame while the fine textures stay a few pixels wide, so one seed gives coarse and fine
#: versions of the same kinds of content.
PROCEDURAL_SIZES = ((480, 640), (720, 960), (1080, 1440))


def procedural_photos(count: int, first_seed: int = PROCEDURAL_TRAIN_SEED) -> list[U8]:
    """``count`` procedural scenes (:func:`deblurd.sim.scene.procedural_scene_srgb`) as
    training "photos", ``uint8 (H, W, 3)`` sRGB, cycling through :data:`PROCEDURAL_SIZES`,
    seeds ``first_seed``, ``first_seed + 1``, ….

    They add what the wallpaper photos lack: noise-like fine textures (grass, foliage,
    grain) at full contrast next to hard synthetic edges, text strokes and thin lines. A
    network that has never seen such texture takes it for noise and removes it (measured
    on the simulated camera's scene with ``tools/eval_procedural.py``: engines/MODEL_CARD.md).
    """
    from deblurd.sim.scene import procedural_scene_srgb

    if first_seed < PROCEDURAL_TRAIN_SEED:
        raise ValueError(
            f"procedural training seeds start at {PROCEDURAL_TRAIN_SEED} (got {first_seed}): "
            "smaller seeds are the simulated camera's and the tests'"
        )
    sizes = PROCEDURAL_SIZES
    return [procedural_scene_srgb(*sizes[k % len(sizes)], first_seed + k) for k in range(count)]


def shake_offsets(
    rng: np.random.Generator,
    shake_deg_s: float,
    focal_px: float,
    t0_s: float,
    exposure_s: float,
    trajectory: ShakeTrajectory | None = None,
) -> npt.NDArray[np.float64]:
    """The frame centre's positions ``(64, 2)`` px over one exposure, relative to their mean."""
    traj = trajectory or ShakeTrajectory.random(shake_deg_s, int(rng.integers(0, 2**31 - 1)))
    t = t0_s + exposure_s * (np.arange(64) + 0.5) / 64
    poses = traj.poses(t)
    xy = focal_px * poses[:, :2]  # first order: (f·yaw, f·pitch)
    out: npt.NDArray[np.float64] = xy - xy.mean(axis=0)
    return out


def _augment(img: F32, rng: np.random.Generator) -> F32:
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1]
    return np.ascontiguousarray(np.rot90(img, int(rng.integers(0, 4))))


def _logu(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))


def _sharp_crop(photos: list[U8], side: int, rng: np.random.Generator, cfg: BlurConfig) -> F32:
    """A random sharp scene crop, linear ``float32 (side, side, 3)`` (zoom, flips, turns,
    brightness and optical softness as :func:`make_sample` draws them)."""
    photo = photos[int(rng.integers(0, len(photos)))]
    h, w = photo.shape[:2]
    zoom = float(rng.uniform(*cfg.zoom)) if rng.random() < cfg.zoom_fraction else 1.0
    src = min(math.ceil(side / zoom), h, w)  # a smaller crop, enlarged: a softer scene
    y, x = int(rng.integers(0, h - src + 1)), int(rng.integers(0, w - src + 1))
    sharp = srgb_to_linear(np.ascontiguousarray(photo[y : y + src, x : x + src]))
    if src != side:
        sharp = np.maximum(cv2.resize(sharp, (side, side), interpolation=cv2.INTER_CUBIC), 0.0)
    sharp = _augment(sharp, rng) * np.float32(rng.uniform(*cfg.brightness))
    if rng.random() < cfg.soft_fraction:  # optics and demosaicing: the truth is soft too
        sigma = float(rng.uniform(*cfg.soft_sigma_px))
        sharp = np.asarray(cv2.GaussianBlur(sharp, (0, 0), sigma), np.float32)
    return sharp


def make_camera_sample(
    photos: list[U8], crop: int, rng: np.random.Generator, cfg: BlurConfig, second: bool
) -> tuple[F32, F32, float]:
    """One pair as a real camera degrades it (:mod:`deblurd.sim.isp`,
    :mod:`deblurd.sim.kernels`): a real-world shake and/or defocus kernel of up to
    ``cfg.camera_max_motion_px`` px, then a random ISP (mosaic, per-photosite noise at a
    random gain, demosaic, ISP denoise, tone curve, sharpening, 4:2:0, JPEG or H.264-like
    blocks). ``second``: the mean in linear light of 2–5 such frames of the same scene,
    each with its own (smaller) kernel and noise, re-encoded as float sRGB — what the
    fusion hands the second pass. Target: the sharp crop through the same tone curve
    (same radiometry), float sRGB. Returns ``(input, target, σ)`` as :func:`make_sample`.
    """
    from deblurd.sim.isp import IspParams, camera_frame, tone_curve
    from deblurd.sim.kernels import random_kernel

    isp = IspParams.random(rng)
    gain = _logu(rng, cfg.ring_gain)
    sensor = SensorModel(ref_exposure_us=RING_EXPOSURE_US * gain, max_gain=64.0)
    count = int(rng.integers(2, 6)) if second else 1
    motion = cfg.camera_max_motion_px * (0.4 if second else 1.0)
    kernels = [random_kernel(rng, motion, cfg.camera_max_defocus_px) for _ in range(count)]
    pad = max(k.shape[0] for k in kernels) // 2 + 4
    side = crop + 2 * pad
    sharp = _sharp_crop(photos, side, rng, cfg)
    exposure_us, frame_gain = float(RING_EXPOSURE_US), gain
    if not second and cfg.camera_averaged > 0 and rng.random() < cfg.camera_averaged:
        k = int(rng.integers(7, 14))
        exposure_us, frame_gain = exposure_us * k, gain / k
    frames: list[F32] = []
    for kernel in kernels:
        blurred = convolve(sharp, kernel)[pad : pad + crop, pad : pad + crop]
        frame = camera_frame(np.clip(blurred, 0.0, None), isp, sensor, exposure_us, frame_gain, rng)
        frames.append(srgb_to_linear(frame))
    if cfg.camera_target == "isp":
        clean = dataclasses.replace(isp, codec="none")
        whole = camera_frame(np.clip(sharp, 0.0, None), clean, sensor, exposure_us, frame_gain,
                             None)  # fmt: skip
        target = whole[pad : pad + crop, pad : pad + crop].astype(np.float32) / np.float32(255)
    else:
        target = tone_curve(np.clip(sharp[pad : pad + crop, pad : pad + crop], 0.0, 1.0), isp)
    if second:
        inp = linear_to_srgb_float(np.mean(frames, axis=0))
    else:
        inp = linear_to_srgb_float(frames[0])
    target = np.asarray(np.clip(target, 0.0, 1.0), np.float32)
    return inp, target, input_noise_sigma(inp)


def make_sample(
    photos: list[U8], crop: int, rng: np.random.Generator, cfg: BlurConfig, second: bool
) -> tuple[F32, F32, float]:
    """One pair: input sRGB ``float32 (crop, crop, 3)``, target sRGB ``float32`` same
    shape, and the input's noise level (σ, sRGB units; :func:`input_noise_sigma`).
    A share ``cfg.camera_fraction`` goes through a camera ISP (:func:`make_camera_sample`)."""
    if cfg.camera_fraction > 0 and rng.random() < cfg.camera_fraction:
        return make_camera_sample(photos, crop, rng, cfg, second)
    shake = _logu(rng, cfg.shake_deg_s)
    focal = _logu(rng, cfg.focal_px)
    gain = _logu(rng, cfg.ring_gain)
    traj = ShakeTrajectory.random(shake, int(rng.integers(0, 2**31 - 1)))
    exp_s = RING_EXPOSURE_US * 1e-6
    t0 = float(rng.uniform(0.0, 3.0))
    if not second:
        psf = rasterise_psf(shake_offsets(rng, shake, focal, t0, exp_s, traj))
        frames = 1
    else:
        k = int(rng.integers(cfg.second_frames[0], cfg.second_frames[1] + 1))
        paths = [shake_offsets(rng, shake, focal, t0 + j / 30.0, exp_s, traj) for j in range(k + 1)]
        psfs = [rasterise_psf(p) for p in paths]
        size = max(p.shape[0] for p in psfs)
        acc = np.zeros((size, size), np.float32)
        for p in psfs:
            o = (size - p.shape[0]) // 2
            acc[o : o + p.shape[0], o : o + p.shape[0]] += p
        psf = acc / acc.sum()
        frames = k + 1
    pad = psf.shape[0] // 2 + 2
    sharp = _sharp_crop(photos, crop + 2 * pad, rng, cfg)
    blurred = convolve(sharp, psf)[pad : pad + crop, pad : pad + crop]
    sharp = np.clip(sharp[pad : pad + crop, pad : pad + crop], 0.0, 1.0)
    sensor = SensorModel(ref_exposure_us=RING_EXPOSURE_US * gain, max_gain=64.0)
    noisy = sensor.expose_linear(blurred, RING_EXPOSURE_US * frames, gain / frames, rng)
    if second:
        inp = linear_to_srgb_float(noisy)
    else:
        inp = linear_to_srgb(noisy).astype(np.float32) / np.float32(255.0)
    return inp, linear_to_srgb_float(sharp), input_noise_sigma(inp)


def make_batch(
    photos: list[U8],
    batch: int,
    crop: int,
    rng: np.random.Generator,
    cfg: BlurConfig,
    fused: FusedPairs | None = None,
) -> tuple[F32, F32, F32]:
    """A batch: inputs ``(B, 3, crop, crop)``, noise maps ``(B, 1, crop, crop)`` (constant
    per sample), targets ``(B, 3, crop, crop)``, all float32.

    A share ``cfg.second_fraction`` of the samples are second-pass inputs; with ``fused``
    pairs (:mod:`deblurd.training.fused`), ``cfg.fused_fraction`` of those are crops of
    real fused images, the rest synthetic (:func:`make_sample`)."""
    xs, ns, ys = [], [], []
    for _ in range(batch):
        second = bool(rng.random() < cfg.second_fraction)
        if second and fused is not None and rng.random() < cfg.fused_fraction:
            inp, tgt, sigma = fused.sample(crop, rng)
        else:
            inp, tgt, sigma = make_sample(photos, crop, rng, cfg, second)
        xs.append(inp.transpose(2, 0, 1))
        ys.append(tgt.transpose(2, 0, 1))
        ns.append(np.full((1, crop, crop), sigma, np.float32))
    return np.stack(xs), np.stack(ns), np.stack(ys)
