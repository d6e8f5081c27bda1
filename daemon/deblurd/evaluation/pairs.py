"""Synthetic handheld frame pairs with a known homography: the registration tests' and
benchmarks' ground truth (one generator, so CPU and GPU registrars are judged alike).

Gray images are ``float32 (H, W)`` in [0, 1]; homographies ``float64 (3, 3)`` map moving
pixel coordinates to reference ones (``deblurd.pipeline.registration``'s convention).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from deblurd.imaging import F32, F64

ArrayT = TypeVar("ArrayT", bound=npt.NDArray[Any])


def photo_gray(name: str) -> F32:
    """A scikit-image photo (evaluation only, never training) as gray ``float32`` in [0, 1]."""
    from skimage import data as skdata

    img = np.asarray(getattr(skdata, name)(), np.uint8)
    if img.ndim == 3:
        img = np.asarray(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), np.uint8)
    out: F32 = img.astype(np.float32) / np.float32(255.0)
    return out


def tile_photos(photos: Sequence[npt.NDArray[Any]], out: ArrayT) -> ArrayT:
    """Fill ``out`` (``(H, W)`` or ``(H, W, C)``) with ``photos`` at their native size, row by
    row from the top left, cycling through them and cropping at the edges; returns ``out``."""
    height, width = out.shape[:2]
    y, i = 0, 0
    while y < height:
        x, row = 0, 0
        while x < width:
            p = photos[i % len(photos)]
            i += 1
            h, w = min(p.shape[0], height - y), min(p.shape[1], width - x)
            out[y : y + h, x : x + w] = p[:h, :w]
            x, row = x + w, max(row, h)
        y += row
    return out


def mosaic(width: int, height: int) -> F32:
    """A ``height x width`` gray scene tiled from photos at their native detail."""
    photos = [photo_gray(n) for n in ("astronaut", "coffee", "chelsea", "rocket", "camera")]
    return tile_photos(photos, np.zeros((height, width), np.float32))


def handheld_homography(
    rng: np.random.Generator, width: int, height: int, perspective: float = 2.5e-6
) -> F64:
    """Handheld shake, moving → reference: rotation ±1°, shift ±20 px (at 1080p, scaled with
    the width), zoom ±1 %, perspective terms up to ``perspective`` at 1080p (scaled with the
    width; the default: up to ~1 % across the frame)."""
    k = width / 1920.0
    a, s = math.radians(rng.uniform(-1, 1)), 1 + rng.uniform(-0.01, 0.01)
    c = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    rot = np.array(
        [[s * math.cos(a), -s * math.sin(a), 0], [s * math.sin(a), s * math.cos(a), 0], [0, 0, 1]]
    )
    persp = np.eye(3)
    persp[2, :2] = rng.uniform(-perspective, perspective, 2) / k
    shift = np.eye(3)
    shift[:2, 2] = rng.uniform(-20 * k, 20 * k, 2)
    out: F64 = shift @ c @ persp @ rot @ np.linalg.inv(c)
    return out


def motion_kernel(length: float, angle: float) -> F32:
    """Linear motion blur of ``length`` px, centred exactly (so it does not shift the image)."""
    r = math.ceil(length / 2) + 2
    k = np.zeros((2 * r + 1, 2 * r + 1), np.float64)
    for t in np.linspace(-length / 2, length / 2, int(8 * length) + 1):
        x, y = r + t * math.cos(angle), r + t * math.sin(angle)
        x0, y0 = math.floor(x), math.floor(y)
        fx, fy = x - x0, y - y0
        k[y0, x0] += (1 - fx) * (1 - fy)
        k[y0, x0 + 1] += fx * (1 - fy)
        k[y0 + 1, x0] += (1 - fx) * fy
        k[y0 + 1, x0 + 1] += fx * fy
    out: F32 = (k / k.sum()).astype(np.float32)
    return out


def warp_to_moving(clean: F32, H: F64) -> F32:
    """The moving frame of a scene the reference sees as ``clean`` (gray or RGB):
    ``moving(x) = clean(H x)``."""
    h, w = clean.shape[:2]
    out = cv2.warpPerspective(
        clean,
        H,
        (w, h),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    return np.asarray(out, np.float32)


def degrade(rng: np.random.Generator, img: F32, blur_px: float, sigma: float) -> F32:
    """Motion blur of ``blur_px`` px at a random angle, then Gaussian noise of std ``sigma``."""
    if blur_px > 0:
        img = np.asarray(
            cv2.filter2D(img, -1, motion_kernel(blur_px, rng.uniform(0, np.pi))), np.float32
        )
    noisy = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def handheld_pairs(rng: np.random.Generator, clean: F32, count: int) -> Iterator[tuple[F64, F32]]:
    """``count`` moving frames of the gray scene ``clean``, each ``(H, moving)``: a handheld
    shake (:func:`handheld_homography`), motion blur of 2-5 px and noise of std 0.01-0.02
    (:func:`degrade`); drawn from ``rng`` as each is taken."""
    h, w = clean.shape
    for _ in range(count):
        H = handheld_homography(rng, w, h)
        yield H, degrade(rng, warp_to_moving(clean, H), rng.uniform(2, 5), rng.uniform(0.01, 0.02))


def grid_error(est: F64, true: F64, width: int, height: int) -> float:
    """Median distance, px, between a 12 x 12 grid of the frame mapped by ``est`` and ``true``."""
    xs, ys = np.meshgrid(
        np.linspace(0.05 * width, 0.95 * width, 12), np.linspace(0.05 * height, 0.95 * height, 12)
    )
    p = np.stack([xs.ravel(), ys.ravel()], 1).reshape(-1, 1, 2)
    d = cv2.perspectiveTransform(p, est) - cv2.perspectiveTransform(p, true)
    return float(np.median(np.hypot(d[..., 0], d[..., 1])))
