"""Pick the registration/fusion backend from ``registration.backend``.

* ``opencv``: the CPU registrar and fuser (:mod:`deblurd.pipeline`), everywhere.
* ``cuda``: the GPU path; where pycuda or a GPU is missing :func:`resolve_backend` raises
  :class:`~deblurd.gpu.backend.GpuError` with the reason (the daemon turns it into a
  start-up error, exit 78).
* ``auto``: ``cuda`` where :func:`~deblurd.gpu.backend.available` says so, else
  ``opencv``; the reason for falling back is logged and returned for the status.
* ``emulated``: the GPU path's host wrappers on the kernels' CPU build (tests, CI).

Each function dispatches with a ``match`` on the resolved kind that ends in
:func:`typing.assert_never` (on the configured value: :func:`_unlisted`), so a value added
to :data:`~deblurd.settings.registration.RegistrationBackend` and not handled here is a
mypy error.

What the stages are wired with: :func:`stage4_for` gives the :class:`~deblurd.pipeline.
stage4.Stage4` backend the CLI and the daemon hand :func:`deblurd.pipeline.process.
complete_burst`; its :func:`open_aligner` and :func:`open_fusion_job` open the streaming
stage-4 interfaces of :mod:`deblurd.pipeline.stage4`. With ``opencv`` frames cross between
the stages as host arrays (exactly the CPU registrar's and fuser's results); with
``cuda``/``emulated`` each second frame is uploaded once, as ``uint8``, and stays on the
device from registration through fusion (:mod:`deblurd.gpu.resident`). Both open on the
process-wide backend of their kind, so the aligner's device frames are in the fusion
job's memory. :func:`open_registrar` gives the registration stage alone (host arrays in and out).
"""

from __future__ import annotations

import logging
from typing import Literal, Never, NoReturn, assert_never

import numpy as np
import numpy.typing as npt

from deblurd.gpu.backend import GpuError, available
from deblurd.pipeline.noise import NoiseModel
from deblurd.pipeline.registration import OpenCVRegistrar, Registrar
from deblurd.pipeline.stage4 import (
    CPU_STAGE4,
    Aligner,
    CpuFusionJob,
    FusionJob,
    RegistrarAligner,
    Stage4,
)
from deblurd.settings.fusion import FusionSettings
from deblurd.settings.registration import RegistrationSettings

log = logging.getLogger(__name__)

Kind = Literal["opencv", "cuda", "emulated"]
"""What ``registration.backend`` resolves to: ``auto`` becomes ``cuda`` or ``opencv``."""


def resolve_backend(settings: RegistrationSettings) -> tuple[Kind, str | None]:
    """``(kind, note)``: ``kind`` is ``opencv``, ``cuda`` or ``emulated``; ``note`` says why
    ``auto`` fell back to OpenCV (None otherwise). Raises GpuError for ``cuda`` without a
    usable GPU, and for an unknown value."""
    wanted = settings.backend
    match wanted:
        case "opencv" | "emulated":
            return wanted, None
        case "cuda" | "auto":
            ok, why = available()
            if ok:
                return "cuda", None
            if wanted == "cuda":
                raise GpuError(f"registration.backend = cuda, but the GPU path cannot run: {why}")
            note = f"registration.backend = auto: using OpenCV ({why})"
            log.info("%s", note)
            return "opencv", note
        case _:
            _unlisted(wanted)


def _unlisted(wanted: Never) -> NoReturn:
    """:func:`typing.assert_never` for ``registration.backend``: mypy checks that every
    listed value is handled; a value that bypassed validation (``model_copy``) is a
    :class:`GpuError`."""
    raise GpuError(f"registration.backend {wanted!r}: expected opencv, cuda, auto or emulated")


def open_registrar(settings: RegistrationSettings) -> Registrar:
    """The registrar ``settings.backend`` asks for (see :func:`resolve_backend`)."""
    kind, _note = resolve_backend(settings)
    match kind:
        case "opencv":
            return OpenCVRegistrar(settings)
        case "cuda" | "emulated":
            from deblurd.gpu.registrar import GpuRegistrar

            return GpuRegistrar(settings, kind)
        case _:
            assert_never(kind)


def open_aligner(settings: RegistrationSettings) -> Aligner:
    """The streaming registration stage on ``settings.backend``: the OpenCV registrar
    with host arrays, or the GPU registrar device-resident (:mod:`deblurd.gpu.handoff`)."""
    kind, _note = resolve_backend(settings)
    match kind:
        case "opencv":
            return RegistrarAligner(OpenCVRegistrar(settings))
        case "cuda" | "emulated":
            from deblurd.gpu.handoff import DeviceAligner
            from deblurd.gpu.registrar import GpuRegistrar

            return DeviceAligner(GpuRegistrar(settings, kind))
        case _:
            assert_never(kind)


def open_fusion_job(
    settings: RegistrationSettings,
    reference: npt.NDArray[np.generic],
    fusion_settings: FusionSettings,
    noise_sigma: float | NoiseModel | None = None,
) -> FusionJob:
    """A streaming fusion job in ``fusion_settings.mode`` on the backend of
    :func:`open_aligner` (``settings.backend``): it takes that aligner's frames.

    ``reference``: linear ``float32 (H, W, 3)`` (the raw selected frame); ``noise_sigma``
    as :func:`deblurd.pipeline.fusion.fuse`.
    """
    kind, _note = resolve_backend(settings)
    match kind:
        case "opencv":
            return CpuFusionJob(reference, fusion_settings, noise_sigma)
        case "cuda" | "emulated":
            from deblurd.gpu.fuser import GpuFuser

            return GpuFuser(kind).job(reference, fusion_settings, noise_sigma)
        case _:
            assert_never(kind)


def stage4_for(settings: RegistrationSettings) -> Stage4:
    """The stage-4 backend for ``settings.backend``: the CPU one for ``opencv`` (and for
    ``auto`` without a GPU), else the one that opens the GPU aligner and fusion job.
    Raises :class:`~deblurd.gpu.backend.GpuError` as :func:`resolve_backend`."""
    kind, _note = resolve_backend(settings)
    match kind:
        case "opencv":
            return CPU_STAGE4
        case "cuda" | "emulated":
            return Stage4(open_aligner, open_fusion_job)
        case _:
            assert_never(kind)
