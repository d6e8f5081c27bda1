"""The U-Net: architecture limits, ONNX parity, the shipped model, synthetic training data.

Torch-dependent tests skip when torch is absent (CI installs only ``.[dev]``); the
shipped-model tests need only onnxruntime.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from deblurd.errors import ImageError
from deblurd.evaluation.metrics import psnr
from deblurd.imaging import linear_to_srgb, srgb_to_linear
from deblurd.inference.base import input_noise_sigma
from deblurd.inference.onnx import OnnxDeblurrer
from deblurd.settings.inference import OnnxRuntimeSettings
from deblurd.sim.scene import procedural_scene
from deblurd.training.data import BlurConfig, load_photos, make_batch, make_sample, shake_offsets
from deblurd.training.fused import FusedPairs, make_fused_pairs

SHIPPED = Path(__file__).resolve().parents[2] / "engines" / "unet.onnx"


def _photo(seed: int = 0, size: int = 400) -> np.ndarray:
    """A deterministic textured test scene (uint8 sRGB): shapes, gradients, fine lines."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = np.linspace(40, 200, size, dtype=np.uint8)[:, None, None]
    for _ in range(60):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        p = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(img, p, int(rng.integers(3, 40)), c, -1 if rng.random() < 0.5 else 2)
        q = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(img, p, q, c, int(rng.integers(1, 3)))
    return img


# ----------------------------------------------------------------------------- data


def test_shake_offsets_are_centred_and_grow_with_shake() -> None:
    rng = np.random.default_rng(0)
    small = [np.ptp(shake_offsets(rng, 5.0, 1000.0, t, 0.008), axis=0).max() for t in range(20)]
    big = [np.ptp(shake_offsets(rng, 60.0, 1000.0, t, 0.008), axis=0).max() for t in range(20)]
    assert np.median(big) > 5 * np.median(small)
    off = shake_offsets(rng, 30.0, 1000.0, 0.3, 0.008)
    np.testing.assert_allclose(off.mean(axis=0), 0.0, atol=1e-9)


def test_samples_degrade_and_are_reproducible() -> None:
    photos = [_photo(0), _photo(1)]
    cfg = BlurConfig(soft_fraction=0.0)
    first = [make_sample(photos, 64, np.random.default_rng(s), cfg, False) for s in range(8)]
    second = [make_sample(photos, 64, np.random.default_rng(s), cfg, True) for s in range(8)]
    for inp, tgt, sigma in first:
        assert inp.shape == tgt.shape == (64, 64, 3) and inp.dtype == np.float32
        assert tgt.min() >= 0.0 and tgt.max() <= 1.0
        assert sigma == input_noise_sigma(inp)  # the runtime's estimator, on the input
        np.testing.assert_allclose(inp * 255, np.round(inp * 255), atol=1e-3)  # 8-bit codes
    err1 = np.mean([np.mean((i - t) ** 2) for i, t, _ in first])
    err2 = np.mean([np.mean((i - t) ** 2) for i, t, _ in second])
    assert err1 > 0 and err2 > 0  # both degraded (the fused raw frames keep their blur)
    # ring frames at gain 2-8: a few 8-bit codes of noise; the fused image: several times less
    sig1 = np.median([s for _, _, s in first])
    sig2 = np.median([s for _, _, s in second])
    assert 0.005 < sig1 < 0.05 and sig2 < 0.7 * sig1
    a = make_sample(photos, 64, np.random.default_rng(3), cfg, False)
    b = make_sample(photos, 64, np.random.default_rng(3), cfg, False)
    np.testing.assert_array_equal(a[0], b[0])


def test_camera_samples_target_and_averaged_exposures() -> None:
    """Camera samples: with ``camera_target="isp"`` the target is the same camera without
    noise or codec (a flat scene comes out at the input's brightness, not the bare tone
    curve's); ``camera_averaged`` exposures carry less noise than single frames."""
    from deblurd.training.data import make_camera_sample

    photos = [_photo(0), _photo(1)]
    base = BlurConfig(soft_fraction=0.0, camera_max_motion_px=6.0, camera_target="isp")
    flat = [np.full((300, 300, 3), 128, np.uint8)]
    for seed in range(4):
        inp, tgt, _ = make_camera_sample(flat, 64, np.random.default_rng(seed), base, False)
        assert inp.shape == tgt.shape == (64, 64, 3) and tgt.dtype == np.float32
        # a flat grey scene: the same camera's output, up to its noise
        assert abs(float(inp.mean() - tgt.mean())) < 3 / 255
        assert float(tgt.std()) < 0.5 / 255  # no noise, no codec in the target
        np.testing.assert_allclose(tgt * 255, np.round(tgt * 255), atol=1e-3)  # 8-bit codes
    tone = dataclasses.replace(base, camera_target="tone")
    a = make_camera_sample(photos, 64, np.random.default_rng(5), base, False)
    b = make_camera_sample(photos, 64, np.random.default_rng(5), tone, False)
    np.testing.assert_array_equal(a[0], b[0])  # same input, only the target differs
    assert not np.array_equal(a[1], b[1])
    single = dataclasses.replace(base, camera_max_motion_px=0.0, camera_max_defocus_px=0.0)
    averaged = dataclasses.replace(single, camera_averaged=1.0)

    def noise(cfg: BlurConfig) -> float:
        out = []
        for seed in range(12):
            inp, tgt, _ = make_camera_sample(flat, 64, np.random.default_rng(seed), cfg, False)
            out.append(float(np.std(inp - tgt)))
        return float(np.median(out))

    assert noise(averaged) < 0.6 * noise(single)


def test_zoomed_scenes_are_band_limited() -> None:
    """Enlarged crops (zoom 2) carry far less fine detail in the target than unzoomed ones."""
    photos = [_photo(0, 800)]

    def fine_detail(cfg: BlurConfig) -> float:
        out = []
        for seed in range(6):
            _, tgt, _ = make_sample(photos, 96, np.random.default_rng(seed), cfg, False)
            hh = tgt[:-1:2, :-1:2] - tgt[1::2, :-1:2] - tgt[:-1:2, 1::2] + tgt[1::2, 1::2]
            out.append(float(np.mean(hh**2)))
        return float(np.mean(out))

    sharp = fine_detail(BlurConfig(soft_fraction=0.0, zoom_fraction=0.0))
    zoomed = fine_detail(BlurConfig(soft_fraction=0.0, zoom_fraction=1.0, zoom=(2.0, 2.0)))
    assert zoomed < 0.5 * sharp


def test_batch_layout() -> None:
    x, n, y = make_batch(
        [_photo()], 4, 48, np.random.default_rng(1), BlurConfig(second_fraction=0.5)
    )
    assert x.shape == y.shape == (4, 3, 48, 48) and n.shape == (4, 1, 48, 48)
    for xi, ni in zip(x, n, strict=True):  # one measured level per sample, for every pixel
        np.testing.assert_array_equal(ni, input_noise_sigma(xi.transpose(1, 2, 0)))


def test_no_photos_names_folder_and_fix(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageError, match=r"no usable training photos.*prepare_training_photos"):
        load_photos(tmp_path)


class _Identity:
    """A first pass that changes nothing (the pipeline's plumbing is what is tested)."""

    name = "identity"

    def deblur(self, image: np.ndarray, pass_: str) -> np.ndarray:
        return image

    def close(self) -> None:
        pass


def test_fused_pairs_are_the_pipelines_second_pass_input(tmp_path: Path) -> None:
    """Real fused images of simulated bursts, with the truth of the frame they are aligned
    to: less noisy than a raw frame, close to the truth; a rerun keeps what is there."""
    photos = [_photo(0, 400), _photo(1, 400)]
    n = make_fused_pairs(photos, _Identity(), tmp_path, count=4, seed=7, sizes=[(256, 192)])
    files = sorted(tmp_path.glob("pairs-*.npz"))
    assert n == len(files) >= 2  # bursts that fused nothing are skipped
    for f in files:
        with np.load(f) as z:
            fused, truth = z["fused"], z["truth"]
        assert fused.dtype == np.float16 and truth.dtype == np.uint8
        assert fused.shape == truth.shape == (192, 256, 3)
        est = np.round(np.clip(fused.astype(np.float32), 0, 1) * 255).astype(np.uint8)
        assert psnr(est, truth, border=16) > 27.0
    stamp = [f.stat().st_mtime_ns for f in files]
    assert make_fused_pairs(photos, _Identity(), tmp_path, count=4, seed=7, sizes=[(256, 192)]) == n
    assert [f.stat().st_mtime_ns for f in files] == stamp
    pairs = FusedPairs(tmp_path)
    inp, tgt, sigma = pairs.sample(64, np.random.default_rng(0))
    assert inp.shape == tgt.shape == (64, 64, 3) and inp.dtype == tgt.dtype == np.float32
    assert sigma == input_noise_sigma(inp) and sigma > 0.0
    # fused: less noise than a ring frame at gain 4 (~0.02-0.03); a crop can hold texture
    sigmas = [pairs.sample(64, np.random.default_rng(s))[2] for s in range(9)]
    assert float(np.median(sigmas)) < 0.02, sigmas
    x, nmap, _ = make_batch(
        photos,
        6,
        64,
        np.random.default_rng(2),
        BlurConfig(second_fraction=1.0, fused_fraction=1.0),
        pairs,
    )
    import cv2

    images = [np.clip(f.astype(np.float32), 0, 1) for f in pairs.fused]
    for xi in x:  # every sample is a crop of a real fused image, flipped and/or turned
        crop = np.ascontiguousarray(xi.transpose(1, 2, 0))
        best = min(
            float(cv2.matchTemplate(img, np.ascontiguousarray(t), cv2.TM_SQDIFF).min())
            for img in images
            for t in (np.rot90(crop, k) for k in range(4))
            for t in (t, t[:, ::-1])
        )
        assert best / crop.size < 1e-7  # float32 rounding; another place is ~1e-5
    assert nmap.shape == (6, 1, 64, 64)


def test_fused_pairs_through_a_camera(tmp_path: Path) -> None:
    """``camera=1``: every burst goes through a random camera ISP and rolling shutter (the
    evaluation's camera-pipeline set): its truth is the scene through that camera's tone
    curve, not plain sRGB, and the fused image still matches it; ``camera=0`` draws the
    very bursts of a call without it."""
    photos = [_photo(0, 400), _photo(1, 400)]
    size = [(256, 192)]
    plain, off, isp = tmp_path / "plain", tmp_path / "off", tmp_path / "isp"
    make_fused_pairs(photos, _Identity(), plain, count=3, seed=7, sizes=size)
    make_fused_pairs(photos, _Identity(), off, count=3, seed=7, sizes=size, camera=0.0)
    make_fused_pairs(photos, _Identity(), isp, count=3, seed=7, sizes=size, camera=1.0)
    names = sorted(f.name for f in plain.glob("pairs-*.npz"))
    assert names and names == sorted(f.name for f in off.glob("pairs-*.npz"))
    for name in names:
        with np.load(plain / name) as a, np.load(off / name) as b:
            assert np.array_equal(a["truth"], b["truth"]) and np.array_equal(a["fused"], b["fused"])
    camera_files = sorted(isp.glob("pairs-*.npz"))
    assert len(camera_files) >= 2
    for f in camera_files:
        with np.load(f) as z:
            fused, truth = z["fused"], z["truth"]
        est = np.round(np.clip(fused.astype(np.float32), 0, 1) * 255).astype(np.uint8)
        # aligned to its truth: ISP-sharpened hard edges keep it low, any 2 px shift lower
        aligned = psnr(est, truth, border=16)
        shifted = max(psnr(np.roll(est, 2, axis=a), truth, border=16) for a in (0, 1))
        assert aligned > 18.0 and aligned > shifted + 1.0, (aligned, shifted)
        if (plain / f.name).exists():  # same scene, pose and seed: only the camera differs
            with np.load(plain / f.name) as z:
                assert float(np.abs(z["truth"].astype(float) - truth.astype(float)).mean()) > 1.0


def test_fused_pairs_with_the_cameras_own_look_as_truth(tmp_path: Path) -> None:
    """``camera_target="isp"``: the same camera bursts (same files, same fused images), but
    the truth is the camera's own noiseless look (:func:`deblurd.sim.burst.camera_truth`,
    its demosaic, denoise and sharpening included) instead of the tone-curve truth; the
    fused image is still aligned to it."""
    photos = [_photo(0, 400), _photo(1, 400)]
    size = [(256, 192)]
    tone, look = tmp_path / "tone", tmp_path / "look"
    make_fused_pairs(photos, _Identity(), tone, count=3, seed=7, sizes=size, camera=1.0)
    make_fused_pairs(
        photos, _Identity(), look, count=3, seed=7, sizes=size, camera=1.0, camera_target="isp"
    )
    names = sorted(f.name for f in tone.glob("pairs-*.npz"))
    assert len(names) >= 2 and names == sorted(f.name for f in look.glob("pairs-*.npz"))
    for name in names:
        with np.load(tone / name) as a, np.load(look / name) as b:
            assert np.array_equal(a["fused"], b["fused"])  # the burst does not change
            fused, truth, tone_truth = b["fused"], b["truth"], a["truth"]
        assert truth.dtype == np.uint8 and truth.shape == tone_truth.shape == (192, 256, 3)
        diff = np.abs(truth.astype(np.float64) - tone_truth.astype(np.float64))
        assert float(diff.mean()) > 0.5, name  # demosaic / denoise / sharpening show
        assert abs(float(truth.mean()) - float(tone_truth.mean())) < 3.0  # same radiometry
        est = np.round(np.clip(fused.astype(np.float32), 0, 1) * 255).astype(np.uint8)
        aligned = psnr(est, truth, border=16)
        shifted = max(psnr(np.roll(est, 2, axis=a), truth, border=16) for a in (0, 1))
        assert aligned > 18.0 and aligned > shifted + 1.0, (aligned, shifted)


def test_fused_pairs_of_procedural_scenes_at_several_sizes(tmp_path: Path) -> None:
    """``procedural=1``: every burst shows the simulator's procedural scene at a training
    seed (never the camera's default seed 0), at one of the given sizes; its truth is that
    scene's, not a photo's."""
    from deblurd.sim.scene import procedural_scene_srgb

    photos = [np.zeros((300, 400, 3), np.uint8)]  # a black photo: never drawn here
    sizes = [(256, 192), (192, 192)]
    make_fused_pairs(photos, _Identity(), tmp_path, count=4, seed=3, sizes=sizes, procedural=1.0)
    files = sorted(tmp_path.glob("pairs-*.npz"))
    assert len(files) >= 2
    shapes = set()
    for f in files:
        with np.load(f) as z:
            truth = z["truth"]
        shapes.add(truth.shape)
        assert truth.std() > 20  # the textured scene, not the black photo
    assert shapes <= {(192, 256, 3), (192, 192, 3)}
    assert not np.array_equal(truth, procedural_scene_srgb(*truth.shape[:2], 0))


def test_procedural_training_scenes_stay_off_the_cameras_seeds() -> None:
    """Training scenes use seeds from PROCEDURAL_TRAIN_SEED on, at several sizes; asking
    for the small seeds the simulated camera and the tests use is refused."""
    from deblurd.training.data import PROCEDURAL_SIZES, PROCEDURAL_TRAIN_SEED, procedural_photos

    scenes = procedural_photos(4)
    assert [s.shape[:2] for s in scenes[:3]] == list(PROCEDURAL_SIZES)
    assert scenes[3].shape[:2] == PROCEDURAL_SIZES[0]
    assert not np.array_equal(scenes[0], scenes[3])  # other seeds, other scenes
    assert all(s.dtype == np.uint8 and s.std() > 20 for s in scenes)
    with pytest.raises(ValueError, match=str(PROCEDURAL_TRAIN_SEED)):
        procedural_photos(1, first_seed=0)


def test_no_fused_pairs_names_folder_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"no fused training pairs.*make_fused_pairs"):
        FusedPairs(tmp_path)


# ------------------------------------------------------------------ architecture (torch)


def test_architecture_limits_and_identity_start() -> None:
    torch = pytest.importorskip("torch")
    from deblurd.training.unet_arch import UNet, count_params, macs_per_pixel

    model = UNet().eval()
    assert count_params(model) <= 1_000_000
    assert macs_per_pixel(model.config) * 1920 * 1080 <= 30e9
    norms = (torch.nn.LayerNorm, torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.InstanceNorm2d)
    assert not any(isinstance(m, norms) for m in model.modules())
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        out = model(x, torch.ones(1, 1, 48, 64))
    assert out.shape == x.shape
    torch.testing.assert_close(out, x)  # zero-initialised tail: the identity before training


def test_unet_config_needs_one_entry_per_level(tmp_path: Path) -> None:
    """``down_blocks`` and ``up_blocks`` have one entry per level (``widths``), and there is
    a level: otherwise a ConfigError naming the fields (an exported model whose metadata
    says otherwise is refused as an InferenceError naming the file)."""
    pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from deblurd.errors import ConfigError, InferenceError
    from deblurd.training.export import load_onnx_weights
    from deblurd.training.unet_arch import UNetConfig

    UNetConfig(widths=(8, 16), down_blocks=(0, 1), up_blocks=(1, 0))
    with pytest.raises(ConfigError, match=r"down_blocks: 3 entries for 2 levels") as exc:
        UNetConfig(widths=(8, 16), down_blocks=(0, 1, 1), up_blocks=(1, 0))
    assert [key for key, _ in exc.value.problems] == ["down_blocks"]
    with pytest.raises(ConfigError) as exc:
        UNetConfig(widths=(), down_blocks=(0,), up_blocks=())
    assert [key for key, _ in exc.value.problems] == ["widths", "down_blocks"]

    proto = onnx.load(str(SHIPPED))
    for prop in proto.metadata_props:
        if prop.key == "deblurd.config":
            prop.value = '{"widths": [16, 32], "down_blocks": [0], "up_blocks": [1, 0]}'
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(InferenceError, match=r"bad\.onnx.*down_blocks: 1 entries for 2 levels"):
        load_onnx_weights(bad)


def test_torch_and_onnxruntime_agree(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from deblurd.training.export import export_onnx
    from deblurd.training.unet_arch import UNet

    torch.manual_seed(0)
    model = UNet()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # not the identity
    path = export_onnx(model, tmp_path / "u.onnx")
    assert path.stat().st_size < 5e6
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    img = rng.random((1, 3, 80, 112), dtype=np.float32)
    model.eval()
    for value in (0.02, 0.004):  # a ring frame's noise level, a fused image's
        noise = np.full((1, 1, 80, 112), value, np.float32)
        (got,) = session.run(None, {"image": img, "noise": noise})
        with torch.no_grad():
            ref = model(torch.from_numpy(img), torch.from_numpy(noise)).numpy()
        assert np.abs(got - ref).max() <= 1e-4


# ------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def shipped() -> OnnxDeblurrer:
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} not present")
    return OnnxDeblurrer(OnnxRuntimeSettings(model=str(SHIPPED), threads=2, tile=4096))


def test_shipped_model_contract(shipped: OnnxDeblurrer) -> None:
    assert SHIPPED.stat().st_size <= 5_000_000
    assert shipped.multiple == 16
    out = shipped.deblur(np.full((37, 53, 3), 0.25, np.float32), "first")
    assert out.shape == (37, 53, 3) and out.dtype == np.float32


def test_shipped_model_tiled_matches_whole() -> None:
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} not present")
    rng = np.random.default_rng(1)
    clean = linear_to_srgb(procedural_scene(600, 860, 1)).astype(np.float32) / 255.0
    noisy = np.round(np.clip(clean + rng.normal(0, 0.015, clean.shape), 0, 1) * 255) / 255
    srgb = noisy.astype(np.float32)  # a ring frame's noise: the measured level is fed
    whole = OnnxDeblurrer(OnnxRuntimeSettings(model=str(SHIPPED), tile=4096)).deblur_srgb(srgb)
    tiled = OnnxDeblurrer(OnnxRuntimeSettings(model=str(SHIPPED), tile=512))  # 2 x 2 tiles
    assert np.abs(tiled.deblur_srgb(srgb) - whole).max() <= 1.0 / 255.0


def test_shipped_model_deblurs_a_shaken_frame(shipped: OnnxDeblurrer) -> None:
    """Synthetic shaken, noisy frames of the simulator's procedural scene: the first
    pass gets closer to the truth."""
    photos = [linear_to_srgb(procedural_scene(300, 300, 3))]
    gains = []
    for seed in range(5):
        inp, tgt, _ = make_sample(photos, 192, np.random.default_rng(seed), BlurConfig(), False)
        truth = np.round(tgt * 255).astype(np.uint8)
        frame = np.round(inp * 255).astype(np.uint8)
        out = linear_to_srgb(shipped.deblur(srgb_to_linear(frame), "first"))
        gains.append(psnr(out, truth, border=8) - psnr(frame, truth, border=8))
    assert np.mean(gains) > 0.3
