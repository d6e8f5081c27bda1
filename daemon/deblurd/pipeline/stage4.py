"""Stage 4 as a stream, whatever the backend: an *aligner* (register and warp one second
frame) feeding a *fusion job* (``add`` one aligned frame, ``result`` at the end).

The pipeline (:func:`deblurd.pipeline.process.complete_burst`) sees only these
interfaces, opened by a :class:`Stage4` backend that whoever wires the stages together
hands it (the CLI and the daemon take it from :func:`deblurd.gpu.factory.stage4_for`, which
reads ``registration.backend``); where frames live between the stages is the backend's
business. This module owns the interfaces and the CPU implementation:

* :class:`RegistrarAligner` + :class:`CpuFusionJob` (:data:`CPU_STAGE4`, ``opencv``):
  frames cross as host arrays, ``register(to_gray(frame))`` then
  ``warp(srgb_to_linear(frame))``, fused by :mod:`deblurd.pipeline.fusion` (the same
  arithmetic, bit for bit, as ``fusion.fuse``).
* the CUDA implementation (:mod:`deblurd.gpu.handoff`'s ``DeviceAligner`` and the GPU
  fuser's jobs) keeps each frame on the device from upload to fusion.

Both fusion modes stream: one aligned frame exists at a time (to-reference fusion is a
sum, accumulated frame by frame). The caller must ``add`` each aligned frame before it
aligns the next one: a device-resident frame's buffers are reused by the next warp.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F32, U8, linear_to_srgb, srgb_to_linear, to_gray
from deblurd.pipeline.fusion import AlignedFrame, FusionResult, ReferenceFuser, SequentialFuser
from deblurd.pipeline.noise import NoiseModel
from deblurd.pipeline.registration import OpenCVRegistrar, Registrar, Registration
from deblurd.pipeline.timing import elapsed_ms
from deblurd.settings.fusion import FusionSettings
from deblurd.settings.registration import RegistrationSettings


class Aligner(Protocol):
    """Registers second frames to the reference and warps the accepted ones.

    After :meth:`set_reference` and each :meth:`align`, ``stage_ms`` holds that call's
    host wall time in ms: ``register`` (conversion, pyramid, tracking, fit), and ``warp``
    when a frame was warped.
    """

    stage_ms: dict[str, float]

    def set_reference(self, first: F32) -> None:
        """The job's reference: the (deblurred) first image, linear ``float32 (H, W, 3)``
        (registered on its sRGB encoding's gray, as every second frame)."""

    def align(self, frame: U8, weight: float = 1.0) -> tuple[Registration, Any]:
        """Register ``frame`` (``uint8 (H, W, 3)`` sRGB RGB, as captured) and, when it is
        accepted, warp its linear image into the reference geometry: the aligned frame
        with frame-level ``weight``; ``None`` for a rejected frame. The aligned frame is
        valid until the next ``align``."""
        ...

    def close(self) -> None:
        """Free what the aligner holds (device buffers)."""


class FusionJob(Protocol):
    """One streaming fusion job (either mode): aligned frames in, the fused image out."""

    def add(self, frame: Any) -> float:
        """Merge one aligned frame; returns the mean per-pixel weight it got (0..1)."""
        ...

    def result(self) -> FusionResult:
        """The fused image of the reference and the frames added so far."""
        ...


class TimedAligner:
    """The :class:`Aligner` steps with their timing; a backend supplies the three hops."""

    def __init__(self) -> None:
        self.stage_ms: dict[str, float] = {}

    def set_reference(self, first: F32) -> None:
        t0 = time.perf_counter()
        self._set_reference(first)
        self.stage_ms = {"register": elapsed_ms(t0)}

    def align(self, frame: U8, weight: float = 1.0) -> tuple[Registration, Any]:
        t0 = time.perf_counter()
        reg = self._register(frame)
        t1 = time.perf_counter()
        self.stage_ms = {"register": elapsed_ms(t0, t1)}
        if not reg.accepted:
            return reg, None
        aligned = self._warp(frame, reg, weight)
        self.stage_ms["warp"] = elapsed_ms(t1)
        return reg, aligned

    def _set_reference(self, first: F32) -> None:
        raise NotImplementedError

    def _register(self, frame: U8) -> Registration:
        raise NotImplementedError

    def _warp(self, frame: U8, reg: Registration, weight: float) -> Any:
        raise NotImplementedError


class RegistrarAligner(TimedAligner):
    """Any :class:`~deblurd.pipeline.registration.Registrar` with host handoff: the frame
    is converted on the host for each stage (``to_gray`` to register, ``srgb_to_linear``
    to warp) and the aligned frame is a host
    :class:`~deblurd.pipeline.fusion.AlignedFrame`. The OpenCV path; around a
    :class:`~deblurd.gpu.registrar.GpuRegistrar` it is the GPU path's host round trip
    (for comparisons and benchmarks)."""

    def __init__(self, registrar: Registrar) -> None:
        super().__init__()
        self.registrar = registrar

    def _set_reference(self, first: F32) -> None:
        self.registrar.set_reference(to_gray(linear_to_srgb(first)))

    def _register(self, frame: U8) -> Registration:
        return self.registrar.register(to_gray(frame))

    def _warp(self, frame: U8, reg: Registration, weight: float) -> Any:
        image, valid = self.registrar.warp(srgb_to_linear(frame), reg)
        return AlignedFrame(image, valid, weight)

    def close(self) -> None:
        close = getattr(self.registrar, "close", None)
        if callable(close):
            close()


class CpuFusionJob:
    """A streaming CPU fusion job: :class:`~deblurd.pipeline.fusion.SequentialFuser` or
    :class:`~deblurd.pipeline.fusion.ReferenceFuser` by ``settings.mode`` (what
    :func:`~deblurd.pipeline.fusion.fuse` runs). Host frames only."""

    def __init__(
        self,
        reference: npt.NDArray[np.generic],
        settings: FusionSettings,
        noise_sigma: float | NoiseModel | None = None,
    ) -> None:
        fuser = SequentialFuser if settings.mode == "sequential" else ReferenceFuser
        self._fuser = fuser(reference, settings, noise_sigma)

    def add(self, frame: Any) -> float:
        """Merge one host :class:`~deblurd.pipeline.fusion.AlignedFrame` (anything else,
        e.g. a device-resident frame, is an :class:`~deblurd.errors.ImageError`: it is not
        in host memory)."""
        if not isinstance(frame, AlignedFrame):
            raise ImageError(
                f"the CPU fuser takes host AlignedFrames, got a "
                f"{type(frame).__name__} (a device-resident frame is fused by "
                "the GPU fuser of its backend)"
            )
        return self._fuser.add(frame)

    def result(self) -> FusionResult:
        """The fused image so far (new arrays: adding more frames does not change it)."""
        return self._fuser.result()


class OpenAligner(Protocol):
    """Opens the streaming registration stage of one burst."""

    def __call__(self, settings: RegistrationSettings) -> Aligner: ...


class OpenFusionJob(Protocol):
    """Opens a streaming fusion job in ``fusion_settings.mode``; ``reference``: linear
    ``float32 (H, W, 3)``; ``noise_sigma`` as :func:`deblurd.pipeline.fusion.fuse`."""

    def __call__(
        self,
        settings: RegistrationSettings,
        reference: npt.NDArray[np.generic],
        fusion_settings: FusionSettings,
        noise_sigma: float | NoiseModel | None = None,
    ) -> FusionJob: ...


@dataclass(frozen=True)
class Stage4:
    """A stage-4 backend: how to open the aligner and the fusion job of one burst (both on
    the same backend, so the aligner's frames are in the job's memory)."""

    open_aligner: OpenAligner
    open_fusion_job: OpenFusionJob


def _cpu_aligner(settings: RegistrationSettings) -> Aligner:
    return RegistrarAligner(OpenCVRegistrar(settings))


def _cpu_fusion_job(
    settings: RegistrationSettings,
    reference: npt.NDArray[np.generic],
    fusion_settings: FusionSettings,
    noise_sigma: float | NoiseModel | None = None,
) -> FusionJob:
    return CpuFusionJob(reference, fusion_settings, noise_sigma)


#: The OpenCV registrar with host arrays and the CPU fuser (every machine).
CPU_STAGE4 = Stage4(_cpu_aligner, _cpu_fusion_job)
