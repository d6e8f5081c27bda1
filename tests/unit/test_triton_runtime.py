"""The Triton runtime without a server (the real one: tests/triton_server): settings, the runtime
factory, the client's checks and failure handling on a fake ``tritonclient``, the model
repository ``export-triton`` writes, and how status and metrics show the remote runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from deblurd.cli import main as deblurd_main
from deblurd.client import format_status
from deblurd.errors import ConfigError, InferenceError
from deblurd.inference import triton as triton_module
from deblurd.inference.base import remote_status, runtime_report
from deblurd.inference.factory import open_deblurrer
from deblurd.inference.triton import TritonDeblurrer, _parse_model
from deblurd.inference.triton_export import (
    batch_dynamic_onnx,
    config_pbtxt,
    export_repository,
    read_spec,
)
from deblurd.settings.inference import InferenceSettings, TritonSettings

ROOT = Path(__file__).resolve().parents[2]
IMAGE = {"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, -1]}
NOISE = {"name": "noise", "datatype": "FP32", "shape": [-1, 1, -1, -1]}
OUT = {"name": "deblurred", "datatype": "FP32", "shape": [-1, 3, -1, -1]}


class FakeServer:
    """What the fake client talks to: models by name, an ``answer`` for infer."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {
            "deblurd_unet": {"inputs": [IMAGE, NOISE], "outputs": [OUT]},
            "deblurd_unet_second": {"inputs": [IMAGE, NOISE], "outputs": [OUT]},
        }
        self.live = True
        self.fail: Exception | None = None
        self.requests: list[dict[str, np.ndarray]] = []
        self.answer = lambda arrays: arrays["image"] * 0.5  # a "network": halves the image


def fake_module(server: FakeServer) -> Any:
    class InferInput:
        def __init__(self, name: str, shape: list[int], dtype: str) -> None:
            assert dtype == "FP32"
            self.name, self.shape = name, shape

        def set_data_from_numpy(self, a: np.ndarray) -> None:
            assert list(a.shape) == self.shape and a.dtype == np.float32
            self.data = a

    class Client:
        def __init__(self, url: str, **kw: Any) -> None:
            self.url = url

        def is_server_live(self, **kw: Any) -> bool:
            if not server.live:
                raise OSError("connection refused")
            return True

        def get_model_metadata(self, name: str, version: str = "", **kw: Any) -> Any:
            if name not in server.models:
                raise RuntimeError(f"Request for unknown model: '{name}' is not found")
            return server.models[name]

        def get_model_config(self, name: str, version: str = "", **kw: Any) -> Any:
            return {"config": {"max_batch_size": 8}}

        def infer(self, model: str, inputs: list[Any], **kw: Any) -> Any:
            if server.fail is not None:
                raise server.fail
            arrays = {i.name: i.data for i in inputs}
            server.requests.append(arrays)
            out = server.answer(arrays)
            return SimpleNamespace(as_numpy=lambda name: out)

        def close(self) -> None:
            pass

    return SimpleNamespace(
        InferenceServerClient=Client,
        InferInput=InferInput,
        InferRequestedOutput=lambda name: name,
    )


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    srv = FakeServer()
    monkeypatch.setattr(triton_module, "_import_client", lambda _p: fake_module(srv))
    return srv


def srgb(h: int = 100, w: int = 140) -> np.ndarray:
    return np.random.default_rng(1).random((h, w, 3), dtype=np.float32)


# -- settings ---------------------------------------------------------------------------


def test_settings_validate_the_url_and_tls() -> None:
    s = TritonSettings()
    assert (s.url, s.protocol, s.fallback) == ("localhost:8001", "grpc", "none")
    TritonSettings(url="[::1]:8001")
    for bad in ("http://gpu:8001", "gpu", "gpu:port", "gpu:8001/v2"):
        with pytest.raises(ValidationError):
            TritonSettings(url=bad)
    with pytest.raises(ValidationError, match="go together"):
        TritonSettings(ssl=True, ssl_cert_file="c.pem")
    with pytest.raises(ValidationError, match="ssl = false"):
        TritonSettings(ssl_ca_file="ca.pem")
    with pytest.raises(ValidationError):
        TritonSettings(model="a b")


def test_check_config_exits_78_naming_the_key(tmp_path: Path, capsys: Any) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[inference.runtime]\ntype = "triton"\nurl = "http://gpu:8001"\n')
    assert deblurd_main(["check-config", str(cfg)]) == 78
    assert "inference.runtime.url" in capsys.readouterr().err
    cfg.write_text('[inference.runtime]\ntype = "triton"\ntimeout_s = 0\n')
    assert deblurd_main(["check-config", str(cfg)]) == 78
    assert "inference.runtime.timeout_s" in capsys.readouterr().err
    cfg.write_text('[inference.runtime]\ntype = "triton"\nurl = "gpu-box:8001"\n'
                   'fallback = "local"\n')  # fmt: skip
    assert deblurd_main(["check-config", str(cfg)]) == 0


# -- the factory and the client ---------------------------------------------------------


def test_factory_opens_the_triton_runtime(server: FakeServer) -> None:
    d = open_deblurrer(InferenceSettings(runtime=TritonSettings()))
    assert isinstance(d, TritonDeblurrer)
    assert d.name == "triton:grpc://localhost:8001/deblurd_unet+deblurd_unet_second"
    first = open_deblurrer(InferenceSettings(passes="first", runtime=TritonSettings()))
    assert isinstance(first, TritonDeblurrer) and first.name.endswith("/deblurd_unet")
    with pytest.raises(InferenceError, match="second pass is not configured"):
        first.deblur_srgb(srgb(), "second")


def test_without_tritonclient_it_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)
    monkeypatch.setitem(sys.modules, "tritonclient", None)
    with pytest.raises(ConfigError, match=r"pip install") as err:
        open_deblurrer(InferenceSettings(runtime=TritonSettings()))
    assert err.value.problems[0][0] == "inference.runtime.type"


def test_requests_carry_the_local_runtimes_inputs(server: FakeServer) -> None:
    d = TritonDeblurrer(TritonSettings(tile=2048), second_pass=False)
    x = srgb(100, 140)
    out = d.deblur_srgb(x)
    (req,) = server.requests
    # reflect-padded by 16 each side and up to multiples of 16: 132x172 -> 144x176
    assert req["image"].shape == (1, 3, 144, 176) and req["noise"].shape == (1, 1, 144, 176)
    assert np.array_equal(req["image"][0, :, 16:116, 16:156], x.transpose(2, 0, 1))
    assert np.unique(req["noise"]).size == 1 and 0 < req["noise"][0, 0, 0, 0] < 0.5
    assert np.allclose(out, x * 0.5, atol=1e-7)
    st = remote_status(d)
    assert st is not None and st["requests"] == 1 and st["latency_ms"]["count"] == 1


def test_tiles_are_one_request_each(server: FakeServer) -> None:
    d = TritonDeblurrer(TritonSettings(tile=64), second_pass=False)
    x = srgb(100, 140)
    out = d.deblur_srgb(x)
    assert len(server.requests) > 4
    assert all(r["image"].shape[2:] == (64, 64) for r in server.requests)
    assert np.allclose(out, x * 0.5, atol=1e-6)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (lambda a: a["image"][:, :, ::2], "answered float32"),
        (lambda a: a["image"].astype(np.float64), "answered float64"),
        (lambda a: a["image"] * np.nan, "NaN"),
    ],
)
def test_garbage_is_an_inference_error(server: FakeServer, answer: Any, why: str) -> None:
    server.answer = answer
    d = TritonDeblurrer(TritonSettings(), second_pass=False)
    with pytest.raises(InferenceError, match=why):
        d.deblur_srgb(srgb())
    assert d.remote_status()["failures"] == 1


def test_failures_fall_back_to_local_and_the_report_says_so(server: FakeServer) -> None:
    server.fail = TimeoutError("Deadline Exceeded")
    strict = TritonDeblurrer(TritonSettings(), second_pass=False)
    with pytest.raises(InferenceError, match="Deadline Exceeded"):
        strict.deblur(srgb(), "first")
    assert runtime_report(strict)["fallback"] is False
    d = TritonDeblurrer(TritonSettings(fallback="local", local_threads=1),
                        local_second_model="engines/unet-second.onnx")  # fmt: skip
    out = d.deblur(srgb(64, 80), "second")
    assert out.shape == (64, 80, 3)
    report = runtime_report(d)
    assert report["fallback"] is True and "second pass" in report["notes"][0]
    assert "unet-second.onnx" in report["notes"][0]
    assert runtime_report(d)["notes"] == []  # taken once
    assert d.remote_status()["fallbacks"] == 1
    d.close()


def test_server_down_at_start_is_not_fatal(server: FakeServer) -> None:
    server.live = False
    d = TritonDeblurrer(TritonSettings(), second_pass=False)
    with pytest.raises(InferenceError, match="connection refused"):
        d.deblur_srgb(srgb())
    assert d.remote_status()["failures"] == 1
    server.live = True
    assert d.deblur_srgb(srgb()).shape == (100, 140, 3)


def test_missing_model_and_missing_fallback_file_are_config_errors(server: FakeServer) -> None:
    with pytest.raises(ConfigError) as err:
        TritonDeblurrer(TritonSettings(second_model="other"))
    assert err.value.problems[0][0] == "inference.runtime.second_model"
    with pytest.raises(ConfigError) as err:
        TritonDeblurrer(TritonSettings(fallback="local", local_model="nope.onnx"))
    assert err.value.problems[0][0] == "inference.runtime.local_model"
    with pytest.raises(ConfigError) as err:
        TritonDeblurrer(TritonSettings(ssl=True, ssl_ca_file="/nonexistent/ca.pem"))
    assert err.value.problems[0][0] == "inference.runtime.ssl_ca_file"


def test_parse_model_checks_the_contract() -> None:
    info = _parse_model("m", {"inputs": [IMAGE, NOISE], "outputs": [OUT]},
                        {"max_batch_size": 8}, "k")  # fmt: skip
    assert (info.image, info.noise, info.output, info.batched, info.multiple) == (
        "image",
        "noise",
        "deblurred",
        True,
        16,
    )
    unbatched = [{**t, "shape": [1, *t["shape"][1:]]} for t in (IMAGE, NOISE, OUT)]
    params = {"parameters": {"deblurd.multiple": {"string_value": "32"}}}
    info = _parse_model("m", {"inputs": unbatched[:2], "outputs": unbatched[2:]}, params, "k")
    assert not info.batched and info.multiple == 32
    bad = [
        {"inputs": [{**IMAGE, "shape": [-1, 4, -1, -1]}, NOISE], "outputs": [OUT]},
        {"inputs": [{**IMAGE, "shape": [-1, 3, 512, 512]}, NOISE], "outputs": [OUT]},
        {"inputs": [{**IMAGE, "datatype": "FP16"}, NOISE], "outputs": [OUT]},
        {"inputs": [IMAGE, NOISE, NOISE], "outputs": [OUT]},
        {"inputs": [IMAGE, NOISE], "outputs": []},
    ]
    for meta in bad:
        with pytest.raises(ConfigError, match="not a deblurd U-Net") as err:
            _parse_model("m", meta, {"max_batch_size": 8}, "inference.runtime.model")
        assert err.value.problems[0][0] == "inference.runtime.model"


# -- export-triton ----------------------------------------------------------------------


def test_config_pbtxt_has_the_onnx_names_and_dims() -> None:
    spec = read_spec("deblurd_unet", "engines/unet.onnx")
    assert [(t.name, t.dims) for t in spec.inputs] == [("image", (3, -1, -1)),
                                                       ("noise", (1, -1, -1))]  # fmt: skip
    assert [(t.name, t.dims) for t in spec.outputs] == [("deblurred", (3, -1, -1))]
    text = config_pbtxt(spec, device="both", tensorrt="fp16")
    for line in ('name: "deblurd_unet"', 'backend: "onnxruntime"', "max_batch_size: 8",
                 'name: "image"', "dims: [ 3, -1, -1 ]", 'name: "noise"', "dims: [ 1, -1, -1 ]",
                 'name: "deblurred"', "kind: KIND_GPU", "kind: KIND_CPU", "dynamic_batching",
                 "preferred_batch_size: [ 2, 4, 8 ]", "max_queue_delay_microseconds: 2000",
                 'value: "FP16"', 'key: "deblurd.multiple"', 'string_value: "16"'):  # fmt: skip
        assert line in text, line
    plain = config_pbtxt(spec, max_batch=0, device="cpu")
    assert "max_batch_size: 0" in plain and "dynamic_batching" not in plain
    assert "dims: [ 1, 3, -1, -1 ]" in plain and "dims: [ 1, 1, -1, -1 ]" in plain
    assert "KIND_GPU" not in plain and "tensorrt" not in plain


def test_batch_dynamic_model_gives_each_item_its_own_result() -> None:
    import onnxruntime as ort

    path = ROOT / "engines" / "unet.onnx"
    batched = ort.InferenceSession(batch_dynamic_onnx(path), providers=["CPUExecutionProvider"])
    single = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 48, 64), dtype=np.float32)
    n = np.stack([np.full((1, 48, 64), v, np.float32) for v in (0.01, 0.04)])
    (both,) = batched.run(None, {"image": x, "noise": n})
    for i in range(2):
        (one,) = single.run(None, {"image": x[i : i + 1], "noise": n[i : i + 1]})
        assert np.abs(both[i : i + 1] - one).max() <= 1e-6


def test_export_triton_writes_a_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "other").mkdir(parents=True)
    code = deblurd_main(["export-triton", str(repo), "--device", "cpu", "--max-batch", "0"])
    assert code == 0
    for name, onnx in (("deblurd_unet", "unet.onnx"), ("deblurd_unet_second",
                                                        "unet-second.onnx")):  # fmt: skip
        assert (repo / name / "config.pbtxt").is_file()
        # no batching: the model verbatim
        assert (repo / name / "1" / "model.onnx").read_bytes() == (
            ROOT / "engines" / onnx
        ).read_bytes()
    assert (repo / "other").is_dir()  # other models are left alone
    folders = export_repository(tmp_path / "r2", [("x", "engines/unet.onnx")], max_batch=4)
    assert [f.name for f in folders] == ["x"]
    assert "max_batch_size: 4" in (folders[0] / "config.pbtxt").read_text()
    assert deblurd_main(["export-triton", str(tmp_path / "r3"), "--model", "nope.onnx"]) == 1


def test_export_triton_help_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "deblurd.cli", "export-triton", "--help"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and "--max-batch" in proc.stdout


# -- status, metrics --------------------------------------------------------------------


REMOTE = {"url": "grpc://gpu:8001", "models": {"first": "deblurd_unet"}, "fallback": "local",
          "requests": 12, "failures": 2, "fallbacks": 1, "last_error": "Triton: timeout",
          "last_error_ns": 1, "latency_ms": {"last": 9.0, "p50": 8.5, "p95": 20.25, "max": 30.0,
                                             "count": 10}}  # fmt: skip


def test_deblurctl_status_shows_the_remote_runtime() -> None:
    text = format_status({"ok": True, "state": "ready", "inference_remote": REMOTE})
    (row,) = [line for line in text.splitlines() if line.strip().startswith("remote")]
    assert "grpc://gpu:8001: 12 requests, 2 failed, 1 run locally" in row
    assert "p50 8.5 ms, p95 20.2 ms" in row and "Triton: timeout" in row
    assert "remote" not in format_status({"ok": True, "state": "ready"})


def test_metrics_show_the_remote_runtime() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import core

    from deblurd.service.metrics import _StatusCollector

    families = {f.name: f for f in _StatusCollector(
        lambda: {"inference_remote": REMOTE}, core).collect()}  # fmt: skip
    assert families["deblurd_remote_requests"].samples[0].value == 12
    assert families["deblurd_remote_failures"].samples[0].value == 2
    assert families["deblurd_remote_fallbacks"].samples[0].value == 1
    samples = families["deblurd_remote_latency_seconds"].samples
    lat = {s.labels["quantile"]: s.value for s in samples}
    assert lat == {"0.5": 0.0085, "0.95": 0.02025}
    plain = {f.name for f in _StatusCollector(lambda: {}, core).collect()}
    assert not any(n.startswith("deblurd_remote") for n in plain)


def test_fallback_skips_the_server_for_retry_after_s(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(triton_module.time, "monotonic", lambda: now[0])
    d = TritonDeblurrer(TritonSettings(fallback="local", retry_after_s=30.0, local_threads=1),
                        second_pass=False)  # fmt: skip
    server.fail = TimeoutError("Deadline Exceeded")
    d.deblur_srgb(srgb(64, 64))
    assert d.remote_status()["failures"] == 1
    server.fail = None
    now[0] += 10  # within the window: local, the server is not asked
    d.deblur_srgb(srgb(64, 64))
    assert server.requests == [] and d.remote_status()["requests"] == 1
    notes = d.take_notes()
    assert "Deadline Exceeded; ran locally" in notes[0]
    assert "server skipped for 20.0 s more" in notes[1]
    now[0] += 21  # past it: the server again
    d.deblur_srgb(srgb(64, 64))
    assert len(server.requests) == 1 and d.take_notes() == []
    assert d.remote_status()["fallbacks"] == 2
    d.close()


def test_offload_burst_needs_only_the_burst_model(server: FakeServer) -> None:
    from deblurd.service.offload import BurstOffload, burst_offload
    from deblurd.settings.models import DeblurdSettings

    server.models.clear()  # no networks: not a config error with offload = "burst"
    runtime = TritonSettings(offload="burst")
    d = open_deblurrer(InferenceSettings(runtime=runtime))
    assert isinstance(d, TritonDeblurrer)
    assert d.name == "triton:grpc://localhost:8001/deblurd_burst (offload burst)"
    doc = {"inference": {"runtime": {"type": "triton", "offload": "burst"}}}
    settings = DeblurdSettings.model_validate(doc)
    offload = burst_offload(settings, d)
    assert isinstance(offload, BurstOffload) and offload.name.endswith("/deblurd_burst")
    st = remote_status(d)
    assert st is not None and st["offload"] == "burst" and st["requests"] == 0
    assert burst_offload(DeblurdSettings(), d) is None
    d.close()


def test_export_triton_burst_model(tmp_path: Path) -> None:
    assert deblurd_main(["export-triton", str(tmp_path / "repo"), "--burst"]) == 0
    folder = tmp_path / "repo" / "deblurd_burst"
    text = (folder / "config.pbtxt").read_text()
    assert 'backend: "python"' in text and "TYPE_STRING" in text and "KIND_CPU" in text
    code = (folder / "1" / "model.py").read_text()
    compile(code, "model.py", "exec")
    assert "class TritonPythonModel" in code and "serve_request" in code
