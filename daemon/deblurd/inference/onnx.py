"""onnxruntime runtime of the U-Net: CPU, every machine.

The model contract is :mod:`deblurd.inference.base`'s (:func:`~deblurd.inference.base.
check_contract`; shared with ``deblurd.training.export``): inputs ``image`` and ``noise``,
output ``deblurred``, sRGB in [0, 1], H and W dynamic, multiples of ``multiple`` (metadata
key ``deblurd.multiple``, default 16). Images are tiled by the plan every runtime shares
(:func:`~deblurd.inference.base.run_network_tiled`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deblurd.errors import InferenceError
from deblurd.imaging import F32
from deblurd.inference.base import (
    TensorInfo,
    TiledDeblurrer,
    check_contract,
    network_inputs,
    network_output,
    resolve_model_path,
)
from deblurd.settings.inference import OnnxRuntimeSettings


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


def _tensor_info(arg: Any, is_input: bool) -> TensorInfo:
    """An onnxruntime ``NodeArg`` (a symbolic dim is a str or None) as a :class:`TensorInfo`."""
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorInfo(arg.name, is_input, shape, arg.type == "tensor(float)")


class OnnxDeblurrer(TiledDeblurrer):
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
        tensors = [_tensor_info(arg, True) for arg in self._session.get_inputs()]
        tensors += [_tensor_info(arg, False) for arg in self._session.get_outputs()]
        self._io = check_contract(str(path), tensors)
        meta = self._session.get_modelmeta().custom_metadata_map
        try:
            self.multiple = int(meta.get("deblurd.multiple", "16"))
        except ValueError as exc:
            raise InferenceError(f"{path}: bad metadata deblurd.multiple") from exc
        self.tile = settings.tile
        self.name = f"onnxruntime:{path.name}"
        self.path = path

    def _run(self, srgb: F32, noise: float) -> F32:
        image, noise_map = network_inputs(srgb, noise)
        feed: dict[str, F32] = {self._io.image: image}
        if self._io.noise is not None:
            feed[self._io.noise] = noise_map
        try:
            (out,) = self._session.run([self._io.output], feed)
        except Exception as exc:
            raise InferenceError(f"{self.name}: inference failed: {exc}") from exc
        return network_output(out)

    def close(self) -> None:
        self._session = None
