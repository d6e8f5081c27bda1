"""Per-frame simulate timings (ad hoc; suggested as tools/bench_sim.py)."""
import sys, time
import numpy as np
from deblurd.imaging import linear_to_srgb
from deblurd.sim import SimParams, simulate_burst
from deblurd.sim.burst import make_renderer

def timed(f):
    t = time.perf_counter(); r = f(); return r, time.perf_counter() - t

for (w, h) in [(1280, 720), (1920, 1080)]:
    p = SimParams(width=w, height=h)
    r, t_scene = timed(lambda: make_renderer(p))
    sensor = p.sensor()
    for fast, step in [(False, 0.5), (False, 2.0), (True, 0.5)]:
        tr = tn = te = 0.0; subs = []
        for i in range(9):
            e, dt = timed(lambda: r.render(i / 30, 0.008, max_substep_px=step, fast=fast)); tr += dt
            subs.append(e.stats.substeps)
            rng = np.random.default_rng(i)
            _, dt = timed(lambda: sensor.expose_linear(e.blurred, 8000, 4.0, rng, approximate=fast)); tn += dt
            _, dt = timed(lambda: (linear_to_srgb(e.blurred), linear_to_srgb(e.truth))); te += dt
        tot = tr + tn + te
        print(f"{w}x{h} fast={fast} substep={step}px: scene {t_scene*1000:.0f} ms once; per frame "
              f"render {tr/9*1000:.0f} ms (substeps {np.mean(subs):.1f}), noise {tn/9*1000:.0f} ms, "
              f"encode frame+truth {te/9*1000:.0f} ms, total {tot/9*1000:.0f} ms/frame")
    _, t = timed(lambda: simulate_burst(p))
    print(f"{w}x{h}: simulate_burst default 9 frames {t:.2f} s")
