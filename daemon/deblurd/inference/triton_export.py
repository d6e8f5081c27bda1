"""``deblurd export-triton DIR``: a Triton model repository for both U-Nets.

For each network (first pass ``deblurd_unet``, second pass ``deblurd_unet_second``, the
names :class:`~deblurd.settings.inference.TritonSettings` expects)::

    DIR/deblurd_unet/config.pbtxt
    DIR/deblurd_unet/1/model.onnx

``config.pbtxt``: the ONNX Runtime backend, the input and output names, types and dims read
from the ONNX file (``image`` ``[3, -1, -1]``, ``noise`` ``[1, -1, -1]``, ``deblurred``
``[3, -1, -1]`` for ours), instance groups (GPU, CPU or both), and, with ``max_batch > 0``,
``max_batch_size`` and dynamic batching: then ``model.onnx`` is the file with its batch
dim made dynamic (our exports fix it to 1; the graph itself is batch-agnostic, checked by
the tests), which needs the ``onnx`` package. ``--tensorrt`` adds the ONNX Runtime
backend's TensorRT accelerator (engines built by the server at load, FP32 or FP16). The
network's side multiple (ONNX metadata ``deblurd.multiple``) travels as the config
parameter ``deblurd.multiple``, which the client reads.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from deblurd.errors import DeblurdError, InferenceError
from deblurd.imaging import atomic_write_bytes
from deblurd.inference.base import resolve_model_path

Device = Literal["gpu", "cpu", "both"]
DEFAULT_NAMES = ("deblurd_unet", "deblurd_unet_second")
_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # TYPE_FP32
    dims: tuple[int, ...]  # without the batch dim; -1 = any
    batch_dim: int = 1  # the ONNX file's leading dim (1 in our exports; -1 = symbolic)


@dataclass(frozen=True)
class ModelSpec:
    """One network as Triton serves it (names and dims read from its ONNX file)."""

    name: str
    onnx: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    multiple: int


def read_spec(name: str, onnx: str | Path) -> ModelSpec:
    """Names, types and per-item dims of ``onnx``'s inputs and outputs (onnxruntime reads
    them; symbolic dims become -1, the leading batch dim is dropped). :class:`InferenceError`
    when the file is missing or is not a U-Net of the contract (``(1, C, H, W)`` tensors)."""
    path = resolve_model_path(onnx)
    if not path.is_file():
        raise InferenceError(f"{path}: ONNX model not found")
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise InferenceError(f"{path}: not a loadable ONNX model: {exc}") from exc

    def specs(args: list[Any]) -> tuple[TensorSpec, ...]:
        out = []
        for arg in args:
            shape = list(arg.shape)
            if len(shape) != 4 or (shape[0] not in (1, None) and not isinstance(shape[0], str)):
                raise InferenceError(f"{path}: {arg.name} has shape {shape}, not (1, C, H, W)")
            if arg.type not in _TYPES:
                raise InferenceError(f"{path}: {arg.name} is {arg.type}, not float")
            dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape[1:])
            batch_dim = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else -1
            out.append(TensorSpec(arg.name, _TYPES[arg.type], dims, batch_dim))
        return tuple(out)

    meta = session.get_modelmeta().custom_metadata_map
    try:
        multiple = int(meta.get("deblurd.multiple", "16"))
    except ValueError as exc:
        raise InferenceError(f"{path}: bad metadata deblurd.multiple") from exc
    inputs, outputs = specs(session.get_inputs()), specs(session.get_outputs())
    return ModelSpec(name, path, inputs, outputs, multiple)


def batch_dynamic_onnx(path: Path) -> bytes:
    """``path``'s model with the leading dim of every graph input and output made the
    symbolic ``batch`` (Triton's batching stacks requests along it). Needs ``onnx``."""
    try:
        import onnx
    except ImportError as exc:
        raise DeblurdError(
            "dynamic batching rewrites the model's batch dim, which needs the onnx package "
            "(pip install onnx, or the deblurd[triton] extra); or pass --max-batch 0"
        ) from exc
    model = onnx.load(str(path))
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    data: bytes = model.SerializeToString()
    return data


def _tensor(spec: TensorSpec, batched: bool) -> str:
    """One input/output entry: per-item dims when Triton batches (``max_batch_size > 0``),
    else the whole tensor's, the ONNX file's batch dim included."""
    dims = ", ".join(str(d) for d in (spec.dims if batched else (spec.batch_dim, *spec.dims)))
    return (
        f'  {{\n    name: "{spec.name}"\n    data_type: {spec.data_type}\n'
        f"    dims: [ {dims} ]\n  }}"
    )


def config_pbtxt(
    spec: ModelSpec,
    *,
    max_batch: int = 8,
    queue_delay_us: int = 2000,
    device: Device = "gpu",
    instances: int = 1,
    tensorrt: Literal["off", "fp32", "fp16"] = "off",
) -> str:
    """The model's ``config.pbtxt`` (protobuf text format of Triton's ModelConfig)."""
    lines = [
        f'name: "{spec.name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch}",
        "input [",
        ",\n".join(_tensor(t, max_batch > 0) for t in spec.inputs),
        "]",
        "output [",
        ",\n".join(_tensor(t, max_batch > 0) for t in spec.outputs),
        "]",
    ]
    kinds = {"gpu": ["KIND_GPU"], "cpu": ["KIND_CPU"], "both": ["KIND_GPU", "KIND_CPU"]}[device]
    groups = ",\n".join(f"  {{\n    count: {instances}\n    kind: {k}\n  }}" for k in kinds)
    lines += ["instance_group [", groups, "]"]
    if max_batch > 0:
        sizes = sorted({b for b in (1, 2, 4, 8, 16, 32) if b <= max_batch} | {max_batch})
        preferred = ", ".join(str(b) for b in sizes[1:] or sizes)
        lines += [
            "dynamic_batching {",
            f"  preferred_batch_size: [ {preferred} ]",
            f"  max_queue_delay_microseconds: {queue_delay_us}",
            "}",
        ]
    if tensorrt != "off":
        lines += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "tensorrt"',
            f'        parameters {{ key: "precision_mode" value: "{tensorrt.upper()}" }}',
            '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }',
            '        parameters { key: "trt_engine_cache_enable" value: "1" }',
            "      }",
            "    ]",
            "  }",
            "}",
        ]
    lines += [
        "parameters {",
        '  key: "deblurd.multiple"',
        f'  value: {{ string_value: "{spec.multiple}" }}',
        "}",
    ]
    return "\n".join(lines) + "\n"


BURST_INPUTS = (("frames", "UINT8", (-1, -1, -1, 3)), ("burst", "BYTES", (1,)),
                ("settings", "BYTES", (1,)), ("mode", "BYTES", (1,)))  # fmt: skip
"""The burst model's inputs (name, Triton type, dims): :mod:`deblurd.service.offload`."""
BURST_OUTPUTS = (("image", "UINT8", (-1, -1, 3)), ("report", "BYTES", (1,)))

BURST_MODEL_PY = '''"""deblurd's whole method (offload = "burst") as a Triton Python-backend model.

Written by `deblurd export-triton --burst`. The Python the backend runs needs deblurd and
its dependencies (pip install deblurd, with onnxruntime or onnxruntime-gpu, in the server's
image); its U-Net runtime is the server's own: $DEBLURD_CONFIG's [inference] there, else
onnxruntime with engines/ as deblurd resolves it (set inference.runtime.model and
inference.second_model to absolute paths in that config).
"""

import triton_python_backend_utils as pb_utils

from deblurd.service.offload import INPUTS, open_server_deblurrer, serve_request


class TritonPythonModel:
    def initialize(self, args):
        self.deblurrer = open_server_deblurrer()

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                arrays = {
                    name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                    for name, _type, _dims in INPUTS
                }
                out = serve_request(arrays, self.deblurrer)
                tensors = [pb_utils.Tensor(name, value) for name, value in out.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # the request's error, the model stays up
                error = pb_utils.TritonError(f"deblurd: {type(exc).__name__}: {exc}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        return responses

    def finalize(self):
        if self.deblurrer is not None:
            self.deblurrer.close()
'''


def burst_config_pbtxt(name: str = "deblurd_burst", instances: int = 1) -> str:
    """``config.pbtxt`` of the Python-backend burst model (no batching: one burst per
    request; CPU instances: registration and fusion are OpenCV code)."""
    types = {"UINT8": "TYPE_UINT8", "BYTES": "TYPE_STRING"}
    tensors = {
        kind: ",\n".join(_tensor(TensorSpec(n, types[t], d[1:], d[0]), False)
                         for n, t, d in specs)
        for kind, specs in (("input", BURST_INPUTS), ("output", BURST_OUTPUTS))
    }  # fmt: skip
    return "\n".join([
        f'name: "{name}"', 'backend: "python"', "max_batch_size: 0",
        "input [", tensors["input"], "]", "output [", tensors["output"], "]",
        "instance_group [", f"  {{\n    count: {instances}\n    kind: KIND_CPU\n  }}", "]",
    ]) + "\n"  # fmt: skip


def export_repository(
    out_dir: str | Path,
    models: list[tuple[str, str | Path]],
    *,
    max_batch: int = 8,
    queue_delay_us: int = 2000,
    device: Device = "gpu",
    instances: int = 1,
    tensorrt: Literal["off", "fp32", "fp16"] = "off",
    burst: str | None = None,
) -> list[Path]:
    """Write ``out_dir/NAME/config.pbtxt`` and ``out_dir/NAME/1/model.onnx`` for each
    ``(NAME, ONNX path)`` of ``models``, and with ``burst`` (a model name) the burst model
    ``out_dir/BURST/config.pbtxt`` + ``1/model.py``; returns the model folders. A model
    folder that is there is replaced (other folders are left alone)."""
    if not 0 <= max_batch <= 1024:
        raise DeblurdError(f"--max-batch {max_batch}: 0 (no batching) to 1024")
    root = Path(out_dir)
    specs = [read_spec(name, onnx) for name, onnx in models]
    written = []
    for spec in specs:
        folder = root / spec.name
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "1").mkdir(parents=True)
        data = batch_dynamic_onnx(spec.onnx) if max_batch > 0 else spec.onnx.read_bytes()
        atomic_write_bytes(folder / "1" / "model.onnx", data)
        text = config_pbtxt(
            spec,
            max_batch=max_batch,
            queue_delay_us=queue_delay_us,
            device=device,
            instances=instances,
            tensorrt=tensorrt,
        )
        atomic_write_bytes(folder / "config.pbtxt", text.encode())
        written.append(folder)
    if burst:
        folder = root / burst
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "1").mkdir(parents=True)
        atomic_write_bytes(folder / "1" / "model.py", BURST_MODEL_PY.encode())
        atomic_write_bytes(folder / "config.pbtxt", burst_config_pbtxt(burst, instances).encode())
        written.append(folder)
    return written
