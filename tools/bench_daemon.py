"""Benchmark the daemon on the sim camera: trigger-to-result latency, dropped frames, memory.

    python tools/bench_daemon.py                      # 720p and 1080p, 200 triggers each
    python tools/bench_daemon.py --sizes 720p --triggers 20 --fps 30 [--unet off|first|both]

For each size it runs the real daemon (``deblurd.service.daemon.Daemon``, in this process
so its resident memory can be read) on the sim camera and a client over real ZeroMQ ipc
sockets: one trigger at a time, the next after the previous result arrived. It prints
trigger-to-result latency (p50, p95, max; measured by the client from sending the request
to receiving the result), the daemon's own per-stage latencies, frames dropped by the
camera while jobs ran (gaps in frame numbers; ``--realtime`` makes the sim camera drop
the frames it cannot render in time, as a real sensor would, instead of slowing its
clock), and resident memory after warm-up and at the end (growth = a leak).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from deblurd.camera.sim import SimCamera
from deblurd.service.daemon import Daemon
from deblurd.settings.camera import SimCameraSection
from deblurd.settings.models import DeblurdSettings

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "480p": (640, 480)}


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench(size: str, triggers: int, fps: float, realtime: bool, warmup: int, unet: str) -> None:
    width, height = SIZES[size]
    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    camera = SimCameraSection.model_validate(
        {"width": width, "height": height, "fps": fps, "ring_memory_mb": 256,
         "sim": {"realtime": realtime}}
    )  # fmt: skip
    settings = DeblurdSettings.model_validate(
        {
            "camera": camera,
            "service": {"control_endpoint": f"ipc://{tmp}/c.sock",
                        "results_endpoint": f"ipc://{tmp}/r.sock", "results_hwm": 1000},
            "output": {"directory": str(tmp / "out"), "max_files": 20},
            "triggers": {"terminal": False},
            "inference": {"passes": unet},
        }
    )  # fmt: skip
    daemon = Daemon(settings, camera_factory=lambda: SimCamera(camera), terminal=False)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    if not daemon.wait_ready(60):
        raise SystemExit("daemon not ready")
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(daemon.endpoints.results)
    req = ctx.socket(zmq.REQ)
    req.connect(daemon.endpoints.control)
    time.sleep(0.5)
    latencies: list[float] = []
    dropped = 0
    failed = 0
    rss_warm = rss_mib()
    for i in range(triggers):
        if i == warmup:
            rss_warm = rss_mib()
        before = daemon.status.frames.dropped
        t0 = time.perf_counter()
        req.send_json({"cmd": "trigger"})
        reply = req.recv_json()
        if not isinstance(reply, dict) or not reply.get("ok"):
            failed += 1
            continue
        cid = reply["capture_id"]
        while sub.poll(60_000):
            parts = sub.recv_multipart()
            meta = json.loads(parts[1])
            if meta.get("capture_id") == cid and parts[0] in (b"result", b"error"):
                break
        else:
            raise SystemExit(f"no result for {cid}")
        if parts[0] == b"error":
            failed += 1
            continue
        latencies.append((time.perf_counter() - t0) * 1000)
        dropped += daemon.status.frames.dropped - before
    rss_end = rss_mib()
    stages = daemon.status.latency()
    daemon.request_stop()
    thread.join(30)
    req.close(0)
    sub.close(0)
    ctx.term()

    print(f"== {size} ({width}x{height}) at {fps:.0f} fps, sim realtime={realtime}: "
          f"{len(latencies)} results, {failed} failed")  # fmt: skip
    if latencies:
        p50, p95 = pct(latencies, 0.5), pct(latencies, 0.95)
        print(f"trigger-to-result: p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
              f"max {max(latencies):.0f} ms, mean {statistics.mean(latencies):.0f} ms")  # fmt: skip
    print(f"frames dropped during jobs: {dropped}")
    print(f"resident memory: {rss_warm:.0f} MiB after {warmup} warm-up triggers, "
          f"{rss_end:.0f} MiB at the end ({rss_end - rss_warm:+.0f} MiB)")  # fmt: skip
    print("daemon stages (ms, p50 / p95):")
    for name, st in stages.items():
        print(f"  {name:24s} {st['p50']:8.1f} {st['p95']:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["720p", "1080p"], choices=sorted(SIZES))
    parser.add_argument("--triggers", type=int, default=200, help="triggers per size")
    parser.add_argument("--warmup", type=int, default=10, help="triggers before the RSS baseline")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--realtime", action="store_true", help="sim camera drops late frames")
    parser.add_argument(
        "--unet",
        choices=["off", "first", "both"],
        default="both",
        help="U-Net passes (default: both, the daemon's default)",
    )
    args = parser.parse_args()
    for size in args.sizes:
        bench(
            size, args.triggers, args.fps, args.realtime, min(args.warmup, args.triggers), args.unet
        )


if __name__ == "__main__":
    main()
