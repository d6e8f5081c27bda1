"""``inference.runtime.offload = "burst"``: the whole method on the Triton server.

(In ``service``, not ``inference``: it wraps the pipeline, and dependencies point from the
service to the pipeline to the runtimes.)

For devices too small even for registration and fusion: the camera sends the burst itself
(its frames and their metadata) and its own settings to a Triton model ``deblurd_burst``
(a Python-backend model wrapping :func:`~deblurd.pipeline.process.process_burst`, written by
``deblurd export-triton --burst``), and gets the result image and the report back. The
decision (stage 3: capture extra frames at a longer exposure?) needs the first U-Net pass,
so a daemon job makes two requests: ``plan`` (the ring frames: selection, first pass,
decision) and, after any extra capture on the camera, ``process`` (all frames: the whole
method, which plans again on the same frames, so the server runs the first pass twice; the
report is the one ``deblurd process`` writes for the saved burst). Inputs, one request:

==========  =====  =================  =================================================
name        type   dims               what
==========  =====  =================  =================================================
frames      UINT8  [-1, -1, -1, 3]    the burst's frames ``(N, H, W, 3)`` sRGB RGB
burst       BYTES  [1]                JSON: ``trigger_index`` and ``frames`` (burst.json's)
settings    BYTES  [1]                JSON: the camera's settings (the server keeps its
                                      own U-Net runtime)
mode        BYTES  [1]                ``plan`` | ``process``
==========  =====  =================  =================================================

Outputs: ``image`` UINT8 ``[-1, -1, 3]`` (``process``: the result; ``plan``: the first
deblurred frame) and ``report`` BYTES ``[1]`` (JSON). Failures are
:class:`~deblurd.errors.RemoteInferenceError` (the job's ``inference_remote`` error);
``fallback = "local"`` applies to the networks only, not to a burst offload.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deblurd.burstdir import Burst, FrameInfo
from deblurd.errors import ConfigError, DeblurdError, RemoteInferenceError
from deblurd.imaging import U8
from deblurd.inference.base import Deblurrer
from deblurd.inference.triton import TritonDeblurrer
from deblurd.inference.triton_export import BURST_INPUTS, BURST_OUTPUTS
from deblurd.pipeline.decision import Decision
from deblurd.settings.inference import TritonSettings
from deblurd.settings.models import DeblurdSettings

INPUTS, OUTPUTS = BURST_INPUTS, BURST_OUTPUTS  # the model's tensors (module docstring)


# -- the server side ----------------------------------------------------------------------


def _text(array: Any, name: str) -> str:
    values = np.asarray(array).reshape(-1)
    if values.size != 1:
        raise DeblurdError(f"{name}: one string expected, got {values.size}")
    value = values[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def serve_request(arrays: dict[str, Any], deblurrer: Deblurrer | None) -> dict[str, Any]:
    """One ``deblurd_burst`` request on the server: ``arrays`` by input name (module
    docstring) → outputs by name. ``deblurrer``: the server's own U-Net runtime."""
    from deblurd.imaging import linear_to_srgb
    from deblurd.pipeline.process import plan_burst, process_burst

    frames = np.asarray(arrays["frames"])
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise DeblurdError(f"frames: uint8 (N, H, W, 3) expected, got {frames.dtype}"
                           f"{frames.shape}")  # fmt: skip
    doc = json.loads(_text(arrays["burst"], "burst"))
    infos = [FrameInfo(**info) for info in doc["frames"]]
    if len(infos) != frames.shape[0]:
        raise DeblurdError(f"burst: {len(infos)} frames described, {frames.shape[0]} sent")
    burst = Burst(list(frames), infos, int(doc["trigger_index"]))
    settings = DeblurdSettings.model_validate_json(_text(arrays["settings"], "settings"))
    mode = _text(arrays["mode"], "mode")
    if mode == "plan":
        plan = plan_burst(burst, settings, deblurrer)
        report: dict[str, Any] = {
            "selected": plan.selected,
            "scores": plan.scores,
            "candidates": plan.candidates,
            "first_score": plan.first_score,
            "decision": asdict(plan.decision),
        }
        image = linear_to_srgb(plan.first)
    elif mode == "process":
        result = process_burst(burst, settings, deblurrer)
        report, image = result.report.to_json(), result.image
    else:
        raise DeblurdError(f"mode: 'plan' or 'process', got {mode!r}")
    return {
        "image": np.ascontiguousarray(image, dtype=np.uint8),
        "report": np.array([json.dumps(report).encode()], dtype=np.object_),
    }


def open_server_deblurrer() -> Deblurrer | None:
    """The U-Net runtime of the server's model: from ``$DEBLURD_CONFIG`` there (its
    ``inference`` section; not a Triton runtime), else the defaults (onnxruntime)."""
    import os

    from deblurd.inference.factory import open_deblurrer
    from deblurd.settings.load import load_settings

    settings = load_settings(os.environ.get("DEBLURD_CONFIG") or None)
    if isinstance(settings.inference.runtime, TritonSettings):
        message = "the burst model's own U-Net runtime cannot be a Triton server"
        raise ConfigError(message, [("inference.runtime.type", message)])
    return open_deblurrer(settings.inference)


# -- the camera side ----------------------------------------------------------------------


@dataclass
class RemotePlan:
    """Stages 1–3 as the server planned them (what the daemon's job reads of a plan)."""

    selected: int
    scores: list[float]
    candidates: list[int]
    first_score: float
    decision: Decision
    offload: BurstOffload

    def complete(self, burst: Burst, settings: DeblurdSettings) -> tuple[U8, dict[str, Any]]:
        """The whole method on the server on ``burst`` (extra frames appended): the result
        ``uint8 (H, W, 3)`` and the report."""
        return self.offload.process(burst, settings)


class BurstOffload:
    """The camera's client of the ``deblurd_burst`` model (``settings.burst_model``) over
    ``remote``'s connection (a :class:`~deblurd.inference.triton.TritonDeblurrer`: its
    TLS, timeouts, error mapping, and the counters the status shows)."""

    def __init__(self, remote: TritonDeblurrer) -> None:
        self._remote = remote
        self.settings = remote.settings
        self.name = f"triton:{remote.endpoint}/{self.settings.burst_model}"

    def _request(self, burst: Burst, settings: DeblurdSettings, mode: str) -> tuple[U8, Any]:
        doc = {"trigger_index": burst.trigger_index, "frames": [i.to_json() for i in burst.infos]}
        arrays = {
            "frames": np.ascontiguousarray(np.stack(burst.frames), dtype=np.uint8),
            "burst": np.array([json.dumps(doc).encode()], dtype=np.object_),
            "settings": np.array([settings.model_dump_json().encode()], dtype=np.object_),
            "mode": np.array([mode.encode()], dtype=np.object_),
        }
        out = self._remote.infer_raw(self.settings.burst_model, arrays, ("image", "report"))
        image, report = out["image"], out["report"]
        try:
            doc_out = json.loads(_text(report, "report"))
        except (ValueError, DeblurdError) as exc:
            raise RemoteInferenceError(f"{self.name}: the report is not JSON: {exc}") from exc
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise RemoteInferenceError(f"{self.name}: answered an image {image.dtype}"
                                       f"{image.shape}")  # fmt: skip
        return image, doc_out

    def plan(self, burst: Burst, settings: DeblurdSettings) -> RemotePlan:
        """Stages 1–3 of ``burst`` (the ring frames) on the server."""
        _first, doc = self._request(burst, settings, "plan")
        try:
            return RemotePlan(
                int(doc["selected"]), [float(x) for x in doc["scores"]],
                [int(x) for x in doc["candidates"]], float(doc["first_score"]),
                Decision(**doc["decision"]), self,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteInferenceError(f"{self.name}: not a plan: {exc}") from exc

    def process(self, burst: Burst, settings: DeblurdSettings) -> tuple[U8, dict[str, Any]]:
        """The whole method on ``burst`` on the server: the result and its report."""
        image, report = self._request(burst, settings, "process")
        if image.shape[:2] != burst.frames[0].shape[:2] or not isinstance(report, dict):
            raise RemoteInferenceError(f"{self.name}: answered a {image.shape} image for "
                                       f"{burst.frames[0].shape} frames")  # fmt: skip
        return image, report

    def close(self) -> None:
        self._remote.close()


def burst_offload(
    settings: DeblurdSettings, remote: Deblurrer | None = None
) -> BurstOffload | None:
    """The burst offload the settings ask for (``inference.runtime.offload = "burst"``),
    over ``remote`` (the daemon's runtime, a :class:`TritonDeblurrer` for this setting)
    or a connection of its own; None for any other setting."""
    runtime = settings.inference.runtime
    if not isinstance(runtime, TritonSettings) or runtime.offload != "burst":
        return None
    if not isinstance(remote, TritonDeblurrer):
        remote = TritonDeblurrer(
            runtime, local_second_model=settings.inference.second_model, check_models=False
        )
    return BurstOffload(remote)
