"""The V4L2 backend's logic against a stand-in for ``cv2.VideoCapture``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from frame_recorder import Recorder, streaming

from deblurd.camera.base import CameraError
from deblurd.camera.v4l2 import AUTO_EXPOSURE_AUTO, AUTO_EXPOSURE_MANUAL, V4l2Camera
from deblurd.settings.camera import V4l2CameraSection, V4l2CameraSettings

H, W = 64, 96


class FakeCapture:
    """Follows ``cv2.VideoCapture``: BGR frames, properties by number, read(image)."""

    def __init__(self, size: tuple[int, int] = (W, H), fail_after: int | None = None) -> None:
        self.props: dict[int, float] = {cv2.CAP_PROP_EXPOSURE: 0.0, cv2.CAP_PROP_GAIN: 0.0}
        self.size = size
        self.opened = True
        self.reads = 0
        self.fail_after = fail_after
        self.log: list[tuple[int, float]] = []
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def set(self, prop: int, value: float) -> bool:
        self.log.append((prop, value))
        if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            return True  # the driver keeps its own size (self.size)
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.size[0])
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.size[1])
        if prop == cv2.CAP_PROP_POS_MSEC:
            return time.monotonic_ns() / 1e6 - 5.0
        return self.props.get(prop, 0.0)

    def read(self, image: Any = None) -> tuple[bool, Any]:
        time.sleep(0.002)
        if self.fail_after is not None and self.reads >= self.fail_after:
            return False, None
        self.reads += 1
        out = np.empty((self.size[1], self.size[0], 3), np.uint8) if image is None else image
        out[...] = (10, 20, min(self.reads, 255))  # BGR: blue 10, red = read count
        return True, out

    def release(self) -> None:
        self.released = True


def cfg(**v4l2: Any) -> V4l2CameraSection:
    return V4l2CameraSection(
        backend="v4l2", width=W, height=H, latency_frames=2, v4l2=V4l2CameraSettings(**v4l2)
    )


def test_missing_device_names_it(tmp_path: Path) -> None:
    cam = V4l2Camera(cfg(device=str(tmp_path / "video7")))
    with pytest.raises(CameraError, match="video7 does not exist"):
        cam.start(lambda f, m: None)


def test_unopenable_and_wrong_size(tmp_path: Path) -> None:
    dev = tmp_path / "video0"
    dev.touch()
    closed = FakeCapture()
    closed.opened = False
    cam = V4l2Camera(cfg(device=str(dev)), capture_factory=lambda d, api: closed)
    with pytest.raises(CameraError, match=r"cannot open .*video0.*'video' group"):
        cam.start(lambda f, m: None)
    small = FakeCapture(size=(32, 24))
    cam = V4l2Camera(cfg(device=str(dev)), capture_factory=lambda d, api: small)
    with pytest.raises(CameraError, match="gives 32x24, not 96x64"):
        cam.start(lambda f, m: None)
    assert small.released


def test_frames_controls_and_honest_exposure_metadata() -> None:
    fake = FakeCapture()
    opened: list[tuple[Any, int]] = []

    def factory(dev: Any, api: int) -> FakeCapture:
        opened.append((dev, api))
        return fake

    cam = V4l2Camera(cfg(device="0", fourcc="MJPG", gain_per_unit=0.25), capture_factory=factory)
    rec = Recorder()
    with streaming(cam, rec):
        items = rec.wait(4)
        assert opened == [(0, cv2.CAP_V4L2)]
        assert fake.props[cv2.CAP_PROP_AUTO_EXPOSURE] == AUTO_EXPOSURE_AUTO  # preview: auto
        assert (cv2.CAP_PROP_FOURCC, float(cv2.VideoWriter.fourcc(*"MJPG"))) in fake.log
        frame, meta = items[0]
        assert frame.shape == (H, W, 3) and tuple(frame[0, 0, :2]) == (meta.frame_number + 1, 20)
        assert frame[0, 0, 2] == 10  # BGR from the driver became RGB
        assert abs(meta.timestamp_ns - (time.monotonic_ns() - 5_000_000)) < 1e9
        n0 = len(rec.items)
        cam.request_exposure(20000, 2.0)
        items = rec.wait(n0 + 8)
        assert fake.props[cv2.CAP_PROP_AUTO_EXPOSURE] == AUTO_EXPOSURE_MANUAL
        assert fake.props[cv2.CAP_PROP_EXPOSURE] == 200.0  # 100 µs units
        assert fake.props[cv2.CAP_PROP_GAIN] == 8.0  # 0.25 gain per unit
        new = [m for _, m in items if m.exposure_us == 20000]
        assert new and new[0].analogue_gain == 2.0
        first = new[0].frame_number
        # the latency_frames frames after the change still report the old setting
        assert all(m.exposure_us != 20000 for _, m in items[n0 : n0 + 2])
        assert all(m.exposure_us == 20000 for _, m in items if m.frame_number > first)
        cam.restore_preview()
        rec.wait(len(rec.items) + 3)
        assert fake.props[cv2.CAP_PROP_AUTO_EXPOSURE] == AUTO_EXPOSURE_AUTO
        numbers = [m.frame_number for _, m in rec.items]
        assert numbers == list(range(len(numbers)))
    assert fake.released and not cam.alive()


def test_read_failure_reopens() -> None:
    fakes = [FakeCapture(fail_after=3), FakeCapture()]
    cam = V4l2Camera(cfg(device="1"), capture_factory=lambda d, api: fakes.pop(0))
    rec = Recorder()
    with streaming(cam, rec):
        rec.wait(3)
        time.sleep(0.1)
        assert not cam.alive()
        rec.wait(6, timeout=5.0)  # after the 0.5 s back-off
        assert cam.alive() and cam.reopen_count == 1
