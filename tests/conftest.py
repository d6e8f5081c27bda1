"""Shared fixtures: small bursts written to tmp folders, and hardware skips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deblurd.burstdir import Burst, FrameInfo, frame_names, write_burst


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
