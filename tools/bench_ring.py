"""Benchmark the frame ring and the sim camera.

    python tools/bench_ring.py                 # 720p and 1080p ring, sim camera at 720p
    python tools/bench_ring.py --sim-seconds 5 --sizes 1280x720

Prints: ``push`` time per frame (the camera thread's cost), ``window()`` latency for a
9-frame window (the job's cost, a reader copying 9 frames), both with a concurrent
writer at the camera's rate; then the sim camera's achieved frame rate (non-realtime
and realtime, with render time per frame) and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import threading
import time

import numpy as np

from deblurd.camera.base import FrameMeta
from deblurd.camera.ring import FrameRing, capacity_for_budget
from deblurd.camera.sim import SimCamera
from deblurd.evaluation.cli_args import frame_size, frame_sizes
from deblurd.settings.camera import SimCameraSection, SimCameraSettings


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def bench_ring(height: int, width: int, budget_mb: int, seconds: float, fps: float) -> None:
    cap = capacity_for_budget(budget_mb * 2**20, height, width)
    t0 = time.perf_counter()
    ring = FrameRing(cap, height, width)
    alloc_s = time.perf_counter() - t0
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    # raw push rate: writer alone
    n = 200
    t0 = time.perf_counter()
    for i in range(n):
        ring.push(frame, FrameMeta(i, i * 33_333_333, 8000, 4.0))
    raw = (time.perf_counter() - t0) / n
    # push cost and window latency with a paced writer and a reader
    push_s: list[float] = []
    win_s: list[float] = []
    stop = threading.Event()
    period = 1.0 / fps
    base = n

    def writer() -> None:
        i = base
        nxt = time.perf_counter()
        while not stop.is_set():
            t = time.perf_counter()
            ring.push(frame, FrameMeta(i, time.monotonic_ns(), 8000, 4.0))
            push_s.append(time.perf_counter() - t)
            i += 1
            nxt += period
            time.sleep(max(0.0, nxt - time.perf_counter()))

    th = threading.Thread(target=writer)
    th.start()
    time.sleep(0.3)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        center = time.monotonic_ns()
        t = time.perf_counter()
        got = ring.window(center, 5, 4, timeout_s=2.0)
        win_s.append(time.perf_counter() - t)  # includes waiting for the 4 after-frames
        assert len(got) == 9
        time.sleep(0.05)
    stop.set()
    th.join()
    # window latency without waiting (all frames present): the copy cost alone
    copy_s: list[float] = []
    last = ring.newest_meta()
    assert last is not None
    for _ in range(20):
        t = time.perf_counter()
        ring.window(last.timestamp_ns, 9, 0, 0.0)
        copy_s.append(time.perf_counter() - t)
    print(
        f"ring {width}x{height}: {cap} frames in {budget_mb} MiB, alloc+touch {alloc_s:.2f} s; "
        f"push raw {raw * 1e3:.2f} ms/frame ({1 / raw:.0f} fps); push at {fps:.0f} fps "
        f"p50 {pct(push_s, 50) * 1e3:.2f} ms p99 {pct(push_s, 99) * 1e3:.2f} ms; "
        f"window(9) copy p50 {pct(copy_s, 50) * 1e3:.1f} ms p95 {pct(copy_s, 95) * 1e3:.1f} ms; "
        f"window(5 before, wait 4 after) p50 {pct(win_s, 50) * 1e3:.0f} ms "
        f"(≈ 4 frame periods = {4000 / fps:.0f} ms)"
    )


def bench_sim(height: int, width: int, seconds: float, realtime: bool) -> None:
    cfg = SimCameraSection(width=width, height=height, sim=SimCameraSettings(realtime=realtime))
    cam = SimCamera(cfg)
    metas: list[FrameMeta] = []
    walls: list[float] = []

    def on_frame(frame: np.ndarray, meta: FrameMeta) -> None:
        metas.append(meta)
        walls.append(time.perf_counter())

    t0 = time.perf_counter()
    cam.start(on_frame)
    start_s = time.perf_counter() - t0
    time.sleep(seconds)
    cam.stop()
    if len(walls) < 2:
        print(f"sim {width}x{height}: fewer than 2 frames in {seconds} s")
        return
    fps = (len(walls) - 1) / (walls[-1] - walls[0])
    gaps = statistics.median(np.diff(walls)) * 1e3
    span = metas[-1].frame_number - metas[0].frame_number + 1
    print(
        f"sim {width}x{height} realtime={realtime}: start {start_s:.2f} s, delivered "
        f"{fps:.1f} fps (median {gaps:.0f} ms between frames), {len(metas)} of {span} sensor "
        f"frames delivered, clock lag {(time.monotonic_ns() - cam.sensor_clock_ns()) / 1e9:.2f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=frame_sizes, default="1280x720,1920x1080", help="WxH,WxH")
    ap.add_argument("--budget-mb", type=int, default=256)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=2.0, help="ring benchmark length, s")
    ap.add_argument("--sim-seconds", type=float, default=4.0)
    ap.add_argument("--sim-size", type=frame_size, default="1280x720", help="WxH")
    args = ap.parse_args()
    for w, h in args.sizes:
        bench_ring(h, w, args.budget_mb, args.seconds, args.fps)
        print(f"  peak RSS so far {peak_rss_mb():.0f} MiB")
    w, h = args.sim_size
    for realtime in (False, True):
        bench_sim(h, w, args.sim_seconds, realtime)
    print(f"peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
