"""Gaussian image pyramids for registration (DESIGN §1 step 4: scales 1, 1/2, 1/4, 1/8).

Level ``l`` is the input low-passed with OpenCV's 5-tap binomial kernel and decimated by
``2**l``. ``cv2.pyrDown`` samples the even input pixels, so a point at level ``l`` with
pixel coordinates ``(x, y)`` sits at ``(x * 2**l, y * 2**l)`` at full resolution: going
between levels is a pure scale, no half-pixel offset.

Registration tracks on a *base level* (``tracking_level``): the finest level whose longer
side fits a budget. A 1080p frame is tracked at 1/2 resolution, 12 MP at 1/4; the
homography is scaled back to full resolution afterwards. The pyramid reaches level
``levels - 1`` (1/8 for 4 levels) and at least two levels above the base
(``coarsest_level``: 12 MP goes to 1/16), so that coarse-to-fine tracking has at least
three levels.
"""

from __future__ import annotations

import cv2
import numpy as np

from deblurd.imaging import F32, U8


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


def coarsest_level(levels: int, base: int, min_tracked: int = 3) -> int:
    """The coarsest pyramid level: ``levels - 1``, but at least ``min_tracked - 1`` above
    ``base`` so that tracking always has ``min_tracked`` levels (its capture range, in
    full-resolution pixels, must grow with the resolution as the shake does).
    """
    return max(levels - 1, base + min_tracked - 1)


def to_u8(gray: F32, out: U8 | None = None) -> U8:
    """Gray ``float32 (H, W)`` in [0, 1] to ``uint8`` codes 0..255, rounded and clipped.

    ``out``: optional ``uint8 (H, W)`` buffer to write into (returned).
    """
    # cv2.convertScaleAbs rounds and saturates in one pass; clamp negatives first (a
    # deblurred reference may undershoot 0 slightly and abs() would fold them upwards).
    _, clamped = cv2.threshold(gray, 0.0, 0.0, cv2.THRESH_TOZERO)
    return np.asarray(cv2.convertScaleAbs(clamped, dst=out, alpha=255.0), np.uint8)


def level_shape(shape: tuple[int, int], level: int) -> tuple[int, int]:
    """``(h, w)`` of pyramid level ``level`` of a ``shape = (H, W)`` image (``ceil``)."""
    h, w = shape
    for _ in range(level):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


class PyramidBuilder:
    """Builds pyramid levels ``base .. coarsest`` of ``(H, W)`` gray images, reusing buffers.

    Levels finer than ``base`` are computed in float32 (no quantisation before the first
    decimation) and dropped. The base level is then *photometrically normalised*: scaled
    and offset to mean ``NORM_MEAN`` and standard deviation ``NORM_STD``, so that frames
    of different exposure or gain look alike to Lucas–Kanade (which assumes constant
    brightness) and a dark frame still spans many ``uint8`` codes. From ``base`` on the
    pyramid is ``uint8`` (what pyramidal LK works on, and 4x less memory traffic).
    Element ``i`` of :meth:`build`'s result is level ``base + i``, of size
    :func:`level_shape`.

    The buffers are allocated once: fresh multi-megabyte arrays cost page faults on every
    call (a 12 MP float32 ``pyrDown`` runs about 2x slower into a new array). The
    returned levels are views of those buffers, valid until the next :meth:`build`.
    """

    NORM_MEAN = 0.5
    NORM_STD = 0.16
    MAX_GAIN = 32.0  # a (nearly) flat frame is not stretched into pure noise

    def __init__(
        self,
        shape: tuple[int, int],
        base: int,
        coarsest: int,
        share_scratch: PyramidBuilder | None = None,
    ) -> None:
        """``share_scratch``: a builder of the same geometry whose float32 scratch buffers
        this one may reuse (builds that never run at the same time, e.g. the reference's
        and the second frames'); only the ``uint8`` levels are this builder's own."""
        if not 0 <= base <= coarsest:
            raise ValueError(f"base level {base} outside 0..{coarsest}")
        self.shape = shape
        self._base, self._coarsest = base, coarsest
        self._f32: list[F32]
        self._norm: F32
        if share_scratch is not None and (share_scratch.shape, share_scratch._base) == (
            shape,
            base,
        ):
            self._f32, self._norm = share_scratch._f32, share_scratch._norm
        else:
            self._f32 = [np.empty(level_shape(shape, k), np.float32) for k in range(1, base + 1)]
            self._norm = np.empty(level_shape(shape, base), np.float32)
        self._u8 = [np.empty(level_shape(shape, k), np.uint8) for k in range(base, coarsest + 1)]

    def build(self, gray: F32) -> list[U8]:
        """The pyramid of ``gray`` (``float32 (H, W)`` in [0, 1], of the builder's shape)."""
        if gray.shape != self.shape:
            raise ValueError(f"image {gray.shape} is not the pyramid's {self.shape}")
        img: F32 = np.ascontiguousarray(gray)  # a no-op unless gray is a strided view
        for buf in self._f32:
            img = np.asarray(cv2.pyrDown(img, dst=buf, dstsize=buf.shape[::-1]), np.float32)
        sample = img[::4, ::4]  # every 16th pixel: statistics to 3 digits at a tenth the cost
        mean, std = float(sample.mean(dtype=np.float64)), float(sample.std(dtype=np.float64))
        gain = min(self.NORM_STD / max(std, 1e-6), self.MAX_GAIN)
        np.multiply(img, np.float32(gain), out=self._norm)
        self._norm += np.float32(self.NORM_MEAN - gain * mean)
        to_u8(self._norm, out=self._u8[0])
        for k in range(1, len(self._u8)):
            dst = self._u8[k]
            cv2.pyrDown(self._u8[k - 1], dst=dst, dstsize=dst.shape[::-1])
        return self._u8


def tracking_pyramid(gray: F32, coarsest: int, base: int) -> list[U8]:
    """Pyramid levels ``base .. coarsest`` of ``gray`` as new ``uint8`` arrays.

    See :class:`PyramidBuilder` (this is a one-off build with its own buffers).
    """
    return PyramidBuilder((int(gray.shape[0]), int(gray.shape[1])), base, coarsest).build(gray)
