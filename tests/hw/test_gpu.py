"""The CUDA path on a real GPU against the CPU path on the same frames (marked ``gpu``).

Skipped, with the reason, where pycuda is missing or cannot open a GPU (ImportError,
driver errors: every exception the import or the context raises), or nvcc is missing.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest

from deblurd.evaluation.pairs import grid_error, mosaic, warp_to_moving
from deblurd.imaging import F64
from deblurd.pipeline.fusion import AlignedFrame, fuse
from deblurd.pipeline.registration import OpenCVRegistrar
from deblurd.settings.fusion import FusionSettings
from deblurd.settings.registration import RegistrationSettings

pytestmark = pytest.mark.gpu
pytest.importorskip("skimage.data")  # mosaic() tiles scikit-image photos


@pytest.fixture(scope="module")
def cuda_backend() -> Any:
    try:
        from deblurd.gpu.backend import available
        from deblurd.gpu.cuda import CudaBackend

        ok, why = available()
        if not ok:
            pytest.skip(f"no CUDA GPU: {why}")
        backend = CudaBackend()
    except pytest.skip.Exception:
        raise
    except Exception as exc:  # ImportError, driver or compile errors
        pytest.skip(f"CUDA backend cannot start: {type(exc).__name__}: {exc}")
    yield backend
    backend.close()


def shake(rng: np.random.Generator, w: int, h: int) -> F64:
    k = w / 1920.0
    a = math.radians(rng.uniform(-1, 1))
    c = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]])
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    shift = np.eye(3)
    shift[:2, 2] = rng.uniform(-20 * k, 20 * k, 2)
    out: F64 = shift @ c @ rot @ np.linalg.inv(c)
    return out


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (4000, 3000)])
def test_gpu_registration_matches_opencv(cuda_backend: Any, width: int, height: int) -> None:
    from deblurd.gpu.registrar import GpuRegistrar

    rng = np.random.default_rng(11)
    clean = mosaic(width, height)
    s = RegistrationSettings()
    gpu, cpu = GpuRegistrar(s, cuda_backend), OpenCVRegistrar(s)
    ref = np.clip(clean + rng.normal(0, 0.01, clean.shape), 0, 1).astype(np.float32)
    gpu.set_reference(ref)
    cpu.set_reference(ref)
    assert np.abs(gpu.corners - cpu.corners).max() <= 0.01
    for _ in range(3):
        H = shake(rng, width, height)
        moving = warp_to_moving(clean, H)
        moving = np.clip(moving + rng.normal(0, 0.015, moving.shape), 0, 1).astype(np.float32)
        a, b = gpu.register(moving), cpu.register(moving)
        assert a.accepted and b.accepted, (a.reason, b.reason)
        assert grid_error(a.homography, H, width, height) <= 0.25
        assert grid_error(a.homography, b.homography, width, height) <= 0.02
        wa, va = gpu.warp(moving, a)
        wb, vb = cpu.warp(moving, a)  # warp_homography, or warp_with_residual if refined
        assert float(np.abs(wa - wb).mean()) <= 1e-4
        assert float(np.mean(va != vb)) <= 4 * (width + height) / (width * height)
    gpu.close()


def bend(img: Any, shift: float) -> Any:
    """A rolling-shutter-like readout: row y moves sideways by shift * sin(pi (y/H - 1/2))."""
    h, w = img.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    mx = xs + np.float32(shift) * np.sin(np.pi * (ys / h - 0.5))
    return np.asarray(
        cv2.remap(img, mx, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), np.float32
    )


def test_gpu_refinement_and_dense_fallback_match_opencv(cuda_backend: Any) -> None:
    """A bend the corners' homography leaves (refined) and one the corners cannot follow
    (the dense fallback, refined): the same decisions as the CPU registrar, the
    ``warp_map`` kernel's image as ``warp_with_residual`` (the map upsampled on the GPU
    from the 640-px working scale)."""
    from deblurd.gpu.registrar import GpuRegistrar

    rng = np.random.default_rng(14)
    width, height = 1920, 1080
    clean = mosaic(width, height)
    s = RegistrationSettings()
    gpu, cpu = GpuRegistrar(s, cuda_backend), OpenCVRegistrar(s)
    ref = np.clip(clean + rng.normal(0, 0.01, clean.shape), 0, 1).astype(np.float32)
    gpu.set_reference(ref)
    cpu.set_reference(ref)
    for shift, method in ((12.0, "corners"), (40.0, "dense")):
        noise = rng.normal(0, 0.01, clean.shape)
        moving = np.clip(bend(clean, shift) + noise, 0, 1).astype(np.float32)
        a, b = gpu.register(moving), cpu.register(moving)
        assert a.accepted and b.accepted, (a.reason, b.reason)
        assert a.method == b.method == method
        assert a.residual is not None and b.residual is not None
        assert grid_error(a.homography, b.homography, width, height) <= 0.02
        rgb = np.dstack([moving] * 3)
        wa, va = gpu.warp(rgb, a)
        wb, vb = cpu.warp(rgb, b)
        assert float(np.abs(wa - wb).mean()) <= 1e-4
        assert float(np.mean(va != vb)) <= 4 * (width + height) / (width * height)
    gpu.close()


@pytest.mark.parametrize("mode", ["reference", "sequential"])
def test_gpu_fusion_matches_cpu(cuda_backend: Any, mode: str) -> None:
    from deblurd.gpu.fuser import GpuFuser

    rng = np.random.default_rng(12)
    h, w = 1080, 1920
    clean = np.dstack([mosaic(w, h)] * 3) ** np.float32(2.2)
    ref = np.clip(clean + rng.normal(0, 0.02, clean.shape), 0, 1).astype(np.float32)
    frames = []
    for i in range(4):
        x = clean * np.float32(0.8) if i == 2 else clean.copy()
        if i == 1:
            x[300:500, 600:900] = np.roll(clean, 40, axis=1)[300:500, 600:900]
        x = np.clip(x + rng.normal(0, 0.02, x.shape), 0, 1).astype(np.float32)
        frames.append(AlignedFrame(x, np.ones((h, w), np.float32)))
    settings = FusionSettings(mode=mode)  # type: ignore[arg-type]
    cpu = fuse(ref, frames, settings)
    fuser = GpuFuser(cuda_backend)
    gpu = fuser.fuse(ref, frames, settings)
    assert float(np.abs(gpu.image - cpu.image).mean()) <= 1.0 / 255.0
    assert np.allclose(gpu.frame_weights, cpu.frame_weights, atol=1e-4)
    fuser.close()


@pytest.mark.parametrize("mode", ["reference", "sequential"])
def test_gpu_resident_path_matches_the_host_round_trip(cuda_backend: Any, mode: str) -> None:
    """uint8 frames uploaded once (gray and linear derived on the GPU, aligned frames fused
    where they lie) against the same kernels fed from the host: the same registrations
    and the same fused image, exactly (bit-identical inputs to the same kernels)."""
    from deblurd.gpu.fuser import GpuFuser
    from deblurd.gpu.handoff import DeviceAligner, RegistrarAligner
    from deblurd.gpu.registrar import GpuRegistrar
    from deblurd.imaging import linear_to_srgb

    rng = np.random.default_rng(13)
    h, w = 1080, 1920
    gray = mosaic(w, h)
    clean = np.dstack([gray, gray**1.3, 1 - 0.8 * gray]).astype(np.float32) ** np.float32(2.2)
    first = np.clip(clean + rng.normal(0, 0.01, clean.shape), 0, 1).astype(np.float32)
    frames = []
    for _ in range(3):
        moving = cv2.warpPerspective(
            clean,
            shake(rng, w, h),
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        noisy = np.clip(moving + rng.normal(0, 0.01, moving.shape), 0, 1).astype(np.float32)
        frames.append(linear_to_srgb(noisy))
    settings = FusionSettings(mode=mode)  # type: ignore[arg-type]
    fuser = GpuFuser(cuda_backend)
    runs = []
    for aligner in (
        RegistrarAligner(GpuRegistrar(RegistrationSettings(), cuda_backend)),
        DeviceAligner(GpuRegistrar(RegistrationSettings(), cuda_backend)),
    ):
        aligner.set_reference(first)
        job = fuser.job(first, settings)
        homographies = []
        for frame in frames:
            reg, aligned = aligner.align(frame)
            assert reg.accepted and aligned is not None, reg.reason
            homographies.append(reg.homography)
            job.add(aligned)
        runs.append((homographies, job.result()))
        aligner.close()
    (h_host, host), (h_dev, dev) = runs
    assert all(np.array_equal(a, b) for a, b in zip(h_host, h_dev, strict=True))
    assert np.array_equal(host.image, dev.image)
    assert np.array_equal(host.weight_sum, dev.weight_sum)
    assert host.frame_weights == dev.frame_weights
    fuser.close()


def test_out_of_memory_is_a_job_error_and_the_next_job_works(cuda_backend: Any) -> None:
    from deblurd.gpu.backend import GpuError
    from deblurd.gpu.registrar import GpuRegistrar

    reg = GpuRegistrar(RegistrationSettings(), cuda_backend)
    with pytest.raises(GpuError, match="out of GPU memory"):
        cuda_backend.buffer("oom/test", (1 << 40,), np.uint8)  # 1 TB
    ref = mosaic(1920, 1080)
    reg.set_reference(ref)
    assert reg.register(ref).accepted
    reg.close()
