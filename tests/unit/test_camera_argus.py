"""The Argus backend: pipeline strings and exposure plans (pure, always run) and the real
GStreamer pipeline fed by ``videotestsrc`` (skipped, with the reason, where PyGObject or
GStreamer is missing: ``tools/ci_system_deps.sh`` then ``pip install "PyGObject<3.51"``)."""

from __future__ import annotations

import itertools
import threading
import time
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from frame_recorder import streaming

from deblurd.camera import gst
from deblurd.camera.argus import (
    ArgusCamera,
    ArgusExposure,
    build_pipeline,
    plan_exposure,
    require_source,
)
from deblurd.camera.base import CameraError, FrameMeta
from deblurd.settings.camera import ArgusCameraSection

GST_REASON = gst.gst_unavailable_reason()
needs_gst = pytest.mark.skipif(GST_REASON is not None, reason=f"no GStreamer: {GST_REASON}")


def make_settings(
    width: int = 96, height: int = 64, fps: float = 30.0, **argus: Any
) -> ArgusCameraSection:
    return ArgusCameraSection.model_validate(
        {
            "backend": "argus",
            "width": width,
            "height": height,
            "fps": fps,
            "exposure_us": 8000,
            "analogue_gain": 4.0,
            "argus": argus,
        }
    )


# ------------------------------------------------------------------ pure: plans, strings


# Run in their own pytest process (tools/test.sh): GStreamer/GLib loaded beside torch and
# onnxruntime in one process was seen to abort on C++ exception paths.
pytestmark = pytest.mark.gstreamer


def test_nvargus_pipeline_string() -> None:
    s = make_settings(1280, 720, sensor_id=1)
    desc = build_pipeline(s, ArgusExposure(8000, 4.0, Fraction(30)))
    assert desc == (
        'nvarguscamerasrc name=src sensor-id=1 exposuretimerange="8000000 8000000" '
        'gainrange="4 4" ispdigitalgainrange="1 1" aelock=true ! '
        "video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1 ! "
        "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=RGB ! "
        "appsink name=sink emit-signals=true max-buffers=2 drop=true sync=false"
    )


def test_nvargus_pipeline_names_the_sensor_mode_when_set() -> None:
    s = make_settings(sensor_mode=2, isp_digital_gain=1.5, max_buffers=4)
    desc = build_pipeline(s, ArgusExposure(50000, 2.5, Fraction(1000, 51)))
    assert "sensor-id=0 sensor-mode=2 " in desc
    assert 'exposuretimerange="50000000 50000000"' in desc
    assert 'gainrange="2.5 2.5"' in desc and 'ispdigitalgainrange="1.5 1.5"' in desc
    assert "framerate=1000/51" in desc and "max-buffers=4" in desc


def test_videotestsrc_pipeline_string() -> None:
    s = make_settings(320, 240, source="videotestsrc", test_pattern="red")
    desc = build_pipeline(s, ArgusExposure(8000, 4.0, Fraction(30)))
    assert desc == (
        "videotestsrc name=src is-live=true pattern=red ! "
        "video/x-raw,width=320,height=240,framerate=30/1 ! "
        "videoconvert ! video/x-raw,format=RGB ! "
        "appsink name=sink emit-signals=true max-buffers=2 drop=true sync=false"
    )


def test_short_exposure_keeps_the_nominal_frame_rate() -> None:
    plan = plan_exposure(make_settings(fps=30.0), 8000, 4.0)
    assert plan == ArgusExposure(8000, 4.0, Fraction(30))
    plan = plan_exposure(make_settings(fps=29.97), 30000, 1.0)
    assert plan.fps == Fraction(2997, 100) and plan.exposure_us == 30000


def test_long_exposure_lowers_the_frame_rate_to_fit() -> None:
    s = make_settings(fps=30.0, frame_overhead_us=1000)
    plan = plan_exposure(s, 50000, 2.0)
    assert plan.exposure_us == 50000
    assert plan.fps == Fraction(1_000_000, 51_000)
    assert 1e6 / plan.fps >= plan.exposure_us + 1000
    # just over the period: the rate drops only as far as needed
    plan = plan_exposure(s, 33000, 2.0)
    assert plan.fps == Fraction(1_000_000, 34_000)


def test_exposure_beyond_the_slowest_rate_is_clamped_and_reported() -> None:
    s = make_settings(fps=30.0, min_fps=4.0, frame_overhead_us=1000)
    plan = plan_exposure(s, 1_000_000, 2.0)
    assert plan.exposure_us == 249_000 and plan.fps == Fraction(4)


def test_gain_is_clamped_to_the_configured_range() -> None:
    s = make_settings()
    assert plan_exposure(s, 8000, 0.5).analogue_gain == 1.0
    assert plan_exposure(s, 8000, 100.0).analogue_gain == s.max_gain


def test_quote() -> None:
    assert gst.quote("1 16") == '"1 16"'
    assert gst.quote("16") == "16"


# ------------------------------------------------------------ GStreamer, videotestsrc


class Collector:
    def __init__(self, fail_every: int = 0) -> None:
        self.frames: list[tuple[np.ndarray, FrameMeta, int]] = []
        self.fail_every = fail_every
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, rgb: np.ndarray, meta: FrameMeta) -> None:
        self.calls += 1
        with self.lock:
            self.frames.append((rgb.copy(), meta, time.monotonic_ns()))
        if self.fail_every and self.calls % self.fail_every == 0:
            raise ValueError("on_frame failed on purpose")

    def wait_until(self, cond: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out with {len(self.frames)} frames"
            time.sleep(0.01)


@needs_gst
@pytest.mark.parametrize(
    ("pattern", "colour", "width", "height"),
    [("red", (255, 0, 0), 96, 64), ("blue", (0, 0, 255), 97, 65), ("green", (0, 255, 0), 64, 64)],
)
def test_frames_arrive_at_the_right_size_in_rgb_order(
    pattern: str, colour: tuple[int, int, int], width: int, height: int
) -> None:
    cam = ArgusCamera(make_settings(width, height, source="videotestsrc", test_pattern=pattern))
    got = Collector()
    with streaming(cam, got):
        got.wait_until(lambda: len(got.frames) >= 3)
    assert cam.size == (height, width)
    for rgb, meta, received in got.frames:
        assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
        # videotestsrc's red/green/blue go through I420-free RGB conversion: exact
        assert (rgb.reshape(-1, 3) == colour).all(), rgb.reshape(-1, 3)[:3]
        assert (meta.exposure_us, meta.analogue_gain) == (8000, 4.0)
        # start-of-frame time on the monotonic clock, just before we got the frame
        assert 0 <= received - meta.timestamp_ns < 1_000_000_000


@needs_gst
def test_frames_are_numbered_and_timestamped_at_the_frame_rate() -> None:
    cam = ArgusCamera(make_settings(source="videotestsrc", fps=60.0))
    got = Collector()
    with streaming(cam, got):
        got.wait_until(lambda: len(got.frames) >= 12)
    metas = [m for _, m, _ in got.frames]
    gaps = np.diff([m.timestamp_ns for m in metas])
    numbers = np.diff([m.frame_number for m in metas])
    assert metas[0].frame_number == 0
    # every PTS gap is (numbers) frame periods: drops show as skipped numbers
    assert np.allclose(gaps, numbers * 1e9 / 60.0, atol=1e6)
    assert cam.dropped_frames == int((numbers - 1).sum())


@needs_gst
def test_exposure_change_rebuilds_and_later_frames_carry_it() -> None:
    cam = ArgusCamera(make_settings(source="videotestsrc", fps=30.0))
    got = Collector()
    with streaming(cam, got):
        got.wait_until(lambda: len(got.frames) >= 3)
        asked = len(got.frames)
        cam.request_exposure(50000, 2.0)
        got.wait_until(lambda: sum(m.exposure_us == 50000 for _, m, _ in got.frames) >= 4)
        assert cam.rebuilds == 1
        applied = cam.applied
        assert applied is not None and applied.fps == Fraction(1000, 51)
        cam.restore_preview()
        got.wait_until(lambda: got.frames[-1][1].exposure_us == 8000)
        assert cam.rebuilds == 2
    metas = [m for _, m, _ in got.frames]
    # the change is all-or-nothing per pipeline: old frames old values, new frames new
    first_new = next(i for i, m in enumerate(metas) if m.exposure_us == 50000)
    assert first_new >= asked
    assert all((m.exposure_us, m.analogue_gain) == (8000, 4.0) for m in metas[:first_new])
    long = [m for m in metas if m.exposure_us == 50000]
    assert all(m.analogue_gain == 2.0 for m in long)
    # the longer exposure runs at the lower frame rate (1000/51 frames/s)
    gaps = np.diff([m.timestamp_ns for m in long])
    assert np.allclose(gaps, 51_000_000, atol=1_000_000)
    # frame numbers keep increasing across rebuilds
    assert all(b.frame_number > a.frame_number for a, b in itertools.pairwise(metas))


@needs_gst
def test_on_frame_errors_do_not_stop_the_stream() -> None:
    cam = ArgusCamera(make_settings(source="videotestsrc", fps=60.0))
    got = Collector(fail_every=2)
    with streaming(cam, got):
        got.wait_until(lambda: len(got.frames) >= 8)
        assert cam.alive()
    assert cam.callback_errors >= 4


@needs_gst
def test_stop_is_clean_and_idempotent() -> None:
    cam = ArgusCamera(make_settings(source="videotestsrc", fps=60.0))
    got = Collector()
    cam.start(got)
    got.wait_until(lambda: len(got.frames) >= 3)
    cam.stop()
    assert not any(t.name == "camera-argus" for t in threading.enumerate())
    count = got.calls
    time.sleep(0.1)
    assert got.calls == count
    assert not cam.alive() and cam.applied is None
    cam.stop()
    # and it can start again
    with streaming(cam, got):
        got.wait_until(lambda: got.calls >= count + 3)


@needs_gst
def test_missing_nvarguscamerasrc_is_a_clear_camera_error() -> None:
    if gst.have_element("nvarguscamerasrc"):
        pytest.skip("nvarguscamerasrc is installed here (a Jetson)")
    with pytest.raises(CameraError, match=r"nvarguscamerasrc.*not a Jetson"):
        require_source(make_settings())
    require_source(make_settings(source="videotestsrc"))
    cam = ArgusCamera(make_settings())
    with pytest.raises(CameraError, match=r"nvarguscamerasrc.*not a Jetson"):
        cam.start(Collector())
    assert not cam.alive()
