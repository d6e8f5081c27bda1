"""The inference interface of the U-Net step (stages 2 and 5 of the method).

A :class:`Deblurrer` takes one linear-light RGB image and returns its deblurred version
of the same shape. Runtimes (onnxruntime everywhere, TensorRT on Jetson, a Triton server)
implement it; :func:`deblurd.inference.factory.open_deblurrer` picks one from the config.
The pipeline only sees this protocol; this module imports no runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from deblurd.pipeline.noise import estimate_noise_sigma

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


def runtime_report(deblurrer: Deblurrer | None) -> dict[str, Any]:
    """What a job's report says of the runtime: ``runtime`` (its name, or ``off``) and
    ``notes`` (what the runtime had to do since the last call, e.g. a Triton pass that
    fell back to the local network; taken, so each note is in one report only), and
    ``fallback`` (whether any pass fell back)."""
    if deblurrer is None:
        return {"runtime": "off", "notes": [], "fallback": False}
    take = getattr(deblurrer, "take_notes", None)
    notes = [str(n) for n in take()] if callable(take) else []
    return {"runtime": deblurrer.name, "notes": notes, "fallback": bool(notes)}


def remote_status(deblurrer: Deblurrer | None) -> dict[str, Any] | None:
    """The runtime's server, request counts and latency (the status reply's
    ``inference_remote``) when it runs on a server; None for local runtimes."""
    status = getattr(deblurrer, "remote_status", None)
    if not callable(status):
        return None
    doc: dict[str, Any] = status()
    return doc
