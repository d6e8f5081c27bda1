"""Settings of the U-Net step (stages 2 and 5): which runtime runs which model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from deblurd.settings.base import Section


class OnnxRuntimeSettings(Section):
    """onnxruntime on the CPU: works on every machine."""

    type: Literal["onnxruntime"] = Field("onnxruntime", description="runtime tag")
    model: str = Field("engines/unet.onnx", description="ONNX model path")
    threads: int = Field(0, ge=0, le=64, description="intra-op threads, 0 = all cores")
    tile: int = Field(
        2048,
        ge=64,
        le=4096,
        description="tile side for large images, px: images up to it (720p, 1080p) run whole "
        "(fastest); larger ones in overlapping tiles (12 MP: 6 tiles, ~1.8 GB peak; 512: "
        "~1.1 GB, a 1080p pass 1.8x slower)",
    )


class TensorRTSettings(Section):
    """TensorRT on Jetson: plans built on the device by `deblurd build-engine`."""

    type: Literal["tensorrt"] = Field("tensorrt", description="runtime tag")
    model: str = Field("engines/unet.onnx", description="ONNX model the plan is built from")
    tile: int = Field(
        512,
        ge=64,
        le=4096,
        multiple_of=16,
        description="optimisation-profile side = tile side, px (a multiple of 16: the "
        "profile's largest shape must hold a padded tile)",
    )
    state_dir: str | None = Field(
        None,
        description="where plans are cached (engines/ under it); unset = $STATE_DIRECTORY "
        "(systemd StateDirectory=) or ~/.local/state/deblurd",
    )
    build_plans: bool = Field(
        True,
        description="build a missing or stale plan (another ONNX file, TensorRT version or "
        "GPU) at start, which takes minutes; false: refuse to start and name the fix "
        "(`deblurd build-engine`)",
    )
    fallback_to_onnxruntime: bool = Field(
        False, description="use onnxruntime when the TensorRT plan cannot be loaded"
    )


RuntimeSettings = Annotated[OnnxRuntimeSettings | TensorRTSettings, Field(discriminator="type")]


class InferenceSettings(Section):
    """Which U-Net passes run (measured: engines/MODEL_CARD.md). Both by default: the
    second pass, on the fused raw frames, gains over 1 dB on the evaluation bursts; the
    first pass deblurs the selected frame, whose blur score drives the decision and which
    is the result when no second frame can be fused."""

    passes: Literal["off", "first", "both"] = Field(
        "both",
        description="off | first (stage 2: the selected frame, for the decision and as the "
        "result when nothing is fused) | both (stage 2, and stage 5 on the fused image)",
    )
    runtime: RuntimeSettings = Field(
        default_factory=OnnxRuntimeSettings, description="the runtime, chosen by its type key"
    )
    second_model: str = Field(
        "engines/unet-second.onnx",
        description="ONNX model of the second pass (fused images), run by the same runtime; "
        "empty = the runtime's model serves both passes",
    )
