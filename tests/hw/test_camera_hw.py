"""Real cameras: picamera2 on a Raspberry Pi, nvarguscamerasrc on a Jetson.

Skipped with the reason (``tests/hw/conftest.py``) where picamera2/libcamera or the
``nvarguscamerasrc`` element or a camera is missing. Run on the device:
``pytest tests/hw -m camera -ra`` (``DEBLURD_HW_STRICT=1`` turns "camera present but
failed to open" from a skip into a failure).
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pytest

from deblurd.settings.models import DeblurdSettings

pytestmark = pytest.mark.camera

TOLERANCE = 0.05  # a frame "has" an exposure when within 5 % (sensor line quantisation)


def _close(value: float, wanted: float) -> bool:
    return abs(value - wanted) <= TOLERANCE * wanted


def _check_stream(live: Any, height: int, width: int) -> None:
    assert live.wait_for(lambda f: len(f) >= 15, timeout=5.0), "fewer than 15 frames in 5 s"
    frames = list(live.frames)
    now = time.monotonic_ns()
    for rgb, _ in frames:
        assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    metas = [m for _, m in frames]
    numbers = [m.frame_number for m in metas]
    stamps = [m.timestamp_ns for m in metas]
    assert all(b > a for a, b in itertools.pairwise(numbers))
    assert all(b > a for a, b in itertools.pairwise(stamps))
    # start of exposure on the monotonic clock: in the last few seconds, not in the future
    assert 0 < now - stamps[-1] < 2_000_000_000
    gaps = np.diff(stamps) / np.diff(numbers)
    assert np.median(gaps) == pytest.approx(1e9 / 30.0, rel=0.1)
    assert live.camera.alive()


def _check_exposure_switch(live: Any, exposure_us: int, gain: float) -> None:
    assert live.wait_for(lambda f: len(f) >= 5, timeout=5.0)
    live.camera.request_exposure(exposure_us, gain)
    landed = live.wait_for(
        lambda f: any(
            _close(m.exposure_us, exposure_us) and _close(m.analogue_gain, gain) for _, m in f
        ),
        timeout=3.0,
    )
    assert landed, "no frame showed the requested exposure within 3 s"
    live.camera.restore_preview()
    preview_us = DeblurdSettings().camera.exposure_us
    back = live.wait_for(lambda f: _close(f[-1][1].exposure_us, preview_us), timeout=3.0)
    assert back, "the preview exposure did not come back within 3 s"


@pytest.mark.rpi
def test_picamera2_streams_frames(picamera2_live: Any) -> None:
    _check_stream(picamera2_live, 720, 1280)


@pytest.mark.rpi
def test_picamera2_exposure_lands_in_metadata(picamera2_live: Any) -> None:
    # 50 ms at 30 frames/s: longer than the frame, so the frame duration must stretch
    _check_exposure_switch(picamera2_live, 50_000, 2.0)


@pytest.mark.jetson
def test_argus_streams_frames(argus_live: Any) -> None:
    _check_stream(argus_live, 720, 1280)


@pytest.mark.jetson
def test_argus_exposure_change_rebuilds(argus_live: Any) -> None:
    _check_exposure_switch(argus_live, 50_000, 2.0)
    assert argus_live.camera.rebuilds >= 2
