"""The inference interface of the U-Net step (stages 2 and 5 of the method).

A :class:`Deblurrer` takes one linear-light RGB image and returns its deblurred version
of the same shape. Runtimes (onnxruntime everywhere, TensorRT on Jetson, a Triton server)
implement it; :func:`deblurd.inference.factory.open_deblurrer` picks one from the config.
The pipeline only sees this protocol; this module imports no runtime.

What every runtime shares lives here too: the model contract (:func:`check_contract`:
input ``image`` float32 ``(1, 3, H, W)`` sRGB-encoded values in [0, 1] (the network learns
on what the camera writes), optional second input ``noise`` float32 ``(1, 1, H, W)``: the
noise-level map, the noise std of ``image`` in the same sRGB units (:func:`input_noise_sigma`,
one value for the whole image: about 0.01–0.04 for a noisy 8-bit ring frame, a few times
less for a fused image) — one network serves both passes; output float32
``(1, 3, H, W)``; H and W dynamic, multiples of ``multiple`` (ONNX metadata key
``deblurd.multiple``, default 16)), the tile plan (:func:`run_network_tiled`), the tensors
each tile is fed (:func:`network_inputs`), and :class:`TiledDeblurrer`, the base of the
local runtimes (onnxruntime, TensorRT).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from deblurd.errors import InferenceError
from deblurd.imaging import F32, linear_to_srgb_float, srgb_float_to_linear
from deblurd.inference.tiling import run_padded_tiled
from deblurd.pipeline.noise import estimate_noise_sigma

Pass = Literal["first", "second"]
TILE_OVERLAP = 160  # px shared by neighbouring tiles (blended, run_tiled): the U-Nets' deep
# levels see ~100 px and more around a pixel. Measured at 512 px tiles, max difference to the
# whole image: 96 px with a plain linear ramp 1.5 codes (retrained first-pass model), 160 px
# with the ramp's zero outer quarter 0.67 (first pass) and 0.57 (second pass).


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


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a network as its runtime reports it."""

    name: str
    is_input: bool
    shape: tuple[int, ...]  # -1: a dynamic dim
    float32: bool


@dataclass(frozen=True)
class NetworkIO:
    """The names of a network's tensors in the model contract (module docstring)."""

    image: str
    noise: str | None  # None: the network takes no noise map
    output: str

    def inputs(self) -> list[tuple[str, int]]:
        """``(name, channels)`` of each input, in :func:`network_inputs`' order."""
        return [(self.image, 3)] + ([(self.noise, 1)] if self.noise is not None else [])


def check_contract(
    where: str,
    tensors: Sequence[TensorInfo],
    *,
    any_size: bool = False,
    other_outputs: bool = False,
) -> NetworkIO:
    """Match ``tensors`` to the model contract: one float32 ``(1, 3, H, W)`` input (the
    image), at most one float32 ``(1, 1, H, W)`` input (the noise map) and nothing else in,
    one float32 ``(1, 3, H, W)`` output (the batch dim may be dynamic). Raises
    :class:`InferenceError` starting with ``where`` and listing what the network has.

    A served model (Triton) is held to one more rule and one fewer: ``any_size``, H and
    W must be dynamic (it gets tiles of any size); ``other_outputs``, outputs beside the
    contract's one are allowed (the server returns only the one asked for)."""

    def channels(t: TensorInfo) -> int | None:
        if len(t.shape) != 4 or not t.float32 or t.shape[0] not in (1, -1):
            return None
        if any_size and any(d != -1 for d in t.shape[2:]):
            return None
        return t.shape[1]

    inputs = [t for t in tensors if t.is_input]
    outputs = [t for t in tensors if not t.is_input]
    image = [t.name for t in inputs if channels(t) == 3]
    noise = [t.name for t in inputs if channels(t) == 1]
    outs = [t.name for t in outputs if channels(t) == 3]
    ins_ok = len(image) == 1 and len(noise) <= 1 and len(inputs) == len(image) + len(noise)
    if not ins_ok or len(outs) != 1 or (len(outputs) != 1 and not other_outputs):
        shown = ", ".join(
            f"{'input' if t.is_input else 'output'} {t.name} "
            f"{'float32' if t.float32 else 'not float32'} {t.shape}"
            for t in tensors
        )
        raise InferenceError(
            f"{where}: not a deblurd U-Net: expected the input image float32 (1, 3, H, W), "
            f"optionally the input noise float32 (1, 1, H, W), and one output float32 "
            f"(1, 3, H, W); it has {shown or 'no tensors'}"
        )
    return NetworkIO(image[0], noise[0] if noise else None, outs[0])


def network_inputs(srgb: F32, noise: float) -> tuple[F32, F32]:
    """The network's two inputs for one tile ``(h, w, 3)`` of :func:`run_network_tiled`
    (its sides are multiples of the network's multiple): ``image`` ``float32 (1, 3, h, w)``
    and ``noise`` ``float32 (1, 1, h, w)`` filled with ``noise``. Every runtime feeds
    exactly these."""
    image = np.ascontiguousarray(srgb.transpose(2, 0, 1)[None], dtype=np.float32)
    noise_map = np.full((1, 1, *srgb.shape[:2]), noise, dtype=np.float32)
    return image, noise_map


def network_output(out: npt.NDArray[Any]) -> F32:
    """The network's output ``(1, 3, h, w)`` back to the tile's ``float32 (h, w, 3)`` (a
    copy: a runtime may reuse the memory of ``out``)."""
    return np.ascontiguousarray(out[0].transpose(1, 2, 0), dtype=np.float32)


def run_network_tiled(
    srgb: F32,
    run: Callable[[F32, float], F32],
    tile: int,
    multiple: int,
    noise: float | None = None,
) -> F32:
    """The tile plan every runtime shares: check ``srgb`` ``float32 (H, W, 3)``, measure
    its noise on the whole image (when ``noise`` is None), and call ``run(tile, noise)`` on
    overlapping tiles whose sides are multiples of ``multiple``
    (:func:`~deblurd.inference.tiling.run_padded_tiled`, overlap :data:`TILE_OVERLAP`);
    the same plan gives the same output on any runtime."""
    if srgb.ndim != 3 or srgb.shape[2] != 3:
        raise InferenceError(f"expected (H, W, 3) image, got {srgb.shape}")
    if min(srgb.shape[:2]) < multiple:
        raise InferenceError(
            f"image {srgb.shape[1]}x{srgb.shape[0]} is too small for the network "
            f"(at least {multiple} px each side)"
        )
    sigma = input_noise_sigma(srgb) if noise is None else noise
    return run_padded_tiled(srgb, lambda t: run(t, sigma), tile, TILE_OVERLAP, multiple)


class TiledDeblurrer:
    """What the local runtimes share: :meth:`deblur` in linear light around
    :meth:`deblur_srgb`, which checks the image and runs :meth:`_run` on the tiles of
    :func:`run_network_tiled`. A runtime sets ``name``, ``tile`` (px) and ``multiple``
    and implements :meth:`_run` and :meth:`close`."""

    name: str
    tile: int
    multiple: int

    def _run(self, srgb: F32, noise: float) -> F32:
        """The network on one tile ``float32 (h, w, 3)`` with the noise level ``noise``."""
        raise NotImplementedError

    def _running(self) -> contextlib.AbstractContextManager[object]:
        """The context every :meth:`deblur_srgb` runs in (TensorRT: the CUDA context)."""
        return contextlib.nullcontext()

    def deblur_srgb(self, srgb: F32, noise: float | None = None) -> F32:
        """Deblur sRGB-encoded ``float32 (H, W, 3)`` in [0, 1], tiled; same shape out.

        ``noise``: the noise-level input (sRGB units); measured on the whole image
        (:func:`input_noise_sigma`, before tiling) when None."""
        with self._running():
            return run_network_tiled(srgb, self._run, self.tile, self.multiple, noise)

    def deblur(self, image: F32, pass_: Pass) -> F32:
        """Linear ``float32 (H, W, 3)`` in, linear out (the network works in sRGB)."""
        return srgb_float_to_linear(self.deblur_srgb(linear_to_srgb_float(image)))

    def close(self) -> None:
        raise NotImplementedError


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
