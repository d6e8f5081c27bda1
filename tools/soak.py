"""Soak the real daemon: many triggers as fast as it accepts them, then counts, latency
and resident memory over time (issue 7).

    python tools/soak.py                                  # 1000 triggers, 320x240 at 30 fps
    python tools/soak.py --triggers 5000 --size 1280x720 --json soak.json

Starts ``deblurd run`` (the real process, sim camera, U-Net off unless ``--unet``) on a
temporary config and drives it over its ZeroMQ sockets: a trigger request, the next one as
soon as the reply came; after a ``busy`` reply it waits for the next outcome (result or
error) before trying again, so the queue stays full ("as fast as accepted"). Every request
counts once: accepted (then a result or an error) or busy. At the end it prints the counts
(nothing lost: results + busy + errors = triggers), trigger-to-result latency p50/p95/p99
(client clock: request sent → result received), the daemon's dropped frames, and the
daemon's resident memory (``/proc/PID/status`` VmRSS) sampled every ``--sample-s``: a
sparkline, a small table and a linear fit after the warm-up (first ``--warmup`` of the
run's time): ``flat`` when the fitted growth over the run after warm-up is under
``--flat-mib``. ``--json`` writes the same numbers for tests (tests/integration/test_soak.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from deblurd.evaluation.cli_args import frame_size

SPARK = "▁▂▃▄▅▆▇█"


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q * 100)) if values else float("nan")


def sparkline(values: list[float], width: int = 60) -> str:
    if not values:
        return ""
    picks = [values[int(i * len(values) / width)] for i in range(min(width, len(values)))]
    lo, hi = min(picks), max(picks)
    span = hi - lo or 1.0
    return "".join(SPARK[min(7, int((v - lo) / span * 8))] for v in picks)


def write_config(folder: Path, width: int, height: int, fps: float, unet: bool) -> Path:
    cfg = folder / "deblurd.toml"
    cfg.write_text(
        f"""
[camera]
backend = "sim"
width = {width}
height = {height}
fps = {fps}
ring_memory_mb = 64
[camera.sim]
seed = 11
[service]
control_endpoint = "ipc://{folder}/control.sock"
results_endpoint = "ipc://{folder}/results.sock"
results_hwm = 100000
[output]
directory = "{folder}/out"
max_files = 50
[inference]
passes = "{"first" if unet else "off"}"
[triggers]
terminal = false
"""
    )
    return cfg


class Sampler(threading.Thread):
    """VmRSS of ``pid`` every ``every_s`` seconds: ``samples`` = [(t, MiB)]."""

    def __init__(self, pid: int, every_s: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            mib = rss_mib(self.pid)
            if mib is not None:
                self.samples.append((time.monotonic() - self.t0, mib))


def soak(args: argparse.Namespace) -> dict[str, Any]:
    width, height = args.size
    folder = Path(tempfile.mkdtemp(prefix="deblurd-soak-"))
    cfg = write_config(folder, width, height, args.fps, args.unet)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBLURD_")}
    env.pop("NOTIFY_SOCKET", None)
    log = open(folder / "daemon.log", "w", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "deblurd.cli", "run", "--config", str(cfg)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    ctx: zmq.Context[Any] = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 100000)
    sub.setsockopt(zmq.LINGER, 0)

    def ask(msg: dict[str, Any]) -> dict[str, Any]:
        req.send_json(msg)
        if not req.poll(10000):
            raise SystemExit(f"no reply to {msg}; daemon log: {folder / 'daemon.log'}")
        reply: Any = req.recv_json()
        return dict(reply)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (folder / "control.sock").exists():
            req.connect(f"ipc://{folder}/control.sock")
            sub.connect(f"ipc://{folder}/results.sock")
            break
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited {proc.returncode}: {folder / 'daemon.log'}")
        time.sleep(0.1)
    while ask({"cmd": "status"}).get("state") != "ready":
        time.sleep(0.1)
    time.sleep(0.3)  # the subscription reaches the PUB socket
    sampler = Sampler(proc.pid, args.sample_s)
    sampler.start()

    sent: dict[str, float] = {}  # accepted capture id -> when its trigger was sent
    latency: list[float] = []
    results = busy = errors = refused = 0
    error_codes: dict[str, int] = {}
    t_start = time.monotonic()

    def take(timeout_ms: int) -> None:
        nonlocal results, errors
        while sub.poll(timeout_ms):
            timeout_ms = 0
            topic, raw = sub.recv_multipart()[:2]
            if topic not in (b"result", b"error"):
                continue
            doc = json.loads(raw)
            cid = doc.get("capture_id")
            if cid not in sent:
                continue
            t_sent = sent.pop(cid)
            if topic == b"result":
                results += 1
                latency.append((time.monotonic() - t_sent) * 1000)
            else:
                errors += 1
                error_codes[doc["code"]] = error_codes.get(doc["code"], 0) + 1

    for i in range(args.triggers):
        t_sent = time.monotonic()
        reply = ask({"cmd": "trigger"})
        if reply.get("ok"):
            sent[reply["capture_id"]] = t_sent
        elif reply.get("error", {}).get("code") == "busy":
            busy += 1
            take(5000)  # wait for the queue to move
        else:
            refused += 1
        take(0)
        if args.progress and (i + 1) % 100 == 0:
            print(f"  {i + 1} triggers, {results} results, {busy} busy", flush=True)
    end = time.monotonic() + 60
    while sent and time.monotonic() < end:
        take(500)
    duration = time.monotonic() - t_start
    # A job publishes its result just before the daemon counts it as done: read the
    # counters once they have caught up with what arrived (or after 5 s).
    settle = time.monotonic() + 5
    status = ask({"cmd": "status"})
    while (status["jobs"]["done"] + status["jobs"]["failed"] < results + errors
           and time.monotonic() < settle):  # fmt: skip
        time.sleep(0.05)
        status = ask({"cmd": "status"})
    sampler.stop.set()
    sampler.join()
    proc.terminate()
    rc = proc.wait(30)
    ctx.destroy(0)
    log.close()

    samples = sampler.samples
    warm_t = args.warmup * (samples[-1][0] if samples else 0.0)
    after = [(t, m) for t, m in samples if t >= warm_t]
    slope = 0.0
    if len(after) >= 3:
        slope = float(np.polyfit([t for t, _ in after], [m for _, m in after], 1)[0])  # MiB/s
    growth = slope * ((after[-1][0] - after[0][0]) if after else 0.0)
    return {
        "triggers": args.triggers,
        "size": args.size,
        "fps": args.fps,
        "duration_s": round(duration, 1),
        "results": results,
        "busy": busy,
        "errors": errors,
        "error_codes": error_codes,
        "refused": refused,
        "lost": len(sent),
        "latency_ms": {
            "p50": round(pct(latency, 0.5), 1),
            "p95": round(pct(latency, 0.95), 1),
            "p99": round(pct(latency, 0.99), 1),
            "max": round(max(latency), 1) if latency else None,
        },
        "frames_dropped": status["camera"]["frames_dropped"],
        "frames_received": status["camera"]["frames_received"],
        "daemon_jobs": status["jobs"],
        "rss_mib": [[round(t, 1), round(m, 1)] for t, m in samples],
        "rss_warm_mib": round(after[0][1], 1) if after else None,
        "rss_end_mib": round(samples[-1][1], 1) if samples else None,
        "rss_slope_mib_per_min": round(slope * 60, 3),
        "rss_growth_after_warmup_mib": round(growth, 2),
        "rss_flat": abs(growth) < args.flat_mib,
        "exit_status": rc,
        "log": str(folder / "daemon.log"),
    }


def report(r: dict[str, Any]) -> None:
    print(f"soak: {r['triggers']} triggers at {r['size']} / {r['fps']:.0f} fps in "
          f"{r['duration_s']:.0f} s (daemon exit {r['exit_status']})")  # fmt: skip
    print(f"  results {r['results']}  busy {r['busy']}  errors {r['errors']} {r['error_codes']}"
          f"  refused {r['refused']}  lost {r['lost']}  "
          f"(results + busy + errors = {r['results'] + r['busy'] + r['errors']})")  # fmt: skip
    lat = r["latency_ms"]
    print(f"  trigger-to-result ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  "
          f"max {lat['max']}")  # fmt: skip
    print(f"  frames: {r['frames_received']} received, {r['frames_dropped']} dropped")
    rss = [m for _, m in r["rss_mib"]]
    print(f"  RSS MiB {sparkline(rss)}")
    if rss:
        n = len(r["rss_mib"])
        rows = [r["rss_mib"][min(n - 1, round(i * (n - 1) / 5))] for i in range(6)]
        print("  " + "  ".join(f"t={t:>5.0f}s {m:6.1f}" for t, m in rows))
    verdict = "flat" if r["rss_flat"] else "NOT flat"
    print(f"  RSS after warm-up: {r['rss_warm_mib']} → {r['rss_end_mib']} MiB, fit slope "
          f"{r['rss_slope_mib_per_min']:+.3f} MiB/min, growth "
          f"{r['rss_growth_after_warmup_mib']:+.2f} MiB: {verdict}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triggers", type=int, default=1000)
    parser.add_argument("--size", type=frame_size, default="320x240", help="WxH of the sim camera")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--unet", action="store_true", help="run the U-Net's first pass")
    parser.add_argument("--sample-s", type=float, default=0.5, help="RSS sampling period, s")
    parser.add_argument("--warmup", type=float, default=0.25, help="share of the run ignored")
    parser.add_argument("--flat-mib", type=float, default=5.0, help="flat: fitted growth < this")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    r = soak(args)
    report(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
