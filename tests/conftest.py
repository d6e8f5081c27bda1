"""Shared fixtures: small bursts written to tmp folders, hardware skips, and ``deblurd
run`` called in the test's process."""

from __future__ import annotations

import signal
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from deblurd.burstdir import Burst, FrameInfo, frame_names, write_burst

if TYPE_CHECKING:
    from deblurd.gpu.emulation import EmulatedBackend


def make_frames(count: int, height: int = 64, width: int = 80, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture
def small_burst_dir(tmp_path: Path) -> Path:
    """A valid 5-frame burst (4 ring + 1 extra) of random 80x64 frames."""
    frames = make_frames(5)
    infos = [
        FrameInfo(
            name,
            i * 33_333_333,
            8000 if i < 4 else 33000,
            4.0 if i < 4 else 1.0,
            "ring" if i < 4 else "extra",
        )
        for i, name in enumerate(frame_names(5))
    ]
    return write_burst(tmp_path / "burst", Burst(frames, infos, trigger_index=2))


def write_black_png(path: Path, width: int, height: int) -> Path:
    """A black RGB PNG of any size, built a row at a time (a 30000x30000 one is 2.6 MB)."""
    row = b"\x00" * (1 + 3 * width)
    rows = min(height, 64)
    blocks, rest = divmod(height, rows)
    z = zlib.compressobj(9)
    # After a full flush the compressor starts afresh: identical blocks of rows compress to
    # identical bytes, so the block is compressed once and repeated.
    first = z.compress(row * rows) + z.flush(zlib.Z_FULL_FLUSH)
    again = z.compress(row * rows) + z.flush(zlib.Z_FULL_FLUSH)
    tail = z.compress(row * rest) + z.flush()
    total = height * len(row)  # Adler-32 of that many zero bytes: a = 1, b = total
    adler = struct.pack(">I", ((total % 65521) << 16) | 1)
    idat = first + again * (blocks - 1) + tail[:-4] + adler

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def black_png() -> Callable[[Path, int, int], Path]:
    """``black_png(path, width, height)``: writes a black RGB PNG of any size, a
    decompression bomb when large (issue 14)."""
    return write_black_png


@pytest.fixture(scope="session")
def emulation_compiler() -> str:
    """The C++ compiler the CUDA kernels' host emulation is built with; the test skips
    without one (``pytestmark = pytest.mark.usefixtures("emulation_compiler")`` for a
    whole module)."""
    from deblurd.gpu.emulation import compiler

    cxx = compiler()
    if cxx is None:
        pytest.skip("no C++ compiler for the kernels' host emulation")
    return cxx


@pytest.fixture(scope="module")
def emu(emulation_compiler: str) -> EmulatedBackend:
    """The kernels' host emulation, one per test module."""
    from deblurd.gpu.emulation import EmulatedBackend

    return EmulatedBackend()


@pytest.fixture
def run_in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], int]]:
    """``run_in_process(config)``: ``deblurd run --config CONFIG`` in the test's process
    (for start-up failures: its exit status), the daemon's logging setup skipped (pytest
    keeps capturing); the SIGTERM and SIGINT handlers it installs are put back after the
    test."""
    from deblurd.cli import main

    monkeypatch.setattr("deblurd.service.logging.setup_logging", lambda **_kw: None)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield lambda config: main(["run", "--config", str(config)])
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
