"""Gaussian image pyramids for registration (DESIGN §1 step 4: scales 1, 1/2, 1/4, 1/8).

Level ``l`` is the input low-passed with OpenCV's 5-tap binomial kernel and decimated by
``2**l``. ``cv2.pyrDown`` samples the even input pixels, so a point at level ``l`` with
pixel coordinates ``(x, y)`` sits at ``(x * 2**l, y * 2**l)`` at full resolution: going
between levels is a pure scale, no half-pixel offset.

Registration tracks on a *base level* (``tracking_level``): the finest level whose longer
side fits a budget. A 1080p frame is tracked at 1/2 resolution, 12 MP at 1/4; the
homography is scaled back to full resolution afterwards.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]


def tracking_level(shape: tuple[int, ...], max_side_px: int, levels: int) -> int:
    """The finest pyramid level whose longer side is at most ``max_side_px``.

    ``shape`` is the full-resolution ``(H, W)``. Clamped to ``levels - 1`` (the coarsest
    level there is).
    """
    side = max(shape[0], shape[1])
    level = 0
    while side > max_side_px and level < levels - 1:
        side = (side + 1) // 2
        level += 1
    return level


def to_u8(gray: F32) -> U8:
    """Gray ``float32 (H, W)`` in [0, 1] to ``uint8`` codes 0..255, rounded and clipped."""
    # cv2.convertScaleAbs rounds and saturates in one pass; clamp negatives first (a
    # deblurred reference may undershoot 0 slightly and abs() would fold them upwards).
    clamped = cv2.max(gray, 0.0)
    out: U8 = cv2.convertScaleAbs(clamped, alpha=255.0)
    return out


def tracking_pyramid(gray: F32, levels: int, base: int) -> list[U8]:
    """Pyramid levels ``base .. levels-1`` of ``gray`` as ``uint8`` images.

    ``gray`` is ``float32 (H, W)`` in [0, 1] at full resolution. Levels finer than
    ``base`` are computed in float32 (no quantisation before the first decimation) and
    dropped; from ``base`` on the pyramid is ``uint8`` (what pyramidal LK works on, and
    4x less memory traffic). Element ``i`` of the result is pyramid level ``base + i``,
    of size ``ceil(H / 2**(base+i)) x ceil(W / 2**(base+i))``.
    """
    if not 0 <= base < levels:
        raise ValueError(f"base level {base} outside 0..{levels - 1}")
    img: F32 = gray
    for _ in range(base):
        img = cv2.pyrDown(img)
    pyr: list[U8] = [to_u8(img)]
    for _ in range(base + 1, levels):
        pyr.append(cv2.pyrDown(pyr[-1]))
    return pyr
