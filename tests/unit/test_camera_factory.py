"""open_camera: the configured backend, and a clear ConfigError when its library is missing."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from deblurd.burstdir import Burst, FrameInfo, write_burst
from deblurd.camera.base import CameraBackend, CameraError
from deblurd.camera.factory import open_camera
from deblurd.camera.replay import ReplayCamera
from deblurd.camera.sim import SimCamera
from deblurd.camera.v4l2 import V4l2Camera
from deblurd.errors import ConfigError
from deblurd.settings.camera import (
    ArgusCameraSection,
    Picamera2CameraSection,
    ReplayCameraSection,
    ReplayCameraSettings,
    V4l2CameraSection,
)
from deblurd.settings.models import DeblurdSettings


def test_default_is_the_sim_camera() -> None:
    cam = open_camera(DeblurdSettings().camera)
    assert isinstance(cam, SimCamera) and isinstance(cam, CameraBackend)
    assert cam.size == (720, 1280) and cam.fps == 30.0


def test_replay_and_v4l2(tmp_path: Path) -> None:
    frame = np.zeros((40, 60, 3), np.uint8)
    path = write_burst(tmp_path / "b", Burst([frame], [FrameInfo("000.png", 0, 8000, 4.0)], 0))
    cam = open_camera(ReplayCameraSection(replay=ReplayCameraSettings(path=str(path))))
    assert isinstance(cam, ReplayCamera) and cam.size == (40, 60)
    assert isinstance(open_camera(V4l2CameraSection()), V4l2Camera)


def test_replay_needs_a_path() -> None:
    with pytest.raises(ValueError, match=r"replay\.path"):
        ReplayCameraSection()


def test_missing_library_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("deblurd.camera.picamera2", "deblurd.camera.argus"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    sections = (Picamera2CameraSection(), ArgusCameraSection())
    for section, package in zip(sections, ("picamera2", "gstreamer"), strict=True):
        with pytest.raises(ConfigError, match=r"camera\.backend") as info:
            open_camera(section)
        assert info.value.problems[0][0] == "camera.backend"
        assert package in str(info.value).lower()


def test_probe_failure_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend module imports, but its library does not load (as on a PC)."""
    gst = importlib.import_module("deblurd.camera.gst")

    def broken() -> None:
        raise CameraError("GStreamer is not available from Python (no gi); install PyGObject")

    monkeypatch.setattr(gst, "import_gst", broken)
    with pytest.raises(ConfigError, match="PyGObject") as info:
        open_camera(ArgusCameraSection())
    assert info.value.problems[0][0] == "camera.backend"


def test_picamera2_here() -> None:
    """On this machine picamera2 is absent (or cannot load libcamera): a ConfigError that
    says what to install; on a Pi it constructs the backend."""
    try:
        cam = open_camera(Picamera2CameraSection())
    except ConfigError as exc:
        assert "camera.backend" in str(exc) and "picamera2" in str(exc)
    else:
        assert cam.name == "picamera2"
