"""TensorRT runtime on a real GPU (Jetson): build, cache key, parity with onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deblurd.errors import InferenceError
from deblurd.inference.onnx import OnnxDeblurrer
from deblurd.inference.tensorrt import TensorRTDeblurrer, build_engine, current_key, plan_paths
from deblurd.settings.inference import OnnxRuntimeSettings

pytestmark = pytest.mark.tensorrt
MODEL = Path(__file__).resolve().parents[2] / "engines" / "unet.onnx"
TILE = 256


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory, cuda_driver: Any) -> Path:
    d = tmp_path_factory.mktemp("state")
    build_engine(MODEL, d, TILE)
    return d


def test_plan_is_stored_under_its_key(state_dir: Path) -> None:
    key = current_key(MODEL, TILE)
    plan, key_file = plan_paths(state_dir, key)
    assert plan.stat().st_size > 0
    assert json.loads(key_file.read_text())["onnx_sha256"] == key.onnx_sha256
    assert (plan.parent / "timing.cache").is_file()


def test_fp16_matches_onnxruntime(state_dir: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.random((300, 420, 3), dtype=np.float32) * 0.8
    ref = OnnxDeblurrer(OnnxRuntimeSettings(model=str(MODEL), tile=TILE))
    trt = TensorRTDeblurrer(MODEL, state_dir, tile=TILE)
    try:
        for p in ("first", "second"):
            a, b = trt.deblur(img, p), ref.deblur(img, p)
            assert a.shape == img.shape
            assert np.abs(a - b).mean() < 1.0 / 255.0
    finally:
        trt.close()
        ref.close()


def test_runs_on_a_thread_other_than_the_one_that_opened_it(state_dir: Path) -> None:
    """The daemon opens the runtime on its main thread and deblurs on the capture worker."""
    import threading

    trt = TensorRTDeblurrer(MODEL, state_dir, tile=TILE)
    img = np.random.default_rng(1).random((200, 260, 3), dtype=np.float32) * 0.8
    out: dict[str, Any] = {}

    def job() -> None:
        try:
            out["image"] = trt.deblur(img, "first")
        except BaseException as exc:
            out["error"] = exc

    try:
        worker = threading.Thread(target=job)
        worker.start()
        worker.join()
    finally:
        trt.close()
    assert "error" not in out, out.get("error")
    assert out["image"].shape == img.shape and np.isfinite(out["image"]).all()


def test_plan_for_another_model_is_refused(state_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    other.write_bytes(MODEL.read_bytes() + b"\0")  # another sha256
    with pytest.raises(InferenceError, match="build-engine"):
        TensorRTDeblurrer(other, state_dir, tile=TILE)
