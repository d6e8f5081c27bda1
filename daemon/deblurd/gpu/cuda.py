"""The kernels on a CUDA GPU through pycuda (Jetson Orin; any CUDA GPU with ``nvcc``).

pycuda is imported here only, lazily: on a machine without a GPU it fails with
ImportError (no libcuda) or a driver error (``cuInit``), and :func:`probe` reports which.
Like the TensorRT runtime, it runs in the device's primary context, made current on the
calling thread around every entry point (:func:`deblurd.gpu.context.cuda_context`): the
backend may be opened on one thread and used on another, and both share that context.

:class:`CudaBackend` compiles :func:`~deblurd.gpu.backend.combined_source` once with
``SourceModule`` (``no_extern_c``: the kernels are ``extern "C"`` themselves;
``--fmad=false`` so the GPU rounds as the host emulation and the numpy/OpenCV reference
do), keeps the pooled device buffers, and queues everything on one stream. Every pycuda
error becomes a :class:`~deblurd.gpu.backend.GpuError` with CUDA's message; running out
of device memory frees the whole pool first, so the next job starts clean.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from deblurd.gpu.backend import GPU_DIR, Backend, Buffer, GpuError, KernelArg, combined_source
from deblurd.gpu.context import cuda_context

NVCC_OPTIONS = ["--fmad=false"]


def probe() -> tuple[bool, str]:
    """``(True, "<GPU name> ...")`` when the CUDA backend can start, else ``(False, why)``."""
    try:
        import pycuda
        import pycuda.driver as cuda
    except Exception as exc:
        return False, f"pycuda not importable ({type(exc).__name__}: {exc})"
    try:
        cuda.init()
        count = int(cuda.Device.count())
    except Exception as exc:
        return False, f"CUDA driver not usable ({type(exc).__name__}: {exc})"
    if count == 0:
        return False, "the CUDA driver reports no GPU"
    if shutil.which("nvcc") is None:
        return False, "nvcc not on PATH (pycuda compiles the kernels at start-up)"
    try:
        name = str(cuda.Device(0).name())
    except Exception as exc:
        return False, f"cannot query the GPU ({type(exc).__name__}: {exc})"
    return True, f"{name} (pycuda {getattr(pycuda, 'VERSION_TEXT', '?')})"


class CudaBackend(Backend):
    """Pooled device memory, one stream, the kernels compiled by pycuda. Every method
    runs with the primary context current (:func:`cuda_context`), on any thread."""

    name = "cuda"

    def __init__(self) -> None:
        super().__init__()
        self._functions: dict[str, Any] = {}
        self._pending: list[npt.NDArray[Any]] = []  # host arrays of queued uploads
        with cuda_context() as cuda:
            self._cuda = cuda
            try:
                from pycuda.compiler import SourceModule

                self._module = SourceModule(
                    combined_source(),
                    no_extern_c=True,
                    include_dirs=[str(GPU_DIR)],
                    options=NVCC_OPTIONS,
                )
                self._stream = cuda.Stream()
            except Exception as exc:  # CompileError, driver errors
                raise GpuError(f"cannot load the CUDA kernels: {exc}") from exc
            self.device_name = str(cuda.Context.get_device().name())

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Run the block with the primary context current; a pycuda error in it becomes a
        :class:`GpuError` saying ``what`` failed (out of memory: the pool is freed first,
        so the next job starts with an empty pool)."""
        try:
            with cuda_context():
                yield
        except self._cuda.Error as exc:
            if isinstance(exc, self._cuda.MemoryError):
                self.release()
                raise GpuError(f"out of GPU memory ({what}): {exc}") from exc
            raise GpuError(f"CUDA error ({what}): {exc}") from exc

    def _alloc(self, nbytes: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        with self._guard(f"allocating {nbytes} bytes for {dtype}{shape}"):
            return self._cuda.mem_alloc(nbytes)

    def _free(self, buf: Buffer) -> None:
        handle, buf.handle = buf.handle, None
        if handle is not None:
            # a context that is gone took its memory with it
            with contextlib.suppress(self._cuda.Error, GpuError), cuda_context():
                handle.free()

    def upload(self, buf: Buffer, host: npt.NDArray[Any]) -> None:
        arr = self._check_upload(buf, host)
        with self._guard(f"upload of {arr.nbytes} bytes"):
            self._cuda.memcpy_htod_async(buf.handle, arr, self._stream)
        self._pending.append(arr)

    def download(self, buf: Buffer) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = np.empty(buf.shape, buf.dtype)
        with self._guard(f"download of {buf.nbytes} bytes"):
            self._cuda.memcpy_dtoh_async(out, buf.handle, self._stream)
            self._stream.synchronize()
        self._pending.clear()
        return out

    def launch(
        self, kernel: str, grid: tuple[int, int], block: tuple[int, int], *args: KernelArg
    ) -> None:
        fn = self._functions.get(kernel)
        with self._guard(f"kernel {kernel}"):
            if fn is None:
                fn = self._functions[kernel] = self._module.get_function(kernel)
            fn(
                *[self._arg(a) for a in args],
                block=(block[0], block[1], 1),
                grid=(grid[0], grid[1]),
                stream=self._stream,
            )

    @staticmethod
    def _arg(arg: KernelArg) -> Any:
        if arg is None:
            return np.intp(0)
        if isinstance(arg, Buffer):
            return arg.handle
        if isinstance(arg, np.int32 | np.float32 | np.float64):
            return arg
        raise GpuError(f"kernel argument of type {type(arg).__name__}")

    def synchronize(self) -> None:
        with self._guard("synchronize"):
            self._stream.synchronize()
        self._pending.clear()

    def close(self) -> None:
        try:
            self.synchronize()
        finally:
            self.release()
            self._functions.clear()
