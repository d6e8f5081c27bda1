"""The daemon object run in a thread of the test, talked to only over real ZeroMQ sockets.

In-process because these tests need something only the process itself holds: the sim
camera's ground truth (:meth:`SimCamera.truth_for`, kept in its memory for recent
frames) and a gpiozero mock pin to press. Everything else (sockets, ring, worker,
pipeline, result files) is the production code path; ``test_daemon.py`` starts the real
``deblurd run`` process for the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_harness import InProcessDaemon, sim_daemon_doc, with_sections

from deblurd.burstdir import read_burst
from deblurd.camera.sim import SimCamera
from deblurd.imaging import read_rgb8
from deblurd.settings.models import DeblurdSettings

W, H, FPS = 320, 240, 20.0


def settings_for(tmp: Path, **sections: dict[str, Any]) -> DeblurdSettings:
    sim = {"seed": 3, "shake": 60.0}
    doc = sim_daemon_doc(W, H, FPS, 32, tmp, camera={"sim": sim}, service={"results_hwm": 1000},
                         output={"save_bursts": True})  # fmt: skip
    return DeblurdSettings.model_validate(with_sections(doc, sections))


@pytest.fixture
def running(tmp_path: Path) -> Iterator[InProcessDaemon]:
    r = InProcessDaemon(settings_for(tmp_path))
    yield r
    r.close()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    crop = (slice(16, -16), slice(16, -16))
    mse = float(np.mean((a[crop].astype(np.float64) - b[crop].astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-9))


def test_trigger_result_is_closer_to_truth_than_trigger_frame(running: InProcessDaemon) -> None:
    reply = running.request({"cmd": "trigger"})
    assert reply["ok"] is True
    cid = reply["capture_id"]
    msgs = running.wait_for(cid)
    topics = [m[0] for m in msgs]
    assert topics[0] == b"event" and json.loads(msgs[0][1])["event"] == "accepted"
    assert b"result" in topics, [json.loads(m[1]) for m in msgs]
    _topic, meta_raw, image_bytes = msgs[-1]
    meta = json.loads(meta_raw)
    result = read_rgb8(Path(meta["file"]))
    assert result.shape == (H, W, 3)
    assert Path(meta["file"]).read_bytes() == image_bytes  # the file is what was published

    camera = running.daemon.camera
    assert isinstance(camera, SimCamera)
    frames = meta["frames"]
    selected, trigger = frames[meta["selected"]], frames[meta["trigger_index"]]
    burst = read_burst(meta["burst_dir"])
    trigger_frame = burst.frames[meta["trigger_index"]]
    truth_sel = camera.truth_for(selected["frame_number"])
    truth_trig = camera.truth_for(trigger["frame_number"])
    gain = psnr(result, truth_sel) - psnr(trigger_frame, truth_trig)
    print(f"PSNR gain {gain:.2f} dB")
    assert gain > 1.0, f"result only {gain:.2f} dB better than the trigger frame"
    # The trigger frame is the one being exposed at the press.
    assert meta["trigger_index"] == 4 and len(frames) == 9


def test_mock_gpio_press_gives_a_result(tmp_path: Path) -> None:
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    previous = gpiozero.Device.pin_factory
    factory = MockFactory()
    gpiozero.Device.pin_factory = factory
    try:
        gpio = {"gpio": {"enabled": True, "backend": "gpiozero", "pin": 17}}
        r = InProcessDaemon(settings_for(tmp_path, triggers=gpio))
        try:
            status = r.request({"cmd": "status"})
            assert "gpio" in status["backends"]["triggers"]
            pin = factory.pin(17)
            pressed_ns = time.monotonic_ns()
            pin.drive_low()
            pin.drive_high()
            deadline = time.monotonic() + 5
            accepted: dict[str, Any] | None = None
            while accepted is None and r.sub.poll(int(max(deadline - time.monotonic(), 0) * 1e3)):
                parts = r.sub.recv_multipart()
                doc = json.loads(parts[1])
                if parts[0] == b"event" and doc["event"] == "accepted":
                    accepted = doc
            assert accepted is not None and accepted["source"] == "gpio"
            msgs = r.wait_for(accepted["capture_id"])
            assert msgs[-1][0] == b"result"
            meta = json.loads(msgs[-1][1])
            assert meta["source"] == "gpio"
            # The window is centred on the press, not on when the worker got to it.
            trig = meta["frames"][meta["trigger_index"]]
            camera = r.daemon.camera
            assert camera is not None
            pressed_sensor_ns = camera.sensor_clock_ns(pressed_ns)
            assert 0 <= pressed_sensor_ns - trig["timestamp_ns"] < 2e9 / FPS
        finally:
            r.close()
    finally:
        factory.reset()
        gpiozero.Device.pin_factory = previous
