"""Random blur kernels: real-world handheld camera shake, defocus, and both.

For training data and for simulation. Every kernel is ``float32 (k, k)``, ``k`` odd,
non-negative, summing to 1, in the convolution convention of :mod:`deblurd.sim.render`
(``blurred(x) = Σ_d psf[c + d] · sharp(x − d)``, ``c = (k // 2, k // 2)``; apply with
:func:`deblurd.sim.render.convolve`). Motion kernels are centred on the trajectory's
mean position, so they blur without shifting the image (as the simulator's truth at the
mean pose).

**Camera shake** (:func:`shake_trajectory`, :func:`random_motion_kernel`): the random
trajectories of G. Boracchi and A. Foi, "Modeling the performance of image restoration
from motion blur", IEEE Trans. Image Processing 21(8):3502–3517, 2012 (and their
"Uniform motion blur in Poissonian noise: blur/noise tradeoff", IEEE TIP 20(2), 2011):
the position of the image on the sensor is a random walk **with inertia** — a velocity
of fixed step length that is turned at each step by a Gaussian random acceleration,
pulled back towards the origin by a centripetal term, and, with a small probability,
reversed by an **impulsive jerk** (an abrupt shake: the velocity turns by ~180° ±
0.5 rad and doubles). Their three per-trajectory random parameters are kept (centripetal
strength ``0.7·U``, jerk probability ``0.2·U``, Gaussian term ``10·U``) with their
default "anxiety" 0.005. Unlike the hand-tremor model of
:mod:`deblurd.sim.trajectory`, these paths are irregular: curved, kinked, sometimes
doubling back — what real long exposures of a handheld camera look like. The exposure
covers a random fraction of the trajectory (as in their paper), and the result is
scaled so that its **extent** (the largest distance between two positions, px) is the
requested one.

**Defocus** (:func:`defocus_kernel`): a pillbox (uniform disk, the geometric-optics PSF
of a circular aperture out of focus) of radius ``r`` px whose edge is anti-aliased over
one pixel (each pixel weighted by its approximate coverage of the disk).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from deblurd.errors import SimulationError
from deblurd.imaging import F32, F64
from deblurd.sim.render import extent, rasterise_psf

MAX_MOTION_EXTENT_PX = 96.0  # the largest motion extent this module builds, px
MAX_DEFOCUS_RADIUS_PX = 24.0  # the largest defocus radius, px
_ANXIETY = 0.005  # Boracchi & Foi's default "anxiety"
_TRAJ_STEPS = 2000  # samples of the full trajectory (their numT)


def shake_trajectory(
    rng: np.random.Generator,
    *,
    steps: int = _TRAJ_STEPS,
    anxiety: float = _ANXIETY,
    jerks: bool = True,
) -> F64:
    """A random camera-shake trajectory (Boracchi & Foi 2012): positions ``float64
    (steps, 2)`` (x, y), unit step length, starting at the origin (unscaled: see
    :func:`motion_offsets`).

    Each step the velocity ``v`` (a complex number of modulus 1) gets
    ``dv = jerk + anxiety · (g · (n_x + i n_y) − c · x · L/(steps−1))`` and is
    renormalised (their update with the velocity in units of the step);
    ``jerk = 2 v e^{i(π + u − 0.5)}`` with probability ``p · anxiety``
    (``jerks``; else 0), ``g = 10·U``, ``c = 0.7·U``, ``p = 0.2·U`` drawn per trajectory,
    ``L = 60`` (their nominal length, which sets the ratio of the terms), ``n`` standard
    normal, ``u`` uniform. ``anxiety`` scales the randomness (0: a straight line)."""
    if steps < 2 or not (math.isfinite(anxiety) and anxiety >= 0):
        raise SimulationError(f"bad trajectory: {steps} steps, anxiety {anxiety}")
    centripetal = 0.7 * rng.uniform()
    p_jerk = 0.2 * rng.uniform() if jerks else 0.0
    gaussian = 10.0 * rng.uniform()
    angle = rng.uniform(0.0, 2.0 * math.pi)
    nominal = 60.0 / (steps - 1)
    # Draw all the randomness up front (vectorised); the walk itself is sequential.
    noise = rng.standard_normal((steps, 2))
    jerk_draw = rng.uniform(size=steps)
    jerk_turn = rng.uniform(size=steps) - 0.5
    jerk_rot = np.exp(1j * (math.pi + jerk_turn))
    g_noise = gaussian * (noise[:, 0] + 1j * noise[:, 1])
    v = complex(math.cos(angle), math.sin(angle))
    x = np.zeros(steps, np.complex128)
    pos = 0j
    thresh = p_jerk * anxiety
    for t in range(steps - 1):
        dv = anxiety * (g_noise[t] - centripetal * pos)
        if jerk_draw[t] < thresh:
            dv += 2.0 * v * jerk_rot[t]
        v = v + dv
        mod = abs(v)
        v = v / mod if mod > 1e-12 else complex(math.cos(angle), math.sin(angle))
        pos = pos + v * nominal
        x[t + 1] = pos
    out: F64 = np.stack([x.real, x.imag], axis=1) / nominal
    return out


def motion_offsets(path: F64, extent_px: float) -> F64:
    """``path`` ``(N, 2)`` scaled so that its extent (diameter) is ``extent_px`` and
    centred on its mean: offsets ``float64 (N, 2)`` (x, y px) for
    :func:`~deblurd.sim.render.rasterise_psf`."""
    centred = path - path.mean(axis=0)
    size = extent(centred)
    if size < 1e-9 or extent_px <= 0:
        return np.zeros((1, 2), np.float64)
    out: F64 = centred * (extent_px / size)
    return out


def motion_kernel(path: F64, extent_px: float) -> F32:
    """The blur kernel ``float32 (k, k)`` of a camera that moves along ``path`` ``(N, 2)``
    at constant speed during the exposure, scaled to ``extent_px`` (see module)."""
    if not (math.isfinite(extent_px) and 0 <= extent_px <= MAX_MOTION_EXTENT_PX):
        raise SimulationError(
            f"motion extent {extent_px} px must be in [0, {MAX_MOTION_EXTENT_PX}]"
        )
    offsets = motion_offsets(path, extent_px)
    if offsets.shape[0] > 1:
        # Resample so that consecutive samples are ≤ 0.25 px apart (a continuous path).
        seg = np.linalg.norm(np.diff(offsets, axis=0), axis=1)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        n = int(min(max(math.ceil(arc[-1] / 0.25), 2), 20000))
        s = np.linspace(0.0, arc[-1], n)
        offsets = np.stack(
            [np.interp(s, arc, offsets[:, 0]), np.interp(s, arc, offsets[:, 1])], axis=1
        )
    return rasterise_psf(offsets)


def random_motion_kernel(
    rng: np.random.Generator,
    max_extent_px: float,
    *,
    min_extent_px: float = 1.0,
    exposure_fraction: tuple[float, float] = (0.25, 1.0),
    anxiety: float = _ANXIETY,
    jerks: bool = True,
) -> F32:
    """A random real-world camera-shake kernel ``float32 (k, k)`` (Boracchi & Foi 2012).

    The extent (px, the largest distance between two positions of the image during the
    exposure) is drawn **log-uniformly** in ``[min_extent_px, max_extent_px]`` (many small
    blurs, some large ones; ``max_extent_px`` ≤ ``MAX_MOTION_EXTENT_PX``, e.g. 40 for
    strong shake at 1080p). The exposure covers a random contiguous fraction
    ``exposure_fraction`` of a :func:`shake_trajectory` (short fractions give nearly
    straight smears, full ones curved, kinked paths). Deterministic by ``rng``."""
    if not (0 <= min_extent_px <= max_extent_px <= MAX_MOTION_EXTENT_PX):
        raise SimulationError(
            f"motion extent range [{min_extent_px}, {max_extent_px}] px must lie in "
            f"[0, {MAX_MOTION_EXTENT_PX}]"
        )
    lo, hi = exposure_fraction
    if not 0 < lo <= hi <= 1:
        raise SimulationError(f"exposure fraction {exposure_fraction} must be within (0, 1]")
    path = shake_trajectory(rng, anxiety=anxiety, jerks=jerks)
    frac = float(rng.uniform(lo, hi))
    n = max(2, round(frac * path.shape[0]))
    start = int(rng.integers(0, path.shape[0] - n + 1))
    lo_e = max(min_extent_px, 1e-3)
    size = float(np.exp(rng.uniform(math.log(lo_e), math.log(max(max_extent_px, lo_e)))))
    if max_extent_px <= 0:
        size = 0.0
    return motion_kernel(path[start : start + n], size)


def defocus_kernel(radius_px: float) -> F32:
    """A defocus (pillbox) kernel ``float32 (k, k)``, ``k = 2·ceil(radius_px + 0.5) + 1``:
    a disk of radius ``radius_px`` px with its edge anti-aliased over one pixel (weight
    ``clip(radius + 0.5 − r, 0, 1)`` at distance ``r`` from the centre), summing to 1.
    Radius 0 (up to 0.5) is close to the identity. ``radius_px`` ≤ ``MAX_DEFOCUS_RADIUS_PX``."""
    if not (math.isfinite(radius_px) and 0 <= radius_px <= MAX_DEFOCUS_RADIUS_PX):
        raise SimulationError(
            f"defocus radius {radius_px} px must be in [0, {MAX_DEFOCUS_RADIUS_PX}]"
        )
    half = math.ceil(radius_px + 0.5)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    r = np.hypot(xx, yy)
    w = np.clip(radius_px + 0.5 - r, 0.0, 1.0)
    if radius_px < 0.5:  # a sub-pixel disk: the centre keeps the rest of the weight
        w[half, half] = 1.0
    w /= w.sum()
    out: F32 = w.astype(np.float32)
    return out


def combine_kernels(a: F32, b: F32) -> F32:
    """The kernel of blurring by ``a`` then ``b``: their full convolution ``float32``
    ``(ka + kb − 1, ka + kb − 1)`` (odd, summing to 1)."""
    ka, kb = a.shape[0], b.shape[0]
    big, small = (a, b) if ka >= kb else (b, a)
    pad = small.shape[0] // 2
    padded = cv2.copyMakeBorder(
        big.astype(np.float32), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0.0
    )
    out = np.asarray(
        cv2.filter2D(
            padded, -1, np.ascontiguousarray(small[::-1, ::-1]), borderType=cv2.BORDER_CONSTANT
        ),
        np.float32,
    )
    out = np.maximum(out, 0.0)
    out /= out.sum()
    return out.astype(np.float32)


def random_kernel(
    rng: np.random.Generator,
    max_motion_px: float = 40.0,
    max_defocus_px: float = 8.0,
    *,
    p_motion: float = 0.85,
    p_defocus: float = 0.35,
    min_motion_px: float = 1.0,
) -> F32:
    """A random training kernel ``float32 (k, k)``: camera shake
    (:func:`random_motion_kernel`, extent log-uniform in ``[min_motion_px,
    max_motion_px]``) with probability ``p_motion``, defocus (radius uniform in
    ``[0.5, max_defocus_px]``) with probability ``p_defocus``, convolved when both; the
    identity kernel ``(1, 1)`` when neither. Deterministic by ``rng``."""
    use_motion = rng.uniform() < p_motion and max_motion_px > 0
    use_defocus = rng.uniform() < p_defocus and max_defocus_px > 0
    kernel = np.ones((1, 1), np.float32)
    if use_motion:
        kernel = random_motion_kernel(
            rng, max_motion_px, min_extent_px=min(min_motion_px, max_motion_px)
        )
    if use_defocus:
        radius = float(rng.uniform(min(0.5, max_defocus_px), max_defocus_px))
        disk = defocus_kernel(radius)
        kernel = disk if kernel.shape == (1, 1) else combine_kernels(kernel, disk)
    return kernel


def kernel_extent(psf: F32, threshold: float = 0.02) -> float:
    """Extent of a kernel ``(k, k)``: the largest distance (px) between two of its pixels
    whose weight exceeds ``threshold`` × the largest weight (0 for a single pixel)."""
    ys, xs = np.nonzero(psf > threshold * float(psf.max()))
    if xs.size < 2:
        return 0.0
    return extent(np.stack([xs, ys], axis=1).astype(np.float64))
