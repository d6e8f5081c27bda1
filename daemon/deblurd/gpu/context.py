"""The process's one CUDA context, made current around every use of the GPU.

CUDA makes a context current *per thread*, and deblurd touches the GPU from two: the
main thread opens and warms up the TensorRT U-Net at start-up, and the capture worker
runs every job (U-Net passes, registration, fusion). ``pycuda.autoinit`` does not fit
that: it creates a context current on the importing thread only (the worker would then
fail with "invalid device context"), and pycuda aborts the process when a thread's
context stack is not empty at clean-up.

So every GPU entry point (the TensorRT runtime and builder in
:mod:`deblurd.inference.tensorrt`, the kernels' backend in :mod:`deblurd.gpu.cuda`) runs
inside :func:`cuda_context`. It pushes the device's **primary** context (retained once
per process; TensorRT and the CUDA runtime use the same one) on the calling thread when
this module has not already pushed it there, and pops it on the way out, exceptions
included. Nested uses on one thread push once. pycuda objects (allocations, streams,
modules) are created and freed while it is current, which is what pycuda requires of
them from any thread.

pycuda is imported lazily, here and in those two backends only.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from deblurd.gpu.backend import GpuError

_lock = threading.Lock()  # guards the one-time retain of the primary context
_primary: Any = None  # pycuda Context of device 0's primary context, once retained
_local = threading.local()  # .depth: cuda_context() nesting on this thread


def _release() -> None:
    """At exit: release the retained primary context (pycuda skips it from a thread other
    than the one that retained it, where CUDA tears it down with the process)."""
    global _primary
    ctx, _primary = _primary, None
    if ctx is not None:
        with contextlib.suppress(Exception):
            ctx.detach()


def primary_context() -> tuple[Any, Any]:
    """``(pycuda.driver, context)``: device 0's primary context, retained on first use.

    Raises :class:`GpuError` with pycuda's or the driver's message when there is no
    pycuda, no driver or no GPU."""
    global _primary
    try:
        import pycuda.driver as cuda
    except Exception as exc:  # ImportError, OSError (no libcuda)
        raise GpuError(f"pycuda cannot open a GPU ({type(exc).__name__}: {exc})") from exc
    with _lock:
        if _primary is None:
            try:
                cuda.init()
                if int(cuda.Device.count()) < 1:
                    raise GpuError("the CUDA driver reports no GPU")
                _primary = cuda.Device(0).retain_primary_context()
            except GpuError:
                raise
            except Exception as exc:  # pycuda's driver errors (cuInit, no device)
                raise GpuError(f"cannot open the GPU ({type(exc).__name__}: {exc})") from exc
            atexit.register(_release)
    return cuda, _primary


@contextlib.contextmanager
def cuda_context() -> Iterator[Any]:
    """Run the block with the primary context current on this thread; yields
    ``pycuda.driver``. Raises :class:`GpuError` when the GPU cannot be opened."""
    cuda, ctx = primary_context()
    depth = int(getattr(_local, "depth", 0))
    if depth == 0:
        try:
            ctx.push()
        except Exception as exc:
            raise GpuError(f"cannot make the CUDA context current: {exc}") from exc
    _local.depth = depth + 1
    try:
        yield cuda
    finally:
        _local.depth = depth
        if depth == 0:
            cuda.Context.pop()
