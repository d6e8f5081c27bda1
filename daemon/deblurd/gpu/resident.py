"""The device-resident handoff of stage 4: frames cross to the device once and stay there.

A second frame is uploaded once, as the camera delivered it: ``uint8 (H, W, 3)`` sRGB,
``H * W * 3`` bytes (a quarter of its linear ``float32`` image). On the device:

* :func:`gray_into` derives the registration's gray image (kernel ``rgb8_to_gray``),
  bit-identical to :func:`deblurd.imaging.to_gray` of the frame;
* :func:`linear_into` decodes its linear RGB (kernel ``lut_u8_f32`` through a 256-entry
  table uploaded once per backend), bit-identical to
  :func:`deblurd.imaging.srgb_to_linear`;
* the registrar warps that linear image into the reference geometry and hands the fuser
  a :class:`DeviceAlignedFrame`: the warped image and its valid mask as device buffers,
  never downloaded.

Lifetime: a :class:`DeviceAlignedFrame`'s buffers are pooled and overwritten by the
registrar's next warp (one aligned frame exists at a time; memory stays O(one frame)).
The pipeline hands each aligned frame to the fusion job before it warps the next one;
the kernels of both run on the backend's one stream, in the order they were queued, so
no synchronisation is needed beyond that order. Its :class:`Lease` says whether the
buffers still hold the frame: the registrar ends it when it warps again or frees them,
and the fuser refuses a frame whose lease has ended (:class:`~deblurd.gpu.backend.GpuError`)
instead of fusing whatever the buffers hold by then.

The gray conversion needs OpenCV's integer formula, which is not part of its API:
:func:`opencv_gray_formula` finds it among the known fixed-point ones by converting a
probe image with ``cv2.cvtColor`` (once per process). Where none matches (another OpenCV
build), :func:`gray_into` converts on the host with ``to_gray`` and uploads the gray
image: the results stay identical, at the cost of a second upload per frame (logged once).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TypeAlias

import cv2
import numpy as np

from deblurd.gpu.backend import Backend, Buffer, GpuError, grid_1d, grid_2d
from deblurd.imaging import U8, srgb_to_linear, to_gray
from deblurd.pipeline.fusion import AlignedFrame

log = logging.getLogger(__name__)

#: to_gray's scale of uint8 codes: float32(1 / 255).
GRAY_SCALE = np.float32(1.0 / 255.0)
#: Pool key of the sRGB -> linear table (one per backend, shared by every job).
LUT_KEY = "const/srgb_to_linear"
#: srgb_to_linear of every code: ``float32 (256,)`` (its own table, read back through it).
SRGB_TO_LINEAR = srgb_to_linear(np.arange(256, dtype=np.uint8))


@dataclass(frozen=True)
class GrayFormula:
    """A fixed-point RGB -> gray conversion: ``(R r + G g + B b + 2^(shift-1)) >> shift``."""

    r: int
    g: int
    b: int
    shift: int

    def apply(self, rgb: U8) -> U8:
        """The formula on the host: ``uint8 (H, W)`` of a ``uint8 (H, W, 3)`` RGB image."""
        x = rgb.astype(np.int32)  # 255 * 2^16 at most: int32 is enough
        v = x[..., 0] * self.r + x[..., 1] * self.g + x[..., 2] * self.b
        out: U8 = ((v + (1 << (self.shift - 1))) >> self.shift).astype(np.uint8)
        return out


#: OpenCV's RGB2GRAY for 8-bit input: 15-bit coefficients in OpenCV 4.x/5.x's own code
#: (0.299, 0.587, 0.114 times 2^15), and the 14- and 16-bit variants other code paths
#: (HALs) have used.
KNOWN_GRAY_FORMULAS = (
    GrayFormula(9798, 19235, 3735, 15),
    GrayFormula(4899, 9617, 1868, 14),
    GrayFormula(19595, 38470, 7471, 16),
)


def gray_probe() -> U8:
    """The probe image: ``uint8 (256, 256, 3)``, 65536 random RGB triples (seed 0) with
    the extremes (black, white, pure primaries) in its first row. The known formulas
    disagree on about 0.1–0.3 % of random triples: on a hundred or more of these."""
    probe = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    extremes = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    probe[0, : len(extremes)] = np.array(extremes, np.uint8)
    return probe


@functools.cache
def opencv_gray_formula() -> GrayFormula | None:
    """The formula this process's OpenCV uses for ``cvtColor(uint8, RGB2GRAY)`` (the one
    of :data:`KNOWN_GRAY_FORMULAS` that reproduces it on :func:`gray_probe`), or None."""
    probe = gray_probe()
    got = np.asarray(cv2.cvtColor(probe, cv2.COLOR_RGB2GRAY), np.uint8)
    for formula in KNOWN_GRAY_FORMULAS:
        if np.array_equal(formula.apply(probe), got):
            return formula
    log.warning(
        "OpenCV %s converts RGB to gray with none of the known fixed-point formulas: the "
        "GPU path converts frames to gray on the host (one more upload per frame)",
        cv2.__version__,
    )
    return None


def _i(v: int) -> np.int32:
    return np.int32(v)


def gray_into(backend: Backend, frame: Buffer, host: U8, dst_key: str) -> Buffer:
    """``to_gray`` of the uploaded frame into the pooled buffer ``dst_key``.

    ``frame``: the device copy of ``host``, ``uint8 (H, W, 3)`` RGB. Returns ``float32
    (H, W)`` in [0, 1] on the device. ``host`` is only read where OpenCV's formula is not
    known (see the module docstring).
    """
    h, w = frame.shape[:2]
    formula = opencv_gray_formula()
    if formula is None:
        return backend.upload_new(dst_key, to_gray(host))
    dst = backend.buffer(dst_key, (h, w), np.float32)
    backend.launch(
        "rgb8_to_gray",
        *grid_2d(w, h),
        frame,
        _i(w),
        _i(h),
        _i(formula.r),
        _i(formula.g),
        _i(formula.b),
        _i(formula.shift),
        GRAY_SCALE,
        dst,
    )
    return dst


def linear_into(backend: Backend, frame: Buffer, dst: Buffer) -> None:
    """``srgb_to_linear`` of the uploaded ``uint8`` frame into ``dst`` (``float32``, same
    shape) through the 256-entry table (a pooled constant: uploaded once per backend)."""
    if dst.shape != frame.shape or frame.dtype != np.uint8 or dst.dtype != np.float32:
        raise GpuError(
            f"linear_into: uint8 {frame.shape} -> float32 {dst.shape} expected, "
            f"got {frame.dtype} -> {dst.dtype}"
        )
    lut = backend.constant(LUT_KEY, SRGB_TO_LINEAR)
    n = int(np.prod(frame.shape))
    backend.launch("lut_u8_f32", *grid_1d(n), frame, _i(n), lut, dst)


class Lease:
    """Whether a :class:`DeviceAlignedFrame`'s buffers still hold that frame (see the
    module docstring): alive until its registrar warps again or frees them."""

    __slots__ = ("alive",)

    def __init__(self) -> None:
        self.alive = True

    def end(self) -> None:
        self.alive = False


@dataclass(frozen=True)
class DeviceAlignedFrame:
    """A second frame warped into the reference geometry, in device memory.

    The device counterpart of :class:`~deblurd.pipeline.fusion.AlignedFrame`:
    ``image``: ``float32 (H, W, 3)`` linear light; ``valid``: ``float32 (H, W)`` in {0, 1},
    1 where the warp had data; ``weight``: frame-level weight, >= 0. Both buffers belong
    to one backend's pool and hold the frame while ``lease`` is alive (None: the caller
    vouches for the buffers' lifetime itself).
    """

    image: Buffer
    valid: Buffer
    weight: float = 1.0
    lease: Lease | None = None


#: What a fusion job takes: an aligned frame on the host or on the device.
AnyAlignedFrame: TypeAlias = AlignedFrame | DeviceAlignedFrame
