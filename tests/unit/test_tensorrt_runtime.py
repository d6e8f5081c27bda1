"""The TensorRT runtime's own code, in CI, against stand-in ``tensorrt`` and ``pycuda``
(tests/unit/fake_cuda.py): building and storing plans under their key, loading them,
binding buffers, tiling, the CUDA context across threads, freeing. The real libraries on
a real GPU are tests/hw/test_tensorrt.py."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_cuda import install_fake_tensorrt

from deblurd.cli import main
from deblurd.errors import InferenceError
from deblurd.inference.onnx import OnnxDeblurrer
from deblurd.settings.inference import OnnxRuntimeSettings

pytest.importorskip("onnxruntime")
ENGINES = Path(__file__).resolve().parents[2] / "engines"
MODEL = ENGINES / "unet.onnx"
TILE = 256


def test_build_engine_stores_an_fp16_plan_under_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, trt = install_fake_tensorrt(monkeypatch)
    from deblurd.inference.tensorrt import build_engine, current_key, plan_paths

    plan = build_engine(MODEL, tmp_path, TILE)
    key = current_key(MODEL, TILE)
    assert (key.tensorrt_version, key.gpu_name, key.tile) == ("10.3.0", "Fake GPU", TILE)
    assert plan == plan_paths(tmp_path, key)[0] and plan.read_bytes().startswith(b"PLAN")
    assert json.loads(plan_paths(tmp_path, key)[1].read_text())["onnx_sha256"] == key.onnx_sha256
    (first,) = trt.built
    assert first["fp16"]
    assert first["profile"]["image"] == ((1, 3, 16, 16), (1, 3, TILE, TILE), (1, 3, TILE, TILE))
    assert first["profile"]["noise"] == ((1, 1, 16, 16), (1, 1, TILE, TILE), (1, 1, TILE, TILE))
    cache = (tmp_path / "engines" / "timing.cache").read_bytes()
    build_engine(ENGINES / "unet-second.onnx", tmp_path, TILE)
    assert trt.built[1]["cache_in"] == cache  # the second build starts from the first's cache
    assert driver.context_depth() == 0


def test_a_model_tensorrt_cannot_parse_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_tensorrt(monkeypatch)
    from deblurd.inference.tensorrt import build_engine

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(InferenceError, match=r"bad\.onnx: TensorRT cannot parse the model"):
        build_engine(bad, tmp_path, TILE)
    with pytest.raises(InferenceError, match="multiple of 16"):
        build_engine(MODEL, tmp_path, 100)


def test_runtime_opened_on_one_thread_deblurs_on_another_like_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the daemon: opened and warmed up on the main thread, jobs on the worker. The
    output equals onnxruntime's at the same tile (same tiling; the fake "plan" is the ONNX
    model, so any difference is the runtime's buffer handling)."""
    driver, _ = install_fake_tensorrt(monkeypatch)
    from deblurd.inference.tensorrt import TensorRTDeblurrer, build_engine

    build_engine(MODEL, tmp_path, TILE)
    net = TensorRTDeblurrer(MODEL, tmp_path, tile=TILE)
    ref = OnnxDeblurrer(OnnxRuntimeSettings(model=str(MODEL), tile=TILE, threads=1))
    img = np.random.default_rng(0).random((150, 330, 3), dtype=np.float32) * 0.8
    small = np.random.default_rng(1).random((40, 52, 3), dtype=np.float32) * 0.8
    assert net.deblur(small, "first").shape == small.shape  # warm-up, main thread
    out: dict[str, Any] = {}

    def job() -> None:
        try:
            out["trt"] = net.deblur(img, "first")
            out["depth"] = driver.context_depth()
        except BaseException as exc:
            out["error"] = exc

    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    assert "error" not in out, out.get("error")
    expected = ref.deblur(img, "first")
    assert out["trt"].shape == img.shape and out["depth"] == 0
    assert np.abs(out["trt"] - expected).max() < 1e-5
    assert np.abs(net.deblur(small, "second") - ref.deblur(small, "second")).max() < 1e-5
    ref.close()
    net.close()
    assert driver.allocs and all(a.freed for a in driver.allocs)
    assert driver.context_depth() == 0
    net.close()  # idempotent


def test_a_missing_model_is_named_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_tensorrt(monkeypatch)
    from deblurd.inference.tensorrt import TensorRTDeblurrer, ensure_plan

    missing = tmp_path / "gone.onnx"
    for call in (lambda: ensure_plan(missing, tmp_path, TILE),
                 lambda: TensorRTDeblurrer(missing, tmp_path, tile=TILE)):  # fmt: skip
        with pytest.raises(InferenceError, match=r"gone\.onnx: ONNX model not found"):
            call()


def test_plan_of_another_tensorrt_version_is_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_tensorrt(monkeypatch, version="10.3.0")
    from deblurd.inference.tensorrt import TensorRTDeblurrer, build_engine, current_key, plan_paths

    build_engine(MODEL, tmp_path, TILE)
    install_fake_tensorrt(monkeypatch, version="10.4.0")  # JetPack upgraded
    with pytest.raises(InferenceError) as exc:
        TensorRTDeblurrer(MODEL, tmp_path, tile=TILE)
    msg = str(exc.value)
    assert "TensorRT 10.3.0" in msg and "TensorRT 10.4.0" in msg and "deblurd build-engine" in msg

    plan, _ = plan_paths(tmp_path, current_key(MODEL, TILE))  # a plan file that is garbage
    build_engine(MODEL, tmp_path, TILE)
    plan.write_bytes(b"garbage")
    with pytest.raises(InferenceError, match="not a loadable TensorRT plan"):
        TensorRTDeblurrer(MODEL, tmp_path, tile=TILE)


def test_build_engine_then_the_daemon_loads_both_networks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`deblurd build-engine` with the default models (both passes), then the configured
    runtime is two TensorRT plans, one per pass; without a plan for this device it is a
    clear error, or onnxruntime when the config allows the fallback."""
    install_fake_tensorrt(monkeypatch)
    from deblurd.inference.factory import open_deblurrer
    from deblurd.settings.load import load_settings

    cfg = tmp_path / "trt.toml"
    cfg.write_text(f'[inference.runtime]\ntype = "tensorrt"\ntile = {TILE}\n'
                   f'state_dir = "{tmp_path}/state"\n')  # fmt: skip
    settings = load_settings(str(cfg))
    strict = settings.inference.runtime.model_copy(update={"build_plans": False})
    inference = settings.inference.model_copy(update={"runtime": strict})
    with pytest.raises(InferenceError, match=r"no TensorRT plan.*deblurd build-engine"):
        open_deblurrer(inference)
    runtime = strict.model_copy(update={"fallback_to_onnxruntime": True})
    fallback = inference.model_copy(update={"runtime": runtime})
    d = open_deblurrer(fallback)
    assert d is not None and "onnxruntime" in d.name
    d.close()

    assert main(["build-engine", "--config", str(cfg)]) == 0
    d = open_deblurrer(inference)  # build_plans = false: loads what build-engine built
    assert d is not None and d.name.count("tensorrt:") == 2, d.name
    img = np.random.default_rng(2).random((64, 96, 3), dtype=np.float32) * 0.8
    for pass_ in ("first", "second"):
        assert d.deblur(img, pass_).shape == img.shape
    d.close()


def test_the_daemon_builds_a_missing_or_stale_plan_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``build_plans`` (default): the first start builds the plans, a JetPack upgrade
    (another TensorRT version) rebuilds them and removes the stale ones; ``build_plans =
    false`` refuses with the fix instead."""
    _, trt = install_fake_tensorrt(monkeypatch, version="10.3.0")
    from deblurd.inference.factory import open_deblurrer
    from deblurd.settings.load import load_settings

    cfg = tmp_path / "trt.toml"
    state = tmp_path / "state"
    cfg.write_text(f'[inference.runtime]\ntype = "tensorrt"\ntile = {TILE}\n'
                   f'state_dir = "{state}"\n')  # fmt: skip
    settings = load_settings(str(cfg))
    d = open_deblurrer(settings.inference)
    assert d is not None and d.name.count("tensorrt:") == 2
    d.close()
    assert len(trt.built) == 2  # both networks
    d = open_deblurrer(settings.inference)  # a restart reuses them
    assert d is not None
    d.close()
    assert len(trt.built) == 2
    assert len(list((state / "engines").glob("*.plan"))) == 2

    _, trt = install_fake_tensorrt(monkeypatch, version="10.4.0")
    strict = settings.inference.runtime.model_copy(update={"build_plans": False})
    with pytest.raises(InferenceError, match=r"TensorRT 10\.3\.0.*deblurd build-engine"):
        open_deblurrer(settings.inference.model_copy(update={"runtime": strict}))
    d = open_deblurrer(settings.inference)
    assert d is not None
    d.close()
    assert len(trt.built) == 2  # rebuilt for 10.4.0 ...
    keys = [json.loads(p.read_text()) for p in (state / "engines").glob("unet-*.json")]
    assert sorted(k["tensorrt_version"] for k in keys) == ["10.4.0", "10.4.0"]  # ... stale gone
    assert len(list((state / "engines").glob("*.plan"))) == 2


def _model(path: Path, out_channels: int = 3) -> Path:
    """A network without the noise input whose tensors are not named as ours: ``rgb``
    float32 (1, 3, H, W) in, ``y`` out (``rgb`` itself, or its channel mean with
    ``out_channels = 1``, which breaks the contract)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = (helper.make_node("Identity", ["rgb"], ["y"]) if out_channels == 3 else
            helper.make_node("ReduceMean", ["rgb"], ["y"], axes=[1], keepdims=1))  # fmt: skip
    graph = helper.make_graph(
        [node], "plain",
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, out_channels, "H", "W"])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_tensor_names_come_from_the_plan_and_the_noise_input_is_optional(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The profile and the buffers are built from the network's I/O tensors: a network
    with its own names and no noise map builds, loads and runs like onnxruntime."""
    driver, trt = install_fake_tensorrt(monkeypatch)
    from deblurd.inference.tensorrt import TensorRTDeblurrer, build_engine

    model = _model(tmp_path / "plain.onnx")
    build_engine(model, tmp_path, TILE)
    assert set(trt.built[0]["profile"]) == {"rgb"}
    net = TensorRTDeblurrer(model, tmp_path, tile=TILE)
    ref = OnnxDeblurrer(OnnxRuntimeSettings(model=str(model), tile=TILE, threads=1))
    img = np.random.default_rng(3).random((90, 300, 3), dtype=np.float32) * 0.8
    assert np.array_equal(net.deblur(img, "first"), ref.deblur(img, "first"))
    net.close()
    ref.close()
    assert driver.allocs and all(a.freed for a in driver.allocs)


def test_a_network_outside_the_contract_is_our_error_at_build_and_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, trt = install_fake_tensorrt(monkeypatch)
    from fake_cuda import fake_plan

    from deblurd.inference.tensorrt import (
        TensorRTDeblurrer,
        build_engine,
        current_key,
        store_plan,
    )

    bad = _model(tmp_path / "gray.onnx", out_channels=1)
    expected = r"not a deblurd U-Net: expected the input image float32 \(1, 3, H, W\).*output y"
    with pytest.raises(InferenceError, match=r"gray\.onnx: " + expected):
        build_engine(bad, tmp_path, TILE)
    assert trt.built == []
    with pytest.raises(InferenceError, match=r"gray\.onnx: " + expected):
        OnnxDeblurrer(OnnxRuntimeSettings(model=str(bad)))
    # a plan of it (another builder): refused from the engine's I/O tensors, nothing held
    store_plan(tmp_path, current_key(bad, TILE), fake_plan(bad.read_bytes(), TILE), b"")
    with pytest.raises(InferenceError, match=r"unet-\w+\.plan: " + expected):
        TensorRTDeblurrer(bad, tmp_path, tile=TILE)
    assert all(a.freed for a in driver.allocs) and driver.context_depth() == 0
