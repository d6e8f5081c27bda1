"""``deblurd simulate``: write a synthetic handheld burst and its ground truth."""

from __future__ import annotations

import time
from pathlib import Path

from deblurd.errors import SimulationError
from deblurd.sim.burst import simulate_burst, write_simulation
from deblurd.sim.params import DEFAULT_SHAKE_DEG_S, SimParams
from deblurd.sim.scene import load_scene


def simulate_command(
    out_dir: str,
    seed: int = 0,
    width: int = 1280,
    height: int = 720,
    frames: int = 9,
    extra: int = 0,
    shake: float = 1.0,
    subject: bool = False,
    scene: str | None = None,
) -> int:
    """Simulate a burst into ``out_dir`` (must not exist) and its truth into
    ``<out_dir>.truth``; print where they went and each frame's blur. Returns 0.

    ``frames``: ring frames (trigger in the middle). ``extra``: extra frames at the
    longer exposure. ``shake``: hand-shake level relative to the typical default (1: a
    strong handheld shake of ``DEFAULT_SHAKE_DEG_S`` = 25 deg/s RMS, ring frames blurred
    ~1–8 px at 720p; 0: tripod; 2: twice as fast). ``scene``: a photo to use instead of
    the procedural scene. Raises :class:`SimulationError` on any problem.
    """
    if not shake >= 0:
        raise SimulationError(f"shake level must be ≥ 0 (1 = typical), got {shake}")
    out = Path(out_dir)
    if out.exists():
        raise SimulationError(f"{out}: already exists (choose a new folder)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimulationError(f"{out.parent}: cannot create folder: {exc.strerror}") from exc
    params = SimParams(
        width=width,
        height=height,
        ring_frames=frames,
        extra_frames=extra,
        shake=shake * DEFAULT_SHAKE_DEG_S,
        subject=subject,
        seed=seed,
    )
    linear = load_scene(scene) if scene is not None else None
    t0 = time.perf_counter()
    sim = simulate_burst(params, linear)
    elapsed = time.perf_counter() - t0
    burst_dir, truth_dir = write_simulation(out, sim)
    n = len(sim.burst.frames)
    print(
        f"burst: {burst_dir} ({n} frames, {width}x{height}, trigger {sim.burst.trigger_index}, "
        f"simulated in {elapsed:.2f} s)"
    )
    print(f"truth: {truth_dir}")
    print(f"shake: {params.shake:.1f} deg/s RMS, focal {params.focal:.0f} px, seed {seed}")
    for info, st in zip(sim.burst.infos, sim.stats, strict=True):
        print(
            f"  {info.file} {info.role:5s} t={info.timestamp_ns / 1e6:8.2f} ms "
            f"exp={info.exposure_us / 1000:5.1f} ms gain={info.analogue_gain:4.2f} "
            f"blur={st.blur_extent_px:5.1f} px (max {st.blur_extent_max_px:5.1f})"
        )
    return 0
