"""Stand-ins for pycuda and TensorRT: the CUDA backends' own code runs in CI up to the
last call into the real libraries.

* :func:`fake_pycuda`: ``pycuda.driver``/``pycuda.compiler`` whose "device" is host
  memory and whose kernels are the host-emulated ones (``deblurd.gpu.emulation``). Like
  CUDA, each thread has its own stack of current contexts, and every driver call fails on
  a thread where none is current.
* :func:`fake_tensorrt`: the parts of the TensorRT 10 Python API deblurd uses; a "plan" is
  the ONNX model itself (:func:`fake_plan`), its network's and engine's I/O tensors are the
  model's (names, modes, shapes with -1 for dynamic dims, data types), and the execution
  context runs it with onnxruntime on the device buffers bound with ``set_tensor_address``.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deblurd.gpu.backend import combined_source
from deblurd.gpu.emulation import load_library

# --- a stand-in pycuda on the host emulation -------------------------------------------------


class FakeAlloc:
    """A device allocation: host bytes; ``int()`` is its "device pointer"."""

    def __init__(self, nbytes: int, require: Any) -> None:
        self.mem = np.zeros(nbytes, np.uint8)
        self.freed = False
        self._require = require

    def __int__(self) -> int:
        return int(self.mem.ctypes.data)

    def free(self) -> None:
        self._require("cuMemFree")
        self.freed = True


def fake_pycuda(limit: int, fail_kernel: str | None = None) -> dict[str, types.ModuleType]:
    """pycuda.driver/compiler stand-ins. Like CUDA, each thread has its own stack of
    current contexts, and every driver call fails on a thread where none is current."""
    lib = load_library()
    driver = types.ModuleType("pycuda.driver")
    compiler_mod = types.ModuleType("pycuda.compiler")
    root = types.ModuleType("pycuda")
    autoinit = types.ModuleType("pycuda.autoinit")
    local = threading.local()

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    def stack() -> list[Any]:
        if not hasattr(local, "stack"):
            local.stack = []
        out: list[Any] = local.stack
        return out

    def require(what: str) -> None:
        if not stack():
            raise LogicError(f"{what} failed: invalid device context (no current context)")

    class MemoryError_(Error):  # noqa: N801, N818 - pycuda's name is MemoryError
        pass

    class LaunchError(Error):
        pass

    allocs: list[FakeAlloc] = []

    def mem_alloc(nbytes: int) -> FakeAlloc:
        if sum(a.mem.nbytes for a in allocs if not a.freed) + nbytes > limit:
            raise MemoryError_("cuMemAlloc failed: out of memory")
        require("cuMemAlloc")
        a = FakeAlloc(nbytes, require)
        allocs.append(a)
        return a

    def htod(dst: FakeAlloc, src: np.ndarray, stream: Any) -> None:
        require("cuMemcpyHtoDAsync")
        dst.mem[: src.nbytes] = np.ascontiguousarray(src).reshape(-1).view(np.uint8)

    def dtoh(dst: np.ndarray, src: FakeAlloc, stream: Any) -> None:
        require("cuMemcpyDtoHAsync")
        dst.reshape(-1).view(np.uint8)[:] = src.mem[: dst.nbytes]

    class Stream:
        handle = 0x5EED

        def __init__(self) -> None:
            require("cuStreamCreate")

        def synchronize(self) -> None:
            require("cuStreamSynchronize")

    class PrimaryContext:
        retained = 0
        detached = 0

        def push(self) -> None:
            stack().append(self)

        def detach(self) -> None:
            PrimaryContext.detached += 1

    primary = PrimaryContext()

    class Device:
        def __init__(self, index: int = 0) -> None:
            assert index == 0

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return "Fake GPU"

        def retain_primary_context(self) -> PrimaryContext:
            PrimaryContext.retained += 1
            return primary

    class Context:
        @staticmethod
        def get_device() -> Device:
            require("cuCtxGetDevice")
            return Device()

        @staticmethod
        def pop() -> None:
            require("cuCtxPopCurrent")
            stack().pop()

    def c_arg(a: Any) -> Any:
        if isinstance(a, FakeAlloc):
            assert not a.freed
            return ctypes.c_void_p(a.mem.ctypes.data)
        if isinstance(a, np.intp):
            return ctypes.c_void_p(None)
        if isinstance(a, np.int32):
            return ctypes.c_int(int(a))
        if isinstance(a, np.float32):
            return ctypes.c_float(float(a))
        if isinstance(a, np.float64):
            return ctypes.c_double(float(a))
        raise TypeError(type(a))

    class SourceModule:
        def __init__(
            self, source: str, no_extern_c: bool, include_dirs: list[str], options: list[str]
        ) -> None:
            assert source == combined_source() and no_extern_c
            assert "--fmad=false" in options and Path(include_dirs[0], "lk.cu").exists()
            require("cuModuleLoadData")

        def get_function(self, name: str) -> Any:
            fn = getattr(lib, f"emu_{name}")

            def call(
                *args: Any, block: tuple[int, int, int], grid: tuple[int, int], stream: Any
            ) -> None:
                require("cuLaunchKernel")
                if name == fail_kernel:
                    raise LaunchError("cuLaunchKernel failed: unspecified launch failure")
                fn(grid[0], grid[1], block[0], block[1], *[c_arg(a) for a in args])

            return call

    driver.Error = Error  # type: ignore[attr-defined]
    driver.LogicError = LogicError  # type: ignore[attr-defined]
    driver.init = lambda: None  # type: ignore[attr-defined]
    driver.Device = Device  # type: ignore[attr-defined]
    driver.primary = primary  # type: ignore[attr-defined]
    driver.context_depth = lambda: len(stack())  # type: ignore[attr-defined]
    driver.MemoryError = MemoryError_  # type: ignore[attr-defined]
    driver.LaunchError = LaunchError  # type: ignore[attr-defined]
    driver.mem_alloc = mem_alloc  # type: ignore[attr-defined]
    driver.pagelocked_empty = lambda shape, dtype: np.empty(shape, dtype)  # type: ignore[attr-defined]
    driver.require = require  # type: ignore[attr-defined]
    driver.memcpy_htod_async = htod  # type: ignore[attr-defined]
    driver.memcpy_dtoh_async = dtoh  # type: ignore[attr-defined]
    driver.Stream = Stream  # type: ignore[attr-defined]
    driver.Context = Context  # type: ignore[attr-defined]
    driver.allocs = allocs  # type: ignore[attr-defined]
    compiler_mod.SourceModule = SourceModule  # type: ignore[attr-defined]
    root.driver = driver  # type: ignore[attr-defined]
    root.VERSION_TEXT = "fake"  # type: ignore[attr-defined]
    return {
        "pycuda": root,
        "pycuda.driver": driver,
        "pycuda.compiler": compiler_mod,
        "pycuda.autoinit": autoinit,
    }


def install_fake_pycuda(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> types.ModuleType:
    """Put :func:`fake_pycuda` in ``sys.modules`` with a fresh process context; returns
    its driver."""
    from deblurd.gpu import context

    mods = fake_pycuda(**kw)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(context, "_primary", None)
    return mods["pycuda.driver"]


def alloc_at(driver: types.ModuleType, address: int) -> FakeAlloc:
    """The live allocation whose "device pointer" is ``address``."""
    for a in driver.allocs:
        if not a.freed and int(a) == address:
            return a
    raise AssertionError(f"no live device allocation at {address:#x}")


def fake_plan(onnx: bytes, max_side: int) -> bytes:
    """A serialized "plan" of :func:`fake_tensorrt`: b"PLAN", the profile's largest side,
    the ONNX bytes."""
    return b"PLAN" + int(max_side).to_bytes(4, "little") + onnx


class FakeTensor:
    """An I/O tensor of a network or engine (``ITensor``'s ``name``, ``shape``, ``dtype``)."""

    def __init__(self, name: str, is_input: bool, shape: tuple[int, ...], dtype: str) -> None:
        self.name, self.is_input, self.shape, self.dtype = name, is_input, shape, dtype


def onnx_io(session: Any) -> list[FakeTensor]:
    """The I/O tensors of an onnxruntime session as TensorRT reports them: dynamic dims
    -1, data types ``float32``, ``float16``, ``int64``... (the fake ``trt.DataType``)."""

    def tensor(arg: Any, is_input: bool) -> FakeTensor:
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
        dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}.get(
            arg.type, arg.type.removeprefix("tensor(").removesuffix(")")
        )
        return FakeTensor(arg.name, is_input, shape, dtype)

    return [tensor(a, True) for a in session.get_inputs()] + [
        tensor(a, False) for a in session.get_outputs()
    ]


def fake_tensorrt(driver: types.ModuleType, version: str = "10.3.0") -> types.ModuleType:
    """``tensorrt`` with Builder/OnnxParser/Runtime: a serialized "plan" is
    :func:`fake_plan` of the ONNX bytes; the execution context runs them with onnxruntime
    on the buffers bound by ``set_tensor_address`` (float32, NCHW), after checking the
    shapes against the profile and that every I/O tensor has memory. A build fails
    (None) when an input has no profile, as TensorRT's does. ``trt.built`` records each
    build's (profile, FP16 flag)."""
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    built: list[dict[str, Any]] = []

    class TensorIOMode:
        INPUT = "input"
        OUTPUT = "output"

    class DataType:
        FLOAT = "float32"
        HALF = "float16"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class BuilderFlag:
        FP16 = "fp16"

    class Network:
        def __init__(self) -> None:
            self.onnx = b""
            self.io: list[FakeTensor] = []

        @property
        def num_inputs(self) -> int:
            return len([t for t in self.io if t.is_input])

        @property
        def num_outputs(self) -> int:
            return len([t for t in self.io if not t.is_input])

        def get_input(self, i: int) -> FakeTensor:
            return [t for t in self.io if t.is_input][i]

        def get_output(self, i: int) -> FakeTensor:
            return [t for t in self.io if not t.is_input][i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network = network
            self.num_errors = 0

        def parse(self, data: bytes) -> bool:
            import onnx  # onnxruntime can crash on bytes that are no model: check them first

            try:
                onnx.checker.check_model(onnx.load_model_from_string(data))
            except Exception:
                self.num_errors = 1
                return False
            self.network.onnx = data
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            self.network.io = onnx_io(session)
            return True

        def get_error(self, i: int) -> str:
            return "In node 0: not an ONNX model"

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data + b"+"

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[Any, ...]] = {}

        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.profiles: list[Profile] = []
            self.cache: TimingCache | None = None

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def create_timing_cache(self, data: bytes) -> TimingCache:
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> None:
            self.cache = cache

        def get_timing_cache(self) -> TimingCache:
            assert self.cache is not None
            return self.cache

        def add_optimization_profile(self, profile: Profile) -> None:
            self.profiles.append(profile)

    class Builder:
        def __init__(self, logger: Logger) -> None:
            driver.require("cudaGetDevice")  # TensorRT needs a current CUDA context

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            driver.require("cudaMalloc")
            (profile,) = config.profiles
            if {t.name for t in network.io if t.is_input} != set(profile.shapes):
                return None  # an input without a profile (or a profile of no input)
            built.append(
                {
                    "profile": profile.shapes,
                    "fp16": BuilderFlag.FP16 in config.flags,
                    "cache_in": config.get_timing_cache().data,
                }
            )
            hi = max(int(shapes[2][2]) for shapes in profile.shapes.values())
            return fake_plan(network.onnx, hi)

    class ExecutionContext:
        def __init__(self, onnx: bytes, max_side: int) -> None:
            self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
            self.max_side = max_side
            self.addresses: dict[str, int] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def set_tensor_address(self, name: str, address: int) -> bool:
            if name not in {t.name for t in onnx_io(self.session)}:
                return False  # TensorRT logs "no tensor named ..."
            self.addresses[name] = address
            return True

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            if max(shape[2:]) > self.max_side:
                return False  # outside the profile: TensorRT refuses
            self.shapes[name] = tuple(shape)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            driver.require("enqueueV3")
            io = onnx_io(self.session)
            if any(t.name not in self.addresses for t in io) or any(
                t.name not in self.shapes for t in io if t.is_input
            ):
                return False  # a tensor without memory or an input without its shape
            feeds = {}
            for t in io:
                if t.is_input:
                    shape = self.shapes[t.name]
                    n = int(np.prod(shape))
                    mem = alloc_at(driver, self.addresses[t.name]).mem
                    feeds[t.name] = mem[: 4 * n].view(np.float32).reshape(shape).copy()
            outputs = [t.name for t in io if not t.is_input]
            for name, out in zip(outputs, self.session.run(outputs, feeds), strict=True):
                dst = alloc_at(driver, self.addresses[name]).mem
                dst[: out.nbytes] = np.ascontiguousarray(out, np.float32).reshape(-1).view(np.uint8)
            return True

    class Engine:
        def __init__(self, onnx: bytes, max_side: int) -> None:
            self.onnx, self.max_side = onnx, max_side
            session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
            self.io = {t.name: t for t in onnx_io(session)}

        @property
        def num_io_tensors(self) -> int:
            return len(self.io)

        def get_tensor_name(self, i: int) -> str:
            return list(self.io)[i]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.INPUT if self.io[name].is_input else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self.io[name].shape

        def get_tensor_dtype(self, name: str) -> str:
            return self.io[name].dtype

        def create_execution_context(self) -> ExecutionContext:
            return ExecutionContext(self.onnx, self.max_side)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            driver.require("cudaGetDevice")

        def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
            if not plan.startswith(b"PLAN"):
                return None
            return Engine(plan[8:], int.from_bytes(plan[4:8], "little"))

    for name, obj in [
        ("Logger", Logger),
        ("BuilderFlag", BuilderFlag),
        ("Builder", Builder),
        ("OnnxParser", OnnxParser),
        ("Runtime", Runtime),
        ("built", built),
        ("TensorIOMode", TensorIOMode),
        ("DataType", DataType),
    ]:
        setattr(trt, name, obj)
    return trt


def install_fake_tensorrt(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[Any, Any]:
    """:func:`install_fake_pycuda` (a 1 GB "GPU") and :func:`fake_tensorrt` in
    ``sys.modules``; returns ``(driver, tensorrt)``."""
    driver = install_fake_pycuda(monkeypatch, limit=1 << 30)
    trt = fake_tensorrt(driver, **kw)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return driver, trt
