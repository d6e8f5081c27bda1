"""The kernels compiled for the CPU: same ``.cu`` text, ``cuda_host_emu.h``, g++, ctypes.

:func:`build_library` compiles :func:`~deblurd.gpu.backend.combined_source` into a
shared library once per source hash (the hash covers every kernel file, the headers, the
compiler and the flags), in a cache folder (``$DEBLURD_GPU_EMU_CACHE``, else a per-user
folder under the system temp dir), writing to a temporary name and renaming, so that
concurrent test processes never load a half-written file. Every kernel ``k`` is exported
as ``emu_k(grid_x, grid_y, block_x, block_y, args...)`` which runs the grid as loops.

:class:`EmulatedBackend` is a :class:`~deblurd.gpu.backend.Backend` whose "device
memory" is numpy arrays: it runs the host wrappers end to end without a GPU (CI), at CPU
speed (single-threaded: slow at 12 MP, fine for tests and references).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deblurd.gpu.backend import (
    GPU_DIR,
    Backend,
    Buffer,
    GpuError,
    KernelArg,
    combined_source,
    source_files,
)

CXX_FLAGS = ("-O2", "-std=c++17", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")
_loaded: dict[Path, ctypes.CDLL] = {}


def compiler() -> str | None:
    """The C++ compiler the emulation is built with (``$CXX`` or g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def source_hash(cxx: str) -> str:
    """sha256 over the kernel sources, the compiler's identity and the flags."""
    h = hashlib.sha256()
    for path in source_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(combined_source().encode())
    h.update(" ".join(CXX_FLAGS).encode())
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        h.update(version.stdout.encode())
    except (OSError, subprocess.SubprocessError) as exc:
        raise GpuError(f"cannot run the C++ compiler {cxx}: {exc}") from exc
    return h.hexdigest()


def cache_dir() -> Path:
    env = os.environ.get("DEBLURD_GPU_EMU_CACHE")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"deblurd-gpu-emu-{os.getuid()}"


def build_library(cache: Path | None = None) -> Path:
    """The host-emulation library, built if its source hash has none yet."""
    cxx = compiler()
    if cxx is None:
        raise GpuError("no C++ compiler (g++ or $CXX) to build the kernels' host emulation")
    digest = source_hash(cxx)[:20]
    folder = cache or cache_dir()
    lib = folder / f"libdeblurd_gpu_emu-{digest}.so"
    if lib.exists():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    src = Path(tmp_name).with_suffix(".cpp")
    try:
        src.write_text(combined_source())
        cmd = [cxx, *CXX_FLAGS, "-I", str(GPU_DIR), "-x", "c++", str(src), "-o", tmp_name]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise GpuError(f"building the kernels' host emulation failed:\n{done.stderr[-4000:]}")
        os.replace(tmp_name, lib)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GpuError(f"building the kernels' host emulation failed: {exc}") from exc
    finally:
        src.unlink(missing_ok=True)
        Path(tmp_name).unlink(missing_ok=True)
    return lib


def load_library(cache: Path | None = None) -> ctypes.CDLL:
    """The built library, loaded once per process."""
    path = build_library(cache)
    if path not in _loaded:
        try:
            _loaded[path] = ctypes.CDLL(str(path))
        except OSError as exc:
            raise GpuError(f"cannot load the kernels' host emulation {path}: {exc}") from exc
    return _loaded[path]


def _c_arg(arg: KernelArg) -> Any:
    if arg is None:
        return ctypes.c_void_p(None)
    if isinstance(arg, Buffer):
        return ctypes.c_void_p(arg.handle.ctypes.data)
    if isinstance(arg, np.int32):
        return ctypes.c_int(int(arg))
    if isinstance(arg, np.float32):
        return ctypes.c_float(float(arg))
    if isinstance(arg, np.float64):
        return ctypes.c_double(float(arg))
    raise GpuError(
        f"kernel argument of type {type(arg).__name__}: use a Buffer, None, "
        "np.int32, np.float32 or np.float64"
    )


class EmulatedBackend(Backend):
    """Kernels run on the CPU from the host-emulation library; memory is numpy arrays."""

    name = "emulated"

    def __init__(self, cache: Path | None = None) -> None:
        super().__init__()
        self._lib = load_library(cache)
        self.launches = 0  # kernel launches so far (tests count them)

    def _alloc(self, nbytes: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        return np.zeros(shape, dtype)

    def _free(self, buf: Buffer) -> None:
        buf.handle = None

    def upload(self, buf: Buffer, host: npt.NDArray[Any]) -> None:
        arr = self._check_upload(buf, host)
        np.copyto(buf.handle.reshape(-1).view(np.uint8), arr.reshape(-1).view(np.uint8))

    def download(self, buf: Buffer) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = np.array(buf.handle, copy=True)
        return out

    def launch(
        self, kernel: str, grid: tuple[int, int], block: tuple[int, int], *args: KernelArg
    ) -> None:
        try:
            fn = getattr(self._lib, f"emu_{kernel}")
        except AttributeError as exc:
            raise GpuError(f"no kernel {kernel!r} in the host emulation") from exc
        fn(
            ctypes.c_int(grid[0]),
            ctypes.c_int(grid[1]),
            ctypes.c_int(block[0]),
            ctypes.c_int(block[1]),
            *[_c_arg(a) for a in args],
        )
        self.launches += 1

    def synchronize(self) -> None:
        return None
