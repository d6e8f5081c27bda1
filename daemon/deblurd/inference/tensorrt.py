"""TensorRT runtime of the U-Net (Jetson): FP16 plans built on the device, cached by key.

A plan is tied to the GPU model and the TensorRT version (DESIGN §5), so it is built on
the device (``deblurd build-engine`` → :func:`build_engine`) and stored under the state
directory as ``unet-<key>.plan`` with a ``.json`` beside it holding the :class:`PlanKey`
(ONNX sha256, TensorRT version, GPU name, tile). Loading checks the key. A plan that is
missing or was built from another ONNX file, TensorRT version or GPU is rebuilt at start
(:func:`ensure_plan`, ``inference.runtime.build_plans``, the default: a JetPack upgrade
needs no manual step), or, with ``build_plans = false``, refused with a message that says
to run ``deblurd build-engine``.

The model contract is :func:`deblurd.inference.base.check_contract`'s (inputs ``image``
and, optionally, ``noise``, output ``deblurred``; sRGB in [0, 1]): the build checks the
parsed network's inputs and outputs against it, and loading checks the plan's I/O tensors
(``num_io_tensors``, ``get_tensor_name``/``mode``/``shape``/``dtype``), so a plan of
another network is our error, not TensorRT's at the first job; the names come from the
network. The optimisation profile covers one tile (``tile × tile`` px, the most the
runtime feeds; smaller images run at their padded size); bigger images are tiled
(:func:`~deblurd.inference.base.run_network_tiled`, the plan every runtime shares).

Execution uses the TensorRT 10 tensor API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) with pycuda: one :class:`HostDeviceMem` per I/O tensor (page-locked
host memory and device memory sized for the profile's largest shape, paired as in
NVIDIA's ``samples/python/common_runtime.py``), one CUDA stream;
:meth:`TensorRTDeblurrer.close` frees them all.
Every entry point runs with the device's primary context current on the calling thread
(:func:`deblurd.gpu.context.cuda_context`): the daemon opens and warms the runtime on its
main thread and runs jobs on the capture worker, and the CUDA registration shares the
context. ``tensorrt`` is imported lazily here only, ``pycuda`` here and in the GPU backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deblurd.errors import InferenceError
from deblurd.imaging import F32, atomic_write_files
from deblurd.inference.base import (
    NetworkIO,
    TensorInfo,
    TiledDeblurrer,
    check_contract,
    network_inputs,
    network_output,
)

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class PlanKey:
    """What a plan is valid for: the ONNX file's sha256, TensorRT version, GPU name, tile."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    tile: int

    def file_stem(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"unet-{digest[:16]}"

    def describe(self) -> str:
        return (
            f"ONNX sha256 {self.onnx_sha256[:12]}…, TensorRT {self.tensorrt_version}, "
            f"GPU {self.gpu_name!r}, tile {self.tile}px"
        )


def plan_paths(state_dir: Path, key: PlanKey) -> tuple[Path, Path]:
    """The plan file and its key file under ``state_dir/engines``."""
    stem = state_dir / "engines" / key.file_stem()
    return stem.with_suffix(".plan"), stem.with_suffix(".json")


def find_mismatch(state_dir: Path, key: PlanKey) -> str | None:
    """Why no plan matches ``key``, naming what the stored plans were built for, or None.

    With several plans stored (one per network: ``inference.second_model`` has its own),
    the one built from the same ONNX file is named first: it is the one that went stale
    (another TensorRT version, GPU or tile)."""
    folder = state_dir / "engines"
    plan, _ = plan_paths(state_dir, key)
    if plan.is_file():
        return None
    stored = sorted(folder.glob("unet-*.json")) if folder.is_dir() else []
    if not stored:
        return f"no TensorRT plan in {folder}"
    others: list[PlanKey] = []
    for path in stored:
        try:
            others.append(PlanKey(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError) as exc:
            return f"{path}: unreadable plan key ({exc})"
    same_model = [k for k in others if k.onnx_sha256 == key.onnx_sha256]
    if same_model:
        return (
            f"the plan in {folder} for this model was built for {same_model[0].describe()}; "
            f"this device needs {key.describe()}"
        )
    return f"no plan in {folder} for {key.describe()} (plans there are for other ONNX files)"


def store_plan(state_dir: Path, key: PlanKey, plan: bytes, timing_cache: bytes) -> Path:
    """Store a built plan under its key: the plan, its key file and the timing cache
    (``engines/timing.cache``, shared by every build on this device), each written
    atomically, the plan first, so a plan never appears without its key file for longer
    than a rename. Returns the plan's path."""
    plan_path, key_path = plan_paths(state_dir, key)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    key_json = json.dumps(asdict(key), indent=1).encode()
    atomic_write_files(
        [(plan_path, plan), (key_path, key_json), (plan_path.parent / "timing.cache", timing_cache)]
    )
    return plan_path


def _require_trt() -> None:
    """Import TensorRT or raise :class:`InferenceError` with the fix (callers then
    ``import tensorrt as trt`` themselves, so mypy checks them against tensorrt-stubs).
    The stubs alone install an empty ``tensorrt`` namespace: that counts as absent."""
    try:
        import tensorrt

        if not hasattr(tensorrt, "Builder"):
            raise ImportError("only type stubs are installed (no TensorRT runtime)")
    except ImportError as exc:
        raise InferenceError(
            f"TensorRT is not available ({exc}; on a Jetson install JetPack's "
            'python3-libnvinfer); or set inference.runtime.type = "onnxruntime"'
        ) from exc


@contextlib.contextmanager
def _cuda() -> Iterator[Any]:
    """:func:`~deblurd.gpu.context.cuda_context` (yields ``pycuda.driver``); a GPU that
    cannot be opened is an :class:`InferenceError`."""
    from deblurd.gpu.backend import GpuError
    from deblurd.gpu.context import cuda_context, primary_context

    try:
        primary_context()  # opens the GPU once, or says why not
    except GpuError as exc:
        raise InferenceError(f"TensorRT needs the GPU: {exc}") from exc
    with cuda_context() as cuda:
        yield cuda


def _check_io(where: str, trt: Any, tensors: Sequence[tuple[Any, bool, Any, Any]]) -> NetworkIO:
    """:func:`~deblurd.inference.base.check_contract` on TensorRT's ``(name, is input,
    Dims, DataType)`` of each I/O tensor (a dynamic dim is -1)."""
    infos = [
        TensorInfo(str(name), is_input, tuple(int(d) for d in shape), dtype == trt.DataType.FLOAT)
        for name, is_input, shape, dtype in tensors
    ]
    return check_contract(where, infos)


def network_io(where: str, trt: Any, network: Any) -> NetworkIO:
    """The contract's tensors of a parsed ``INetworkDefinition`` (its inputs and outputs)."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    tensors = [(t.name, True, t.shape, t.dtype) for t in inputs]
    tensors += [(t.name, False, t.shape, t.dtype) for t in outputs]
    return _check_io(where, trt, tensors)


def engine_io(where: str, trt: Any, engine: Any) -> NetworkIO:
    """The contract's tensors of a deserialized ``ICudaEngine`` (its I/O tensors)."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    tensors = [
        (name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
         engine.get_tensor_shape(name), engine.get_tensor_dtype(name))
        for name in names
    ]  # fmt: skip
    return _check_io(where, trt, tensors)


class HostDeviceMem:
    """One I/O tensor's memory, paired as in NVIDIA's ``common_runtime.HostDeviceMem``:
    page-locked host memory and device memory of the profile's largest shape
    ``(1, channels, tile, tile)`` float32. Allocate and free with the CUDA context
    current."""

    def __init__(self, cuda: Any, name: str, channels: int, tile: int) -> None:
        self.name, self.channels = name, channels
        self.host: F32 = cuda.pagelocked_empty((1, channels, tile, tile), np.float32)
        self.device: Any = cuda.mem_alloc(self.host.nbytes)

    def view(self, h: int, w: int) -> F32:
        """The host memory as the tensor ``(1, channels, h, w)`` of a tile that size."""
        return self.host.reshape(-1)[: self.channels * h * w].reshape(1, self.channels, h, w)

    def free(self) -> None:
        self.device.free()


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd's StateDirectory=) or ``~/.local/state/deblurd``."""
    env = os.environ.get("STATE_DIRECTORY")
    return Path(env.split(":")[0]) if env else Path.home() / ".local" / "state" / "deblurd"


def current_key(onnx_path: Path, tile: int) -> PlanKey:
    """The key for ``onnx_path`` on this device (needs TensorRT and pycuda). Raises
    :class:`InferenceError` naming the file when it is missing."""
    if not onnx_path.is_file():
        raise InferenceError(f"{onnx_path}: ONNX model not found (set inference.runtime.model)")
    _require_trt()
    import tensorrt as trt

    with _cuda() as cuda:
        gpu = str(cuda.Context.get_device().name())
    return PlanKey(sha256_file(onnx_path), str(trt.__version__), gpu, tile)


def build_engine(onnx_path: Path, state_dir: Path, tile: int, multiple: int = 16) -> Path:
    """Build an FP16 plan for ``onnx_path`` with a profile up to ``tile × tile`` px and a
    timing cache (``state_dir/engines/timing.cache``); store it under its key. Returns
    the plan's path. Raises :class:`InferenceError` naming the file on any failure."""
    if not onnx_path.is_file():
        raise InferenceError(f"{onnx_path}: ONNX model not found (set inference.runtime.model)")
    _require_trt()
    import tensorrt as trt

    if tile < multiple or tile % multiple:
        raise InferenceError(f"tile {tile}: must be a multiple of {multiple} px")
    with _cuda():  # TensorRT builds in the context current on this thread
        key = current_key(onnx_path, tile)
        cache_path = state_dir / "engines" / "timing.cache"
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise InferenceError(f"{onnx_path}: TensorRT cannot parse the model: {errors}")
        io = network_io(str(onnx_path), trt, network)
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.FP16)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        profile = builder.create_optimization_profile()
        for name, ch in io.inputs():
            profile.set_shape(
                name, (1, ch, multiple, multiple), (1, ch, tile, tile), (1, ch, tile, tile)
            )
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise InferenceError(
                f"{onnx_path}: TensorRT failed to build a plan (see its log above)"
            )
        return store_plan(
            state_dir, key, bytes(serialized), bytes(config.get_timing_cache().serialize())
        )


def ensure_plan(onnx_path: Path, state_dir: Path, tile: int) -> bool:
    """Build the plan for ``onnx_path`` on this device unless a matching one is stored
    (``inference.runtime.build_plans``); True when it built one. Stale plans of the same
    ONNX file and tile (another TensorRT version or GPU) are removed after the build."""
    key = current_key(onnx_path, tile)
    why = find_mismatch(state_dir, key)
    if why is None:
        return False
    log.warning("%s: building the TensorRT plan for %s (minutes)", why, onnx_path)
    plan = build_engine(onnx_path, state_dir, tile)
    for stale in sorted((state_dir / "engines").glob("unet-*.json")):
        try:
            other = PlanKey(**json.loads(stale.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if other != key and (other.onnx_sha256, other.tile) == (key.onnx_sha256, key.tile):
            for path in plan_paths(state_dir, other):
                path.unlink(missing_ok=True)
    log.info("TensorRT plan %s built", plan)
    return True


class TensorRTDeblurrer(TiledDeblurrer):
    """The U-Net as a TensorRT plan (module docstring). ``tile``: the profile's side, px."""

    def __init__(
        self, onnx_path: Path, state_dir: Path, tile: int = 512, multiple: int = 16
    ) -> None:
        _require_trt()
        import tensorrt as trt

        key = current_key(onnx_path, tile)
        why = find_mismatch(state_dir, key)
        if why is not None:
            raise InferenceError(f"{why}: run `deblurd build-engine` on this device")
        plan_path, _ = plan_paths(state_dir, key)
        self.tile, self.multiple = tile, multiple
        self.name = f"tensorrt:{plan_path.name}"
        self._buffers: list[HostDeviceMem] = []  # the inputs (image, noise), the output
        self._context: Any = None
        self._engine: Any = None
        self._stream: Any = None
        with _cuda() as cuda:
            self._cuda = cuda
            self._runtime: Any = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            try:
                self._engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
                if self._engine is None:
                    raise InferenceError(
                        f"{plan_path}: not a loadable TensorRT plan: run `deblurd build-engine`"
                    )
                io = engine_io(str(plan_path), trt, self._engine)
                self._context = self._engine.create_execution_context()
                self._stream = cuda.Stream()
                for name, channels in (*io.inputs(), (io.output, 3)):
                    mem = HostDeviceMem(cuda, name, channels, tile)
                    self._buffers.append(mem)
                    self._context.set_tensor_address(name, int(mem.device))
            except InferenceError:
                self.close()
                raise
            except Exception as exc:  # pycuda's out of memory, TensorRT's errors
                self.close()
                raise InferenceError(
                    f"{plan_path}: cannot load the plan on the GPU: {exc}"
                ) from exc

    def _run(self, srgb: F32, noise: float) -> F32:
        h, w = srgb.shape[:2]
        cuda, stream = self._cuda, self._stream
        *inputs, output = self._buffers
        for mem, value in zip(inputs, network_inputs(srgb, noise), strict=False):
            host = mem.view(h, w)
            host[...] = value
            self._context.set_input_shape(mem.name, value.shape)
            cuda.memcpy_htod_async(mem.device, host, stream)
        if not self._context.execute_async_v3(stream.handle):
            raise InferenceError(f"{self.name}: TensorRT execution failed")
        out = output.view(h, w)
        cuda.memcpy_dtoh_async(out, output.device, stream)
        stream.synchronize()
        return network_output(out)

    def _running(self) -> contextlib.AbstractContextManager[object]:
        """Any thread: the daemon warms up on its main thread and runs on a worker."""
        return _cuda()

    def close(self) -> None:
        """Free device buffers, pinned memory, the stream, and the execution context,
        engine and runtime (in that order), with the CUDA context current. Idempotent."""
        with _cuda():
            for mem in self._buffers:
                mem.free()
            self._buffers.clear()
            self._stream = None
            self._context = None
            self._engine = None
            self._runtime = None
