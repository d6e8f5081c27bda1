"""Camera tests' helpers: :func:`streaming` (a camera delivering frames for a ``with``
block) and :class:`Recorder`, a frame callback that keeps a copy of every frame (the array
is valid only during the call) with its metadata, and waits for a number of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from deblurd.camera.base import CameraBackend, FrameCallback, FrameMeta


@contextmanager
def streaming(camera: CameraBackend, on_frame: FrameCallback) -> Iterator[None]:
    """``camera`` started with ``on_frame`` for the block, stopped after it (also when the
    block fails)."""
    camera.start(on_frame)
    try:
        yield
    finally:
        camera.stop()


class Recorder:
    def __init__(self) -> None:
        self.items: list[tuple[np.ndarray, FrameMeta]] = []
        self.lock = threading.Lock()

    def __call__(self, frame: np.ndarray, meta: FrameMeta) -> None:
        with self.lock:
            self.items.append((frame.copy(), meta))

    def wait(self, n: int, timeout: float = 5.0) -> list[tuple[np.ndarray, FrameMeta]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if len(self.items) >= n:
                    return list(self.items)
            time.sleep(0.002)
        raise AssertionError(f"only {len(self.items)} of {n} frames")
