"""Ground truth of a simulated burst, on disk beside the burst directory.

::

    OUT_DIR/                 the burst directory (burst.json, 000.png …), deblurd.burstdir
    OUT_DIR.truth/           never inside the burst, so the burst stays a plain burst
        truth.json           parameters, per-frame facts (mean pose, blur extent …)
        000.png 001.png …    noiseless sharp view per frame, 8-bit sRGB, frame geometry
        mask_000.png …       subject mask per frame, 8-bit gray 0/255 (with a subject)
        psf_000.npy …        blur kernel at the frame centre, float32 (k, k), sums to 1
        trajectory.npy       camera poses at 1 kHz, float64 (N, 4): t_s, yaw, pitch, roll (rad)
        scene.png            the scene (view plus margin), 8-bit sRGB

Both folders appear atomically: the truth folder is built under a temporary name and
renamed first, then the burst is written (itself atomically), so a burst that exists
always has its truth beside it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from deblurd.burstdir import write_burst
from deblurd.errors import BurstError, DeblurdError, ImageError, SimulationError
from deblurd.imaging import (
    F32,
    F64,
    U8,
    atomic_write_bytes,
    linear_to_srgb,
    read_rgb8,
    srgb_to_linear,
    write_image,
)
from deblurd.sim.params import SimParams
from deblurd.sim.render import ExposureStats

if TYPE_CHECKING:
    from deblurd.sim.burst import SimulatedBurst

TRUTH_VERSION = 1


def truth_dir_for(burst_dir: str | os.PathLike[str]) -> Path:
    """Where the truth of ``burst_dir`` lives: ``<burst_dir>.truth`` beside it."""
    p = Path(burst_dir)
    if p.name in ("", ".", ".."):
        p = p.resolve()
    if not p.name:
        raise SimulationError(f"{burst_dir}: a burst directory needs a name")
    return p.with_name(p.name + ".truth")


@dataclass
class Truth:
    """Ground truth read back from ``<burst_dir>.truth`` (shapes as in
    :class:`~deblurd.sim.burst.SimulatedBurst`). ``frames``: the per-frame entries of
    ``truth.json`` (role, timestamp_ns, exposure_us, analogue_gain, file names and
    :class:`ExposureStats` fields)."""

    path: Path
    params: SimParams
    truth: list[U8]
    subject_masks: list[U8] | None
    psfs: list[F32]
    stats: list[ExposureStats]
    frames: list[dict[str, Any]]
    trajectory: F64
    scene: F32
    focal_px: float
    scene_offset_px: tuple[int, int]


def _npy_bytes(arr: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _write_mask(path: Path, mask: U8) -> None:
    ok, buf = cv2.imencode(".png", mask)
    if not ok:
        raise ImageError(f"{path}: could not encode mask")
    atomic_write_bytes(path, bytes(buf.tobytes()))


def _fill_truth(folder: Path, sim: SimulatedBurst, burst_name: str) -> None:
    entries: list[dict[str, Any]] = []
    for i, info in enumerate(sim.burst.infos):
        name = f"{i:03d}"
        write_image(folder / f"{name}.png", sim.truth[i])
        np_psf = np.ascontiguousarray(sim.psfs[i], dtype=np.float32)
        atomic_write_bytes(folder / f"psf_{name}.npy", _npy_bytes(np_psf))
        mask_file = None
        if sim.subject_masks is not None:
            mask_file = f"mask_{name}.png"
            _write_mask(folder / mask_file, sim.subject_masks[i])
        entry = {
            "index": i,
            "file": info.file,
            "role": info.role,
            "timestamp_ns": info.timestamp_ns,
            "exposure_us": info.exposure_us,
            "analogue_gain": info.analogue_gain,
            "truth": f"{name}.png",
            "mask": mask_file,
            "psf": f"psf_{name}.npy",
        }
        entry.update(sim.stats[i].to_json())
        entries.append(entry)
    atomic_write_bytes(folder / "trajectory.npy", _npy_bytes(sim.trajectory))
    write_image(folder / "scene.png", linear_to_srgb(sim.scene))
    sensor = sim.params.sensor()
    doc = {
        "version": TRUTH_VERSION,
        "burst": burst_name,
        "params": sim.params.to_json(),
        "focal_px": sim.renderer.focal_px,
        "scene_offset_px": list(sim.renderer.offset),
        "scene": "scene.png",
        "trajectory": "trajectory.npy",
        "pose_convention": "yaw, pitch, roll in rad: content moves by (f*yaw, f*pitch) px "
        "(+x right, +y down) and turns clockwise by roll; truth = sharp view at the mean pose",
        "psf_convention": "blurred(x) = sum_d psf[c + d] * truth(x - d), "
        "c = (k//2, k//2), (row, col)",
        "sensor": {
            "full_well_e": sensor.full_well_e,
            "read_noise_e": sensor.read_noise_e,
            "ref_exposure_us": sensor.ref_exposure_us,
        },
        "frames": entries,
    }
    atomic_write_bytes(folder / "truth.json", (json.dumps(doc, indent=1) + "\n").encode())


def write_simulation(out_dir: str | os.PathLike[str], sim: SimulatedBurst) -> tuple[Path, Path]:
    """Write the burst at ``out_dir`` and its truth at ``<out_dir>.truth``; returns both
    paths. Neither may exist yet. Raises :class:`SimulationError` (cause chained)."""
    burst_dir = Path(out_dir)
    truth_dir = truth_dir_for(burst_dir)
    for p in (burst_dir, truth_dir):
        if p.exists():
            raise SimulationError(f"{p}: already exists (a simulation never overwrites)")
    parent = burst_dir.parent
    if not parent.is_dir():
        raise SimulationError(f"{burst_dir}: parent folder {parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{truth_dir.name}.", dir=parent))
    try:
        _fill_truth(tmp, sim, burst_dir.name)
        os.chmod(tmp, 0o755)
        os.rename(tmp, truth_dir)
    except (OSError, DeblurdError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SimulationError(f"{truth_dir}: cannot write the ground truth: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        write_burst(burst_dir, sim.burst)
    except (OSError, BurstError, ImageError) as exc:
        shutil.rmtree(truth_dir, ignore_errors=True)
        raise SimulationError(f"{burst_dir}: cannot write the burst: {exc}") from exc
    return burst_dir, truth_dir


def _load(path: Path, what: str) -> Any:
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if what == "mask":
            data = np.fromfile(str(path), dtype=np.uint8)
            img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
            if img is None:
                raise ImageError(f"{path}: not a readable image")
            return img
        return read_rgb8(path)
    except (OSError, ValueError, ImageError) as exc:
        raise SimulationError(f"{path}: cannot read the {what}: {exc}") from exc


def read_truth(burst_dir: str | os.PathLike[str]) -> Truth:
    """Read the ground truth of a simulated burst from ``<burst_dir>.truth``.

    Raises :class:`SimulationError` naming the file when it is missing or malformed.
    """
    folder = truth_dir_for(burst_dir)
    manifest = folder / "truth.json"
    if not folder.is_dir():
        raise SimulationError(f"{folder}: no ground truth beside {burst_dir} (not simulated?)")
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SimulationError(f"{manifest}: unreadable: {exc}") from exc
    try:
        if doc["version"] != TRUTH_VERSION:
            raise SimulationError(f"{manifest}: unsupported version {doc['version']}")
        params = SimParams.from_json(doc["params"])
        entries: list[dict[str, Any]] = list(doc["frames"])
        stats = [ExposureStats.from_json(e) for e in entries]
        truth = [_load(folder / e["truth"], "truth") for e in entries]
        psfs = [_load(folder / e["psf"], "psf").astype(np.float32) for e in entries]
        masks = None
        if params.subject:
            masks = [_load(folder / e["mask"], "mask") for e in entries]
        trajectory = _load(folder / doc["trajectory"], "trajectory").astype(np.float64)
        scene = srgb_to_linear(_load(folder / doc["scene"], "scene"))
        offset = (int(doc["scene_offset_px"][0]), int(doc["scene_offset_px"][1]))
        focal = float(doc["focal_px"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise SimulationError(f"{manifest}: malformed: {exc!r}") from exc
    return Truth(
        path=folder,
        params=params,
        truth=truth,
        subject_masks=masks,
        psfs=psfs,
        stats=stats,
        frames=entries,
        trajectory=trajectory,
        scene=scene,
        focal_px=focal,
        scene_offset_px=offset,
    )
