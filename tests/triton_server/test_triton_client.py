"""deblurd's Triton runtime against a real Triton server (see conftest.py): the remote
output equals onnxruntime's on the same tile plan, timeouts, garbage answers, wrong model
names and shapes, a server down, stopped mid-job and restarted, the CLI's exit 78, and the
daemon's status and job report."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deblurd.errors import ConfigError, InferenceError
from deblurd.imaging import F32
from deblurd.inference.onnx import OnnxDeblurrer
from deblurd.inference.triton import TritonDeblurrer
from deblurd.settings.inference import OnnxRuntimeSettings, TritonSettings

ROOT = Path(__file__).resolve().parents[2]
SECOND = "engines/unet-second.onnx"


def image(h: int = 144, w: int = 208, seed: int = 0) -> F32:
    rng = np.random.default_rng(seed)
    base = rng.random((h // 8 + 1, w // 8 + 1, 3), dtype=np.float32)
    smooth = np.kron(base, np.ones((8, 8, 1), np.float32))[:h, :w]
    noisy = smooth + rng.normal(0, 0.02, (h, w, 3)).astype(np.float32)
    out: F32 = np.clip(noisy, 0, 1).astype(np.float32)
    return out


def settings(server: Any, protocol: str = "grpc", **kw: Any) -> TritonSettings:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    return TritonSettings(url=url, protocol=protocol, **kw)  # type: ignore[arg-type]


def local(tile: int, model: str = "engines/unet.onnx") -> OnnxDeblurrer:
    return OnnxDeblurrer(OnnxRuntimeSettings(tile=tile, threads=1), model)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("tile", [2048, 96])
def test_equal_to_local_on_the_same_tile_plan(server: Any, protocol: str, tile: int) -> None:
    img = image()
    remote = TritonDeblurrer(settings(server, protocol, tile=tile), local_second_model=SECOND)
    try:
        for pass_, model in (("first", "engines/unet.onnx"), ("second", SECOND)):
            ref = local(tile, model).deblur(img, pass_)  # type: ignore[arg-type]
            out = remote.deblur(img, pass_)  # type: ignore[arg-type]
            assert out.shape == img.shape and out.dtype == np.float32
            diff = float(np.abs(out - ref).max())
            assert diff <= 1e-5, f"{protocol} tile {tile} {pass_}: {diff}"
        st = remote.remote_status()
        # whole: one request per pass; tiled (96 px tiles of the 176x240 padded image,
        # overlap 48): 3 x 4 tiles per pass
        assert st["requests"] == (2 if tile == 2048 else 24)
        assert st["failures"] == 0 and st["fallbacks"] == 0
        assert st["latency_ms"]["count"] == st["requests"] and st["latency_ms"]["p50"] > 0
    finally:
        remote.close()
    assert "deblurd_unet+deblurd_unet_second" in remote.name


def test_slow_server_times_out(server: Any) -> None:
    remote = TritonDeblurrer(settings(server, model="deblurd_unet_slow", timeout_s=1.0))
    t0 = time.monotonic()
    with pytest.raises(InferenceError, match="deblurd_unet_slow"):
        remote.deblur(image(), "first")
    assert time.monotonic() - t0 < 2.9  # the model answers after 3 s
    st = remote.remote_status()
    assert st["failures"] == 1 and st["last_error"]
    remote.close()


def test_slow_server_with_http_times_out(server: Any) -> None:
    remote = TritonDeblurrer(settings(server, "http", model="deblurd_unet_slow", timeout_s=1.0))
    with pytest.raises(InferenceError):
        remote.deblur(image(), "first")
    remote.close()


def test_fallback_local_runs_the_pass_here_and_says_so(server: Any) -> None:
    img = image()
    remote = TritonDeblurrer(
        settings(server, model="deblurd_unet_slow", timeout_s=1.0, fallback="local"),
        second_pass=False,
    )
    out = remote.deblur(img, "first")
    assert np.abs(out - local(2048).deblur(img, "first")).max() <= 1e-6
    notes = remote.take_notes()
    assert len(notes) == 1 and "ran locally" in notes[0] and "first pass" in notes[0]
    assert remote.take_notes() == []
    assert remote.remote_status()["fallbacks"] == 1
    remote.close()


@pytest.mark.parametrize(
    ("model", "why"),
    [("deblurd_unet_garbage", "not a deblurd U-Net"), ("deblurd_unet_nan", "NaN")],
)
def test_garbage_answers_are_errors(server: Any, model: str, why: str) -> None:
    remote = TritonDeblurrer(settings(server, model=model), second_pass=False)
    with pytest.raises(InferenceError, match=why):
        remote.deblur(image(), "first")
    assert remote.remote_status()["failures"] == 1
    remote.close()


def test_wrong_model_names_are_config_errors(server: Any) -> None:
    with pytest.raises(ConfigError) as first:
        TritonDeblurrer(settings(server, model="no_such_model"))
    assert first.value.problems[0][0] == "inference.runtime.model"
    assert "no_such_model" in str(first.value)
    with pytest.raises(ConfigError) as second:
        TritonDeblurrer(settings(server, "http", second_model="nope_second"))
    assert second.value.problems[0][0] == "inference.runtime.second_model"


def test_wrong_shapes_are_config_errors(server: Any) -> None:
    with pytest.raises(ConfigError, match="expected inputs image") as err:
        TritonDeblurrer(settings(server, model="deblurd_unet_wrong"), second_pass=False)
    assert err.value.problems[0][0] == "inference.runtime.model"


def test_server_down_fails_jobs_not_the_start() -> None:
    from triton_serve import free_port

    down = TritonSettings(url=f"localhost:{free_port()}", connect_timeout_s=1.0)
    remote = TritonDeblurrer(down, second_pass=False)  # a warning, not an error
    t0 = time.monotonic()
    with pytest.raises(InferenceError, match="Triton grpc://localhost"):
        remote.deblur(image(), "first")
    assert time.monotonic() - t0 < 5
    remote.close()
    fallback = TritonDeblurrer(down.model_copy(update={"fallback": "local"}), second_pass=False)
    img = image()
    assert np.abs(fallback.deblur(img, "first") - local(2048).deblur(img, "first")).max() <= 1e-6
    assert fallback.take_notes()
    fallback.close()


def test_server_stopped_mid_job_then_restarted(tmp_path: Path, server: Any) -> None:
    """A job whose server stops under it fails with InferenceError; the same client works
    again once the server is back on the same ports (no restart of the camera side)."""
    from triton_serve import ServerProcess

    own = ServerProcess(sys.executable, "--second-model", "", log=tmp_path / "own.log")
    own.start()
    img = image(352, 480, seed=3)
    remote = TritonDeblurrer(
        TritonSettings(url=own.grpc_url, tile=96, timeout_s=10.0), second_pass=False
    )
    errors: list[BaseException] = []
    done = threading.Event()

    def job() -> None:
        try:
            remote.deblur(img, "first")
        except BaseException as exc:
            errors.append(exc)
        done.set()

    try:
        threading.Thread(target=job, daemon=True).start()
        deadline = time.monotonic() + 60
        while remote.remote_status()["requests"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not done.is_set(), "the job ended before the server could be stopped"
        own.stop()  # SIGTERM to tritonserver and PyTriton mid-job
        assert done.wait(60)
        assert len(errors) == 1 and isinstance(errors[0], InferenceError), errors
        st = remote.remote_status()
        assert st["failures"] >= 1 and st["requests"] >= 3
        own.start()  # same ports
        out = remote.deblur(img, "first")
        assert np.abs(out - local(96).deblur(img, "first")).max() <= 1e-5
    finally:
        remote.close()
        own.stop()


def test_cli_config_errors_exit_78_naming_the_key(tmp_path: Path, server: Any) -> None:
    photo = tmp_path / "in.png"
    from deblurd.imaging import linear_to_srgb, write_image

    write_image(photo, linear_to_srgb(image()))
    cfg = tmp_path / "deblurd.toml"
    cfg.write_text(
        f'[inference.runtime]\ntype = "triton"\nurl = "{server.grpc_url}"\n'
        'model = "deblurd_unet_missing"\n'
    )
    cmd = [sys.executable, "-m", "deblurd.cli", "deblur", str(photo), "-o",
           str(tmp_path / "out.png"), "--config", str(cfg)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 78, proc.stderr
    assert "inference.runtime.model" in proc.stderr and "deblurd_unet_missing" in proc.stderr
    cfg.write_text(f'[inference.runtime]\ntype = "triton"\nurl = "{server.grpc_url}"\n')
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "triton:grpc://" in proc.stdout
    cfg.write_text('[inference.runtime]\ntype = "triton"\nurl = "http://host:8001"\n')
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 78 and "inference.runtime.url" in proc.stderr, proc.stderr


def test_export_triton_matches_what_the_server_serves(tmp_path: Path, server: Any) -> None:
    """The repository export-triton writes names the inputs, outputs and dims the served
    models have (the test server is built from the same ONNX files)."""
    import tritonclient.grpc as grpcclient

    proc = subprocess.run(
        [sys.executable, "-m", "deblurd.cli", "export-triton", str(tmp_path / "repo"),
         "--device", "cpu"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for name in ("deblurd_unet", "deblurd_unet_second"):
        text = (tmp_path / "repo" / name / "config.pbtxt").read_text()
        meta = client.get_model_metadata(name, as_json=True)
        for tensor in [*meta["inputs"], *meta["outputs"]]:
            dims = ", ".join(str(d) for d in tensor["shape"][1:])
            assert f'name: "{tensor["name"]}"' in text
            assert f"dims: [ {dims} ]" in text
        assert "max_batch_size: 8" in text and "dynamic_batching" in text
    client.close()


def _run_daemon(
    settings_doc: dict[str, Any], triggers: int = 2
) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    """The daemon in this process on the sim camera: ``triggers`` captures over ZeroMQ,
    their outcomes (topic, metadata) and the status reply after them."""
    import zmq

    from deblurd.camera.sim import SimCamera
    from deblurd.service.daemon import Daemon
    from deblurd.settings.models import DeblurdSettings

    s = DeblurdSettings.model_validate(settings_doc)
    d = Daemon(s, camera_factory=lambda: SimCamera(s.camera), terminal=False)
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    assert d.wait_ready(60)
    ctx: Any = zmq.Context()
    sub, req = ctx.socket(zmq.SUB), ctx.socket(zmq.REQ)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(d.endpoints.results)
    req.connect(d.endpoints.control)
    time.sleep(0.3)
    outcomes = []
    try:
        for _ in range(triggers):
            req.send_json({"cmd": "trigger"})
            assert req.poll(5000)
            cid = req.recv_json()["capture_id"]
            while sub.poll(120000):
                parts = sub.recv_multipart()
                meta = json.loads(parts[1])
                if meta.get("capture_id") == cid and parts[0] in (b"result", b"error"):
                    outcomes.append((parts[0].decode(), meta))
                    break
            else:
                raise AssertionError(f"no outcome for {cid}")
        req.send_json({"cmd": "status"})
        assert req.poll(5000)
        status = req.recv_json()
    finally:
        d.request_stop()
        t.join(30)
        sub.close(0)
        req.close(0)
        ctx.term()
    return outcomes, status


def test_daemon_status_and_report_show_the_remote_runtime(tmp_path: Path, server: Any) -> None:
    def doc(url: str, fallback: str) -> dict[str, Any]:
        return {
            "camera": {"width": 160, "height": 128, "fps": 20.0, "ring_memory_mb": 8,
                       "backend": "sim", "sim": {"seed": 5, "shake": 60.0}},
            "service": {"control_endpoint": f"ipc://{tmp_path}/c-{fallback}.sock",
                        "results_endpoint": f"ipc://{tmp_path}/r-{fallback}.sock",
                        "results_hwm": 10000},
            "output": {"directory": str(tmp_path / f"out-{fallback}")},
            "inference": {"passes": "both",
                          "runtime": {"type": "triton", "url": url, "fallback": fallback,
                                      "connect_timeout_s": 2.0, "timeout_s": 20.0}},
            "triggers": {"terminal": False},
        }  # fmt: skip

    run = _run_daemon

    outcomes, status = run(doc(server.grpc_url, "none"))
    assert [t for t, _ in outcomes] == ["result", "result"], outcomes
    for _, meta in outcomes:
        assert meta["inference"]["runtime"].startswith("triton:grpc://")
        assert meta["inference"]["fallback"] is False
    remote = status["inference_remote"]
    assert status["backends"]["inference"].startswith("triton:")
    assert remote["requests"] >= 2 and remote["failures"] == 0
    assert remote["latency_ms"]["p95"] > 0

    from triton_serve import free_port

    down = f"localhost:{free_port()}"
    outcomes, status = run(doc(down, "none"))  # the daemon starts; the jobs fail
    assert [t for t, _ in outcomes] == ["error", "error"], outcomes
    assert all("Triton" in m["message"] for _, m in outcomes)
    assert all(m["code"] == "inference_remote" for _, m in outcomes)
    assert status["inference_remote"]["failures"] >= 2
    outcomes, status = run(doc(down, "local"))
    assert [t for t, _ in outcomes] == ["result", "result"], outcomes
    for _, meta in outcomes:
        assert meta["inference"]["fallback"] is True
        assert any("ran locally" in n for n in meta["inference"]["notes"])
    assert status["inference_remote"]["fallbacks"] >= 2


def _certificates(folder: Path) -> None:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate (openssl)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True,
                       timeout=60)  # fmt: skip

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf",
            "-out", f"{name}.crt")  # fmt: skip


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    """gRPC over mutual TLS: the ssl_* settings reach a real TLS server; a client without
    TLS, without its certificate or trusting another CA is refused (a job error)."""
    from triton_serve import ServerProcess

    certs = tmp_path / "certs"
    certs.mkdir()
    _certificates(certs)
    own = ServerProcess(sys.executable, "--second-model", "", "--tls-dir", str(certs),
                        "--tls-mutual", log=tmp_path / "tls.log")  # fmt: skip
    own.start()
    img = image()
    try:
        good = TritonSettings(
            url=own.grpc_url, ssl=True, ssl_ca_file=str(certs / "ca.crt"),
            ssl_cert_file=str(certs / "client.crt"), ssl_key_file=str(certs / "client.key"),
            connect_timeout_s=5.0, timeout_s=10.0,
        )  # fmt: skip
        remote = TritonDeblurrer(good, second_pass=False)
        assert remote.name.startswith("triton:grpcs://")
        out = remote.deblur(img, "first")
        assert np.abs(out - local(2048).deblur(img, "first")).max() <= 1e-5
        remote.close()
        plain = good.model_copy(update={"ssl": False, "ssl_ca_file": None,
                                        "ssl_cert_file": None, "ssl_key_file": None})  # fmt: skip
        no_cert = good.model_copy(update={"ssl_cert_file": None, "ssl_key_file": None})
        other_ca = tmp_path / "other"
        other_ca.mkdir()
        _certificates(other_ca)
        wrong_ca = good.model_copy(update={"ssl_ca_file": str(other_ca / "ca.crt")})
        for bad in (plain, no_cert, wrong_ca):
            d = TritonDeblurrer(bad, second_pass=False)  # the server "down": a warning
            with pytest.raises(InferenceError, match="Triton grpc"):
                d.deblur(img, "first")
            d.close()
    finally:
        own.stop()


MDWE_SCRIPT = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    print("no PR_SET_MDWE on this kernel"); sys.exit(3)
import numpy as np
from deblurd.inference.triton import TritonDeblurrer
from deblurd.settings.inference import TritonSettings
for protocol, url in (("grpc", sys.argv[1]), ("http", sys.argv[2])):
    d = TritonDeblurrer(TritonSettings(url=url, protocol=protocol), second_pass=False)
    out = d.deblur(np.full((64, 64, 3), 0.5, np.float32), "first")
    assert out.shape == (64, 64, 3) and d.remote_status()["failures"] == 0
    d.close()
print("ok under MDWE")
"""


def test_client_runs_under_memory_deny_write_execute(server: Any) -> None:
    """The unit's MemoryDenyWriteExecute=yes, emulated with prctl(PR_SET_MDWE) (the same
    rule: no memory may become executable once written): tritonclient's gRPC (C core) and
    HTTP (gevent) clients work under it."""
    proc = subprocess.run(
        [sys.executable, "-c", MDWE_SCRIPT, server.grpc_url, server.http_url],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode == 3:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok under MDWE" in proc.stdout


@pytest.mark.parametrize(
    "kw",
    [{}, {"device": "both", "tensorrt": "fp16", "instances": 2}, {"max_batch": 0, "device": "cpu"}],
)
def test_config_pbtxt_is_a_valid_triton_model_config(kw: dict[str, Any]) -> None:
    """Parsed with Triton's own ModelConfig protobuf (tritonclient ships it): every field
    name and value is one Triton knows."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from deblurd.inference.triton_export import config_pbtxt, read_spec

    spec = read_spec("deblurd_unet", "engines/unet.onnx")
    cfg = text_format.Parse(config_pbtxt(spec, **kw), model_config_pb2.ModelConfig())
    batched = kw.get("max_batch", 8) > 0
    assert cfg.name == "deblurd_unet" and cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == kw.get("max_batch", 8)
    dims = {t.name: list(t.dims) for t in [*cfg.input, *cfg.output]}
    lead = [] if batched else [1]
    assert dims == {"image": [*lead, 3, -1, -1], "noise": [*lead, 1, -1, -1],
                    "deblurred": [*lead, 3, -1, -1]}  # fmt: skip
    assert all(t.data_type == model_config_pb2.TYPE_FP32 for t in cfg.input)
    assert cfg.HasField("dynamic_batching") == batched
    kinds = {g.kind for g in cfg.instance_group}
    assert len(kinds) == (2 if kw.get("device") == "both" else 1)
    assert cfg.parameters["deblurd.multiple"].string_value == "16"
    accel = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accel] == (["tensorrt"] if "tensorrt" in kw else [])


# -- offload = "burst": the whole method on the server ----------------------------------


@pytest.fixture(scope="module")
def sim_burst(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("burst") / "burst"
    subprocess.run([sys.executable, "-m", "deblurd.cli", "simulate", str(out), "--seed", "3",
                    "--width", "320", "--height", "240", "--extra", "2"],
                   check=True, capture_output=True, timeout=120, cwd=ROOT)  # fmt: skip
    return out


def _local_process(burst_dir: Path) -> Any:
    from deblurd.burstdir import read_burst
    from deblurd.inference.factory import open_deblurrer
    from deblurd.pipeline.process import plan_burst, process_burst
    from deblurd.settings.models import DeblurdSettings

    s = DeblurdSettings()
    burst = read_burst(burst_dir)
    d = open_deblurrer(s.inference)
    ring = burst.indices("ring")
    from deblurd.burstdir import Burst

    ring_burst = Burst([burst.frames[i] for i in ring], [burst.infos[i] for i in ring],
                       burst.trigger_index)  # fmt: skip
    return burst, ring_burst, plan_burst(ring_burst, s, d), process_burst(burst, s, d)


def test_exported_burst_model_runs_in_a_real_triton(tmp_path: Path, sim_burst: Path) -> None:
    """export-triton --burst's config.pbtxt and model.py, loaded by Triton's own server
    binary and Python backend (not PyTriton's bindings): plan and process equal the local
    pipeline's, bit for bit; a broken request is that request's error."""
    from deblurd.inference.triton_export import export_repository
    from deblurd.service.offload import BurstOffload
    from deblurd.settings.models import DeblurdSettings
    from triton_serve import RepositoryServer

    export_repository(tmp_path / "repo", [], burst="deblurd_burst")
    server = RepositoryServer(tmp_path / "repo", tmp_path, log=tmp_path / "tritonserver.log")
    server.start()
    try:
        burst, ring_burst, plan, result = _local_process(sim_burst)
        s = DeblurdSettings()
        runtime = TritonSettings(url=server.grpc_url, offload="burst", timeout_s=120.0)
        remote = BurstOffload(TritonDeblurrer(runtime, check_models=False))
        rplan = remote.plan(ring_burst, s)
        assert (rplan.selected, rplan.decision, rplan.candidates) == (
            plan.selected,
            plan.decision,
            plan.candidates,
        )
        assert np.allclose(rplan.scores, plan.scores) and rplan.first_score == plan.first_score
        image, report = rplan.complete(burst, s)
        assert np.array_equal(image, result.image)
        assert report["selected"] == result.report.selected
        assert len(report["used"]) == len(result.report.used)
        assert remote.name.endswith("/deblurd_burst")
        broken = burst.__class__(burst.frames[:2], burst.infos, burst.trigger_index)
        with pytest.raises(InferenceError, match="frames described"):
            remote.process(broken, s)
        remote.close()
    finally:
        server.stop()


def test_process_cli_and_daemon_with_burst_offload(
    tmp_path: Path, server: Any, sim_burst: Path
) -> None:
    cfg = tmp_path / "deblurd.toml"
    cfg.write_text(f'[inference.runtime]\ntype = "triton"\nurl = "{server.grpc_url}"\n'
                   'offload = "burst"\ntimeout_s = 120.0\n')  # fmt: skip
    out, rep = tmp_path / "out.png", tmp_path / "rep.json"
    proc = subprocess.run(
        [sys.executable, "-m", "deblurd.cli", "process", str(sim_burst), "-o", str(out),
         "--json", str(rep), "--config", str(cfg)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(rep.read_text())
    assert doc["inference"]["runtime"].endswith("/deblurd_burst")
    from deblurd.imaging import read_rgb8

    _burst, _ring, _plan, result = _local_process(sim_burst)
    assert np.array_equal(read_rgb8(out), result.image)
    assert doc["selected"] == result.report.selected


def test_daemon_with_burst_offload(tmp_path: Path, server: Any) -> None:
    """offload = "burst": the daemon's jobs plan and process on the server (the
    PyTriton-bound deblurd_burst); a server that is down fails the jobs."""
    doc: dict[str, Any] = {
        "camera": {"width": 160, "height": 128, "fps": 20.0, "ring_memory_mb": 8,
                   "backend": "sim", "sim": {"seed": 5, "shake": 60.0}},
        "service": {"control_endpoint": f"ipc://{tmp_path}/c.sock",
                    "results_endpoint": f"ipc://{tmp_path}/r.sock", "results_hwm": 10000},
        "output": {"directory": str(tmp_path / "out")},
        "inference": {"runtime": {"type": "triton", "url": server.grpc_url,
                                  "offload": "burst", "timeout_s": 120.0}},
        "triggers": {"terminal": False},
    }  # fmt: skip
    outcomes, _status = _run_daemon(doc)
    assert [t for t, _ in outcomes] == ["result", "result"], outcomes
    for _, meta in outcomes:
        assert meta["report"]["selected"] == meta["selected"]
        assert meta["report"]["stage_ms"]["total"] > 0
    from triton_serve import free_port

    doc["inference"]["runtime"]["url"] = f"localhost:{free_port()}"
    doc["service"] = {"control_endpoint": f"ipc://{tmp_path}/c2.sock",
                      "results_endpoint": f"ipc://{tmp_path}/r2.sock",
                      "results_hwm": 10000}  # fmt: skip
    outcomes, _status = _run_daemon(doc)
    assert [m["code"] for _, m in outcomes] == ["inference_remote"] * 2, outcomes
