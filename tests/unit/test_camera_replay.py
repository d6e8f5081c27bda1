"""The replay camera: burst directories and video files, looped, paced, honest metadata."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from frame_recorder import Recorder, streaming

from deblurd.burstdir import Burst, FrameInfo, write_burst
from deblurd.camera.base import CameraError
from deblurd.camera.factory import open_camera
from deblurd.camera.replay import ReplayCamera
from deblurd.settings.camera import ReplayCameraSection, ReplayCameraSettings
from deblurd.settings.limits import LimitsSettings

H, W = 40, 56


def frame_of(i: int) -> np.ndarray:
    f = np.zeros((H, W, 3), np.uint8)
    f[..., 0] = 40 * i + 10
    f[..., 1] = 200 - 30 * i
    f[..., 2] = 100
    return f


@pytest.fixture
def burst_dir(tmp_path: Path) -> Path:
    infos = [
        FrameInfo("000.png", 0, 8000, 4.0, "ring"),
        FrameInfo("001.png", 33_000_000, 8000, 4.0, "ring"),
        FrameInfo("002.png", 300_000_000, 32000, 1.0, "extra"),
    ]
    return write_burst(tmp_path / "b", Burst([frame_of(i) for i in range(3)], infos, 1))


def settings(path: Path, loop: bool = True, fps: float = 100.0) -> ReplayCameraSection:
    return ReplayCameraSection(
        backend="replay", fps=fps, replay=ReplayCameraSettings(path=str(path), loop=loop)
    )


def test_burst_replay_loops_with_the_bursts_metadata(burst_dir: Path) -> None:
    cam = ReplayCamera(settings(burst_dir))
    assert cam.size == (H, W) and cam.fps == 100.0
    rec = Recorder()
    with streaming(cam, rec):
        items = rec.wait(8)
        assert cam.alive()
        cam.request_exposure(50000, 1.0)  # recorded; frames cannot change
        items = rec.wait(14)
    assert [m.frame_number for _, m in items] == list(range(len(items)))
    for k, (frame, meta) in enumerate(items):
        i = k % 3
        assert np.array_equal(frame, frame_of(i))
        assert (meta.exposure_us, meta.analogue_gain) == ((32000, 1.0) if i == 2 else (8000, 4.0))
    gaps = np.diff([m.timestamp_ns for _, m in items]) * 1e-9
    assert np.all(gaps >= 0.0099) and np.median(gaps) == pytest.approx(0.01, abs=0.003)
    assert cam.requests == [(50000, 1.0)]


def test_burst_replay_without_loop_stops(burst_dir: Path) -> None:
    cam = ReplayCamera(settings(burst_dir, loop=False))
    rec = Recorder()
    cam.start(rec)
    rec.wait(3)
    time.sleep(0.1)
    assert len(rec.items) == 3 and not cam.alive()
    cam.stop()


def test_video_replay(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (W, H))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG AVI files")
    for i in range(4):
        writer.write(cv2.cvtColor(frame_of(i), cv2.COLOR_RGB2BGR))
    writer.release()
    cam = ReplayCamera(settings(path))
    assert cam.size == (H, W)
    rec = Recorder()
    with streaming(cam, rec):
        items = rec.wait(9)
    for k, (frame, meta) in enumerate(items):
        # lossy codec: close to the frame it was made from, RGB order kept
        assert np.abs(frame.astype(int) - frame_of(k % 4).astype(int)).mean() < 6
        assert (meta.exposure_us, meta.analogue_gain) == (8000, 4.0)  # configured preview
    assert [m.frame_number for _, m in items] == list(range(len(items)))


def test_missing_and_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(CameraError, match="no such burst directory or video"):
        ReplayCamera(settings(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match=r"burst\.json"):
        ReplayCamera(settings(tmp_path / "empty"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(CameraError, match=r"junk\.mp4"):
        ReplayCamera(settings(junk))


def test_size_limits_apply_before_decoding(burst_dir: Path, tmp_path: Path) -> None:
    small = LimitsSettings(max_frame_pixels=H * W - 1, max_burst_pixels=1 << 20)
    with pytest.raises(CameraError, match=rf"replay: .*000.png: {W}x{H} is .* more than the limit"):
        ReplayCamera(settings(burst_dir), small)
    burst_limit = LimitsSettings(max_frame_pixels=H * W, max_burst_pixels=3 * H * W - 1)
    with pytest.raises(CameraError, match=r"limits\.max_burst_pixels"):
        open_camera(settings(burst_dir), burst_limit)  # the factory passes them on
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (W, H))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG AVI files")
    writer.write(np.zeros((H, W, 3), np.uint8))
    writer.release()
    with pytest.raises(CameraError, match=rf"clip.avi: {W}x{H} video frames are .* more than"):
        ReplayCamera(settings(path), small)
