"""The backends without a GPU: the emulation build cache, and the pycuda backend's own code
(SourceModule call, launches, transfers, error mapping, frees) run against a stand-in
``pycuda`` whose "device" is the host-emulated kernels."""

from __future__ import annotations

import ctypes
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deblurd.gpu import emulation
from deblurd.gpu.backend import GpuError, combined_source, open_backend
from deblurd.gpu.emulation import EmulatedBackend, build_library, compiler, load_library
from deblurd.gpu.registrar import GpuRegistrar
from deblurd.settings.registration import RegistrationSettings

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C++ compiler for the emulation")


def test_emulation_library_is_cached_by_source_hash(tmp_path: Path) -> None:
    first = build_library(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert build_library(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert first.name.startswith("libdeblurd_gpu_emu-")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]


def test_build_failure_is_a_gpu_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulation, "combined_source", lambda: "this is not C++;\n")
    monkeypatch.setattr(emulation, "source_hash", lambda cxx: "broken" * 5)
    with pytest.raises(GpuError, match="host emulation failed"):
        build_library(tmp_path)


def test_pool_reuses_and_checks_sizes() -> None:
    b = EmulatedBackend()
    a = b.buffer("x", (4, 4), np.float32)
    assert b.buffer("x", (4, 4), np.float32) is a
    assert b.buffer("x", (5, 4), np.float32) is not a
    with pytest.raises(GpuError, match="upload of"):
        b.upload(b.buffer("x", (5, 4), np.float32), np.zeros(3, np.float32))
    with pytest.raises(GpuError, match="no kernel"):
        b.launch("nope", (1, 1), (1, 1))
    with pytest.raises(GpuError, match="unknown GPU backend"):
        open_backend("metal")
    b.close()
    assert b.pooled_bytes == 0


# --- a stand-in pycuda on the host emulation -------------------------------------------------


class FakeAlloc:
    def __init__(self, nbytes: int) -> None:
        self.mem = np.zeros(nbytes, np.uint8)
        self.freed = False

    def free(self) -> None:
        self.freed = True


def fake_pycuda(limit: int, fail_kernel: str | None = None) -> dict[str, types.ModuleType]:
    lib = load_library()
    driver = types.ModuleType("pycuda.driver")
    compiler_mod = types.ModuleType("pycuda.compiler")
    root = types.ModuleType("pycuda")
    autoinit = types.ModuleType("pycuda.autoinit")

    class Error(Exception):
        pass

    class MemoryError_(Error):  # noqa: N801, N818 - pycuda's name is MemoryError
        pass

    class LaunchError(Error):
        pass

    allocs: list[FakeAlloc] = []

    def mem_alloc(nbytes: int) -> FakeAlloc:
        if sum(a.mem.nbytes for a in allocs if not a.freed) + nbytes > limit:
            raise MemoryError_("cuMemAlloc failed: out of memory")
        a = FakeAlloc(nbytes)
        allocs.append(a)
        return a

    def htod(dst: FakeAlloc, src: np.ndarray, stream: Any) -> None:
        dst.mem[: src.nbytes] = np.ascontiguousarray(src).reshape(-1).view(np.uint8)

    def dtoh(dst: np.ndarray, src: FakeAlloc, stream: Any) -> None:
        dst.reshape(-1).view(np.uint8)[:] = src.mem[: dst.nbytes]

    class Stream:
        def synchronize(self) -> None:
            return None

    class Device:
        def name(self) -> str:
            return "Fake GPU"

    class Context:
        @staticmethod
        def get_device() -> Device:
            return Device()

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

        def get_function(self, name: str) -> Any:
            fn = getattr(lib, f"emu_{name}")

            def call(*args: Any, block: tuple[int, int, int], grid: tuple[int, int],
                     stream: Any) -> None:
                if name == fail_kernel:
                    raise LaunchError("cuLaunchKernel failed: unspecified launch failure")
                fn(grid[0], grid[1], block[0], block[1], *[c_arg(a) for a in args])

            return call

    driver.Error = Error  # type: ignore[attr-defined]
    driver.MemoryError = MemoryError_  # type: ignore[attr-defined]
    driver.LaunchError = LaunchError  # type: ignore[attr-defined]
    driver.mem_alloc = mem_alloc  # type: ignore[attr-defined]
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


def astronaut_pair() -> tuple[np.ndarray, np.ndarray]:
    import cv2
    skdata: Any = pytest.importorskip("skimage.data")

    g = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    H = np.array([[1.0, 0.002, 3.5], [-0.002, 1.0, -2.25], [0.0, 0.0, 1.0]])
    moving = cv2.warpPerspective(g, H, (512, 512), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REFLECT)
    return g, np.asarray(moving, np.float32)


def test_cuda_backend_runs_the_registrar_like_the_emulation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("skimage")
    for name, mod in fake_pycuda(limit=1 << 30).items():
        monkeypatch.setitem(sys.modules, name, mod)
    from deblurd.gpu.cuda import CudaBackend

    cuda = CudaBackend()
    assert cuda.device_name == "Fake GPU"
    ref, moving = astronaut_pair()
    s = RegistrationSettings()
    on_cuda, on_emu = GpuRegistrar(s, cuda), GpuRegistrar(s, EmulatedBackend())
    for reg in (on_cuda, on_emu):
        reg.set_reference(ref)
    a, b = on_cuda.register(moving), on_emu.register(moving)
    assert a.accepted and np.array_equal(a.homography, b.homography)
    wa, va = on_cuda.warp(moving, a)
    wb, vb = on_emu.warp(moving, b)
    assert np.array_equal(wa, wb) and np.array_equal(va, vb)
    allocs = sys.modules["pycuda.driver"].allocs
    cuda.close()
    assert allocs and all(x.freed for x in allocs)


def test_cuda_errors_become_gpu_errors_and_the_next_job_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("skimage")
    ref, moving = astronaut_pair()
    for name, mod in fake_pycuda(limit=8 << 20).items():  # 8 MB "GPU"
        monkeypatch.setitem(sys.modules, name, mod)
    from deblurd.gpu.cuda import CudaBackend

    cuda = CudaBackend()
    reg = GpuRegistrar(RegistrationSettings(), cuda)
    big = np.zeros((2000, 2000), np.float32)  # 16 MB: does not fit
    with pytest.raises(GpuError, match=r"out of GPU memory.*cuMemAlloc failed"):
        reg.set_reference(big)
    assert cuda.pooled_bytes == 0  # the pool was freed
    reg.set_reference(ref)  # the next job works
    assert reg.register(moving).accepted

    for name, mod in fake_pycuda(limit=1 << 30, fail_kernel="lk_level").items():
        monkeypatch.setitem(sys.modules, name, mod)
    failing = GpuRegistrar(RegistrationSettings(), CudaBackend())
    failing.set_reference(ref)
    with pytest.raises(GpuError, match=r"kernel lk_level.*unspecified launch failure"):
        failing.register(moving)


def test_cuda_backend_reports_a_missing_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    from deblurd.gpu.cuda import CudaBackend, probe

    ok, why = probe()
    assert not ok and "pycuda not importable" in why
    with pytest.raises(GpuError, match="pycuda cannot open a GPU"):
        CudaBackend()
