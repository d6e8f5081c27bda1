"""The training loop end to end on a tiny budget: steps, checkpoints, resume, export."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from deblurd.inference.onnx import OnnxDeblurrer
from deblurd.settings.inference import OnnxRuntimeSettings

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("tqdm")


def _photos(folder: Path) -> Path:
    """Two 800x760 textured photos (the loader keeps photos with a shorter side > 720)."""
    folder.mkdir()
    for seed in range(2):
        rng = np.random.default_rng(seed)
        img = np.full((760, 800, 3), 90, np.uint8)
        for _ in range(120):
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            p = tuple(int(v) for v in rng.integers(0, 760, 2))
            cv2.circle(img, p, int(rng.integers(3, 60)), c, -1 if rng.random() < 0.5 else 2)
        cv2.imwrite(str(folder / f"p{seed}.png"), img)
    return folder


def test_train_checkpoints_resumes_and_exports(tmp_path: Path) -> None:
    from deblurd.training.train import main

    photos = _photos(tmp_path / "photos")
    out = tmp_path / "run"
    common = [
        "--photos",
        str(photos),
        "--out",
        str(out),
        "--batch",
        "2",
        "--crop",
        "64",
        "--checkpoint-every",
        "3",
        "--minutes",
        "10",
    ]
    assert main([*common, "--steps", "6"]) == 0
    import torch

    state = torch.load(out / "last.pt", weights_only=False)
    assert state["step"] == 6
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6]
    assert {"first_in", "first_out", "second_in", "second_out"} <= set(log[-1])
    first_weights = {k: v.clone() for k, v in state["model"].items()}

    assert main([*common, "--steps", "8"]) == 0  # resumes at step 6, stops at 8
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["step"] == 8
    assert any(not torch.equal(first_weights[k], v) for k, v in state["model"].items())
    final = json.loads((out / "final.json").read_text())
    assert final["step"] == 8

    net = OnnxDeblurrer(OnnxRuntimeSettings(model=str(out / "unet.onnx"), threads=1))
    img = np.random.default_rng(0).random((48, 64, 3), dtype=np.float32)
    assert net.deblur(img, "first").shape == img.shape


def test_init_starts_from_weights_with_a_new_schedule(tmp_path: Path) -> None:
    from deblurd.training.train import main

    photos = _photos(tmp_path / "photos")
    base = ["--photos", str(photos), "--batch", "2", "--crop", "64", "--checkpoint-every", "2"]
    assert main([*base, "--out", str(tmp_path / "a"), "--steps", "2"]) == 0
    assert (
        main(
            [
                *base,
                "--out",
                str(tmp_path / "b"),
                "--steps",
                "0",
                "--init",
                str(tmp_path / "a" / "last.pt"),
            ]
        )
        == 0
    )
    import torch

    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert b["step"] == 0  # a new run, not a resume of a's 2 steps ...
    assert all(torch.equal(a["model"][k], v) for k, v in b["model"].items())  # ... a's weights


def test_init_from_an_exported_onnx_model(tmp_path: Path) -> None:
    """``--init MODEL.onnx`` fine-tunes an exported (e.g. the shipped) model: the weights
    load back exactly and the network computes what the ONNX file does; a file that is
    no deblurd export is refused, naming it."""
    import torch

    from deblurd.errors import InferenceError
    from deblurd.training.export import load_onnx_weights
    from deblurd.training.train import main

    photos = _photos(tmp_path / "photos")
    base = ["--photos", str(photos), "--batch", "2", "--crop", "64", "--checkpoint-every", "2"]
    assert main([*base, "--out", str(tmp_path / "a"), "--steps", "2"]) == 0
    onnx_path = tmp_path / "a" / "unet.onnx"
    model, steps = load_onnx_weights(onnx_path)
    assert steps == 2
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], v) for k, v in model.state_dict().items())
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    img = np.random.default_rng(1).random((1, 3, 32, 48), dtype=np.float32)
    noise = np.full((1, 1, 32, 48), 0.02, np.float32)
    (out,) = session.run(None, {"image": img, "noise": noise})
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(img), torch.from_numpy(noise)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)

    init = ["--init", str(onnx_path)]
    assert main([*base, "--out", str(tmp_path / "b"), "--steps", "0", *init]) == 0
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert b["step"] == 0 and all(torch.equal(a["model"][k], v) for k, v in b["model"].items())

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(InferenceError, match=r"junk\.onnx"):
        load_onnx_weights(junk)


def test_shake_range_option_is_parsed_and_checked() -> None:
    """``--shake LO,HI`` sets the sampler's shake range; a malformed or inverted range is
    an argparse error naming the value, not a traceback."""
    from deblurd.training.data import BlurConfig
    from deblurd.training.train import build_parser

    p = build_parser()
    assert p.parse_args([]).shake == BlurConfig.shake_deg_s
    assert p.parse_args(["--shake", "12,70"]).shake == (12.0, 70.0)
    for bad in ("12", "70,12", "0,5", "a,b"):
        with pytest.raises(SystemExit):
            p.parse_args(["--shake", bad])
