"""The GPU registrar end to end on the host-emulated kernels: synthetic handheld shake with
blur and noise (test_registration's generator) registered within a quarter pixel, the
same decisions as the OpenCV registrar, the Registrar interface and its errors, and the
backend factory."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from deblurd.errors import RegistrationError
from deblurd.evaluation.pairs import degrade, grid_error, handheld_pairs, mosaic, photo_gray
from deblurd.evaluation.pairs import warp_to_moving as to_moving
from deblurd.gpu.backend import GpuError
from deblurd.gpu.emulation import EmulatedBackend, compiler
from deblurd.gpu.factory import open_fusion_job, open_registrar, resolve_backend
from deblurd.gpu.fuser import GpuSequentialFuser
from deblurd.gpu.registrar import GpuRegistrar
from deblurd.pipeline.registration import OpenCVRegistrar, Registrar
from deblurd.pipeline.stage4 import CpuFusionJob
from deblurd.settings.fusion import FusionSettings
from deblurd.settings.registration import RegistrationSettings

pytest.importorskip("skimage.data")  # photo_gray() loads scikit-image photos

DEFAULTS = RegistrationSettings()


@pytest.mark.parametrize(("scene", "pairs"), [("astronaut", 6), ("mosaic", 3)])
def test_shake_with_blur_and_noise_is_registered_within_a_quarter_pixel(
    emu: EmulatedBackend, scene: str, pairs: int
) -> None:
    clean = photo_gray("astronaut") if scene == "astronaut" else mosaic(1920, 1080)
    h, w = clean.shape
    rng = np.random.default_rng(7)
    gpu, cpu = GpuRegistrar(DEFAULTS, emu), OpenCVRegistrar(DEFAULTS)
    ref = degrade(rng, clean, 0.0, 0.01)
    gpu.set_reference(ref)
    cpu.set_reference(ref)
    assert gpu.tracking_level == (0 if scene == "astronaut" else 1)
    assert len(gpu.corners) >= 100
    errors = []
    for H, moving in handheld_pairs(rng, clean, pairs):
        r = gpu.register(moving)
        c = cpu.register(moving)
        assert r.accepted, r.reason
        assert r.homography.shape == (3, 3) and r.homography.dtype == np.float64
        assert r.homography[2, 2] == pytest.approx(1.0)
        assert r.inliers >= DEFAULTS.min_inliers and r.inliers <= r.tracked <= len(gpu.corners)
        assert abs(r.tracked - c.tracked) <= 2 and abs(r.inliers - c.inliers) <= 2
        assert grid_error(r.homography, c.homography, w, h) <= 0.02
        errors.append(grid_error(r.homography, H, w, h))
        assert set(gpu.stage_ms) == set(cpu.stage_ms) <= {"pyramid", "lk", "homography", "refine"}
    assert float(np.median(errors)) <= 0.25, errors
    assert max(errors) <= 0.25, errors


def test_unrelated_and_flat_frames_are_rejected_not_raised(emu: EmulatedBackend) -> None:
    rng = np.random.default_rng(9)
    clean = photo_gray("astronaut")
    reg = GpuRegistrar(DEFAULTS, emu)
    reg.set_reference(degrade(rng, clean, 0, 0.01))
    unrelated = reg.register(degrade(rng, photo_gray("camera"), 0, 0.01))
    flat = reg.register(np.full_like(clean, 0.5))
    assert not unrelated.accepted and unrelated.reason
    assert not flat.accepted and flat.reason
    reg.set_reference(np.full_like(clean, 0.5))
    r = reg.register(clean)
    assert not r.accepted and r.reason is not None and "corners" in r.reason


def test_warp_aligns_and_interface_matches(emu: EmulatedBackend) -> None:
    clean = photo_gray("astronaut")
    h, w = clean.shape
    H = np.array([[1.0, 0.0, 6.5], [0.0, 1.0, -4.25], [0.0, 0.0, 1.0]])
    reg: Registrar = GpuRegistrar(DEFAULTS, emu)
    reg.set_reference(clean)
    r = reg.register(to_moving(clean, H))
    assert r.accepted
    rgb = np.dstack([to_moving(clean, H)] * 3)
    warped, valid = reg.warp(rgb, r)
    assert warped.shape == rgb.shape and valid.shape == (h, w)
    inside = valid > 0
    assert float(np.abs(warped[..., 0] - clean)[inside].mean()) < 0.01


def test_unprocessable_inputs_raise_registration_error(emu: EmulatedBackend) -> None:
    reg = GpuRegistrar(DEFAULTS, emu)
    img = photo_gray("astronaut")
    with pytest.raises(RegistrationError, match="before set_reference"):
        reg.register(img)
    with pytest.raises(RegistrationError, match="before set_reference"):
        reg.warp(img, _identity())
    with pytest.raises(RegistrationError, match="float32"):
        reg.set_reference(img.astype(np.float64))
    reg.set_reference(img)
    with pytest.raises(RegistrationError, match="reference is"):
        reg.register(img[:-1])
    with pytest.raises(RegistrationError, match="warp expects"):
        reg.warp(img[:, :-1], _identity())
    reg.close()
    assert not any(k.startswith("reg/") for k in emu._pool)


def _identity() -> Any:
    from deblurd.pipeline.registration import Registration

    return Registration(
        homography=np.eye(3), accepted=True, reason=None, tracked=0, inliers=0, residual_px=0.0
    )


def test_buffers_are_allocated_once_per_resolution(emu: EmulatedBackend) -> None:
    reg = GpuRegistrar(DEFAULTS, emu)
    img = photo_gray("astronaut")
    reg.set_reference(img)
    reg.register(img)
    handles = {k: id(b.handle) for k, b in emu._pool.items() if k.startswith("reg/")}
    reg.set_reference(img)
    reg.register(img)
    again = {k: id(b.handle) for k, b in emu._pool.items() if k.startswith("reg/")}
    assert again == handles
    reg.set_reference(img[:400, :300])  # another resolution: reallocated
    assert {k: id(b.handle) for k, b in emu._pool.items() if k.startswith("reg/")} != handles


# --- the factory ---------------------------------------------------------------------------


def test_factory_follows_the_backend_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import deblurd.gpu.factory as factory

    assert isinstance(open_registrar(DEFAULTS), OpenCVRegistrar)
    ref = np.zeros((32, 32, 3), np.float32)
    assert isinstance(open_fusion_job(DEFAULTS, ref, FusionSettings(), 0.01), CpuFusionJob)
    monkeypatch.setattr(factory, "available", lambda: (False, "pycuda not importable (test)"))
    auto = DEFAULTS.model_copy(update={"backend": "auto"})
    kind, note = resolve_backend(auto)
    assert kind == "opencv" and note is not None and "pycuda not importable" in note
    assert isinstance(open_registrar(auto), OpenCVRegistrar)
    cuda = DEFAULTS.model_copy(update={"backend": "cuda"})
    with pytest.raises(GpuError, match="pycuda not importable"):
        open_registrar(cuda)
    with pytest.raises(GpuError, match="expected opencv"):
        resolve_backend(DEFAULTS.model_copy(update={"backend": "metal"}))
    if compiler() is not None:
        emulated = DEFAULTS.model_copy(update={"backend": "emulated"})
        assert isinstance(open_registrar(emulated), GpuRegistrar)
        job = open_fusion_job(emulated, ref, FusionSettings(), 0.01)
        assert isinstance(job, GpuSequentialFuser)


def test_available_says_why_not() -> None:
    from deblurd.gpu.backend import available

    ok, why = available()
    assert isinstance(ok, bool) and why
