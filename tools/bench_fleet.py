"""Fleet benchmark: N simulated cameras (processes) triggering against one Triton server.

Each camera is a process with its own :class:`~deblurd.inference.triton.TritonDeblurrer`
that runs what one capture sends to the server, both U-Net passes on one frame (first on the
selected frame, second on a "fused" one), ``--jobs`` times back to back (closed loop: the
next trigger as soon as the last result is back: the load a busy fleet puts on the server).
Reported per camera count: latency per trigger (both passes) p50/p95, throughput (triggers
per second, all cameras), and every trigger's outcome (result, error, lost); with dynamic
batching (``max_batch_size 8``, 2 ms queue delay) and without (each request alone), against
one camera running both passes locally with onnxruntime. ``--restart-at S`` also stops the
server S seconds into a run of the largest camera count and starts it again (same ports).

Run it from the venv with nvidia-pytriton (Debian's own python3; see tools/test.sh)::

    .venv-triton/bin/python tools/bench_fleet.py --cameras 1,2,4 --jobs 6

The server here is PyTriton on this machine's CPU (the cameras share those cores): the
numbers show the protocol's and the batching's cost and behaviour, not a GPU server's
speed; docs/guides/triton-server.md says how to measure on a real one.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from triton_serve import ServerProcess  # noqa: E402


def _frame(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((h // 8 + 1, w // 8 + 1, 3), dtype=np.float32)
    img = np.kron(base, np.ones((8, 8, 1), np.float32))[:h, :w]
    out: np.ndarray = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)
    return out


def _camera(index: int, url: str, jobs: int, h: int, w: int, tile: int, timeout_s: float,
            interval_s: float, fallback: str, start: Any, results: Any) -> None:  # fmt: skip
    from deblurd.errors import DeblurdError
    from deblurd.inference.triton import TritonDeblurrer
    from deblurd.settings.inference import TritonSettings

    img = _frame(h, w, index)
    settings = TritonSettings.model_validate(
        {"url": url, "tile": tile, "timeout_s": timeout_s, "connect_timeout_s": timeout_s,
         "fallback": fallback, "local_threads": 1})  # fmt: skip
    d = TritonDeblurrer(settings,
                        local_second_model="engines/unet-second.onnx")  # fmt: skip
    d.deblur(img, "first")  # connection and the server's first run
    start.wait()
    last = time.perf_counter()
    for job in range(jobs):
        t0 = time.perf_counter()
        if job and interval_s > 0:  # paced: a trigger every interval_s (open loop)
            time.sleep(max(0.0, interval_s - (t0 - last)))
            t0 = time.perf_counter()
        last = t0
        try:
            d.deblur(d.deblur(img, "first"), "second")
            outcome = "result (ran locally)" if d.take_notes() else "result"
        except DeblurdError as exc:
            outcome = f"error: {str(exc)[:120]}"
        results.put((index, job, outcome, time.perf_counter() - t0, time.time()))
    d.close()


def _local(jobs: int, h: int, w: int, threads: int) -> list[float]:
    from deblurd.inference.onnx import OnnxDeblurrer
    from deblurd.settings.inference import OnnxRuntimeSettings

    img = _frame(h, w, 0)
    s = OnnxRuntimeSettings(threads=threads)
    first, second = OnnxDeblurrer(s), OnnxDeblurrer(s, "engines/unet-second.onnx")
    second.deblur(first.deblur(img, "first"), "second")
    times = []
    for _ in range(jobs):
        t0 = time.perf_counter()
        second.deblur(first.deblur(img, "first"), "second")
        times.append(time.perf_counter() - t0)
    return times


def _fleet(server: ServerProcess, n: int, args: argparse.Namespace,
           restart_at: float | None = None) -> dict[str, Any]:  # fmt: skip
    jobs = args.restart_jobs if restart_at is not None else args.jobs
    interval = args.restart_interval_s if restart_at is not None else 0.0
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_camera, args=(i, server.grpc_url, jobs, args.height,
                                          args.width, args.tile, args.timeout_s, interval,
                                          args.fallback, start, results))
        for i in range(n)
    ]  # fmt: skip
    for p in procs:
        p.start()
    time.sleep(args.settle_s)  # every camera connected and warm
    t0 = time.time()
    start.set()
    outcomes: list[tuple[int, int, str, float, float]] = []
    restarted = False
    down_at = back_at = None
    expected = n * jobs
    deadline = time.monotonic() + jobs * n * 60
    while len(outcomes) < expected and time.monotonic() < deadline:
        if restart_at is not None and not restarted and time.time() - t0 > restart_at:
            down_at = time.time()
            server.stop()
            took = server.start()
            back_at = time.time()
            print(f"  server stopped at {down_at - t0:.1f} s, back at {back_at - t0:.1f} s "
                  f"(start {took:.1f} s)", flush=True)  # fmt: skip
            restarted = True
        try:
            outcomes.append(results.get(timeout=0.2))
        except Exception:  # queue.Empty
            continue
    wall = time.time() - t0
    for p in procs:
        p.join(30)
    ok = [o for o in outcomes if o[2].startswith("result")]
    lat = sorted(o[3] for o in ok)
    restart: dict[str, Any] = {}
    if down_at is not None and back_at is not None:
        errors = [o for o in outcomes if not o[2].startswith("result")]
        # an outcome at time e of a trigger that took d started at e - d
        restart = {
            "down_s": round(back_at - down_at, 1),
            "errors_of_triggers_started_before_back": sum(
                1 for o in errors if o[4] - o[3] <= back_at),
            "errors_of_triggers_started_after_back": sum(
                1 for o in errors if o[4] - o[3] > back_at),
            "results_after_back": sum(1 for o in ok if o[4] - o[3] > back_at),
        }  # fmt: skip
    return {
        "cameras": n,
        "triggers": expected,
        "results": len(ok),
        "errors": len(outcomes) - len(ok),
        "lost": expected - len(outcomes),
        "p50_s": round(float(np.percentile(lat, 50)), 3) if lat else None,
        "p95_s": round(float(np.percentile(lat, 95)), 3) if lat else None,
        "throughput_per_s": round(len(ok) / wall, 2),
        "wall_s": round(wall, 1),
        "ran_locally": sum(1 for o in outcomes if o[2] == "result (ran locally)"),
        "first_errors": sorted({o[2] for o in outcomes if not o[2].startswith("result")})[:3],
        **restart,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", default="1,2,4", help="camera counts, comma separated")
    parser.add_argument("--jobs", type=int, default=6, help="triggers per camera")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--tile", type=int, default=2048, help="client tile side, px")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--server-threads", type=int, default=2,
                        help="onnxruntime threads per served model")  # fmt: skip
    parser.add_argument("--local-threads", type=int, default=2)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--restart-at", type=float, default=None,
                        help="restart the server this many s into a paced run")  # fmt: skip
    parser.add_argument("--restart-jobs", type=int, default=40, help="triggers per camera "
                        "in the restart run (paced)")  # fmt: skip
    parser.add_argument("--restart-interval-s", type=float, default=0.5, help="a trigger "
                        "every this many s per camera in the restart run")  # fmt: skip
    parser.add_argument("--fallback", choices=("none", "local"), default="none",
                        help="the cameras' inference.runtime.fallback")  # fmt: skip
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    counts = [int(c) for c in args.cameras.split(",")]
    os.chdir(ROOT)
    machine = (f"{platform.node()}: {os.cpu_count()} CPUs "
               f"({platform.processor() or platform.machine()}), Python "
               f"{platform.python_version()}, load average "
               f"{os.getloadavg()[0]:.1f} at start")  # fmt: skip
    print(
        f"fleet benchmark, {args.width}x{args.height}, both passes per trigger, "
        f"{args.jobs} triggers per camera; {machine}",
        flush=True,
    )
    report: dict[str, Any] = {"machine": machine, "args": vars(args), "runs": []}

    local = _local(args.jobs, args.height, args.width, args.local_threads)
    row = {"mode": "local (one camera, onnxruntime, "
                   f"{args.local_threads} threads)", "cameras": 1,
           "p50_s": round(float(np.percentile(local, 50)), 3),
           "p95_s": round(float(np.percentile(local, 95)), 3),
           "throughput_per_s": round(len(local) / sum(local), 2)}  # fmt: skip
    report["runs"].append(row)
    print(json.dumps(row), flush=True)
    for max_batch, mode in ((8, "triton, dynamic batching"), (0, "triton, no batching")):
        server = ServerProcess(sys.executable, "--max-batch", str(max_batch),
                               "--threads", str(args.server_threads))  # fmt: skip
        took = server.start()
        print(f"{mode}: server ready in {took:.1f} s", flush=True)
        try:
            for n in counts:
                row = {"mode": mode, **_fleet(server, n, args)}
                report["runs"].append(row)
                print(json.dumps(row), flush=True)
            if args.restart_at is not None and max_batch > 0:
                n = max(counts)
                row = {"mode": f"{mode}, server restarted mid-run",
                       **_fleet(server, n, args, args.restart_at)}  # fmt: skip
                report["runs"].append(row)
                print(json.dumps(row), flush=True)
        finally:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| mode | cameras | p50 s | p95 s | triggers/s | results/errors/lost |")
    print("|---|---|---|---|---|---|")
    for r in report["runs"]:
        outcome = f"{r['results']}/{r['errors']}/{r['lost']}" if "results" in r else "-"
        print(
            f"| {r['mode']} | {r['cameras']} | {r['p50_s']} | {r['p95_s']} | "
            f"{r['throughput_per_s']} | {outcome} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
