"""The inference interface: onnxruntime runtime with tiling, on a tiny real ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deblurd.errors import InferenceError
from deblurd.imaging import srgb_float_to_linear
from deblurd.inference.base import input_noise_sigma
from deblurd.inference.factory import open_deblurrer
from deblurd.inference.onnx import OnnxDeblurrer
from deblurd.inference.tiling import run_tiled
from deblurd.settings.inference import InferenceSettings, OnnxRuntimeSettings

onnx = pytest.importorskip("onnx")


def _box_blur_model(path: Path, with_noise_input: bool = False) -> Path:
    """A 3x3 depthwise box filter as an ONNX model: input (1,3,H,W) -> (1,3,H,W)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.full((3, 1, 3, 3), 1.0 / 9.0, np.float32)
    nodes = [helper.make_node("Conv", ["image", "w"], ["out"], group=3, pads=[1, 1, 1, 1])]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])]
    if with_noise_input:
        inputs.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, [1, 1, "H", "W"]))
        nodes = [
            helper.make_node("Conv", ["image", "w"], ["blurred"], group=3, pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["blurred", "noise"], ["out"]),
        ]
    graph = helper.make_graph(
        nodes,
        "box",
        inputs,
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = model.metadata_props.add()
    meta.key, meta.value = "deblurd.multiple", "8"
    onnx.save(model, str(path))
    return path


def test_tiled_equals_whole_for_local_filter() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((150, 230, 3), dtype=np.float32)

    def shift_invariant(t: np.ndarray) -> np.ndarray:
        return np.asarray(t * 2.0 + 1.0, dtype=np.float32)

    out = run_tiled(img, shift_invariant, tile=64, overlap=16, multiple=8)
    np.testing.assert_allclose(out, img * 2.0 + 1.0, atol=1e-5)


def test_onnx_runtime_tiled_matches_whole(tmp_path: Path) -> None:
    model = _box_blur_model(tmp_path / "box.onnx")
    rng = np.random.default_rng(1)
    srgb = rng.random((200, 260, 3), dtype=np.float32)
    whole = OnnxDeblurrer(OnnxRuntimeSettings(model=str(model), tile=1024)).deblur_srgb(srgb)
    tiled = OnnxDeblurrer(OnnxRuntimeSettings(model=str(model), tile=96)).deblur_srgb(srgb)
    assert whole.shape == srgb.shape
    # The 3x3 box filter touches 1 px over a tile border; blending hides it.
    assert np.abs(tiled - whole).mean() < 1.0 / 255.0
    inner = (slice(2, -2), slice(2, -2))
    expected = (
        sum(np.roll(np.roll(srgb, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0
    )
    np.testing.assert_allclose(whole[inner], expected[inner], atol=1e-5)


def test_odd_sizes_are_padded_and_cropped(tmp_path: Path) -> None:
    model = _box_blur_model(tmp_path / "box.onnx")
    d = OnnxDeblurrer(OnnxRuntimeSettings(model=str(model)))
    out = d.deblur(np.full((37, 51, 3), 0.5, np.float32), "first")
    assert out.shape == (37, 51, 3)
    np.testing.assert_allclose(out[1:-1, 1:-1], 0.5, atol=1e-4)  # zero-padded conv border


def test_noise_input_is_fed_as_given(tmp_path: Path) -> None:
    model = _box_blur_model(tmp_path / "n.onnx", with_noise_input=True)
    d = OnnxDeblurrer(OnnxRuntimeSettings(model=str(model)))
    zeros = np.zeros((16, 16, 3), np.float32)
    assert d.deblur_srgb(zeros, noise=1.0).mean() == pytest.approx(1.0)
    assert d.deblur_srgb(zeros, noise=0.0).mean() == pytest.approx(0.0)


@pytest.mark.parametrize("sigma", [0.004, 0.012, 0.03])
def test_noise_map_is_the_measured_noise_of_the_whole_image(tmp_path: Path, sigma: float) -> None:
    """Without an explicit level, both passes feed the image's measured noise std, one value
    for every tile (the model here adds the map to a box blur, so the output shows it)."""
    model = _box_blur_model(tmp_path / "n.onnx", with_noise_input=True)
    d = OnnxDeblurrer(OnnxRuntimeSettings(model=str(model), tile=64))
    rng = np.random.default_rng(5)
    srgb = np.clip(0.5 + rng.normal(0.0, sigma, (160, 200, 3)), 0, 1).astype(np.float32)
    expected = input_noise_sigma(srgb)
    assert expected == pytest.approx(sigma, rel=0.05)
    fed = d.deblur_srgb(srgb) - d.deblur_srgb(srgb, noise=0.0)
    np.testing.assert_allclose(fed, expected, atol=1e-5)  # the same value in every tile
    via_srgb = srgb_float_to_linear(d.deblur_srgb(srgb))
    for pass_ in ("first", "second"):  # linear in, the same measured map, linear out
        out = d.deblur(srgb_float_to_linear(srgb), pass_)
        np.testing.assert_allclose(out, via_srgb, atol=2e-4)


def test_missing_model_names_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match=r"nope.onnx: ONNX model not found.*passes"):
        OnnxDeblurrer(OnnxRuntimeSettings(model=str(tmp_path / "nope.onnx")))


def test_corrupt_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InferenceError, match=r"bad.onnx: not a loadable ONNX model"):
        OnnxDeblurrer(OnnxRuntimeSettings(model=str(bad)))


def test_too_small_image(tmp_path: Path) -> None:
    d = OnnxDeblurrer(OnnxRuntimeSettings(model=str(_box_blur_model(tmp_path / "b.onnx"))))
    with pytest.raises(InferenceError, match="too small"):
        d.deblur_srgb(np.zeros((4, 40, 3), np.float32))


def test_open_deblurrer_off_is_none() -> None:
    assert open_deblurrer(InferenceSettings(passes="off")) is None


# ----------------------------------------------------------- TensorRT plan keys (no GPU)


def test_plan_key_changes_with_every_field(tmp_path: Path) -> None:
    from deblurd.inference.tensorrt import PlanKey, plan_paths

    base = PlanKey("a" * 64, "10.3.0", "Orin", 512)
    others = [
        PlanKey("b" * 64, "10.3.0", "Orin", 512),
        PlanKey("a" * 64, "10.4.0", "Orin", 512),
        PlanKey("a" * 64, "10.3.0", "Orin Nano", 512),
        PlanKey("a" * 64, "10.3.0", "Orin", 256),
    ]
    stems = {k.file_stem() for k in [base, *others]}
    assert len(stems) == 5
    plan, key_file = plan_paths(tmp_path, base)
    assert plan.parent == key_file.parent == tmp_path / "engines"


def test_mismatched_plan_names_what_it_was_built_for(tmp_path: Path) -> None:
    import json
    from dataclasses import asdict

    from deblurd.inference.tensorrt import PlanKey, find_mismatch, plan_paths

    built = PlanKey("a" * 64, "10.3.0", "Orin", 512)
    plan, key_file = plan_paths(tmp_path, built)
    assert find_mismatch(tmp_path, built) == f"no TensorRT plan in {tmp_path / 'engines'}"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"plan")
    key_file.write_text(json.dumps(asdict(built)))
    assert find_mismatch(tmp_path, built) is None
    why = find_mismatch(tmp_path, PlanKey("a" * 64, "10.4.0", "Orin", 512))
    assert why is not None and "TensorRT 10.3.0" in why and "TensorRT 10.4.0" in why


def test_mismatch_names_the_stale_plan_of_the_same_model(tmp_path: Path) -> None:
    """Two networks, two plans: the message names the plan of *this* ONNX file (built by
    another TensorRT), not whichever key file sorts last."""
    from deblurd.inference.tensorrt import PlanKey, find_mismatch, store_plan

    first = PlanKey("a" * 64, "10.3.0", "Orin", 512)
    second = PlanKey("b" * 64, "10.3.0", "Orin", 512)
    store_plan(tmp_path, first, b"plan-a", b"cache")
    store_plan(tmp_path, second, b"plan-b", b"cache")
    why = find_mismatch(tmp_path, PlanKey("a" * 64, "10.4.0", "Orin", 512))
    assert why is not None and "for this model" in why and "TensorRT 10.3.0" in why, why
    why = find_mismatch(tmp_path, PlanKey("c" * 64, "10.3.0", "Orin", 512))
    assert why is not None and "other ONNX files" in why and "ccccccccc" in why, why


def test_store_plan_writes_plan_key_and_cache_atomically(tmp_path: Path) -> None:
    import json

    from deblurd.inference.tensorrt import PlanKey, find_mismatch, plan_paths, store_plan

    key = PlanKey("a" * 64, "10.3.0", "Orin", 512)
    path = store_plan(tmp_path, key, b"plan-bytes", b"cache-1")
    plan, key_file = plan_paths(tmp_path, key)
    assert path == plan and plan.read_bytes() == b"plan-bytes"
    assert PlanKey(**json.loads(key_file.read_text())) == key
    assert (plan.parent / "timing.cache").read_bytes() == b"cache-1"
    assert find_mismatch(tmp_path, key) is None
    store_plan(tmp_path, key, b"plan-2", b"cache-2")  # a rebuild replaces all three
    assert plan.read_bytes() == b"plan-2"
    assert (plan.parent / "timing.cache").read_bytes() == b"cache-2"
    assert sorted(p.name for p in plan.parent.iterdir()) == sorted(
        [plan.name, key_file.name, "timing.cache"]
    )  # no temp files left behind


def test_tensorrt_tile_must_be_a_multiple_of_16() -> None:
    from pydantic import ValidationError

    from deblurd.settings.inference import TensorRTSettings

    assert TensorRTSettings(tile=256).tile == 256
    with pytest.raises(ValidationError, match="multiple of 16"):
        TensorRTSettings(tile=100)


def test_sha256_file(tmp_path: Path) -> None:
    import hashlib

    from deblurd.inference.tensorrt import sha256_file

    f = tmp_path / "m.onnx"
    f.write_bytes(b"x" * 3_000_000)
    assert sha256_file(f) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_tensorrt_runtime_without_tensorrt(tmp_path: Path) -> None:
    from deblurd.settings.inference import TensorRTSettings

    try:
        import tensorrt

        if hasattr(tensorrt, "Builder"):
            pytest.skip("TensorRT is installed here")
    except ImportError:
        pass  # absent, as on CI
    model = _box_blur_model(tmp_path / "m.onnx")
    strict = InferenceSettings(passes="first", runtime=TensorRTSettings(model=str(model)))
    with pytest.raises(InferenceError, match="TensorRT is not available"):
        open_deblurrer(strict)
    fallback = InferenceSettings(
        passes="first",
        runtime=TensorRTSettings(model=str(model), fallback_to_onnxruntime=True),
    )
    d = open_deblurrer(fallback)
    assert d is not None and d.name.startswith("onnxruntime:")


def test_second_model_serves_the_second_pass(tmp_path: Path) -> None:
    """inference.second_model: the first pass runs the runtime's model, the second pass its
    own network; without 'both' (or without second_model) one model serves."""
    from deblurd.inference.base import TwoPassDeblurrer

    box = _box_blur_model(tmp_path / "box.onnx")  # a 3x3 box blur
    plus = _box_blur_model(tmp_path / "plus.onnx", with_noise_input=True)  # box + noise map
    rng = np.random.default_rng(2)
    lin = rng.random((48, 64, 3), dtype=np.float32)
    settings = InferenceSettings(
        passes="both", runtime=OnnxRuntimeSettings(model=str(box)), second_model=str(plus)
    )
    net = open_deblurrer(settings)
    assert isinstance(net, TwoPassDeblurrer) and "plus.onnx" in net.name
    only_box = OnnxDeblurrer(OnnxRuntimeSettings(model=str(box)))
    only_plus = OnnxDeblurrer(OnnxRuntimeSettings(model=str(plus)))
    np.testing.assert_array_equal(net.deblur(lin, "first"), only_box.deblur(lin, "first"))
    np.testing.assert_array_equal(net.deblur(lin, "second"), only_plus.deblur(lin, "second"))
    assert not np.array_equal(net.deblur(lin, "second"), net.deblur(lin, "first"))
    net.close()
    first_only = open_deblurrer(settings.model_copy(update={"passes": "first"}))
    assert isinstance(first_only, OnnxDeblurrer)
    missing = settings.model_copy(update={"second_model": str(tmp_path / "nope.onnx")})
    with pytest.raises(InferenceError, match=r"nope.onnx: ONNX model not found"):
        open_deblurrer(missing)
