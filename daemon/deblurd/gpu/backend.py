"""Where the registration and fusion kernels run: a CUDA GPU (pycuda) or the host emulation.

The kernels are the ``.cu`` files beside this module (:data:`KERNEL_FILES`). The same
text is compiled

* for the GPU by pycuda's ``SourceModule`` (:mod:`deblurd.gpu.cuda`), at start-up, and
* for the CPU by g++ with ``cuda_host_emu.h`` (:mod:`deblurd.gpu.emulation`), which runs
  each grid as loops. CI has no GPU: this is how the kernels' logic is tested there, and
  how the host wrappers (:mod:`deblurd.gpu.registrar`, :mod:`deblurd.gpu.fuser`) are
  exercised end to end.

Both backends offer the small interface of :class:`Backend`: named device buffers kept
in a pool (allocated once per shape and reused job after job), uploads, downloads and
kernel launches on one stream. Kernel arguments are :class:`Buffer` (a device pointer),
``None`` (a null pointer), ``np.int32``, ``np.float32`` or ``np.float64``.

Every failure (no pycuda, no driver, a compile error, a CUDA error, out of memory) is a
:class:`GpuError` carrying the underlying message.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deblurd.errors import DeblurdError

GPU_DIR = Path(__file__).resolve().parent
#: The kernel sources, in the order they are concatenated into one module.
KERNEL_FILES = ("reduce.cu", "pyramid.cu", "corners.cu", "lk.cu", "warp.cu", "fusion.cu")
#: Headers the kernels include.
HEADER_FILES = ("common.h", "cuda_host_emu.h")
BLOCK_2D = (16, 16)
BLOCK_1D = 128

KernelArg = Any  # Buffer | None | np.int32 | np.float32 | np.float64


class GpuError(DeblurdError):
    """The GPU path cannot run: no pycuda/driver/GPU, a kernel failed, out of memory."""


def combined_source() -> str:
    """One translation unit including every kernel file (compiled with ``-I GPU_DIR``)."""
    return "".join(f'#include "{name}"\n' for name in KERNEL_FILES)


def source_files() -> list[Path]:
    """Every file the kernels are built from (for hashing and packaging checks)."""
    return [GPU_DIR / name for name in (*KERNEL_FILES, *HEADER_FILES)]


def grid_2d(width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(grid, block)`` covering a ``width`` x ``height`` image with 16x16 blocks."""
    bx, by = BLOCK_2D
    return (max(1, math.ceil(width / bx)), max(1, math.ceil(height / by))), (bx, by)


def grid_1d(count: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(grid, block)`` covering ``count`` threads in blocks of 128."""
    return (max(1, math.ceil(count / BLOCK_1D)), 1), (BLOCK_1D, 1)


@dataclass
class Buffer:
    """A device allocation of ``shape`` and ``dtype``. ``handle`` is the backend's object
    (a pycuda ``DeviceAllocation``, or the numpy array standing in for device memory)."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    handle: Any

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class Backend(ABC):
    """Device memory, transfers and kernel launches (see the module docstring).

    Not thread-safe: one job at a time (the GPU has one owner thread, DESIGN §2).
    """

    name: str = "?"

    def __init__(self) -> None:
        self._pool: dict[str, Buffer] = {}

    # --- memory ------------------------------------------------------------------------

    def buffer(self, key: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> Buffer:
        """The pooled buffer ``key``: reused when its shape and dtype match, else the old
        one is freed and a new one allocated (a new resolution)."""
        dt = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        old = self._pool.get(key)
        if old is not None and old.shape == shape and old.dtype == dt:
            return old
        if old is not None:
            del self._pool[key]
            self._free(old)
        buf = Buffer(shape, dt, self._alloc(max(1, Buffer(shape, dt, None).nbytes), shape, dt))
        self._pool[key] = buf
        return buf

    def release(self, prefix: str = "") -> None:
        """Free every pooled buffer whose key starts with ``prefix`` (all by default)."""
        for key in [k for k in self._pool if k.startswith(prefix)]:
            self._free(self._pool.pop(key))

    @property
    def pooled_bytes(self) -> int:
        """Bytes held by the pool."""
        return sum(b.nbytes for b in self._pool.values())

    def upload_new(self, key: str, host: npt.NDArray[Any]) -> Buffer:
        """``buffer(key, host.shape, host.dtype)`` filled with ``host``."""
        buf = self.buffer(key, host.shape, host.dtype)
        self.upload(buf, host)
        return buf

    def constant(self, key: str, host: npt.NDArray[Any]) -> Buffer:
        """The pooled buffer ``key`` holding ``host``, uploaded only when the buffer is
        (re)allocated: for tables that never change (``key`` must always get the same
        content). After :meth:`release` of its key it is uploaded again."""
        dt = np.dtype(host.dtype)
        old = self._pool.get(key)
        if old is not None and old.shape == tuple(host.shape) and old.dtype == dt:
            return old
        return self.upload_new(key, host)

    def owns(self, buf: Buffer) -> bool:
        """Whether ``buf`` is one of this backend's live pooled buffers (not another
        backend's, not freed by :meth:`release` or a reallocation)."""
        return any(b is buf for b in self._pool.values())

    # --- what a backend implements ------------------------------------------------------

    @abstractmethod
    def _alloc(self, nbytes: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any: ...

    @abstractmethod
    def _free(self, buf: Buffer) -> None: ...

    @abstractmethod
    def upload(self, buf: Buffer, host: npt.NDArray[Any]) -> None:
        """Copy ``host`` (same number of bytes) into ``buf`` (queued on the stream)."""

    @abstractmethod
    def download(self, buf: Buffer) -> npt.NDArray[Any]:
        """A new host array with ``buf``'s content (waits for the stream)."""

    @abstractmethod
    def launch(
        self, kernel: str, grid: tuple[int, int], block: tuple[int, int], *args: KernelArg
    ) -> None:
        """Queue ``kernel`` over ``grid`` blocks of ``block`` threads."""

    @abstractmethod
    def synchronize(self) -> None:
        """Wait until everything queued has run (raises :class:`GpuError` on failure)."""

    def close(self) -> None:
        """Free every buffer (the backend may not be used afterwards)."""
        self.release()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_upload(self, buf: Buffer, host: npt.NDArray[Any]) -> npt.NDArray[Any]:
        arr = np.ascontiguousarray(host)
        if arr.nbytes != buf.nbytes:
            raise GpuError(
                f"upload of {arr.nbytes} bytes {arr.dtype}{arr.shape} into a buffer of "
                f"{buf.nbytes} bytes {buf.dtype}{buf.shape}"
            )
        return arr


def available() -> tuple[bool, str]:
    """Whether the CUDA backend can run here, and why not (or which GPU it would use).

    Needs pycuda (imported here, lazily: it fails with ImportError or driver errors on
    machines without a GPU), a driver that initialises, at least one device, and ``nvcc``
    for ``SourceModule`` to compile the kernels at start-up.
    """
    from deblurd.gpu import cuda

    return cuda.probe()


_shared: dict[str, Backend] = {}


def open_backend(kind: str) -> Backend:
    """A new backend: ``"cuda"`` (pycuda on the GPU) or ``"emulated"`` (g++ host build);
    any other name is a :class:`GpuError`."""
    match kind:
        case "cuda":
            from deblurd.gpu.cuda import CudaBackend

            return CudaBackend()
        case "emulated":
            from deblurd.gpu.emulation import EmulatedBackend

            return EmulatedBackend()
        case _:
            raise GpuError(f"unknown GPU backend {kind!r} (cuda or emulated)")


def shared_backend(kind: str) -> Backend:
    """The process-wide backend of ``kind`` (opened once: its module and buffer pool are
    reused by every job; jobs run one at a time on its stream)."""
    if kind not in _shared:
        _shared[kind] = open_backend(kind)
    return _shared[kind]
