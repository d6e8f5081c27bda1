"""The U-Net passes on a Triton Inference Server (``inference.runtime.type = "triton"``).

The device keeps registration and fusion; only the image of a U-Net pass travels, as the
local runtime would feed it to its ONNX model: sRGB-encoded, in the tiles of the same plan
(:func:`~deblurd.inference.base.run_network_tiled`: tile side ``tile``, overlap
:data:`~deblurd.inference.base.TILE_OVERLAP`, tile sides multiples of 16),
each tile one request with the inputs ``image`` ``FP32 (1, 3, H, W)`` and ``noise``
``FP32 (1, 1, H, W)``, the output ``deblurred`` ``FP32 (1, 3, H, W)`` (the names and dims
``deblurd export-triton`` writes, read from the server's model metadata). So the remote
output equals the local one to float rounding.

Failures: a server that cannot be reached, answers after ``timeout_s``, or answers with an
error or a tensor of the wrong shape or non-finite values fails the pass with
:class:`~deblurd.errors.InferenceError` (the job's error), or, with ``fallback = "local"``,
runs that pass with onnxruntime on this device and notes it for the job's report
(:meth:`TritonDeblurrer.take_notes`). A server that is down at start is not a config error
(the daemon starts; jobs fail or fall back until it is back); a reachable server without
the configured model, or with a model of the wrong inputs, is one: :class:`ConfigError`
naming ``inference.runtime.model`` (exit 78).

``tritonclient`` (gRPC or HTTP) is imported here only, lazily: the ``triton`` extra.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from deblurd.errors import ConfigError, InferenceError, RemoteInferenceError
from deblurd.imaging import F32, linear_to_srgb_float, srgb_float_to_linear
from deblurd.inference.base import (
    Deblurrer,
    Pass,
    TensorInfo,
    check_contract,
    network_inputs,
    network_output,
    resolve_model_path,
    run_network_tiled,
)
from deblurd.pipeline.timing import latency_summary
from deblurd.settings.inference import OnnxRuntimeSettings, TritonSettings

log = logging.getLogger(__name__)
KEY = "inference.runtime"
MULTIPLE_PARAMETER = "deblurd.multiple"
"""Model-config parameter (``parameters`` in ``config.pbtxt``) with the side multiple the
network needs; 16 when absent (our U-Nets)."""
DEFAULT_MULTIPLE = 16
LATENCY_WINDOW = 100


RemoteError = RemoteInferenceError
"""The server could not be reached, was too slow, or answered an error or garbage."""


@dataclass(frozen=True)
class RemoteModel:
    """What the client needs to know of one served model (from its metadata and config)."""

    name: str
    image: str
    noise: str | None
    output: str
    batched: bool  # max_batch_size > 0: the dims in the metadata include the batch dim
    multiple: int


@dataclass
class RemoteStats:
    """Requests to the server and how they went (the status reply's ``inference_remote``)."""

    requests: int = 0
    failures: int = 0
    fallbacks: int = 0
    last_error: str | None = None
    last_error_ns: int | None = None
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


def _import_client(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        message = (
            f'inference.runtime.type = "triton" needs tritonclient: pip install '
            f'"tritonclient[{protocol}]" (or the deblurd[triton] extra)'
        )
        raise ConfigError(message, [(f"{KEY}.type", message)]) from exc
    return module


class TritonDeblurrer:
    """Both U-Net passes on one Triton server (``settings.model`` for the first,
    ``settings.second_model`` for the second); see the module docstring."""

    def __init__(
        self,
        settings: TritonSettings,
        *,
        second_pass: bool = True,
        local_second_model: str = "",
        check_models: bool = True,
    ) -> None:
        self.settings = settings
        self._module = _import_client(settings.protocol)
        scheme = (
            {"grpc": "grpcs", "http": "https"}[settings.protocol]
            if settings.ssl
            else (settings.protocol)
        )
        self.endpoint = f"{scheme}://{settings.url}"
        self._models: dict[Pass, str] = {"first": settings.model}
        if second_pass:
            self._models["second"] = settings.second_model or settings.model
        self._local_models: dict[Pass, str] = {"first": settings.local_model}
        if second_pass:
            self._local_models["second"] = local_second_model or settings.local_model
        self.name = f"triton:{self.endpoint}/" + "+".join(dict.fromkeys(self._models.values()))
        if settings.offload == "burst":
            self.name = f"triton:{self.endpoint}/{settings.burst_model} (offload burst)"
        self.stats = RemoteStats()
        self._lock = threading.Lock()
        self._local_clients = threading.local()  # one client per thread (HTTP's is not
        # thread-safe: gevent)
        self._clients: list[Any] = []
        self._info: dict[str, RemoteModel] = {}
        self._local: dict[Pass, Deblurrer] = {}
        self._notes: list[str] = []
        self._skip_until = 0.0  # time.monotonic(): fallback = local skips the server until
        for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
            path = getattr(settings, name)
            if path is not None and not os.access(path, os.R_OK):
                message = f"{path}: no such readable file (TLS to the Triton server)"
                raise ConfigError(message, [(f"{KEY}.{name}", message)])
        if settings.fallback == "local":
            for pass_, model in self._local_models.items():
                if not resolve_model_path(model).is_file():
                    key = "local_model" if pass_ == "first" else "second_model"
                    prefix = KEY if pass_ == "first" else "inference"
                    message = f"{model}: ONNX model of the local fallback ({pass_} pass) not found"
                    raise ConfigError(message, [(f"{prefix}.{key}", message)])
        try:
            for model in dict.fromkeys(self._models.values()) if check_models else ():
                self._model(model)
        except RemoteError as exc:
            log.warning(
                "Triton server %s not usable at start (%s): jobs %s until it answers",
                self.endpoint, exc,
                "run locally" if settings.fallback == "local" else "fail",
            )  # fmt: skip

    # -- the connection -----------------------------------------------------------------

    def _client(self) -> Any:
        client = getattr(self._local_clients, "client", None)
        if client is not None:
            return client
        s = self.settings
        try:
            if s.protocol == "grpc":
                client = self._module.InferenceServerClient(
                    s.url,
                    ssl=s.ssl,
                    root_certificates=s.ssl_ca_file,
                    private_key=s.ssl_key_file,
                    certificate_chain=s.ssl_cert_file,
                )
            else:
                options: dict[str, str] = {}
                if s.ssl_ca_file:
                    options["ca_certs"] = s.ssl_ca_file
                if s.ssl_cert_file and s.ssl_key_file:
                    options["certfile"], options["keyfile"] = s.ssl_cert_file, s.ssl_key_file
                client = self._module.InferenceServerClient(
                    s.url,
                    ssl=s.ssl,
                    ssl_options=options,
                    connection_timeout=s.connect_timeout_s,
                    network_timeout=s.timeout_s,
                )
        except Exception as exc:  # tritonclient raises several untyped errors here
            message = f"{s.url}: cannot make a Triton {s.protocol} client: {exc}"
            raise ConfigError(message, [(f"{KEY}.url", message)]) from exc
        self._local_clients.client = client
        with self._lock:
            self._clients.append(client)
        return client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on the client; any failure → :class:`RemoteError`."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # InferenceServerException, grpc/gevent/socket errors
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RemoteError(f"Triton {self.endpoint}: {what}: {text}") from exc

    def _model(self, name: str) -> RemoteModel:
        """The served model ``name``'s inputs and outputs (cached after the first read).

        :class:`RemoteError` when the server does not answer; :class:`ConfigError` naming
        the key when it answers that it has no such model or one of other shapes."""
        info = self._info.get(name)
        if info is not None:
            return info
        s = self.settings
        client = self._client()
        grpc = s.protocol == "grpc"
        kwargs: dict[str, Any] = {"as_json": True, "client_timeout": s.connect_timeout_s}
        kwargs = kwargs if grpc else {}
        live = self._call("is the server live", client.is_server_live, **(
            {"client_timeout": s.connect_timeout_s} if grpc else {}))  # fmt: skip
        if not live:
            raise RemoteError(f"Triton {self.endpoint}: the server is not live")
        key = f"{KEY}.second_model" if name != s.model else f"{KEY}.model"
        try:
            meta = client.get_model_metadata(name, s.model_version, **kwargs)
            config = client.get_model_config(name, s.model_version, **kwargs)
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            if "unknown model" in text or "not found" in text or "is not ready" in text:
                message = (
                    f"Triton {self.endpoint} has no ready model {name!r} "
                    f"(version {s.model_version or 'latest'}): {text}; serve the repository "
                    f"`deblurd export-triton` writes, or set {key}"
                )
                raise ConfigError(message, [(key, message)]) from exc
            raise RemoteError(f"Triton {self.endpoint}: model {name!r}: {text}") from exc
        info = _parse_model(name, meta, config.get("config", config), key)
        self._info[name] = info
        log.info("Triton %s: model %s ready (inputs %s, %s; output %s; batched %s)",
                 self.endpoint, name, info.image, info.noise, info.output,
                 info.batched)  # fmt: skip
        return info

    # -- inference ----------------------------------------------------------------------

    def _run_remote(self, model: str, srgb: F32, noise: float) -> F32:
        info = self._model(model)
        image, noise_map = network_inputs(srgb, noise)
        m = self._module
        inputs = [m.InferInput(info.image, list(image.shape), "FP32")]
        inputs[0].set_data_from_numpy(image)
        if info.noise is not None:
            inputs.append(m.InferInput(info.noise, list(noise_map.shape), "FP32"))
            inputs[1].set_data_from_numpy(noise_map)
        outputs = [m.InferRequestedOutput(info.output)]
        client = self._client()
        kwargs: dict[str, Any] = {"model_version": self.settings.model_version}
        if self.settings.protocol == "grpc":
            kwargs["client_timeout"] = self.settings.timeout_s
        t0 = time.perf_counter()
        result = self._call(
            f"model {model!r}", client.infer, model, inputs, outputs=outputs, **kwargs
        )
        ms = (time.perf_counter() - t0) * 1000.0
        out = result.as_numpy(info.output)
        if out is None or out.shape != image.shape or out.dtype != np.float32:
            got = None if out is None else f"{out.dtype}{tuple(out.shape)}"
            raise RemoteError(
                f"Triton {self.endpoint}: model {model!r} answered {got} for an input of "
                f"float32{tuple(image.shape)}: not a deblurd U-Net"
            )
        if not np.isfinite(out).all():
            raise RemoteError(f"Triton {self.endpoint}: model {model!r} answered NaN or inf")
        with self._lock:
            self.stats.latency_ms.append(ms)
        return network_output(out)

    def infer_raw(
        self, model: str, arrays: dict[str, npt.NDArray[Any]], outputs: tuple[str, ...]
    ) -> dict[str, npt.NDArray[Any]]:
        """One request to ``model`` with ``arrays`` by input name (float32 → FP32, uint8 →
        UINT8, object (bytes) → BYTES); its ``outputs`` by name. Counted in the stats;
        :class:`RemoteError` on any failure or a missing output."""
        m = self._module
        types = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8",
                 np.dtype(np.object_): "BYTES"}  # fmt: skip
        inputs = []
        for name, array in arrays.items():
            item = m.InferInput(name, list(array.shape), types[array.dtype])
            item.set_data_from_numpy(array)
            inputs.append(item)
        kwargs: dict[str, Any] = {"model_version": self.settings.model_version}
        if self.settings.protocol == "grpc":
            kwargs["client_timeout"] = self.settings.timeout_s
        t0 = time.perf_counter()
        try:
            result = self._call(
                f"model {model!r}", self._client().infer, model, inputs,
                outputs=[m.InferRequestedOutput(n) for n in outputs], **kwargs,
            )  # fmt: skip
            got = {name: result.as_numpy(name) for name in outputs}
            missing = [name for name, value in got.items() if value is None]
            if missing:
                raise RemoteError(f"Triton {self.endpoint}: model {model!r} answered "
                                  f"without {missing}")  # fmt: skip
        except RemoteError as exc:
            self._count(exc)
            raise
        with self._lock:
            self.stats.latency_ms.append((time.perf_counter() - t0) * 1000.0)
        self._count(None)
        return got

    def _count(self, failed: RemoteError | None) -> None:
        with self._lock:
            self.stats.requests += 1
            if failed is not None:
                self.stats.failures += 1
                self.stats.last_error = str(failed)
                self.stats.last_error_ns = time.time_ns()

    def _remote_pass(self, srgb: F32, pass_: Pass, model: str) -> F32:
        try:
            multiple = self._model(model).multiple
        except RemoteError as exc:  # the server is down since start: one failed request
            self._count(exc)
            raise

        def run(tile: F32, noise: float) -> F32:
            try:
                out = self._run_remote(model, tile, noise)
            except RemoteError as exc:
                self._count(exc)
                raise
            self._count(None)
            return out

        return run_network_tiled(srgb, run, self.settings.tile, multiple)

    def deblur_srgb(self, srgb: F32, pass_: Pass = "first") -> F32:
        """Deblur sRGB-encoded ``float32 (H, W, 3)`` in [0, 1] on the server (or locally
        on failure with ``fallback = "local"``); same shape out."""
        model = self._models.get(pass_)
        if model is None:
            raise InferenceError(f"{self.name}: the {pass_} pass is not configured")
        wait = self._skip_until - time.monotonic()
        if self.settings.fallback == "local" and wait > 0:
            why = (f"server skipped for {wait:.1f} s more after a failure "
                   f"({self.stats.last_error})")  # fmt: skip
            return self._run_local(srgb, pass_, why)
        try:
            try:
                return self._remote_pass(srgb, pass_, model)
            except ConfigError as exc:  # the model went away since start: this job's error
                raise RemoteError(str(exc)) from exc
        except RemoteError as exc:
            if self.settings.fallback != "local":
                raise
            self._skip_until = time.monotonic() + self.settings.retry_after_s
            return self._run_local(srgb, pass_, str(exc))

    def _run_local(self, srgb: F32, pass_: Pass, why: str) -> F32:
        """The pass on this device (``fallback = "local"``), noted for the job's report."""
        local = self._local_runtime(pass_)
        note = f"{pass_} pass: {why}; ran locally ({local.name})"
        log.warning("%s", note)
        with self._lock:
            self.stats.fallbacks += 1
            self._notes.append(note)
        run_local = getattr(local, "deblur_srgb", None)
        if run_local is None:  # pragma: no cover - the fallback is an OnnxDeblurrer
            raise InferenceError(f"{local.name} cannot run sRGB images")
        out: F32 = run_local(srgb)
        return out

    def deblur(self, image: F32, pass_: Pass) -> F32:
        """Linear ``float32 (H, W, 3)`` in, linear out (the network works in sRGB)."""
        return srgb_float_to_linear(self.deblur_srgb(linear_to_srgb_float(image), pass_))

    def _local_runtime(self, pass_: Pass) -> Deblurrer:
        with self._lock:
            local = self._local.get(pass_)
        if local is None:
            from deblurd.inference.onnx import OnnxDeblurrer

            s = self.settings
            onnx = OnnxRuntimeSettings(model=s.local_model, threads=s.local_threads, tile=s.tile)
            local = OnnxDeblurrer(onnx, self._local_models[pass_])
            with self._lock:
                self._local[pass_] = local
        return local

    # -- what the daemon shows ----------------------------------------------------------

    def take_notes(self) -> list[str]:
        """What happened since the last call that a job's report must say (fallbacks)."""
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    def remote_status(self) -> dict[str, Any]:
        """The status reply's ``inference_remote``: server, models, request counts and
        latency per request (one tile) over the last 100 (ms)."""
        with self._lock:
            st = self.stats
            lat = list(st.latency_ms)
            doc: dict[str, Any] = {
                "url": self.endpoint,
                "offload": self.settings.offload,
                "models": dict(self._models),
                "fallback": self.settings.fallback,
                "requests": st.requests,
                "failures": st.failures,
                "fallbacks": st.fallbacks,
                "last_error": st.last_error,
                "last_error_ns": st.last_error_ns,
            }
        doc["latency_ms"] = latency_summary(lat) if lat else {}
        return doc

    def close(self) -> None:
        """Close the connections and any local fallback session."""
        with self._lock:
            clients, self._clients = self._clients, []
            local, self._local = self._local, {}
        for client in clients:
            try:
                client.close()
            except Exception:  # closing a broken channel must not fail shutdown
                log.debug("closing a Triton client failed", exc_info=True)
        for runtime in local.values():
            runtime.close()
        self._local_clients = threading.local()


def _dims(entry: dict[str, Any]) -> list[int]:
    return [int(d) for d in entry.get("shape", entry.get("dims", []))]


def _parse_model(name: str, meta: dict[str, Any], config: dict[str, Any], key: str) -> RemoteModel:
    """Check a served model's metadata against the U-Net contract
    (:func:`~deblurd.inference.base.check_contract`, with a served model's rules).

    ``meta``: the Open Inference Protocol's model metadata (``inputs``/``outputs`` with
    ``name``, ``datatype``, ``shape``; -1 = any); ``config``: the model config
    (``max_batch_size``, ``parameters``). :class:`ConfigError` naming ``key`` otherwise."""
    batched = int(config.get("max_batch_size", 0) or 0) > 0

    def fail(why: str) -> ConfigError:
        message = f"Triton model {name!r} is not a deblurd U-Net: {why} (set {key})"
        return ConfigError(message, [(key, message)])

    def tensor(entry: dict[str, Any], is_input: bool) -> TensorInfo:
        dims = _dims(entry)
        if batched and len(dims) == 3:  # some servers leave the batch dim out
            dims = [-1, *dims]
        fp32 = entry.get("datatype") == "FP32"
        return TensorInfo(str(entry["name"]), is_input, tuple(dims), fp32)

    inputs = meta.get("inputs", [])
    outputs = meta.get("outputs", [])
    tensors = [tensor(i, True) for i in inputs] + [tensor(o, False) for o in outputs]
    try:
        io = check_contract(f"Triton model {name!r}", tensors, any_size=True, other_outputs=True)
    except InferenceError as exc:
        shown = [(i.get("name"), i.get("datatype"), _dims(i)) for i in [*inputs, *outputs]]
        raise fail(
            "expected inputs image FP32 (1, 3, -1, -1) and (optional) noise FP32 (1, 1, -1, -1) "
            f"and one output FP32 (1, 3, -1, -1), got {shown}"
        ) from exc
    multiple = DEFAULT_MULTIPLE
    param = (config.get("parameters") or {}).get(MULTIPLE_PARAMETER)
    if isinstance(param, dict) and param.get("string_value"):
        try:
            multiple = int(param["string_value"])
        except ValueError as exc:
            raise fail(f"parameter {MULTIPLE_PARAMETER} = {param['string_value']!r}") from exc
        if not 1 <= multiple <= 256:
            raise fail(f"parameter {MULTIPLE_PARAMETER} = {multiple}")
    return RemoteModel(name, io.image, io.noise, io.output, batched, multiple)
