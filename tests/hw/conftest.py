"""Hardware fixtures: skip with a reason where TensorRT, pycuda, a GPU or a camera is absent.

``pytest.importorskip`` skips only on ModuleNotFoundError; TensorRT and pycuda fail with
ImportError or driver errors (no libcuda, cuInit fails), so these fixtures catch it all.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tensorrt_module() -> Any:
    try:
        import tensorrt
    except Exception as exc:  # ImportError, OSError from a missing libnvinfer
        pytest.skip(f"TensorRT not available: {exc}")
    if not hasattr(tensorrt, "Builder"):  # tensorrt-stubs alone: an empty namespace
        pytest.skip("TensorRT not available: only its type stubs are installed")
    return tensorrt


@pytest.fixture(scope="session")
def cuda_driver(tensorrt_module: Any) -> Any:
    """pycuda's driver, once the process's primary context opens (deblurd.gpu.context:
    what the runtimes use; no pycuda.autoinit, whose context would be a second one)."""
    try:
        from deblurd.gpu.context import primary_context

        cuda, _ctx = primary_context()
    except Exception as exc:  # GpuError: no pycuda, no driver, no GPU
        pytest.skip(f"pycuda cannot open a GPU: {exc}")
    return cuda


# --- cameras (picamera2 on a Raspberry Pi, nvarguscamerasrc on a Jetson) -------------
#
# Skip, with the reason, where the library, the element or the camera is missing. The
# imports can fail with ImportError (not only ModuleNotFoundError: pip's picamera2 without
# Raspberry Pi OS's libcamera bindings), OSError or RuntimeError (libcamera/driver
# trouble), so the probes catch every Exception. A camera that is present but fails to
# open (busy, no permission, nvargus-daemon down) also skips, with the CameraError's
# text, unless DEBLURD_HW_STRICT=1, where it fails the test instead.


def picamera2_unavailable_reason() -> str | None:
    """``None`` when picamera2 imports and libcamera lists a camera, else why not."""
    try:
        from picamera2 import Picamera2
    except Exception as exc:
        return f"picamera2 not importable ({type(exc).__name__}: {exc})"
    try:
        cameras = Picamera2.global_camera_info()
    except Exception as exc:
        return f"libcamera cannot list cameras ({type(exc).__name__}: {exc})"
    if not cameras:
        return "picamera2 imports but libcamera lists no camera"
    return None


def argus_unavailable_reason() -> str | None:
    """``None`` when GStreamer has nvarguscamerasrc and a /dev/video* node exists."""
    try:
        from deblurd.camera import gst

        reason = gst.gst_unavailable_reason()
        if reason is not None:
            return reason
        if not gst.have_element("nvarguscamerasrc"):
            return (
                "no GStreamer element nvarguscamerasrc "
                "(not a Jetson, or JetPack's GStreamer plugins are missing)"
            )
    except Exception as exc:
        return f"GStreamer probe failed ({type(exc).__name__}: {exc})"
    if not any(Path("/dev").glob("video*")):
        return "nvarguscamerasrc is installed but there is no /dev/video* camera node"
    return None


@dataclass
class LiveCamera:
    """A started camera backend and the frames it delivered (the last 256)."""

    camera: Any
    frames: list[tuple[np.ndarray, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_frame(self, rgb: np.ndarray, meta: Any) -> None:
        with self.lock:
            self.frames.append((rgb.copy(), meta))
            del self.frames[:-256]

    def wait_for(self, cond: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if cond(list(self.frames)):
                    return True
            time.sleep(0.01)
        return False


def _live(camera: Any) -> Iterator[LiveCamera]:
    from deblurd.camera.base import CameraError

    live = LiveCamera(camera)
    try:
        camera.start(live.on_frame)
    except CameraError as exc:
        if os.environ.get("DEBLURD_HW_STRICT", "") not in ("", "0"):
            pytest.fail(f"camera present but failed to start: {exc}")
        pytest.skip(f"camera present but failed to start: {exc}")
    try:
        yield live
    finally:
        camera.stop()


@pytest.fixture
def picamera2_live() -> Iterator[LiveCamera]:
    """A started Picamera2Camera with the default [camera] settings (1280x720, 30/s)."""
    reason = picamera2_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from deblurd.camera.picamera2 import Picamera2Camera
    from deblurd.settings.camera import Picamera2CameraSection

    yield from _live(Picamera2Camera(Picamera2CameraSection()))


@pytest.fixture
def argus_live() -> Iterator[LiveCamera]:
    """A started ArgusCamera on nvarguscamerasrc with the default [camera] settings."""
    reason = argus_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    from deblurd.camera.argus import ArgusCamera
    from deblurd.settings.camera import ArgusCameraSection

    yield from _live(ArgusCamera(ArgusCameraSection()))
