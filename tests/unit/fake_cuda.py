"""Stand-ins for pycuda and TensorRT: the CUDA backends' own code runs in CI up to the
last call into the real libraries.

* :func:`fake_pycuda`: ``pycuda.driver``/``pycuda.compiler`` whose "device" is host
  memory and whose kernels are the host-emulated ones (``deblurd.gpu.emulation``). Like
  CUDA, each thread has its own stack of current contexts, and every driver call fails on
  a thread where none is current.
* :func:`fake_tensorrt`: the parts of the TensorRT 10 Python API deblurd uses; a "plan" is
  the ONNX model itself, and the execution context runs it with onnxruntime on the device
  buffers bound with ``set_tensor_address``.
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
        def __init__(self, source: str, no_extern_c: bool, include_dirs: list[str],
                     options: list[str]) -> None:
            assert source == combined_source() and no_extern_c
            assert "--fmad=false" in options and Path(include_dirs[0], "lk.cu").exists()
            require("cuModuleLoadData")

        def get_function(self, name: str) -> Any:
            fn = getattr(lib, f"emu_{name}")

            def call(*args: Any, block: tuple[int, int, int], grid: tuple[int, int],
                     stream: Any) -> None:
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
    return {"pycuda": root, "pycuda.driver": driver, "pycuda.compiler": compiler_mod,
            "pycuda.autoinit": autoinit}


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


def fake_tensorrt(driver: types.ModuleType, version: str = "10.3.0") -> types.ModuleType:
    """``tensorrt`` with Builder/OnnxParser/Runtime: a serialized "plan" is b"PLAN" + the
    ONNX bytes; the execution context runs them with onnxruntime on the buffers bound by
    ``set_tensor_address`` (float32, NCHW), after checking the shapes against the profile.
    ``trt.built`` records each build's (profile, FP16 flag)."""
    import onnxruntime as ort

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    built: list[dict[str, Any]] = []

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class BuilderFlag:
        FP16 = "fp16"

    class Network:
        onnx = b""

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

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            driver.require("cudaMalloc")
            (profile,) = config.profiles
            built.append({"profile": profile.shapes, "fp16": BuilderFlag.FP16 in config.flags,
                          "cache_in": config.get_timing_cache().data})
            hi = profile.shapes["image"][2]
            return b"PLAN" + int(hi[2]).to_bytes(4, "little") + network.onnx

    class ExecutionContext:
        def __init__(self, onnx: bytes, max_side: int) -> None:
            self.session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
            self.max_side = max_side
            self.addresses: dict[str, int] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def set_tensor_address(self, name: str, address: int) -> bool:
            self.addresses[name] = address
            return True

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            if max(shape[2:]) > self.max_side:
                return False  # outside the profile: TensorRT refuses
            self.shapes[name] = tuple(shape)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            driver.require("enqueueV3")
            feeds = {}
            for name in ("image", "noise"):
                shape = self.shapes[name]
                n = int(np.prod(shape))
                mem = alloc_at(driver, self.addresses[name]).mem
                feeds[name] = mem[: 4 * n].view(np.float32).reshape(shape).copy()
            (out,) = self.session.run(["deblurred"], feeds)
            dst = alloc_at(driver, self.addresses["deblurred"]).mem
            dst[: out.nbytes] = np.ascontiguousarray(out, np.float32).reshape(-1).view(np.uint8)
            return True

    class Engine:
        def __init__(self, onnx: bytes, max_side: int) -> None:
            self.onnx, self.max_side = onnx, max_side

        def create_execution_context(self) -> ExecutionContext:
            return ExecutionContext(self.onnx, self.max_side)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            driver.require("cudaGetDevice")

        def deserialize_cuda_engine(self, plan: bytes) -> Engine | None:
            if not plan.startswith(b"PLAN"):
                return None
            return Engine(plan[8:], int.from_bytes(plan[4:8], "little"))

    for name, obj in [("Logger", Logger), ("BuilderFlag", BuilderFlag), ("Builder", Builder),
                      ("OnnxParser", OnnxParser), ("Runtime", Runtime), ("built", built)]:
        setattr(trt, name, obj)
    return trt


def install_fake_tensorrt(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[Any, Any]:
    """:func:`install_fake_pycuda` (a 1 GB "GPU") and :func:`fake_tensorrt` in
    ``sys.modules``; returns ``(driver, tensorrt)``."""
    driver = install_fake_pycuda(monkeypatch, limit=1 << 30)
    trt = fake_tensorrt(driver, **kw)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return driver, trt
