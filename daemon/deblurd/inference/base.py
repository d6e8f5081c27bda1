"""The inference interface of the U-Net step (stages 2 and 5 of the method).

A :class:`Deblurrer` takes one linear-light RGB image and returns its deblurred version
of the same shape. Runtimes (onnxruntime everywhere, TensorRT on Jetson) implement it;
:func:`open_deblurrer` picks one from the config. The pipeline only sees this protocol.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from deblurd.errors import InferenceError
from deblurd.settings.inference import InferenceSettings

Pass = Literal["first", "second"]


class Deblurrer(Protocol):
    """A single-image deblurring network."""

    name: str

    def deblur(self, image: npt.NDArray[np.float32], pass_: Pass) -> npt.NDArray[np.float32]:
        """Deblur ``float32 (H, W, 3)`` linear light in [0, 1]; returns the same shape and dtype.

        ``pass_`` says which input it is: ``first`` (a noisy, blurred single frame) or
        ``second`` (a fused image with far less noise), for networks conditioned on it.
        """
        ...

    def close(self) -> None:
        """Free every resource (sessions, device memory)."""
        ...


def open_deblurrer(settings: InferenceSettings) -> Deblurrer | None:
    """The configured runtime, or ``None`` when ``passes = "off"``.

    Raises :class:`InferenceError` naming the model file and the fix when it cannot load.
    """
    if settings.passes == "off":
        return None
    runtime = settings.runtime
    if runtime.type == "onnxruntime":
        from deblurd.inference.onnx import OnnxDeblurrer

        return OnnxDeblurrer(runtime)
    from pathlib import Path

    from deblurd.inference.onnx import OnnxDeblurrer
    from deblurd.inference.tensorrt import TensorRTDeblurrer, default_state_dir
    from deblurd.settings.inference import OnnxRuntimeSettings

    try:
        return TensorRTDeblurrer(Path(runtime.model), default_state_dir())
    except InferenceError as exc:
        if not runtime.fallback_to_onnxruntime:
            raise
        import logging

        logging.getLogger(__name__).warning("TensorRT unavailable (%s); using onnxruntime", exc)
        return OnnxDeblurrer(OnnxRuntimeSettings(model=runtime.model))
