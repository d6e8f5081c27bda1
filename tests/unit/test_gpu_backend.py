"""The backends without a GPU: the emulation build cache, and the pycuda backend's own code
(SourceModule call, launches, transfers, error mapping, frees) run against a stand-in
``pycuda`` whose "device" is the host-emulated kernels."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_cuda import install_fake_pycuda

from deblurd.gpu import emulation
from deblurd.gpu.backend import GpuError, open_backend
from deblurd.gpu.emulation import EmulatedBackend, build_library
from deblurd.gpu.registrar import GpuRegistrar
from deblurd.settings.registration import RegistrationSettings

pytestmark = pytest.mark.usefixtures("emulation_compiler")


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


def astronaut_pair() -> tuple[np.ndarray, np.ndarray]:
    import cv2

    skdata: Any = pytest.importorskip("skimage.data")

    g = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    H = np.array([[1.0, 0.002, 3.5], [-0.002, 1.0, -2.25], [0.0, 0.0, 1.0]])
    moving = cv2.warpPerspective(
        g,
        H,
        (512, 512),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    return g, np.asarray(moving, np.float32)


def test_cuda_backend_runs_the_registrar_like_the_emulation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("skimage")
    install_fake_pycuda(monkeypatch, limit=1 << 30)
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
    install_fake_pycuda(monkeypatch, limit=8 << 20)  # 8 MB "GPU"
    from deblurd.gpu.cuda import CudaBackend

    cuda = CudaBackend()
    reg = GpuRegistrar(RegistrationSettings(), cuda)
    big = np.zeros((2000, 2000), np.float32)  # 16 MB: does not fit
    with pytest.raises(GpuError, match=r"out of GPU memory.*cuMemAlloc failed"):
        reg.set_reference(big)
    assert cuda.pooled_bytes == 0  # the pool was freed
    reg.set_reference(ref)  # the next job works
    assert reg.register(moving).accepted

    install_fake_pycuda(monkeypatch, limit=1 << 30, fail_kernel="lk_level")
    failing = GpuRegistrar(RegistrationSettings(), CudaBackend())
    failing.set_reference(ref)
    with pytest.raises(GpuError, match=r"kernel lk_level.*unspecified launch failure"):
        failing.register(moving)


def test_cuda_backend_reports_a_missing_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.autoinit", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    from deblurd.gpu import context
    from deblurd.gpu.cuda import CudaBackend, probe

    monkeypatch.setattr(context, "_primary", None)

    ok, why = probe()
    assert not ok and "pycuda not importable" in why
    with pytest.raises(GpuError, match="pycuda cannot open a GPU"):
        CudaBackend()


def test_cuda_backend_opened_on_one_thread_runs_on_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon opens GPU objects on its main thread and runs jobs on the capture worker.
    CUDA contexts are current per thread: every entry point makes the one primary context
    current around itself and pops it after, so no thread is left holding it (pycuda
    aborts at exit on a thread whose context stack is not empty)."""
    pytest.importorskip("skimage")
    driver = install_fake_pycuda(monkeypatch, limit=1 << 30)
    from deblurd.gpu.cuda import CudaBackend

    cuda = CudaBackend()  # main thread
    assert driver.context_depth() == 0
    ref, moving = astronaut_pair()
    out: dict[str, Any] = {}

    def job() -> None:
        try:
            reg = GpuRegistrar(RegistrationSettings(), cuda)
            reg.set_reference(ref)
            out["result"] = reg.register(moving)
            out["depth"] = driver.context_depth()
        except BaseException as exc:  # reported below, on the test's thread
            out["error"] = exc

    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    assert "error" not in out, out.get("error")
    assert out["result"].accepted and out["depth"] == 0
    cuda.close()  # back on the main thread: frees what the worker allocated
    allocs = driver.allocs
    assert allocs and all(a.freed for a in allocs)
    assert driver.context_depth() == 0
    assert type(driver.primary).retained == 1  # one primary context for the process


def test_cuda_context_nests_and_pops_on_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = install_fake_pycuda(monkeypatch, limit=1 << 20)
    from deblurd.gpu.context import cuda_context

    with cuda_context() as cu:
        assert cu is driver and driver.context_depth() == 1
        with cuda_context():
            assert driver.context_depth() == 1  # nested: pushed once
        assert driver.context_depth() == 1
    assert driver.context_depth() == 0
    with pytest.raises(ValueError, match="boom"), cuda_context():
        raise ValueError("boom")
    assert driver.context_depth() == 0


def test_no_gpu_is_a_gpu_error(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = install_fake_pycuda(monkeypatch, limit=1 << 20)
    monkeypatch.setattr(driver.Device, "count", staticmethod(lambda: 0))
    from deblurd.gpu.context import cuda_context

    with pytest.raises(GpuError, match="reports no GPU"), cuda_context():
        pass
