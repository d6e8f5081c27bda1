"""Second-pass training pairs made by the real pipeline: fused images and their truth.

The second U-Net pass sees what stage 4 hands it: the raw selected frame averaged with
the registered raw second frames by the robust fusion, then finished. Its residual blur
and noise come from everything the pipeline does — registration error, the per-pixel
weights (a moving subject or a blurrier frame's edges keep only the selected frame's
noisy pixels), frames of different blur — which the synthetic model of
:mod:`deblurd.training.data` only approximates. (The first pass matters only through the
decision its blur score drives: which and how many second frames.) This module runs
the real thing on simulated handheld bursts of **training** photos (never scikit-image's:
those are the evaluation set) and keeps, per burst, the image the second pass receives
and the simulator's truth of the frame it is aligned to.

* :func:`make_fused_pairs` simulates ``count`` bursts (640×480 by default, shake
  log-uniform over 0.4–2.5 × the simulator's default, a moving face in 30 %, long
  ``extra`` frames from shake 2 on, as the evaluation does; a share ``camera`` of them
  through a random camera ISP and a 10–30 ms rolling-shutter readout, as the evaluation's
  camera-pipeline set, the truth then through that camera's tone curve, or with
  ``camera_target="isp"`` the camera's own noiseless look, its ISP included), runs
  :func:`~deblurd.pipeline.process.process_burst` with ``passes = "both"`` and a
  recording second pass, and writes ``pairs-NNNN.npz`` (``fused`` float16 ``(H, W, 3)``
  sRGB, ``truth`` uint8 ``(H, W, 3)`` sRGB) atomically into a folder;
* :class:`FusedPairs` loads such a folder and cuts random, augmented crops
  (:meth:`FusedPairs.sample`) for :func:`deblurd.training.data.make_batch`.

``python tools/make_fused_pairs.py --photos DIR --model engines/unet.onnx --out DIR``.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from deblurd.errors import ImageError
from deblurd.imaging import F32, U8, atomic_write_bytes, linear_to_srgb_float, srgb_to_linear
from deblurd.inference.base import Deblurrer, Pass, input_noise_sigma
from deblurd.training.data import PROCEDURAL_TRAIN_SEED


@dataclass
class _RecordingDeblurrer:
    """First pass: the given network. Second pass: records its input, returns it as is."""

    inner: Deblurrer
    name: str = "recording"
    recorded: list[F32] = field(default_factory=list)

    def deblur(self, image: F32, pass_: Pass) -> F32:
        if pass_ == "first":
            return self.inner.deblur(image, pass_)
        self.recorded.append(np.array(image, np.float32))
        return image

    def close(self) -> None:
        self.inner.close()


def _save_npz(path: Path, **arrays: npt.NDArray[np.generic]) -> None:
    """Write ``arrays`` to ``path`` as ``.npz``, atomically (:func:`atomic_write_bytes`)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def make_fused_pairs(
    photos: list[U8],
    deblurrer: Deblurrer,
    out: str | Path,
    count: int,
    seed: int = 1000,
    sizes: Sequence[tuple[int, int]] = ((640, 480),),
    procedural: float = 0.0,
    camera: float = 0.0,
    camera_target: Literal["tone", "isp"] = "tone",
) -> int:
    """Simulate ``count`` bursts of ``photos`` (``uint8 (H, W, 3)`` sRGB) and write the
    pipeline's second-pass inputs with their truth to ``out`` (see the module docstring).

    Each burst is ``(width, height)`` drawn from ``sizes``; a share ``procedural`` of them
    shows the simulator's procedural scene at a training seed
    (≥ :data:`~deblurd.training.data.PROCEDURAL_TRAIN_SEED`) instead of a photo, and a
    share ``camera`` goes through a random camera (:meth:`~deblurd.sim.isp.IspParams.random`)
    with a rolling-shutter readout drawn in :data:`~deblurd.sim.isp.CAMERA_READOUT_MS`.
    ``camera_target``: the truth of those camera bursts — ``"tone"`` the sharp view
    through the camera's tone curve only (``sim.truth``), ``"isp"`` the camera's own look
    (:func:`~deblurd.sim.burst.camera_truth`: through its ISP, noise and codec off); the
    other bursts' truth is the same either way.

    Bursts whose pipeline fused no second frame are skipped (the second pass is not run on
    them). Existing ``pairs-NNNN.npz`` files are kept (a rerun continues). Returns the
    number of pair files in ``out`` afterwards.
    """
    from deblurd.pipeline.process import process_burst
    from deblurd.settings import DeblurdSettings
    from deblurd.sim.burst import camera_truth, simulate_burst
    from deblurd.sim.isp import CAMERA_READOUT_MS, IspParams
    from deblurd.sim.params import DEFAULT_SHAKE_DEG_S, SimParams

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    settings = DeblurdSettings()
    recorder = _RecordingDeblurrer(deblurrer)
    for k in range(count):
        path = folder / f"pairs-{k:04d}.npz"
        if path.exists():
            continue
        rng = np.random.default_rng([seed, k])
        level = math.exp(rng.uniform(math.log(0.4), math.log(2.5)))
        photo = photos[int(rng.integers(0, len(photos)))]
        size = sizes[int(rng.integers(0, len(sizes)))]
        scene = None if rng.random() < procedural else srgb_to_linear(photo)
        params = SimParams(
            width=size[0],
            height=size[1],
            seed=int(rng.integers(PROCEDURAL_TRAIN_SEED, 2**31 - 1)),
            shake=level * DEFAULT_SHAKE_DEG_S,
            subject=bool(rng.random() < 0.3),
            extra_frames=8 if level >= 2.0 else 0,
        )
        if camera > 0.0 and rng.random() < camera:  # drawn last: camera = 0 keeps old bursts
            readout = float(rng.uniform(*CAMERA_READOUT_MS))
            params = dataclasses.replace(
                params, isp=IspParams.random(rng), rolling_shutter_ms=readout
            )
        sim = simulate_burst(params, scene)  # None: the procedural scene of params.seed
        recorder.recorded.clear()
        result = process_burst(sim.burst, settings, recorder, "both")
        if not recorder.recorded or not result.report.used:
            continue
        fused = linear_to_srgb_float(recorder.recorded[0]).astype(np.float16)
        selected = result.report.selected
        truth = sim.truth[selected]
        if camera_target == "isp" and params.isp is not None:
            truth = camera_truth(sim, selected)
        _save_npz(path, fused=fused, truth=truth)
    return len(list(folder.glob("pairs-*.npz")))


class FusedPairs:
    """The pairs of a :func:`make_fused_pairs` folder, held in memory (float16 / uint8)."""

    def __init__(self, folder: str | Path) -> None:
        files = sorted(Path(folder).glob("pairs-*.npz"))
        self.fused: list[npt.NDArray[np.float16]] = []
        self.truth: list[U8] = []
        for f in files:
            with np.load(f) as z:
                self.fused.append(np.asarray(z["fused"], np.float16))
                self.truth.append(np.asarray(z["truth"], np.uint8))
        if not self.fused:
            raise ImageError(
                f"{folder}: no fused training pairs (pairs-*.npz); "
                "run tools/make_fused_pairs.py to make them"
            )

    def __len__(self) -> int:
        return len(self.fused)

    def sample(self, crop: int, rng: np.random.Generator) -> tuple[F32, F32, float]:
        """A random crop with flips and 90° turns: input sRGB ``float32 (crop, crop, 3)``,
        target sRGB ``float32`` same shape, the input's noise level
        (:func:`~deblurd.inference.base.input_noise_sigma`)."""
        i = int(rng.integers(0, len(self.fused)))
        fused, truth = self.fused[i], self.truth[i]
        h, w = fused.shape[:2]
        if min(h, w) < crop:
            raise ImageError(f"fused pair {i} is {w}x{h}, smaller than the {crop} px crop")
        y, x = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        pair = np.concatenate(
            [
                fused[y : y + crop, x : x + crop].astype(np.float32),
                truth[y : y + crop, x : x + crop].astype(np.float32) / np.float32(255.0),
            ],
            axis=2,
        )
        if rng.random() < 0.5:
            pair = pair[:, ::-1]
        if rng.random() < 0.5:
            pair = pair[::-1]
        pair = np.ascontiguousarray(np.rot90(pair, int(rng.integers(0, 4))))
        inp = np.ascontiguousarray(np.clip(pair[..., :3], 0.0, 1.0))
        return inp, np.ascontiguousarray(pair[..., 3:]), input_noise_sigma(inp)
