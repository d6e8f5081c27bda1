"""Benchmark the handheld-burst simulator (:mod:`deblurd.sim`); measure its shake model.

Timings, per frame size (``--size``, repeatable): the renderer's set-up (procedural
scene, once), then for each render mode (exact with 0.5 px and 2 px sub-steps, fast) the
per-stage time in ms per frame over ``--frames`` ring frames: *render* (the exposure
integral), *noise* (the sensor: shot and read noise, gain, clipping), *encode* (linear
→ 8-bit sRGB of the frame and its truth); then the whole :func:`simulate_burst` of
``--frames`` ring frames, exact and fast. Each figure is the median of ``--repeats``
runs. Then the process's peak RSS. No assertions: this is a script, not a test.

``--motion-seeds N`` (N > 0) also prints the shake model's statistics at the default
frame size and schedule (8 ms ring frames at 30 fps): per shake level (``--levels``,
multiples of ``DEFAULT_SHAKE_DEG_S``), the blur of a ring frame (diameter of the frame
centre's path during the exposure, px, pooled over frames and seeds) and the excursion
of a burst (largest distance between two ring frames' centres at their mean poses, px
and degrees, over seeds). Trajectories only, nothing rendered: fast.

    /work/venv/bin/python tools/bench_sim.py [--size 1280x720 --size 1920x1080]
        [--frames 9] [--repeats 3] [--motion-seeds 40 --levels 0.5 1 2] [--no-timing]
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deblurd.evaluation.cli_args import frame_size
from deblurd.imaging import F64, linear_to_srgb
from deblurd.sim import DEFAULT_SHAKE_DEG_S, SimParams, simulate_burst
from deblurd.sim.burst import make_renderer
from deblurd.sim.render import ShakeRenderer, extent
from deblurd.sim.trajectory import ShakeTrajectory, homographies

_MODES: tuple[tuple[str, bool, float], ...] = (
    ("exact, 0.5 px sub-steps", False, 0.5),
    ("exact, 2 px sub-steps", False, 2.0),
    ("fast", True, 0.5),
)
_DENSE = 64  # path samples per exposure for the blur statistics (as the renderer's minimum)


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``, s."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass
class StageTimes:
    """Seconds spent per stage over one pass of the ring frames."""

    render: float = 0.0
    noise: float = 0.0
    encode: float = 0.0
    substeps: int = 0


def one_pass(
    renderer: ShakeRenderer, params: SimParams, fast: bool, substep_px: float
) -> StageTimes:
    """Render, expose and encode every ring frame of ``params`` once, timing each stage."""
    sensor = params.sensor()
    out = StageTimes()
    for i, (role, ts_ns, exposure_us, gain) in enumerate(params.schedule()):
        if role != "ring":
            continue
        t0 = time.perf_counter()
        exp = renderer.render(
            ts_ns * 1e-9, exposure_us * 1e-6, max_substep_px=substep_px, fast=fast
        )
        t1 = time.perf_counter()
        rng = np.random.default_rng([params.seed, 3, i])
        noisy = sensor.expose_linear(exp.blurred, exposure_us, gain, rng, approximate=fast)
        t2 = time.perf_counter()
        linear_to_srgb(noisy)
        linear_to_srgb(exp.truth)
        t3 = time.perf_counter()
        out.render += t1 - t0
        out.noise += t2 - t1
        out.encode += t3 - t2
        out.substeps += exp.stats.substeps
    return out


def bench_size(width: int, height: int, frames: int, repeats: int) -> None:
    """Print the per-stage and whole-burst timings at one frame size."""
    params = SimParams(width=width, height=height, ring_frames=frames)
    t0 = time.perf_counter()
    renderer = make_renderer(params)
    setup = [time.perf_counter() - t0]
    setup += [seconds(lambda: make_renderer(params)) for _ in range(repeats - 1)]
    print(
        f"\n{width}x{height}, {frames} ring frames, shake {params.shake:.0f} deg/s, "
        f"focal {params.focal:.0f} px: renderer set-up {statistics.median(setup) * 1e3:.0f} ms"
    )
    for label, fast, step in _MODES:
        runs = [one_pass(renderer, params, fast, step) for _ in range(repeats)]
        per = 1e3 / frames

        def med(stage: str, runs: list[StageTimes] = runs, per: float = per) -> float:
            return float(statistics.median(float(getattr(r, stage)) for r in runs)) * per

        total = med("render") + med("noise") + med("encode")
        print(
            f"  {label:<24s} ms/frame: render {med('render'):6.1f} "
            f"(sub-steps {runs[0].substeps / frames:5.1f}), noise {med('noise'):5.1f}, "
            f"encode {med('encode'):5.1f}, total {total:6.1f}"
        )
    for label, fast in (("exact", False), ("fast", True)):
        p = SimParams(width=width, height=height, ring_frames=frames, fast=fast)

        def burst(p: SimParams = p) -> object:
            return simulate_burst(p)

        whole = statistics.median(seconds(burst) for _ in range(repeats))
        print(
            f"  simulate_burst ({label}): {whole:.2f} s per burst, "
            f"{whole / frames * 1e3:.0f} ms/frame"
        )


def burst_motion(params: SimParams) -> tuple[list[float], float]:
    """Blur extents of the ring frames (px) and the burst's excursion (px) of ``params``'
    shake trajectory: see the module docstring."""
    traj = ShakeTrajectory.random(params.shake, params.seed)
    w, h, f = params.width, params.height, params.focal
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0, 1.0])

    def centres(poses: F64) -> F64:
        q = homographies(poses, f, w, h) @ centre
        out: F64 = q[:, :2] / q[:, 2:3]
        return out

    blur: list[float] = []
    means: list[F64] = []
    for role, ts_ns, exposure_us, _ in params.schedule():
        if role != "ring":
            continue
        t = ts_ns * 1e-9 + exposure_us * 1e-6 * (np.arange(_DENSE) + 0.5) / _DENSE
        poses = traj.poses(t)
        blur.append(extent(centres(poses)))
        means.append(poses.mean(axis=0))
    c = centres(np.array(means))
    excursion = float(np.linalg.norm(c[:, None, :] - c[None, :, :], axis=-1).max())
    return blur, excursion


def motion_table(seeds: int, levels: list[float]) -> None:
    """Print blur and excursion statistics of the shake model per level over ``seeds``."""
    base = SimParams()
    deg_per_px = math.degrees(1.0 / base.focal)
    print(
        f"\nshake model, {seeds} seeds, {base.width}x{base.height}, focal {base.focal:.0f} px, "
        f"{base.ring_frames} ring frames of {base.ring_exposure_us / 1000:g} ms at "
        f"{base.fps:g} fps (trajectory only)"
    )
    print(
        "  level  deg/s | blur px: median  (5-95 %)   burst min/max | "
        "excursion px: median  95 %   (deg: median  95 %)"
    )
    for level in levels:
        blur: list[float] = []
        lows: list[float] = []
        highs: list[float] = []
        exc: list[float] = []
        for seed in range(seeds):
            p = SimParams(shake=level * DEFAULT_SHAKE_DEG_S, seed=seed)
            b, e = burst_motion(p)
            blur += b
            lows.append(min(b))
            highs.append(max(b))
            exc.append(e)
        b5, b50, b95 = np.percentile(blur, [5, 50, 95])
        e50, e95 = np.percentile(exc, [50, 95])
        print(
            f"  {level:5.2f} {level * DEFAULT_SHAKE_DEG_S:6.1f} | {b50:13.2f}  "
            f"({b5:4.2f}-{b95:5.2f}) {np.median(lows):6.2f}/{np.median(highs):5.2f} | "
            f"{e50:19.1f} {e95:6.1f}   ({e50 * deg_per_px:11.2f} {e95 * deg_per_px:5.2f})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--size",
        type=frame_size,
        action="append",
        metavar="WxH",
        help="frame size, px (repeatable; default 1280x720 and 1920x1080)",
    )
    ap.add_argument("--frames", type=int, default=9, help="ring frames per burst")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure (median shown)")
    ap.add_argument(
        "--timing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the timings (--no-timing: only the shake statistics)",
    )
    ap.add_argument(
        "--motion-seeds",
        type=int,
        default=0,
        help="seeds per level for the shake statistics (0: skip them)",
    )
    ap.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[0.5, 1.0, 2.0],
        help="shake levels for the statistics, multiples of the default shake",
    )
    args = ap.parse_args()
    if args.frames < 1 or args.repeats < 1 or args.motion_seeds < 0:
        ap.error("--frames and --repeats must be ≥ 1, --motion-seeds ≥ 0")
    sizes: list[tuple[int, int]] = args.size or [(1280, 720), (1920, 1080)]
    for w, h in sizes if args.timing else []:
        bench_size(w, h, args.frames, args.repeats)
    if args.motion_seeds:
        motion_table(args.motion_seeds, args.levels)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"\nprocess peak RSS: {rss_mib:.0f} MiB")


if __name__ == "__main__":
    main()
