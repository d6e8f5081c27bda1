"""The picamera2 backend against a stand-in that follows picamera2's real API.

``FakePicamera2`` mirrors the parts of ``picamera2.Picamera2`` the backend uses, with the
same names, argument shapes and behaviour as picamera2's source (``picamera2.py``,
``request.py``, ``job.py``, ``controls.py``): ``Picamera2(camera_num, verbose_console,
tuning, allocator)``; ``create_video_configuration`` / ``create_preview_configuration``
returning config dicts (main stream ``{"format", "size", "preserve_ar"}``, default
controls merged under the caller's, even sizes); ``configure`` (refuses while started);
``start``/``stop``/``close``; ``camera_controls`` as ``{name: (min, max, default)}``;
``set_controls`` rejecting controls the camera does not advertise (RuntimeError); an
event-loop thread that completes one request per sensor frame, runs queued jobs
(``capture_request(wait=False)`` → a job, ``wait(job, timeout)`` → its result or
TimeoutError), keeps at most one completed request when ``queue`` is on and recycles the
rest; ``cancel_all_and_flush``. Requests are reference counted (``release`` below zero
raises, as the real ``CompletedRequest`` does) and own one buffer of ``stride`` bytes a row
(``configure`` pads rows to ``rig.stride_align`` bytes, padding bytes 0xAB) in libcamera's
byte order (``RGB888`` = B, G, R in memory); ``FakeMappedArray`` maps it like
``picamera2.request.MappedArray`` (no copy; reshaped to ``(H, W, 3)`` from the request's
``config["main"]``, skipping the padding; read-only here when ``write=False``, so a
backend that wrote into the camera's buffer would fail); a released buffer is scribbled
over (0xEE: the camera fills it again), so a view kept past ``on_frame`` shows garbage.
``get_metadata()`` has ``SensorTimestamp`` (ns), ``ExposureTime`` (µs), ``AnalogueGain``,
``FrameDuration`` (µs).
Controls land ``control_delay`` frames after ``set_controls`` (the real camera: buffer
count + a few); a frame is lost when no buffer is free. The rig records the truth of
every sensor frame so tests can compare the backend's ``FrameMeta`` with it.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pytest
from frame_recorder import streaming

from deblurd.camera.base import CameraError, FrameMeta
from deblurd.camera.picamera2 import Picamera2Camera
from deblurd.camera.ring import FrameRing
from deblurd.settings.camera import Picamera2CameraSection

# ---------------------------------------------------------------------------- stand-in


@dataclass
class Truth:
    index: int
    sensor_ns: int
    exposure_us: int
    gain: float
    duration_us: int
    lost: bool


@dataclass
class Rig:
    """The simulated camera hardware behind every FakePicamera2 a factory makes."""

    n_cameras: int = 1
    busy: bool = False
    fail_configure: bool = False
    deliver: bool = True
    control_delay: int = 6
    stride_align: int = 64
    wall_frame_s: float = 0.005
    sensor_margin_us: int = 500
    ae_exposure_us: int = 15000
    controls: dict[str, tuple[Any, Any, Any]] = field(
        default_factory=lambda: {
            "AeEnable": (False, True, None),
            "ExposureTime": (26, 66_666_666, 20_000),
            "AnalogueGain": (1.0, 16.0, None),
            "FrameDurationLimits": (8_333, 120_000_000, None),
            "NoiseReductionMode": (0, 4, 0),
        }
    )
    truth: list[Truth] = field(default_factory=list)
    cameras: list[FakePicamera2] = field(default_factory=list)
    control_log: list[dict[str, Any]] = field(default_factory=list)

    def by_sensor_ns(self) -> dict[int, Truth]:
        return {t.sensor_ns: t for t in self.truth}


class FakeJob:
    """Like picamera2's Job: a list of stage functions returning (done, result)."""

    def __init__(self, functions: list[Callable[[], tuple[bool, Any]]]) -> None:
        self._functions = list(functions)
        self._future: Future[Any] = Future()
        self._future.set_running_or_notify_cancel()
        self._result: Any = None

    def execute(self) -> bool:
        try:
            while self._functions:
                done, result = self._functions[0]()
                if not done:
                    break
                self._functions.pop(0)
                self._result = result
        except Exception as exc:
            self._future.set_exception(exc)
            self._functions = []
        return not self._functions

    def signal(self) -> None:
        if not self._future.done():
            self._future.set_result(self._result)

    def get_result(self, timeout: float | None = None) -> Any:
        return self._future.result(timeout=timeout)

    def cancel(self) -> None:
        self._future.set_exception(CancelledError())


class FakeRequest:
    """Like picamera2's CompletedRequest: reference counted, owns one buffer (``memory``:
    flat, ``stride`` bytes a row), mapped by ``FakeMappedArray``."""

    def __init__(self, cam: FakePicamera2, buffer: int, memory: np.ndarray, md: dict[str, Any]):
        self.cam = cam
        self.buffer = buffer
        self.ref_count = 1
        self.memory = memory
        self.mapped = 0
        self._metadata = md
        self.config = dict(cam.camera_config or {})

    def acquire(self) -> None:
        with self.cam.request_lock:
            if self.ref_count == 0:
                raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
            self.ref_count += 1

    def release(self) -> None:
        with self.cam.request_lock:
            self.ref_count -= 1
            if self.ref_count < 0:
                self.cam.release_errors += 1
                raise RuntimeError("CompletedRequest: lock now has negative ref_count")
            if self.ref_count == 0:
                if self.mapped:
                    self.cam.release_errors += 1  # released while still mapped
                self.memory.fill(0xEE)  # back to the camera, which fills it again
                self.cam.free_buffers.append(self.buffer)

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)


class FakeMappedArray:
    """Like picamera2.request.MappedArray: maps a request's stream buffer, no copy."""

    def __init__(
        self, request: FakeRequest, stream: str, reshape: bool = True, write: bool = True
    ) -> None:
        if stream != "main":
            raise KeyError(stream)  # request.stream_map[stream]
        self._request = request
        self._reshape = reshape
        self._write = write
        self._array: np.ndarray | None = None

    def __enter__(self) -> FakeMappedArray:
        request = self._request
        if request.ref_count <= 0:
            raise RuntimeError("request used after release")
        array = request.memory.view()
        array.flags.writeable = self._write
        if self._reshape:
            config = request.config["main"]
            fmt, (w, h), stride = config["format"], config["size"], config["stride"]
            bpp = 3 if fmt in ("BGR888", "RGB888") else 4
            if stride != w * bpp:
                array = array.reshape((h, stride))[:, : w * bpp]
            array = array.reshape((h, w, bpp))
        request.mapped += 1
        self._array = array
        return self

    def __exit__(self, *exc: object) -> None:
        self._array = None
        self._request.mapped -= 1

    @property
    def array(self) -> np.ndarray | None:
        return self._array


class FakePicamera2:
    """Stand-in for picamera2.Picamera2 (see the module doc)."""

    def __init__(
        self,
        camera_num: int = 0,
        verbose_console: int | None = None,
        tuning: Any = None,
        allocator: Any = None,
        *,
        rig: Rig,
    ) -> None:
        self.rig = rig
        if camera_num >= rig.n_cameras:
            raise IndexError("list index out of range")  # global_camera_info()[camera_num]
        if rig.busy:
            raise RuntimeError("Camera __init__ sequence did not complete.")
        rig.cameras.append(self)
        self.tuning = tuning
        self.is_open = True
        self.started = False
        self.camera_config: dict[str, Any] | None = None
        self.lock = threading.Lock()
        self.request_lock = threading.Lock()
        self.completed_requests: list[FakeRequest] = []
        self.all_requests: list[FakeRequest] = []
        self.free_buffers: list[int] = []
        self.release_errors = 0
        self.stop_count = 0
        self._job_list: list[FakeJob] = []
        self._max_queue_len = 0
        self._poke = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {}
        self._scheduled: list[tuple[int, dict[str, Any]]] = []
        self._index = -1
        self._sensor_ns = time.monotonic_ns()

    # --- properties
    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        return dict(self.rig.controls)

    @property
    def camera_properties(self) -> dict[str, Any]:
        return {"Model": "imx708", "PixelArraySize": (4608, 2592), "ColorFilterArrangement": 0}

    @property
    def sensor_modes(self) -> list[dict[str, Any]]:
        return [{"size": (1536, 864), "fps": 120.13, "exposure_limits": (9, 77_208_384)}]

    # --- configurations
    @staticmethod
    def _stream(defaults: dict[str, Any], updates: dict[str, Any] | None) -> dict[str, Any] | None:
        if updates is None:
            return None
        stream = dict(defaults)
        for key, value in updates.items():
            if key not in ("format", "size", "stride", "preserve_ar"):
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are ...")
            stream[key] = value
        w, h = stream["size"]
        stream["size"] = (w - w % 2, h - h % 2)
        return stream

    def _make_config(
        self,
        main: dict[str, Any],
        defaults: dict[str, Any],
        buffer_count: int,
        frame_limits: tuple[int, int],
        controls: dict[str, Any],
        display: str | None,
        encode: str | None,
        queue: bool,
        use_case: str,
    ) -> dict[str, Any]:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        config: dict[str, Any] = {
            "use_case": use_case,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": self._stream(defaults, main),
            "lores": None,
            "raw": None,
            "controls": {"NoiseReductionMode": 1, "FrameDurationLimits": frame_limits} | controls,
        }
        for name in (display, encode):
            if name is not None and config.get(name) is None:
                raise RuntimeError(f"Display stream {name} was not defined")
        config["display"], config["encode"] = display, encode
        return config

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        defaults = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}
        return self._make_config(
            main or {}, defaults, buffer_count, (33333, 33333), controls or {},
            display, encode, queue, use_case,
        )  # fmt: skip

    def create_preview_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 4,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "preview",
    ) -> dict[str, Any]:
        defaults = {"format": "XBGR8888", "size": (640, 480), "preserve_ar": True}
        return self._make_config(
            main or {}, defaults, buffer_count, (100, 83333), controls or {},
            display, encode, queue, use_case,
        )  # fmt: skip

    def configure(self, camera_config: Any = None) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if self.rig.fail_configure:
            raise RuntimeError(f"Configuration failed: {camera_config}")
        config = dict(camera_config)
        main = dict(config["main"])
        if not isinstance(main["format"], str) or main["format"] not in (
            "RGB888", "BGR888", "XBGR8888", "XRGB8888", "YUV420",
        ):  # fmt: skip
            raise RuntimeError(f"Bad format {main['format']} in stream main")
        size = main["size"]
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in main stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")
        bpp = 3 if main["format"] in ("RGB888", "BGR888") else 4
        align = self.rig.stride_align
        main["stride"] = -(-size[0] * bpp // align) * align
        config["main"] = main
        self._state = {}
        self._apply(config["controls"])
        self.camera_config = config
        self._max_queue_len = 1 if config["queue"] and config["buffer_count"] > 1 else 0
        self.free_buffers = list(range(config["buffer_count"]))

    def camera_configuration(self) -> dict[str, Any] | None:
        return self.camera_config

    # --- controls
    def _check(self, controls: dict[str, Any]) -> None:
        for name in controls:
            if name not in self.rig.controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")

    def _apply(self, controls: dict[str, Any]) -> None:
        self._check(controls)
        self._state.update(controls)

    def set_controls(self, controls: dict[str, Any]) -> None:
        if not isinstance(controls, dict):
            raise RuntimeError(f"Cannot update controls with {type(controls)} type")
        self._check(controls)
        self.rig.control_log.append(dict(controls))
        with self.lock:
            self._scheduled.append((self._index + self.rig.control_delay, dict(controls)))

    # --- running
    def start(self, config: Any = None, show_preview: Any = False) -> None:
        if config is not None:
            self.configure(config)
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        if self.started:
            return
        self.started = True
        self._running = True
        self._thread = threading.Thread(target=self._event_loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if not self.started:
            return
        self._running = False
        self._poke.set()
        if self._thread is not None:
            self._thread.join()
        self.stop_count += 1
        self.started = False
        with self.lock:
            leftovers, self.completed_requests = self.completed_requests, []
        for req in leftovers:
            req.release()

    def close(self) -> None:
        self.stop()
        self.is_open = False

    def _frame_truth(self) -> Truth:
        with self.lock:
            due = [c for at, c in self._scheduled if at <= self._index]
            self._scheduled = [(at, c) for at, c in self._scheduled if at > self._index]
        for controls in due:
            self._state.update(controls)
        lo, hi = self._state.get("FrameDurationLimits", (33333, 33333))
        margin = self.rig.sensor_margin_us
        if "AeEnable" in self.rig.controls:
            auto = bool(self._state.get("AeEnable", True))
        else:
            auto = self._state.get("ExposureTimeMode", 0) == 0
        wanted = self.rig.ae_exposure_us if auto else int(self._state["ExposureTime"])
        exposure = min(wanted, hi - margin)
        duration = min(max(lo, exposure + margin), hi)
        gain = 1.0 if auto else float(self._state.get("AnalogueGain", 1.0))
        self._sensor_ns += duration * 1000
        return Truth(self._index, self._sensor_ns, exposure, gain, duration, lost=False)

    def _pixels(self, index: int) -> np.ndarray:
        cfg = self.camera_config
        assert cfg is not None
        w, h = cfg["main"]["size"]
        rgb = np.empty((h, w, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, index % 256
        fmt = cfg["main"]["format"]
        if fmt == "RGB888":
            pixels = rgb[..., ::-1]  # B, G, R bytes in memory
        elif fmt == "BGR888":
            pixels = rgb  # R, G, B bytes
        else:
            pixels = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
        stride = cfg["main"]["stride"]
        memory = np.full((h, stride), 0xAB, np.uint8)  # 0xAB: the row padding
        memory[:, : pixels[0].size] = pixels.reshape(h, -1)
        return memory.reshape(-1)

    def _event_loop(self) -> None:
        while self._running:
            poked = self._poke.wait(self.rig.wall_frame_s)
            self._poke.clear()
            if not self._running:
                break
            new: list[FakeRequest] = []
            if not poked and self.rig.deliver:
                self._index += 1
                truth = self._frame_truth()
                with self.request_lock:
                    buffer = self.free_buffers.pop(0) if self.free_buffers else None
                truth.lost = buffer is None
                self.rig.truth.append(truth)
                if buffer is not None:
                    md = {
                        "SensorTimestamp": truth.sensor_ns,
                        "ExposureTime": truth.exposure_us,
                        "AnalogueGain": truth.gain,
                        "DigitalGain": 1.0,
                        "FrameDuration": truth.duration_us,
                        "Lux": 400.0,
                    }
                    req = FakeRequest(self, buffer, self._pixels(truth.index), md)
                    self.all_requests.append(req)
                    new.append(req)
            finished: list[FakeJob] = []
            with self.lock:
                self.completed_requests += new
                while self._job_list:
                    if self._job_list[0].execute():
                        finished.append(self._job_list.pop(0))
                    else:
                        break
                while len(self.completed_requests) > self._max_queue_len:
                    self.completed_requests.pop(0).release()
            for job in finished:
                job.signal()

    # --- jobs
    def _wait_for_timestamp_(self, timestamp_ns: int | None) -> tuple[bool, None]:
        if not timestamp_ns:
            return (True, None)
        while self.completed_requests:
            md = self.completed_requests[0].get_metadata()
            if md["SensorTimestamp"] - 1000 * md["ExposureTime"] >= timestamp_ns:
                return (True, None)
            self.completed_requests.pop(0).release()
        return (False, None)

    def _capture_request_(self) -> tuple[bool, FakeRequest | None]:
        if not self.completed_requests:
            return (False, None)
        return (True, self.completed_requests.pop(0))

    def dispatch_functions(
        self,
        functions: list[Callable[[], tuple[bool, Any]]],
        wait: Any,
        signal_function: Any = None,
        immediate: bool = False,
    ) -> Any:
        if wait is None:
            wait = signal_function is None
        timeout = None if wait is True else wait
        with self.lock:
            only_job = not self._job_list
            job = FakeJob(functions)
            self._job_list.append(job)
            if only_job and (self.completed_requests or immediate):
                self._poke.set()
        return job.get_result(timeout=timeout) if wait else job

    def capture_request(
        self, wait: Any = None, signal_function: Any = None, flush: Any = None
    ) -> Any:
        if flush is True:
            flush = time.monotonic_ns()
        functions = [partial(self._wait_for_timestamp_, flush), self._capture_request_]
        return self.dispatch_functions(functions, wait, signal_function)

    def wait(self, job: FakeJob, timeout: float | None = None) -> Any:
        return job.get_result(timeout=timeout)

    def cancel_all_and_flush(self) -> None:
        with self.lock:
            for job in self._job_list:
                job.cancel()
            self._job_list = []

    # --- test helpers
    def held_by_app(self) -> int:
        with self.lock:
            queued = set(map(id, self.completed_requests))
        return sum(1 for r in self.all_requests if r.ref_count > 0 and id(r) not in queued)


# ---------------------------------------------------------------------------- helpers


def make_settings(**picam: Any) -> Picamera2CameraSection:
    return Picamera2CameraSection.model_validate(
        {
            "backend": "picamera2",
            "width": 96,
            "height": 64,
            "fps": 30.0,
            "exposure_us": 8000,
            "analogue_gain": 4.0,
            "picamera2": picam,
        }
    )


class Collector:
    def __init__(self, cam: FakeCamAccess | None = None, fail_every: int = 0, sleep_s: float = 0.0):
        self.frames: list[tuple[np.ndarray, FrameMeta]] = []
        self.held: list[int] = []
        self.cam = cam
        self.fail_every = fail_every
        self.sleep_s = sleep_s
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, rgb: np.ndarray, meta: FrameMeta) -> None:
        self.calls += 1
        if self.cam is not None and self.cam.fake is not None:
            self.held.append(self.cam.fake.held_by_app())
        with self.lock:
            self.frames.append((rgb.copy(), meta))
        if self.sleep_s and self.calls % 10 == 0:
            time.sleep(self.sleep_s)
        if self.fail_every and self.calls % self.fail_every == 0:
            raise ValueError("on_frame failed on purpose")

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n:
            assert time.monotonic() < deadline, f"only {len(self.frames)} of {n} frames"
            time.sleep(0.005)


class FakeCamAccess:
    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    @property
    def fake(self) -> FakePicamera2 | None:
        return self.rig.cameras[-1] if self.rig.cameras else None


def make_camera(
    rig: Rig, settings: Picamera2CameraSection | None = None, **picam: Any
) -> Picamera2Camera:
    return Picamera2Camera(
        settings or make_settings(**picam),
        picamera2_factory=partial(FakePicamera2, rig=rig),
        mapped_array=FakeMappedArray,
    )


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888"])
def test_frames_arrive_in_rgb_order_at_the_configured_size(fmt: str) -> None:
    rig = Rig()
    cam = make_camera(rig, main_format=fmt)
    got = Collector()
    with streaming(cam, got):
        got.wait_for(10)
    assert cam.size == (64, 96)
    truth = rig.by_sensor_ns()
    for rgb, meta in got.frames:
        assert rgb.shape == (64, 96, 3) and rgb.dtype == np.uint8
        t = truth[meta.timestamp_ns + meta.exposure_us * 1000]
        assert (rgb[..., 0] == 200).all() and (rgb[..., 1] == 100).all()
        assert (rgb[..., 2] == t.index % 256).all()


@pytest.mark.parametrize("fmt", ["RGB888", "BGR888"])
def test_frames_go_from_the_mapped_buffer_into_the_ring_in_one_pass(fmt: str) -> None:
    """on_frame gets a view of the mapped request buffer (the backend copies nothing);
    the ring's push is the one pass: the right RGB pixels, no row padding, and each
    request is released as soon as on_frame returns."""
    rig = Rig()
    ring = FrameRing(8, 64, 96)
    views: list[bool] = []

    def on_frame(rgb: np.ndarray, meta: FrameMeta) -> None:
        fake = rig.cameras[-1]
        mapped = [r for r in fake.all_requests if r.mapped]
        views.append(len(mapped) == 1 and np.shares_memory(rgb, mapped[0].memory))
        ring.push(rgb, meta)

    cam = make_camera(rig, main_format=fmt)
    with streaming(cam, on_frame):
        ring.wait_for(lambda _m: True, 10, timeout_s=5.0, start_after_frame=-1)
    assert views and all(views)
    fake = rig.cameras[-1]
    assert fake.camera_config is not None and fake.camera_config["main"]["stride"] > 96 * 3
    assert fake.release_errors == 0 and all(r.ref_count == r.mapped == 0 for r in fake.all_requests)
    truth = rig.by_sensor_ns()
    newest = ring.newest_meta()
    assert newest is not None
    for rgb, meta in ring.window(newest.timestamp_ns, ring.capacity, 0, timeout_s=0.0):
        t = truth[meta.timestamp_ns + meta.exposure_us * 1000]
        assert (rgb[..., 0] == 200).all() and (rgb[..., 1] == 100).all()
        assert (rgb[..., 2] == t.index % 256).all()


def test_configuration_follows_picamera2_api() -> None:
    rig = Rig()
    cam = make_camera(rig, buffer_count=5)
    with streaming(cam, Collector()):
        fake = rig.cameras[-1]
        cfg = fake.camera_configuration()
        assert cfg is not None
        assert cfg["main"]["format"] == "RGB888" and cfg["main"]["size"] == (96, 64)
        assert cfg["buffer_count"] == 5 and cfg["queue"] is True
        assert cfg["controls"]["AeEnable"] is False
        assert cfg["controls"]["ExposureTime"] == 8000 and cfg["controls"]["AnalogueGain"] == 4.0
        assert cfg["controls"]["FrameDurationLimits"] == (33333, 33333)


def test_odd_size_is_made_even_like_picamera2() -> None:
    rig = Rig()
    settings = make_settings().model_copy(update={"width": 97, "height": 65})
    cam = make_camera(rig, settings)
    got = Collector()
    with streaming(cam, got):
        got.wait_for(2)
    assert cam.size == (64, 96) and got.frames[0][0].shape == (64, 96, 3)


def test_every_request_released_exactly_once_even_when_on_frame_raises() -> None:
    rig = Rig()
    access = FakeCamAccess(rig)
    cam = make_camera(rig)
    got = Collector(access, fail_every=2)
    with streaming(cam, got):
        got.wait_for(40)
    fake = rig.cameras[-1]
    assert cam.callback_errors >= 20
    assert fake.release_errors == 0
    assert all(r.ref_count == 0 for r in fake.all_requests)
    assert sorted(fake.free_buffers) == list(range(6))  # every buffer back in the pool
    # while on_frame runs, the app holds exactly the request being delivered: released
    # before the next one is taken
    assert set(got.held) == {1}
    assert not fake.is_open


def test_exposure_lands_after_the_delay_and_meta_tells_the_truth() -> None:
    rig = Rig(control_delay=7)
    cam = make_camera(rig)
    got = Collector()
    with streaming(cam, got):
        got.wait_for(5)
        asked_at = got.frames[-1][1].frame_number
        cam.request_exposure(20000, 2.0)
        deadline = time.monotonic() + 5
        while not any(m.exposure_us == 20000 for _, m in got.frames):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        got.wait_for(len(got.frames) + 5)
    truth = rig.by_sensor_ns()
    for _, meta in got.frames:
        t = truth[meta.timestamp_ns + meta.exposure_us * 1000]
        assert (meta.exposure_us, meta.analogue_gain) == (t.exposure_us, t.gain)
    first_new = next(m for _, m in got.frames if m.exposure_us == 20000)
    assert first_new.analogue_gain == 2.0
    assert first_new.frame_number - asked_at >= rig.control_delay - 1
    # frames between the request and the landing still say the old exposure
    between = [m for _, m in got.frames if asked_at < m.frame_number < first_new.frame_number]
    assert between and all(m.exposure_us == 8000 for m in between)
    assert rig.control_log[-1] == {
        "AeEnable": False,
        "ExposureTime": 20000,
        "AnalogueGain": 2.0,
        "FrameDurationLimits": (33333, 33333),
    }


def test_long_exposure_lengthens_the_frame_and_restore_preview_undoes_it() -> None:
    rig = Rig(control_delay=3)
    cam = make_camera(rig)
    got = Collector()
    with streaming(cam, got):
        got.wait_for(3)
        cam.request_exposure(50000, 1.0)
        assert rig.control_log[-1]["FrameDurationLimits"] == (33333, 51000)
        deadline = time.monotonic() + 5
        while sum(m.exposure_us == 50000 for _, m in got.frames) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        cam.restore_preview()
        assert rig.control_log[-1]["FrameDurationLimits"] == (33333, 33333)
        assert rig.control_log[-1]["ExposureTime"] == 8000
        while got.frames[-1][1].exposure_us != 8000 or len(got.frames) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    long = [m for _, m in got.frames if m.exposure_us == 50000]
    gaps = np.diff([m.timestamp_ns for m in long])
    assert np.allclose(gaps, 50_500_000, atol=1)  # exposure + the sensor's margin
    numbers = [m.frame_number for _, m in got.frames]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # no false drops
    assert cam.dropped_frames == 0


def test_drops_are_counted_from_sensor_timestamp_gaps() -> None:
    rig = Rig()
    cam = make_camera(rig)
    got = Collector(sleep_s=0.03)  # every 10th frame stalls the thread ~10 frame times
    with streaming(cam, got):
        got.wait_for(60)
    truth = rig.by_sensor_ns()
    metas = [m for _, m in got.frames]
    indices = [truth[m.timestamp_ns + m.exposure_us * 1000].index for m in metas]
    assert np.array_equal(np.diff([m.frame_number for m in metas]), np.diff(indices))
    missed = indices[-1] - indices[0] + 1 - len(metas)
    assert missed > 0 and cam.dropped_frames == missed


def test_stop_joins_the_thread_and_closes_the_camera() -> None:
    rig = Rig()
    cam = make_camera(rig)
    got = Collector()
    cam.start(got)
    got.wait_for(3)
    assert cam.alive()
    threads = [t for t in threading.enumerate() if t.name == "camera-picamera2"]
    cam.stop()
    assert threads and not any(t.is_alive() for t in threads)
    fake = rig.cameras[-1]
    assert not fake.started and not fake.is_open
    count = got.calls
    time.sleep(0.05)
    assert got.calls == count
    assert not cam.alive()
    cam.stop()  # idempotent
    with pytest.raises(CameraError, match="not started"):
        cam.request_exposure(1000, 1.0)


def test_restart_continues_the_numbering_without_false_drops() -> None:
    rig = Rig()
    cam = make_camera(rig)
    got = Collector()
    cam.start(got)
    got.wait_for(5)
    cam.stop()
    n = len(got.frames)
    time.sleep(0.05)
    with streaming(cam, got):
        got.wait_for(n + 5)
    numbers = [m.frame_number for _, m in got.frames]
    assert numbers[n] == numbers[n - 1] + 1  # the pause is not counted as drops
    assert cam.dropped_frames == sum(b - a - 1 for a, b in itertools.pairwise(numbers))
    assert len(rig.cameras) == 2


def test_auto_exposure_preview_toggles_ae() -> None:
    rig = Rig()
    cam = make_camera(rig, auto_exposure_preview=True)
    with streaming(cam, Collector()):
        cfg = rig.cameras[-1].camera_configuration()
        assert cfg is not None and cfg["controls"]["AeEnable"] is True
        assert "ExposureTime" not in cfg["controls"]
        cam.request_exposure(30000, 2.0)
        assert rig.control_log[-1]["AeEnable"] is False
        cam.restore_preview()
        assert rig.control_log[-1] == {"AeEnable": True, "FrameDurationLimits": (33333, 33333)}


def test_exposure_mode_controls_when_the_camera_has_no_ae_enable() -> None:
    rig = Rig()
    del rig.controls["AeEnable"]
    rig.controls["ExposureTimeMode"] = (0, 1, 0)
    rig.controls["AnalogueGainMode"] = (0, 1, 0)
    cam = make_camera(rig)
    with streaming(cam, Collector()):
        cam.request_exposure(10000, 1.5)
        sent = rig.control_log[-1]
        assert sent["ExposureTimeMode"] == 1 and sent["AnalogueGainMode"] == 1
        assert "AeEnable" not in sent


def test_requests_are_clamped_to_the_camera_limits() -> None:
    rig = Rig()
    cam = make_camera(rig)
    with streaming(cam, Collector()):
        cam.request_exposure(10000, 40.0)
        assert rig.control_log[-1]["AnalogueGain"] == 16.0


def test_busy_camera_gives_a_camera_error_with_the_fixes() -> None:
    cam = make_camera(Rig(busy=True))
    with pytest.raises(CameraError) as info:
        cam.start(Collector())
    text = str(info.value)
    assert "did not complete" in text and "fuser" in text and "video" in text
    assert isinstance(info.value.__cause__, RuntimeError)


def test_missing_camera_number_gives_a_camera_error() -> None:
    cam = make_camera(Rig(n_cameras=0))
    with pytest.raises(CameraError, match="no camera number 0"):
        cam.start(Collector())


def test_configure_failure_closes_the_camera() -> None:
    rig = Rig(fail_configure=True)
    cam = make_camera(rig)
    with pytest.raises(CameraError, match="Configuration failed"):
        cam.start(Collector())
    assert not rig.cameras[-1].is_open


def test_camera_that_delivers_nothing_fails_start() -> None:
    rig = Rig(deliver=False)
    cam = make_camera(rig, frame_timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(CameraError, match="no frame"):
        cam.start(Collector())
    assert time.monotonic() - t0 < 3.0
    assert not rig.cameras[-1].is_open


def test_missing_picamera2_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import raises ImportError
    cam = Picamera2Camera(make_settings())
    with pytest.raises(CameraError) as info:
        cam.start(Collector())
    assert "python3-picamera2" in str(info.value)
    assert "--system-site-packages" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)
