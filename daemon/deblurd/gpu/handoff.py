"""Stage 4's CUDA implementation of the aligner (:mod:`deblurd.pipeline.stage4` owns the
interfaces and the CPU implementation): :class:`DeviceAligner` over a
:class:`~deblurd.gpu.registrar.GpuRegistrar`, paired with the GPU fuser's jobs
(:class:`~deblurd.gpu.fuser.GpuSequentialFuser`). Each second frame is uploaded once as
``uint8`` and stays on the device through gray conversion, pyramid, tracking, decoding,
warp and fusion (:mod:`deblurd.gpu.resident`); the dense fallback and the local
refinement run on the host's copy of the frame, and a refined frame's warp uploads only
its coarse sampling map (:mod:`deblurd.gpu.registrar`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deblurd.gpu.resident import AnyAlignedFrame
from deblurd.imaging import F32, U8, linear_to_srgb
from deblurd.pipeline.registration import Registration
from deblurd.pipeline.stage4 import TimedAligner

if TYPE_CHECKING:
    from deblurd.gpu.registrar import GpuRegistrar


class DeviceAligner(TimedAligner):
    """The device-resident aligner over a :class:`~deblurd.gpu.registrar.GpuRegistrar`:
    per frame one ``uint8`` upload, gray and linear derived on the device, the aligned
    frame a :class:`~deblurd.gpu.resident.DeviceAlignedFrame` in the registrar's backend
    (fuse it with a job on the same backend before the next :meth:`align`)."""

    def __init__(self, registrar: GpuRegistrar) -> None:
        super().__init__()
        self.registrar = registrar

    def _set_reference(self, first: F32) -> None:
        self.registrar.set_reference_frame(linear_to_srgb(first))

    def _register(self, frame: U8) -> Registration:
        return self.registrar.register_frame(frame)

    def _warp(self, frame: U8, reg: Registration, weight: float) -> AnyAlignedFrame:
        return self.registrar.warp_resident(reg, weight)

    def close(self) -> None:
        self.registrar.close()
