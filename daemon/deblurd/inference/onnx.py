"""onnxruntime runtime of the U-Net: CPU, every machine.

The model contract (shared with ``deblurd.training.export``): input ``image`` float32
``(1, 3, H, W)`` sRGB-encoded values in [0, 1] (the network learns on what the camera
writes), optional second input ``noise`` float32 ``(1, 1, H, W)``: the noise-level map, the
noise std of ``image`` in the same sRGB units (:func:`~deblurd.inference.base.
input_noise_sigma`, one value for the whole image: about 0.01–0.04 for a noisy 8-bit ring
frame, a few times less for a fused image) — one network serves both passes;
output float32 ``(1, 3, H, W)``. H and W dynamic,
multiples of ``multiple`` (metadata key ``deblurd.multiple``, default 16) — inputs are
padded by reflection and cropped back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deblurd.errors import InferenceError
from deblurd.imaging import linear_to_srgb_float
from deblurd.inference.base import Pass, input_noise_sigma, resolve_model_path
from deblurd.inference.tiling import run_padded_tiled
from deblurd.settings.inference import OnnxRuntimeSettings

F32 = npt.NDArray[np.float32]
TILE_OVERLAP = 160  # px shared by neighbouring tiles (blended, run_tiled): the U-Nets' deep
# levels see ~100 px and more around a pixel. Measured at 512 px tiles, max difference to the
# whole image: 96 px with a plain linear ramp 1.5 codes (retrained first-pass model), 160 px
# with the ramp's zero outer quarter 0.67 (first pass) and 0.57 (second pass).


def network_inputs(srgb: F32, noise: float, multiple: int) -> tuple[F32, F32]:
    """The network's two inputs for one tile: ``image`` ``float32 (1, 3, H', W')`` (the tile
    ``(h, w, 3)`` reflect-padded up to multiples of ``multiple``) and ``noise``
    ``float32 (1, 1, H', W')`` filled with ``noise``. Every runtime feeds exactly these."""
    h, w = srgb.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    padded = np.pad(srgb, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else srgb
    image = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
    noise_map = np.full((1, 1, *padded.shape[:2]), noise, dtype=np.float32)
    return image, noise_map


def network_output(out: npt.NDArray[Any], h: int, w: int) -> F32:
    """The network's output ``(1, 3, H', W')`` back to the tile's ``float32 (h, w, 3)``."""
    result: F32 = np.asarray(out[0].transpose(1, 2, 0)[:h, :w], dtype=np.float32)
    return result


def run_network_tiled(
    srgb: F32,
    run: Callable[[F32, float], F32],
    tile: int,
    multiple: int,
    noise: float | None = None,
) -> F32:
    """The tile plan every runtime shares: check ``srgb`` ``float32 (H, W, 3)``, measure
    its noise on the whole image (when ``noise`` is None), and call ``run(tile, noise)`` on
    overlapping tiles (:func:`~deblurd.inference.tiling.run_padded_tiled`, overlap
    :data:`TILE_OVERLAP`); the same plan gives the same output on any runtime."""
    if srgb.ndim != 3 or srgb.shape[2] != 3:
        raise InferenceError(f"expected (H, W, 3) image, got {srgb.shape}")
    if min(srgb.shape[:2]) < multiple:
        raise InferenceError(
            f"image {srgb.shape[1]}x{srgb.shape[0]} is too small for the network "
            f"(at least {multiple} px each side)"
        )
    sigma = input_noise_sigma(srgb) if noise is None else noise
    return run_padded_tiled(srgb, lambda t: run(t, sigma), tile, TILE_OVERLAP, multiple)


# sRGB decode for float inputs (the LUT in imaging is for uint8 codes).
def srgb_float_to_linear(x: F32) -> F32:
    x = np.clip(x, 0.0, 1.0)
    out = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return out.astype(np.float32)


_srgb_float_to_linear = srgb_float_to_linear  # the name tensorrt.py and tests import


def _check_onnx_header(path: Path) -> None:
    """Refuse a file that cannot be an ONNX ModelProto before onnxruntime parses it.

    A serialized ModelProto starts with field 1 (``ir_version``, varint: tag byte 0x08).
    onnxruntime reports a garbage file with a C++ exception; with GStreamer's GLib loaded in
    the same process (the Argus camera) that exception was seen to abort the whole process
    instead of reaching Python, so obvious garbage is caught here first.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
    except OSError as exc:
        raise InferenceError(f"{path}: cannot read the model: {exc.strerror}") from exc
    if len(head) < 2 or head[0] != 0x08:
        raise InferenceError(f"{path}: not a loadable ONNX model (not an ONNX protobuf file)")


class OnnxDeblurrer:
    """A U-Net in an ONNX file, run by onnxruntime's CPU provider with tiling."""

    def __init__(self, settings: OnnxRuntimeSettings, model_path: str | Path | None = None) -> None:
        path = resolve_model_path(model_path or settings.model)
        if not path.is_file():
            raise InferenceError(
                f"{path}: ONNX model not found (set inference.runtime.model, "
                'or inference.passes = "off")'
            )
        _check_onnx_header(path)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise InferenceError("onnxruntime is not installed: pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        if settings.threads:
            opts.intra_op_num_threads = settings.threads
        opts.inter_op_num_threads = 1
        try:
            self._session: Any = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise InferenceError(f"{path}: not a loadable ONNX model: {exc}") from exc
        inputs = self._session.get_inputs()
        names = [i.name for i in inputs]
        if not inputs or inputs[0].shape[1] != 3:
            raise InferenceError(
                f"{path}: expected first input of shape (1, 3, H, W), got "
                f"{[(i.name, i.shape) for i in inputs]}"
            )
        self._image_name = names[0]
        self._noise_name = names[1] if len(names) > 1 else None
        meta = self._session.get_modelmeta().custom_metadata_map
        try:
            self.multiple = int(meta.get("deblurd.multiple", "16"))
        except ValueError as exc:
            raise InferenceError(f"{path}: bad metadata deblurd.multiple") from exc
        self._tile = settings.tile
        self.name = f"onnxruntime:{path.name}"
        self.path = path

    def _run(self, srgb: F32, noise: float) -> F32:
        image, noise_map = network_inputs(srgb, noise, self.multiple)
        feed: dict[str, F32] = {self._image_name: image}
        if self._noise_name is not None:
            feed[self._noise_name] = noise_map
        try:
            (out,) = self._session.run(None, feed)
        except Exception as exc:
            raise InferenceError(f"{self.name}: inference failed: {exc}") from exc
        return network_output(out, srgb.shape[0], srgb.shape[1])

    def deblur_srgb(self, srgb: F32, noise: float | None = None) -> F32:
        """Deblur sRGB-encoded ``float32 (H, W, 3)`` in [0, 1], tiled; same shape out.

        ``noise``: the noise-level input (sRGB units); measured on the whole image
        (:func:`~deblurd.inference.base.input_noise_sigma`, before tiling) when None."""
        return run_network_tiled(srgb, self._run, self._tile, self.multiple, noise)

    def deblur(self, image: F32, pass_: Pass) -> F32:
        """Linear ``float32 (H, W, 3)`` in, linear out (the network works in sRGB)."""
        out = self.deblur_srgb(linear_to_srgb_float(image))
        return srgb_float_to_linear(out)

    def close(self) -> None:
        self._session = None
