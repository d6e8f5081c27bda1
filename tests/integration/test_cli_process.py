"""`deblurd process` / `simulate` / `check-config` end to end, through the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from deblurd.cli import main
from deblurd.imaging import read_rgb8


@pytest.fixture(scope="module")
def sim_burst(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "burst"
    rc = main(
        [
            "simulate",
            str(out),
            "--seed",
            "5",
            "--width",
            "320",
            "--height",
            "240",
            "--frames",
            "7",
            "--extra",
            "3",
        ]
    )
    assert rc == 0
    return out


def test_simulate_writes_burst_and_truth_beside_it(sim_burst: Path) -> None:
    doc = json.loads((sim_burst / "burst.json").read_text())
    assert doc["version"] == 1 and len(doc["frames"]) == 10
    assert [f["role"] for f in doc["frames"]].count("extra") == 3
    truth = sim_burst.parent / (sim_burst.name + ".truth")
    assert truth.is_dir() and not (sim_burst / "truth.json").exists()


def test_process_writes_image_and_report(sim_burst: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    assert main(["process", str(sim_burst), "-o", str(out), "--json", str(report)]) == 0
    image = read_rgb8(out)
    assert image.shape == (240, 320, 3)
    rep = json.loads(report.read_text())
    assert len(rep["frames"]) == 10
    assert all(isinstance(f["blur_score"], float) for f in rep["frames"])
    assert rep["selected"] in rep["candidates"]
    assert rep["decision"]["source"] in ("ring", "extra") and rep["decision"]["reason"]
    for stage in ("blur_score", "select", "decide", "finish", "encode", "total"):
        assert stage in rep["stage_ms"]
    used = {u["index"] for u in rep["used"]}
    rejected = {r["index"] for r in rep["rejected"]}
    assert rep["selected"] not in used | rejected
    assert all(r["reason"] for r in rep["rejected"])
    assert used, "a plain simulated burst should register"


def test_process_is_cleaner_than_the_selected_frame_over_seeds() -> None:
    """Over several simulated bursts, with the default settings and the shipped U-Nets:
    never worse than the selected frame, clearly better on average (the full-size
    evaluation in tools/evaluate.py measures the real margin)."""
    from deblurd.inference.factory import open_deblurrer
    from deblurd.pipeline.process import process_burst
    from deblurd.settings.models import DeblurdSettings
    from deblurd.sim.burst import SimParams, simulate_burst

    crop = (slice(16, -16), slice(16, -16))

    def mse(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean((a[crop].astype(np.float64) - b[crop]) ** 2))

    settings = DeblurdSettings()
    deblurrer = open_deblurrer(settings.inference)
    assert settings.inference.passes == "both" and deblurrer is not None
    ratios = []
    for seed in range(4):
        sim = simulate_burst(SimParams(width=320, height=240, ring_frames=7, seed=seed), None)
        result = process_burst(sim.burst, settings, deblurrer)
        sel = result.report.selected
        truth = sim.truth[sel]
        ratios.append(mse(result.image, truth) / mse(sim.burst.frames[sel], truth))
    deblurrer.close()
    assert max(ratios) < 1.0, ratios
    assert float(np.mean(ratios)) < 0.75, ratios


def _fresh_copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def _bad_cases() -> list[tuple[str, str]]:
    return [
        ("missing_frame", "003.png: no such file"),
        ("not_json", "not valid JSON"),
        ("missing_field", "missing field 'trigger_index'"),
        ("trigger_out_of_range", "out of range"),
        ("different_size", "differs"),
        ("gray_png", "3 channels"),
        ("empty", "'frames' is empty"),
    ]


@pytest.mark.parametrize(("case", "message"), _bad_cases())
def test_bad_burst_one_clear_message_no_output(
    case: str, message: str, sim_burst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    burst = _fresh_copy(sim_burst, tmp_path)
    doc = json.loads((burst / "burst.json").read_text())
    if case == "missing_frame":
        (burst / "003.png").unlink()
    elif case == "not_json":
        (burst / "burst.json").write_text("{")
    elif case == "missing_field":
        del doc["trigger_index"]
    elif case == "trigger_out_of_range":
        doc["trigger_index"] = 99
    elif case == "different_size":
        cv2.imwrite(str(burst / "002.png"), np.zeros((100, 100, 3), np.uint8))
    elif case == "gray_png":
        cv2.imwrite(str(burst / "002.png"), np.zeros((240, 320), np.uint8))
    elif case == "empty":
        doc["frames"] = []
    if case in ("missing_field", "trigger_out_of_range", "empty"):
        (burst / "burst.json").write_text(json.dumps(doc))
    out = tmp_path / "out.png"
    assert main(["process", str(burst), "-o", str(out), "--json", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.png")]


def test_output_in_missing_folder(
    sim_burst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["process", str(sim_burst), "-o", str(tmp_path / "no" / "o.png")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_nothing_registers_still_gives_selected_frame(tmp_path: Path) -> None:
    """Unrelated random frames: every second frame rejected. With the U-Net off the selected
    frame comes out; with the default passes, the first pass's output of it (what
    ``deblurd deblur`` makes of that frame)."""
    from deblurd.burstdir import Burst, FrameInfo, frame_names, write_burst

    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 1.0)
    frames = [base] + [
        cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 1.0)
        for _ in range(4)
    ]
    infos = [FrameInfo(n, i * 33_000_000, 8000, 4.0) for i, n in enumerate(frame_names(5))]
    burst = write_burst(tmp_path / "b", Burst(frames, infos, 0))
    out, rep = tmp_path / "o.png", tmp_path / "r.json"
    args = ["process", str(burst), "-o", str(out), "--json", str(rep)]
    assert main([*args, "--unet", "off"]) == 0
    report = json.loads(rep.read_text())
    assert report["used"] == []
    assert len(report["rejected"]) >= 1
    np.testing.assert_array_equal(read_rgb8(out), frames[report["selected"]])

    assert main(args) == 0
    report = json.loads(rep.read_text())
    assert report["used"] == [] and report["unet_passes"].startswith("first")
    selected = burst / report["frames"][report["selected"]]["file"]
    single = tmp_path / "single.png"
    assert main(["deblur", str(selected), "-o", str(single)]) == 0
    np.testing.assert_array_equal(read_rgb8(out), read_rgb8(single))
    assert not np.array_equal(read_rgb8(out), frames[report["selected"]])


def test_console_script_runs(sim_burst: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "deblurd"
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    proc = subprocess.run(
        [str(exe), "process", str(sim_burst), "-o", str(tmp_path / "o.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "selected" in proc.stdout


def test_check_config_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[fusion]\nmode = "averag"\n')
    assert main(["check-config", str(bad)]) == 78
    assert "fusion.mode" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text("")
    assert main(["check-config", str(good)]) == 0


def test_process_with_bad_config_exits_78(
    sim_burst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[registration]\nlevles = 3\n")
    assert (
        main(["process", str(sim_burst), "-o", str(tmp_path / "o.png"), "--config", str(bad)]) == 78
    )
    assert "registration.levles" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_run_with_cuda_backend_and_no_gpu_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deblurd.gpu.backend import available

    if available()[0]:
        pytest.skip("a usable CUDA GPU is present: the cuda backend is valid here")
    cfg = tmp_path / "cuda.toml"
    cfg.write_text('[registration]\nbackend = "cuda"\n')
    assert main(["run", "--config", str(cfg)]) == 78
    assert "registration.backend" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, b"not an onnx model"])
def test_run_with_a_missing_or_corrupt_model_exits_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    """The U-Net passes are on by default: a model file that is missing or corrupt stops
    the daemon before it is ready, naming the file and the fix, with exit 78 (a restart
    would not help)."""
    model = tmp_path / "model.onnx"
    if content is not None:
        model.write_bytes(content)
    cfg = tmp_path / "model.toml"
    cfg.write_text(
        f'[service]\ncontrol_endpoint = "ipc://{tmp_path}/c.sock"\n'
        f'results_endpoint = "ipc://{tmp_path}/r.sock"\n'
        f'[output]\ndirectory = "{tmp_path}/out"\n'
        f'[inference.runtime]\ntype = "onnxruntime"\nmodel = "{model}"\n'
    )
    assert main(["run", "--config", str(cfg)]) == 78
    err = capsys.readouterr().err
    assert "inference" in err and "model.onnx" in err, err


def test_build_engine_without_tensorrt_names_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        import tensorrt

        if hasattr(tensorrt, "Builder"):
            pytest.skip("TensorRT is installed here: the real build is a tests/hw test")
    except ImportError:
        pass
    assert main(["build-engine"]) == 1
    err = capsys.readouterr().err
    assert "TensorRT is not available" in err and "python3-libnvinfer" in err


@pytest.mark.parametrize(
    ("passes", "second", "expected"),
    [("both", True, 2), ("first", True, 1), ("both", False, 1)],
)
def test_build_engine_builds_a_plan_per_network_it_will_load(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    passes: str,
    second: bool,
    expected: int,
) -> None:
    """Up to the last call into TensorRT: one plan per network the daemon will load (the
    second pass's own network only with passes = "both"), each model path resolved as the
    daemon resolves it (the default relative ``engines/…`` from any folder), at the
    configured tile unless --tile overrides it, under runtime.state_dir."""
    import deblurd.inference.tensorrt as trt_mod

    built: list[tuple[Path, Path, int]] = []

    def fake_build(onnx: Path, state_dir: Path, tile: int, multiple: int = 16) -> Path:
        built.append((onnx, state_dir, tile))
        return state_dir / "engines" / f"{onnx.stem}.plan"

    monkeypatch.setattr(trt_mod, "build_engine", fake_build)
    monkeypatch.chdir(tmp_path)  # not the checkout: relative model paths must still resolve
    cfg = tmp_path / "trt.toml"
    cfg.write_text(
        f'[inference]\npasses = "{passes}"\n'
        + ('second_model = "engines/unet-second.onnx"\n' if second else 'second_model = ""\n')
        + f'[inference.runtime]\ntype = "tensorrt"\ntile = 256\nstate_dir = "{tmp_path}/st"\n'
    )
    assert main(["build-engine", "--config", str(cfg)]) == 0
    assert len(built) == expected
    names = [onnx.name for onnx, _, _ in built]
    assert names == ["unet.onnx", "unet-second.onnx"][:expected]
    for onnx, state_dir, tile in built:
        assert onnx.is_absolute() and onnx.is_file(), onnx
        assert state_dir == tmp_path / "st" and tile == 256
    assert capsys.readouterr().out.count("TensorRT plan for") == expected
    built.clear()
    assert main(["build-engine", "--config", str(cfg), "--tile", "512"]) == 0
    assert {tile for _, _, tile in built} == {512}


@pytest.mark.parametrize("tile", ["100", "32", "8192", "big"])
def test_build_engine_rejects_a_bad_tile(tile: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["build-engine", "--tile", tile])
    assert exc.value.code == 2
    assert "--tile" in capsys.readouterr().err


class _CountingDeblurrer:
    """An identity "network" that records which passes it ran."""

    name = "counting"

    def __init__(self) -> None:
        self.passes: list[str] = []

    def deblur(self, image: np.ndarray, pass_: str) -> np.ndarray:
        self.passes.append(pass_)
        return image

    def close(self) -> None:
        pass


def test_second_pass_runs_on_fused_images_only() -> None:
    """'both' runs the second pass when frames were fused, and skips it (saying so in the
    report) when nothing was: the image is then the first pass's own output."""
    from deblurd.burstdir import Burst, FrameInfo, frame_names
    from deblurd.pipeline.process import process_burst
    from deblurd.settings.models import DeblurdSettings
    from deblurd.sim.burst import simulate_burst
    from deblurd.sim.params import SimParams

    settings = DeblurdSettings()
    sim = simulate_burst(SimParams(width=320, height=240, ring_frames=7, seed=5, fast=True))
    net = _CountingDeblurrer()
    result = process_burst(sim.burst, settings, net, "both")
    assert result.report.used and net.passes == ["first", "second"]
    assert result.report.unet_passes == "both"

    rng = np.random.default_rng(3)
    frames = [
        cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), (0, 0), 1.0)
        for _ in range(5)
    ]
    infos = [FrameInfo(n, i * 33_000_000, 8000, 4.0) for i, n in enumerate(frame_names(5))]
    net = _CountingDeblurrer()
    result = process_burst(Burst(frames, infos, 0), settings, net, "both")
    assert result.report.used == [] and net.passes == ["first"]
    assert "second pass skipped" in result.report.unet_passes
    assert "unet_second" not in result.report.stage_ms


class _MarkingDeblurrer:
    """A "network" whose first pass visibly changes the image (halves it) and whose second
    pass records what it was given and adds a constant."""

    name = "marking"

    def __init__(self) -> None:
        self.second_inputs: list[np.ndarray] = []

    def deblur(self, image: np.ndarray, pass_: str) -> np.ndarray:
        if pass_ == "first":
            return np.asarray(image * 0.5, np.float32)
        self.second_inputs.append(image.copy())
        return np.asarray(np.clip(image + 0.01, 0.0, 1.0), np.float32)

    def close(self) -> None:
        pass


def test_frames_are_fused_raw_and_the_second_pass_gets_that_image() -> None:
    """Stage 4 registers, gates and averages the raw frames: the first pass's output never
    enters the fused image (it drives the decision, and is the result when nothing fuses).
    So 'first' gives the 'off' image whenever frames were fused, and the second pass of
    'both' receives exactly the image 'off' returns."""
    from deblurd.imaging import linear_to_srgb, srgb_to_linear
    from deblurd.pipeline.process import process_burst
    from deblurd.settings.models import DeblurdSettings
    from deblurd.sim.burst import simulate_burst
    from deblurd.sim.params import SimParams

    settings = DeblurdSettings()
    sim = simulate_burst(SimParams(width=320, height=240, ring_frames=7, seed=5, fast=True))
    off = process_burst(sim.burst, settings, None, "off")
    assert off.report.used, "the fixture burst must fuse frames"
    first = process_burst(sim.burst, settings, _MarkingDeblurrer(), "first")
    assert [u.index for u in first.report.used] == [u.index for u in off.report.used]
    np.testing.assert_array_equal(first.image, off.image)
    assert first.report.deblurred_blur_score is not None

    net = _MarkingDeblurrer()
    both = process_burst(sim.burst, settings, net, "both")
    assert len(net.second_inputs) == 1
    np.testing.assert_array_equal(linear_to_srgb(net.second_inputs[0]), off.image)
    expected = linear_to_srgb(np.clip(net.second_inputs[0] + 0.01, 0.0, 1.0))
    np.testing.assert_array_equal(both.image, expected)

    # Nothing to fuse (every second frame far blurrier): the result is the first pass's.
    strict = settings.model_copy(
        update={
            "second_frames": settings.second_frames.model_copy(update={"max_blur_excess": -100.0})
        }
    )
    alone = process_burst(sim.burst, strict, _MarkingDeblurrer(), "first")
    assert alone.report.used == []
    sel = sim.burst.frames[alone.report.selected]
    np.testing.assert_array_equal(alone.image, linear_to_srgb(srgb_to_linear(sel) * 0.5))
