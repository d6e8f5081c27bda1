"""ONNX export of the U-Net: the model contract of :mod:`deblurd.inference.onnx`.

Inputs ``image`` float32 ``(1, 3, H, W)`` (sRGB values in [0, 1]) and ``noise`` float32
``(1, 1, H, W)`` (the noise-level map: the image's noise std in sRGB units,
:func:`deblurd.inference.base.input_noise_sigma`); output ``deblurred``
float32 ``(1, 3, H, W)``. H and W dynamic, multiples of the metadata ``deblurd.multiple``.
Opset 17, the legacy (TorchScript) exporter, weights inside the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch

from deblurd.training.unet_arch import UNet, count_params


def export_onnx(model: UNet, path: str | Path, extra_meta: dict[str, str] | None = None) -> Path:
    """Write ``model`` to ``path`` (ONNX, opset 17, dynamic H/W); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    m = model.multiple
    example = (torch.rand(1, 3, 4 * m, 4 * m), torch.full((1, 1, 4 * m, 4 * m), 0.01))
    dyn = {2: "height", 3: "width"}
    tmp = out.with_suffix(".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(
            model,
            example,
            str(tmp),
            opset_version=17,
            dynamo=False,
            input_names=["image", "noise"],
            output_names=["deblurred"],
            dynamic_axes={"image": dyn, "noise": dyn, "deblurred": dyn},
        )
    proto = onnx.load(str(tmp))
    meta = {
        "deblurd.multiple": str(m),
        "deblurd.config": json.dumps(model.config.to_json()),
        "deblurd.params": str(count_params(model)),
        "deblurd.noise": "noise std of the image, sRGB units (deblurd.inference.base."
        "input_noise_sigma), constant over the map",
        **(extra_meta or {}),
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    tmp.unlink()
    return out


def load_onnx_weights(path: str | Path) -> tuple[UNet, int]:
    """The :class:`UNet` whose weights an exported ONNX file holds, and the training steps
    its metadata records (0 when absent): a shipped model can be fine-tuned (``--init``).

    The architecture comes from the metadata ``deblurd.config``; the initializers carry
    the torch parameter names (the exporter keeps them). Raises
    :class:`~deblurd.errors.InferenceError` naming the file when it is not such a model.
    """
    from deblurd.errors import ConfigError, InferenceError
    from deblurd.training.unet_arch import UNetConfig

    src = Path(path)
    try:
        proto = onnx.load(str(src))
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise InferenceError(f"{src}: not a readable ONNX file ({exc})") from exc
    meta = {p.key: p.value for p in proto.metadata_props}
    if "deblurd.config" not in meta:
        raise InferenceError(f"{src}: no deblurd.config metadata: not a deblurd U-Net export")
    cfg = json.loads(meta["deblurd.config"])
    try:
        model = UNet(UNetConfig(**{k: tuple(v) for k, v in cfg.items()}))
    except ConfigError as exc:
        raise InferenceError(f"{src}: deblurd.config metadata: {exc}") from exc
    weights = {
        t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy())
        for t in proto.graph.initializer
    }
    state = model.state_dict()
    missing = sorted(set(state) - set(weights))
    if missing:
        raise InferenceError(f"{src}: weights missing for {', '.join(missing[:4])}")
    model.load_state_dict({k: weights[k] for k in state})
    return model, int(meta.get("deblurd.steps", "0") or 0)
