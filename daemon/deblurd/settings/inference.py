"""Settings of the U-Net step (stages 2 and 5): which runtime runs which model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

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


_HOST_PORT = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$"


class TritonSettings(Section):
    """A Triton Inference Server runs the U-Net passes (`deblurd export-triton` writes its
    model repository); registration and fusion stay on this device."""

    type: Literal["triton"] = Field("triton", description="runtime tag")
    url: str = Field(
        "localhost:8001",
        pattern=_HOST_PORT,
        description="the server's HOST:PORT, no scheme (Triton's defaults: 8001 gRPC, 8000 HTTP)",
    )
    protocol: Literal["grpc", "http"] = Field(
        "grpc", description="grpc | http (both the Open Inference Protocol)"
    )
    model: str = Field(
        "deblurd_unet",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Triton model name of the first pass (single frames)",
    )
    second_model: str = Field(
        "deblurd_unet_second",
        pattern=r"^([A-Za-z0-9_.-]+)?$",
        description="Triton model name of the second pass (fused images); empty = `model` "
        "serves both passes",
    )
    model_version: str = Field(
        "",
        pattern=r"^([0-9]+)?$",
        description="model version to ask for; empty = the server's policy (latest)",
    )
    timeout_s: float = Field(
        30.0,
        gt=0.0,
        le=600.0,
        description="longest wait for one request (one tile), s: a slower answer fails the pass",
    )
    connect_timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=120.0,
        description="longest wait to connect and read the model's metadata, s",
    )
    tile: int = Field(
        2048,
        ge=64,
        le=4096,
        description="tile side, px, as inference.runtime.tile of onnxruntime: larger images "
        "travel in overlapping tiles (one request each), smaller ones whole",
    )
    ssl: bool = Field(False, description="TLS to the server (a proxy in front of Triton)")
    ssl_ca_file: str | None = Field(
        None, description="PEM CA bundle that signed the server's certificate; unset = the system's"
    )
    ssl_cert_file: str | None = Field(
        None, description="PEM client certificate (mutual TLS); needs ssl_key_file"
    )
    ssl_key_file: str | None = Field(None, description="PEM private key of ssl_cert_file")
    fallback: Literal["none", "local"] = Field(
        "none",
        description="none: a server that is down, slow or answers garbage fails the job | "
        "local: the pass runs on this device with onnxruntime (local_model, "
        "inference.second_model) and the job's report says so",
    )
    offload: Literal["networks", "burst"] = Field(
        "networks",
        description="networks: the U-Net passes run on the server, the rest here | burst: "
        "the whole method runs on the server (model burst_model, `deblurd export-triton "
        "--burst`), for devices too small for registration and fusion",
    )
    burst_model: str = Field(
        "deblurd_burst",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Triton model name of the whole method (offload = burst)",
    )
    retry_after_s: float = Field(
        30.0,
        ge=0.0,
        le=3600.0,
        description="with fallback = local: after a failed request, passes run locally "
        "without asking the server for this long, s (a slow server would cost timeout_s "
        "each); 0 = ask every time",
    )
    local_model: str = Field(
        "engines/unet.onnx", description="ONNX model of the first pass for fallback = local"
    )
    local_threads: int = Field(
        0, ge=0, le=64, description="onnxruntime intra-op threads of the fallback, 0 = all cores"
    )

    @model_validator(mode="after")
    def _check_tls(self) -> TritonSettings:
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            raise ValueError("ssl_cert_file and ssl_key_file go together (mutual TLS)")
        if not self.ssl and any((self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file)):
            raise ValueError("ssl_* files are set but ssl = false")
        return self


RuntimeSettings = Annotated[
    OnnxRuntimeSettings | TensorRTSettings | TritonSettings, Field(discriminator="type")
]


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
