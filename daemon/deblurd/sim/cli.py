"""``deblurd simulate``: write a synthetic handheld burst and its ground truth."""

from __future__ import annotations

import time
from pathlib import Path

from deblurd.errors import SimulationError
from deblurd.sim.burst import simulate_burst, write_simulation
from deblurd.sim.isp import IspParams, isp_by_name
from deblurd.sim.params import DEFAULT_SHAKE_DEG_S, ShakeModel, SimParams
from deblurd.sim.scene import load_scene

_REF_EXPOSURE_GAIN_US = 32000.0  # the default preview's 8 ms × gain 4


def _ring_exposure(exposure_ms: float | None) -> tuple[int, float, float]:
    """The ring's exposure (µs), gain and frame rate: 8 ms at gain 4 and 30 fps by default;
    for ``exposure_ms``, the gain that keeps the brightness (at least 1) and the fastest
    rate the exposure allows (at most 30 fps)."""
    if exposure_ms is None:
        return 8000, 4.0, 30.0
    if not 0 < exposure_ms <= 1000:
        raise SimulationError(f"exposure must be in (0, 1000] ms, got {exposure_ms}")
    exposure_us = round(exposure_ms * 1000)
    gain = max(1.0, _REF_EXPOSURE_GAIN_US / exposure_us)
    fps = min(30.0, 1e6 / (exposure_us + 500))
    return exposure_us, gain, fps


def _print_isp(name: str | None, c: IspParams) -> None:
    """The simulated camera ISP's line of the summary."""
    codec = {"jpeg": f"JPEG q{c.jpeg_quality}", "h264": f"H.264-like q{c.qstep:.1f}"}
    print(
        f"camera: {name} ISP, demosaic {c.demosaic}, denoise {c.denoise:.2f}/"
        f"{c.chroma_denoise:.2f}, sharpen {c.sharpen:.2f}, "
        f"{'4:2:0, ' if c.chroma_420 else ''}{codec.get(c.codec, 'no codec')}"
    )


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
    isp: str | None = None,
    rolling_shutter_ms: float = 0.0,
    flicker_pct: float | None = None,
    defocus_px: float = 0.0,
    shake_model: ShakeModel = "tremor",
    exposure_ms: float | None = None,
) -> int:
    """Simulate a burst into ``out_dir`` (must not exist) and its truth into
    ``<out_dir>.truth``; print where they went and each frame's blur. Returns 0.

    ``frames``: ring frames (trigger in the middle). ``extra``: extra frames at the
    longer exposure. ``shake``: hand-shake level relative to the typical default (1: a
    strong handheld shake of ``DEFAULT_SHAKE_DEG_S`` = 25 deg/s RMS, ring frames blurred
    ~1–8 px at 720p; 0: tripod; 2: twice as fast). ``scene``: a photo to use instead of
    the procedural scene.

    Real-camera options (:class:`SimParams`): ``isp``: ``"off"`` (plain sensor),
    ``"random"`` (a random phone/Pi camera of the seed) or ``"typical"``.
    ``rolling_shutter_ms``: row readout time, ms. ``flicker_pct``: RMS brightness wobble
    between frames, % (None: the ISP's own). ``defocus_px``: defocus disk radius, px.
    ``shake_model``: ``"tremor"`` or ``"walk"`` (real-world random walk with jerks).
    ``exposure_ms``: ring exposure, ms (None: 8 ms), the gain lowered to keep the
    brightness (at least 1). Raises :class:`SimulationError` on any problem.
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
    if flicker_pct is not None and not 0 <= flicker_pct <= 50:
        raise SimulationError(f"flicker must be 0..50 % RMS, got {flicker_pct}")
    exposure_us, gain, fps = _ring_exposure(exposure_ms)
    params = SimParams(
        width=width,
        height=height,
        ring_frames=frames,
        extra_frames=extra,
        shake=shake * DEFAULT_SHAKE_DEG_S,
        subject=subject,
        seed=seed,
        isp=isp_by_name(isp, seed),
        flicker=None if flicker_pct is None else flicker_pct / 100.0,
        rolling_shutter_ms=rolling_shutter_ms,
        defocus_px=defocus_px,
        shake_model=shake_model,
        ring_exposure_us=exposure_us,
        ring_gain=gain,
        fps=fps,
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
    print(
        f"shake: {params.shake:.1f} deg/s RMS ({params.shake_model}), focal "
        f"{params.focal:.0f} px, seed {seed}"
    )
    if params.isp is not None:
        _print_isp(isp, params.isp)
    extras = [
        f"flicker {params.flicker_rms * 100:.1f} % RMS" if params.flicker_rms else "",
        f"rolling shutter {rolling_shutter_ms:g} ms" if rolling_shutter_ms else "",
        f"defocus {defocus_px:g} px" if defocus_px else "",
    ]
    if any(extras):
        print("also: " + ", ".join(e for e in extras if e))
    for info, st in zip(sim.burst.infos, sim.stats, strict=True):
        print(
            f"  {info.file} {info.role:5s} t={info.timestamp_ns / 1e6:8.2f} ms "
            f"exp={info.exposure_us / 1000:5.1f} ms gain={info.analogue_gain:4.2f} "
            f"blur={st.blur_extent_px:5.1f} px (max {st.blur_extent_max_px:5.1f})"
        )
    return 0
