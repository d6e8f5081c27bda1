"""The extra capture: exposure switch verified by metadata, events, restore on failure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from deblurd.camera.base import CameraError, FrameMeta
from deblurd.camera.exposure import capture_extra, extra_gain, matches
from deblurd.camera.ring import FrameRing
from deblurd.camera.sim import SimCamera
from deblurd.settings.camera import SimCameraSection, SimCameraSettings, SimFaultSettings


def sim_settings(**faults: Any) -> SimCameraSection:
    return SimCameraSection(
        width=160,
        height=120,
        latency_frames=4,
        sim=SimCameraSettings(shake=0.0, faults=SimFaultSettings(**faults)),
    )


@pytest.fixture
def rig() -> Iterator[Any]:
    cams: list[SimCamera] = []

    def make(cfg: SimCameraSection) -> tuple[SimCamera, FrameRing]:
        cam = SimCamera(cfg)
        ring = FrameRing(64, cfg.height, cfg.width)
        cams.append(cam)
        cam.start(ring.push)
        deadline = time.monotonic() + 5
        while ring.frames_written < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        return cam, ring

    yield make
    for cam in cams:
        cam.stop()


def test_extra_gain_keeps_brightness() -> None:
    cfg = SimCameraSection()  # 8 ms at gain 4
    assert extra_gain(cfg, 32000) == pytest.approx(1.0)
    assert extra_gain(cfg, 16000) == pytest.approx(2.0)
    assert extra_gain(cfg, 100000) == 1.0  # never under unity
    assert extra_gain(cfg.model_copy(update={"max_gain": 6.0}), 1000) == 6.0


def test_matches_tolerance() -> None:
    meta = FrameMeta(0, 0, 33100, 0.97)
    assert matches(meta, 33000, 0.97, 0.05)
    assert not matches(meta, 20000, 0.97, 0.05)
    assert not matches(meta, 33000, 1.6, 0.05)


def test_capture_extra_on_the_sim_camera(rig: Any) -> None:
    cfg = sim_settings()
    cam, ring = rig(cfg)
    events: list[tuple[str, dict[str, Any]]] = []
    before = ring.newest_meta()
    assert before is not None
    gain = extra_gain(cfg, 24000)
    got = capture_extra(cam, ring, 24000, gain, 5, 2.0, lambda e, d: events.append((e, d)))
    assert len(got) == 5
    numbers = [m.frame_number for _, m in got]
    assert numbers == sorted(numbers) and numbers[0] > before.frame_number + 4  # latency
    assert numbers == list(range(numbers[0], numbers[0] + 5))  # right after each other
    for frame, meta in got:
        assert meta.exposure_us == 24000 and meta.analogue_gain == pytest.approx(4 / 3)
        assert frame.shape == (120, 160, 3)
    assert [e for e, _ in events] == ["hold_still", "done"]
    assert events[0][1] == {"exposure_us": 24000, "analogue_gain": gain, "frames": 5}
    assert events[1][1] == {"ok": True, "frames": 5}
    # the preview is back: frames after the capture have the preview exposure again
    assert cam.requests[-1] == (8000, 4.0)
    later = ring.wait_for(lambda m: m.exposure_us == 8000, 1, 2.0, numbers[-1])
    assert later[0][1].analogue_gain == 4.0
    # same brightness at the long exposure (less noise)
    preview = later[0][0].astype(np.float64)
    assert abs(got[-1][0].mean() - preview.mean()) < 2.0


def test_exposure_never_applied_times_out_and_restores(rig: Any) -> None:
    cam, ring = rig(sim_settings(ignore_exposure=True))
    events: list[tuple[str, dict[str, Any]]] = []
    t0 = time.monotonic()
    with pytest.raises(CameraError, match=r"exposure 33000 µs never applied within 0\.5 s"):
        capture_extra(cam, ring, 33000, 1.0, 4, 0.5, lambda e, d: events.append((e, d)))
    assert 0.45 < time.monotonic() - t0 < 3.0
    assert cam.requests == [(33000, 1.0), (8000, 4.0)]  # restored anyway
    assert [e for e, _ in events] == ["hold_still", "done"]
    assert events[1][1]["ok"] is False and "never applied" in events[1][1]["error"]


def test_camera_dying_mid_capture(rig: Any) -> None:
    cam, ring = rig(sim_settings(die_at_frame=12))
    events: list[tuple[str, dict[str, Any]]] = []
    with pytest.raises(CameraError, match=r"wanted frames arrived|never applied"):
        capture_extra(cam, ring, 16000, 2.0, 20, 0.5, lambda e, d: events.append((e, d)))
    assert cam.requests[-1] == (8000, 4.0)
    assert events[-1][0] == "done" and events[-1][1]["ok"] is False


class FailingRestore(SimCamera):
    def restore_preview(self) -> None:
        raise CameraError("device went away")


def test_restore_failure_is_reported_in_done(rig: Any) -> None:
    cfg = sim_settings()
    cam = FailingRestore(cfg)
    ring = FrameRing(32, cfg.height, cfg.width)
    cam.start(ring.push)
    try:
        events: list[tuple[str, dict[str, Any]]] = []
        got = capture_extra(cam, ring, 16000, 2.0, 2, 2.0, lambda e, d: events.append((e, d)))
        assert len(got) == 2
        assert events[-1][1]["ok"] is False and "device went away" in events[-1][1]["error"]
    finally:
        cam.stop()


def test_bad_arguments() -> None:
    ring = FrameRing(4, 8, 8)
    with pytest.raises(ValueError):
        capture_extra(SimCamera(SimCameraSection()), ring, 0, 1.0, 2, 1.0, lambda e, d: None)
