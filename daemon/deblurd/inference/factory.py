"""Which runtime runs the U-Net: :func:`open_deblurrer` reads ``inference.runtime`` and opens
onnxruntime, TensorRT or a Triton server client.

The one place that imports the runtimes (each lazily, inside its case: TensorRT and
tritonclient are optional), so :mod:`deblurd.inference.base` stays free of them. The
``match`` ends in :func:`typing.assert_never`: a new runtime settings class that is not
handled here is a mypy error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import assert_never

from deblurd.errors import InferenceError
from deblurd.inference.base import Deblurrer, TwoPassDeblurrer, resolve_model_path
from deblurd.settings.inference import (
    InferenceSettings,
    OnnxRuntimeSettings,
    TensorRTSettings,
    TritonSettings,
)

log = logging.getLogger(__name__)


def open_deblurrer(settings: InferenceSettings) -> Deblurrer | None:
    """The configured runtime, or ``None`` when ``passes = "off"``; with
    ``second_model`` and ``passes = "both"``, both passes' networks.

    Raises :class:`InferenceError` naming the model file and the fix when it cannot load
    (a Triton model the server does not have, or of the wrong shape: :class:`ConfigError`
    naming the key).
    """
    if settings.passes == "off":
        return None
    runtime = settings.runtime
    match runtime:
        case OnnxRuntimeSettings():
            onnx_settings = runtime

            def open_onnx(model: str) -> Deblurrer:
                from deblurd.inference.onnx import OnnxDeblurrer

                return OnnxDeblurrer(onnx_settings, model)

            return _two_pass(settings, runtime.model, open_onnx)
        case TensorRTSettings():
            trt_settings = runtime
            return _two_pass(settings, runtime.model, lambda m: _open_tensorrt(trt_settings, m))
        case TritonSettings():
            from deblurd.inference.triton import TritonDeblurrer

            return TritonDeblurrer(
                runtime,
                second_pass=settings.passes == "both",
                local_second_model=settings.second_model,
                # offload = "burst" (deblurd.service.offload) needs only the burst model
                check_models=runtime.offload == "networks",
            )
        case _:
            assert_never(runtime)


def _two_pass(
    settings: InferenceSettings, model: str, open_model: Callable[[str], Deblurrer]
) -> Deblurrer:
    """``open_model(model)``, and with ``passes = "both"`` and a ``second_model`` a
    :class:`TwoPassDeblurrer` of it and ``open_model(second_model)``."""
    first = open_model(model)
    if settings.passes != "both" or not settings.second_model:
        return first
    try:
        second = open_model(settings.second_model)
    except BaseException:
        first.close()
        raise
    return TwoPassDeblurrer(first, second)


def _open_tensorrt(runtime: TensorRTSettings, model: str) -> Deblurrer:
    """TensorRT on ``model`` (an ONNX path; the plan built from it), or onnxruntime with
    ``fallback_to_onnxruntime`` when the plan cannot be loaded."""
    from deblurd.inference.onnx import OnnxDeblurrer
    from deblurd.inference.tensorrt import TensorRTDeblurrer, default_state_dir, ensure_plan

    try:
        state_dir = Path(runtime.state_dir) if runtime.state_dir else default_state_dir()
        path = resolve_model_path(model)
        if runtime.build_plans:
            ensure_plan(path, state_dir, runtime.tile)
        return TensorRTDeblurrer(path, state_dir, runtime.tile)
    except InferenceError as exc:
        if not runtime.fallback_to_onnxruntime:
            raise
        log.warning("TensorRT unavailable (%s); using onnxruntime", exc)
        return OnnxDeblurrer(OnnxRuntimeSettings(model=model))
