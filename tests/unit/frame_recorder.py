"""A frame callback for camera tests: keeps a copy of every frame (the array is valid only
during the call) with its metadata, and waits for a number of them."""

from __future__ import annotations

import threading
import time

import numpy as np

from deblurd.camera.base import FrameMeta


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
