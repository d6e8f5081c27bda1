"""The inference interface of the U-Net step (stages 2 and 5 of the method).

A :class:`Deblurrer` takes one linear-light RGB image and returns its deblurred version
of the same shape. Runtimes (onnxruntime everywhere, TensorRT on Jetson) implement it;
:func:`open_deblurrer` picks one from the config. The pipeline only sees this protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from deblurd.errors import InferenceError
from deblurd.pipeline.noise import estimate_noise_sigma
from deblurd.settings.inference import InferenceSettings

Pass = Literal["first", "second"]


def input_noise_sigma(srgb: npt.NDArray[np.float32]) -> float:
    """The U-Net's noise-level input: the noise std of the image it is given.

    ``srgb``: ``float32 (H, W, 3)``, sRGB-encoded values in [0, 1] (what the network sees).
    Returns the robust noise std in the same units (:func:`~deblurd.pipeline.noise.
    estimate_noise_sigma`: MAD of the finest diagonal Haar band), about 0.01–0.04 for a
    ring frame and a few times less for a fused image. Training computes the map with this
    same estimator on its synthetic inputs (:mod:`deblurd.training.data`), so the network
    learns the estimator's biases along with the noise: the input needs no metadata, and a
    photo from any camera (``deblurd deblur``) gets a map like a ring frame's.
    """
    return estimate_noise_sigma(srgb)


class Deblurrer(Protocol):
    """A single-image deblurring network."""

    name: str

    def deblur(self, image: npt.NDArray[np.float32], pass_: Pass) -> npt.NDArray[np.float32]:
        """Deblur ``float32 (H, W, 3)`` linear light in [0, 1]; returns the same shape and dtype.

        ``pass_`` says which input it is: ``first`` (a noisy, blurred single frame) or
        ``second`` (a fused image with far less noise). The shipped network is
        conditioned on the input's measured noise level (:func:`input_noise_sigma`), not
        on the pass; the pass names the stage in errors and logs.
        """
        ...

    def close(self) -> None:
        """Free every resource (sessions, device memory)."""
        ...


def resolve_model_path(model: str | Path) -> Path:
    """Where a configured model file is: absolute paths as they are; a relative path in the
    working folder if it is there, else in the checkout this package runs from (so the
    default ``engines/unet.onnx`` works from any folder with an editable install).
    """
    path = Path(model)
    if path.is_absolute() or path.exists():
        return path
    checkout = Path(__file__).resolve().parents[3] / path
    return checkout if checkout.exists() else path


class TwoPassDeblurrer:
    """Routes each pass to its own network: ``first`` for single frames, ``second`` for
    fused images (``inference.second_model``)."""

    def __init__(self, first: Deblurrer, second: Deblurrer) -> None:
        self.first, self.second = first, second
        self.name = f"{first.name} + {second.name}"

    def deblur(self, image: npt.NDArray[np.float32], pass_: Pass) -> npt.NDArray[np.float32]:
        net = self.first if pass_ == "first" else self.second
        return net.deblur(image, pass_)

    def close(self) -> None:
        self.first.close()
        self.second.close()


def open_deblurrer(settings: InferenceSettings) -> Deblurrer | None:
    """The configured runtime, or ``None`` when ``passes = "off"``; with
    ``second_model`` and ``passes = "both"``, a :class:`TwoPassDeblurrer`.

    Raises :class:`InferenceError` naming the model file and the fix when it cannot load.
    """
    if settings.passes == "off":
        return None
    first = _open_runtime(settings, settings.runtime.model)
    if settings.passes != "both" or not settings.second_model:
        return first
    try:
        second = _open_runtime(settings, settings.second_model)
    except BaseException:
        first.close()
        raise
    return TwoPassDeblurrer(first, second)


def _open_runtime(settings: InferenceSettings, model: str) -> Deblurrer:
    """The configured runtime on ``model`` (an ONNX path; TensorRT loads its plan)."""
    runtime = settings.runtime
    if runtime.type == "onnxruntime":
        from deblurd.inference.onnx import OnnxDeblurrer

        return OnnxDeblurrer(runtime, model)
    from pathlib import Path

    from deblurd.inference.onnx import OnnxDeblurrer
    from deblurd.inference.tensorrt import TensorRTDeblurrer, default_state_dir, ensure_plan
    from deblurd.settings.inference import OnnxRuntimeSettings

    try:
        state_dir = Path(runtime.state_dir) if runtime.state_dir else default_state_dir()
        path = resolve_model_path(model)
        if runtime.build_plans:
            ensure_plan(path, state_dir, runtime.tile)
        return TensorRTDeblurrer(path, state_dir, runtime.tile)
    except InferenceError as exc:
        if not runtime.fallback_to_onnxruntime:
            raise
        import logging

        logging.getLogger(__name__).warning("TensorRT unavailable (%s); using onnxruntime", exc)
        return OnnxDeblurrer(OnnxRuntimeSettings(model=model))
