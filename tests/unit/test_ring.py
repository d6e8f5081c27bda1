"""The frame ring: budget, ordering, windows, waiting, and consistency under concurrency."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from deblurd.camera.base import CameraError, FrameMeta
from deblurd.camera.ring import FrameRing, capacity_for_budget
from deblurd.errors import ConfigError

H, W = 120, 160
PERIOD_NS = 1_000_000


def make_frame(n: int) -> np.ndarray:
    """A frame whose every pixel encodes its frame number (checkable after a copy)."""
    f = np.empty((H, W, 3), np.uint8)
    f[..., 0] = n % 256
    f[..., 1] = (n // 256) % 256
    f[..., 2] = (n * 7) % 256
    return f


def make_meta(n: int) -> FrameMeta:
    return FrameMeta(n, 1_000_000_000 + n * PERIOD_NS, 8000 + n, 1.0 + n / 1000)


def check(frame: np.ndarray, meta: FrameMeta) -> None:
    """Pixels, frame number and every metadata field agree: not torn, not mixed."""
    n = meta.frame_number
    assert np.array_equal(frame, make_frame(n)), f"frame {n} is torn or another frame's"
    assert meta == make_meta(n)


def push_range(ring: FrameRing, start: int, stop: int) -> None:
    for n in range(start, stop):
        ring.push(make_frame(n), make_meta(n))


def test_capacity_for_budget() -> None:
    per = 720 * 1280 * 3
    assert capacity_for_budget(256 * 2**20, 720, 1280) == 256 * 2**20 // per
    assert capacity_for_budget(10 * per + per - 1, 720, 1280) == 10
    with pytest.raises(ConfigError, match=r"camera\.ring_memory_mb") as info:
        capacity_for_budget(3 * per, 720, 1280, minimum=4)
    assert info.value.problems[0][0] == "camera.ring_memory_mb"


def test_preallocated_and_push_keeps_last_capacity_frames() -> None:
    ring = FrameRing(8, H, W)
    assert ring.nbytes == 8 * H * W * 3 and ring.fill == 0 and ring.latest() is None
    push_range(ring, 0, 5)
    assert ring.fill == 5 and ring.frames_written == 5
    push_range(ring, 5, 20)
    assert ring.fill == 8 and ring.frames_written == 20
    assert [m.frame_number for m in ring.metas()] == list(range(12, 20))
    latest = ring.latest()
    assert latest is not None
    check(*latest)
    assert latest[1].frame_number == 19
    # the copy is private: later pushes do not change it
    push_range(ring, 20, 30)
    check(*latest)


def test_push_rejects_wrong_shape_and_counts_gaps() -> None:
    ring = FrameRing(4, H, W)
    with pytest.raises(CameraError, match="does not fit"):
        ring.push(np.zeros((H, W + 1, 3), np.uint8), make_meta(0))
    ring.push(make_frame(0), make_meta(0))
    ring.push(make_frame(3), make_meta(3))  # 1 and 2 dropped by the backend
    ring.push(make_frame(4), make_meta(4))
    assert ring.frames_missed == 2


def test_push_takes_padded_and_channel_reversed_views() -> None:
    """A camera's own buffer handed over as a view (padded rows; B, G, R bytes seen as RGB
    through ``[..., ::-1]``, picamera2's RGB888) lands in the ring as the RGB frame."""
    ring = FrameRing(4, H, W)
    for n in range(4):
        reversed_channels = n % 2 == 0
        rows = np.full((H, W * 3 + 32), 0xAB, np.uint8)  # 32 bytes of row padding
        buffer = rows[:, : W * 3].reshape(H, W, 3)
        buffer[...] = make_frame(n)[..., ::-1] if reversed_channels else make_frame(n)
        buffer.flags.writeable = False  # a mapped camera buffer is read, never written
        ring.push(buffer[..., ::-1] if reversed_channels else buffer, make_meta(n))
        latest = ring.latest()
        assert latest is not None
        check(*latest)


def test_window_before_and_after() -> None:
    ring = FrameRing(32, H, W)
    push_range(ring, 0, 20)
    center = make_meta(10).timestamp_ns + PERIOD_NS // 2  # during frame 10
    got = ring.window(center, before=3, after=4, timeout_s=0.0)
    assert [m.frame_number for _, m in got] == [8, 9, 10, 11, 12, 13, 14]
    for f, m in got:
        check(f, m)
    # exactly on a timestamp: that frame is the last "before" frame
    got = ring.window(make_meta(10).timestamp_ns, before=1, after=1, timeout_s=0.0)
    assert [m.frame_number for _, m in got] == [10, 11]


def test_window_waits_for_after_frames() -> None:
    ring = FrameRing(32, H, W)
    push_range(ring, 0, 10)
    center = make_meta(9).timestamp_ns

    def late_writer() -> None:
        for n in range(10, 14):
            time.sleep(0.02)
            ring.push(make_frame(n), make_meta(n))

    t = threading.Thread(target=late_writer)
    t0 = time.monotonic()
    t.start()
    got = ring.window(center, before=2, after=3, timeout_s=5.0)
    waited = time.monotonic() - t0
    t.join()
    assert [m.frame_number for _, m in got] == [8, 9, 10, 11, 12]
    assert 0.04 < waited < 4.0  # it waited for the three frames, not for the timeout


def test_window_timeout_returns_what_arrived_and_empty_raises() -> None:
    ring = FrameRing(8, H, W)
    with pytest.raises(CameraError, match="no frames"):
        ring.window(0, 2, 2, timeout_s=0.05)
    push_range(ring, 0, 4)
    t0 = time.monotonic()
    got = ring.window(make_meta(3).timestamp_ns, before=2, after=2, timeout_s=0.1)
    assert time.monotonic() - t0 >= 0.09
    assert [m.frame_number for _, m in got] == [2, 3]
    # frames that left the ring are not invented
    push_range(ring, 4, 20)
    got = ring.window(make_meta(5).timestamp_ns, before=3, after=2, timeout_s=0.0)
    assert [m.frame_number for _, m in got] == [12, 13]


def test_wait_for_predicate() -> None:
    ring = FrameRing(4, H, W)  # smaller than the count: frames are copied as they arrive
    push_range(ring, 0, 3)

    def writer() -> None:
        for n in range(3, 40):
            time.sleep(0.002)
            ring.push(make_frame(n), make_meta(n))

    t = threading.Thread(target=writer)
    t.start()
    got = ring.wait_for(lambda m: m.frame_number % 3 == 0, count=6, timeout_s=5.0)
    t.join()
    numbers = [m.frame_number for _, m in got]
    assert len(numbers) == 6 and all(n % 3 == 0 and n >= 3 for n in numbers)
    assert numbers == sorted(numbers)
    for f, m in got:
        check(f, m)
    # start_after_frame looks back into the ring
    got = ring.wait_for(lambda m: True, count=2, timeout_s=0.0, start_after_frame=36)
    assert [m.frame_number for _, m in got] == [37, 38]


def test_wait_for_timeout_and_close() -> None:
    ring = FrameRing(8, H, W)
    push_range(ring, 0, 8)
    with pytest.raises(CameraError, match="0 of 2"):
        ring.wait_for(lambda m: m.exposure_us > 99999, 2, timeout_s=0.05, start_after_frame=-1)
    threading.Timer(0.05, ring.close).start()
    t0 = time.monotonic()
    with pytest.raises(CameraError, match="closed"):
        ring.wait_for(lambda m: True, 1, timeout_s=10.0)
    assert time.monotonic() - t0 < 5.0


def test_concurrent_writer_and_readers_never_see_torn_frames() -> None:
    """A writer at full speed against readers using every read path: every returned frame
    must be internally consistent and match its metadata, and windows must be ordered."""
    ring = FrameRing(32, H, W)  # small: slow readers get overtaken
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = {"frames": 0, "windows": 0}
    push_range(ring, 0, 6)

    def writer() -> None:
        n = 6
        while not stop.is_set():
            ring.push(make_frame(n), make_meta(n))
            n += 1
            time.sleep(0.0002)  # ~2000 frames/s: a camera is not a busy loop

    def reader(kind: int) -> None:
        try:
            while not stop.is_set():
                if kind == 0:
                    latest = ring.latest()
                    got = [latest] if latest else []
                elif kind == 1:
                    last = ring.metas()[-1]
                    got = ring.window(last.timestamp_ns, before=3, after=2, timeout_s=1.0)
                    numbers = [m.frame_number for _, m in got]
                    assert numbers == sorted(numbers)
                    counts["windows"] += 1
                elif kind == 2:
                    got = ring.wait_for(lambda m: m.frame_number % 2 == 1, 3, timeout_s=2.0)
                    assert all(m.frame_number % 2 == 1 for _, m in got)
                else:  # the oldest frames: the ones the writer is about to overwrite
                    oldest = ring.metas()[0].frame_number
                    got = ring.wait_for(lambda m: True, 8, 2.0, start_after_frame=oldest - 1)
                for f, m in got:
                    check(f, m)
                counts["frames"] += len(got)
        except CameraError as exc:
            if not (stop.is_set() and "closed" in str(exc)):  # close() at the end: fine
                errors.append(exc)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader, args=(k,)) for k in (0, 1, 2, 3)]
    for t in threads:
        t.start()
    # at least 1.5 s, and until enough has happened (a loaded machine runs the threads
    # slower; the counts below are what the test needs to have exercised)
    t_end, deadline = time.monotonic() + 1.5, time.monotonic() + 20.0
    while time.monotonic() < deadline and (
        time.monotonic() < t_end
        or ring.frames_written <= 500
        or counts["frames"] <= 500
        or counts["windows"] <= 50
    ):
        time.sleep(0.05)
    stop.set()
    ring.close()
    for t in threads:
        t.join(5.0)
    assert not errors, errors[0]
    assert ring.frames_written > 500
    assert counts["frames"] > 500 and counts["windows"] > 50
