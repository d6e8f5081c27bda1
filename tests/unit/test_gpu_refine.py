"""The CUDA path's dense fallback and local refinement on the host-emulated kernels, against
the CPU path on test_refine's scenarios: a rolling-shutter bend the corners' homography
leaves (refined), one too strong for the corners (the dense fallback, then refined), a
blurred reference whose corners the sharp frame cannot follow (the dense fallback), and
unrelated or flat frames (still rejected, for the same reasons). The decisions are the same
(the fallback and the refinement are the CPU registrar's code, on the same host gray), and
the warp kernel ``warp_map`` reproduces ``refine.warp_with_residual`` to float rounding."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from test_refine import H, W, err, rolling_shutter, texture

from deblurd.evaluation.pairs import grid_error
from deblurd.gpu.emulation import EmulatedBackend
from deblurd.gpu.handoff import DeviceAligner
from deblurd.gpu.registrar import GpuRegistrar, warp_on
from deblurd.imaging import F32, linear_to_srgb, srgb_to_linear
from deblurd.pipeline.refine import warp_with_residual
from deblurd.pipeline.registration import OpenCVRegistrar, warp_homography
from deblurd.pipeline.stage4 import RegistrarAligner
from deblurd.settings.registration import RegistrationSettings

S = RegistrationSettings()
SHIFT = np.array([[1.0, 0.0, 7.5], [0.0, 1.0, -4.0], [0.0, 0.0, 1.0]])


def rgb(gray: F32) -> F32:
    out: F32 = np.dstack([gray, gray**1.5, 1.0 - gray]).astype(np.float32)
    return out


def shifted(ref: F32) -> F32:
    out, _ = warp_homography(ref, np.linalg.inv(SHIFT))
    return out


# name: (reference, moving frame, accepted, method, refined)
SCENARIOS: dict[str, tuple[Callable[[], tuple[F32, F32]], bool, str, bool]] = {
    "rolling shutter": (
        lambda: (texture(4), rolling_shutter(texture(4), 6.0)),
        True,
        "corners",
        True,
    ),
    "corners fail, dense flow works": (
        lambda: (texture(5), rolling_shutter(texture(5), 20.0)),
        True,
        "dense",
        True,
    ),
    "blurred reference": (
        lambda: (cv2.GaussianBlur(texture(5), (0, 0), 4.0), shifted(texture(5))),
        True,
        "dense",
        False,
    ),
    "unrelated": (lambda: (texture(6), texture(7)), False, "corners", False),
    "flat": (lambda: (texture(6), np.full((H, W), 0.5, np.float32)), False, "corners", False),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_gpu_registration_and_warp_match_the_cpu_path(emu: EmulatedBackend, name: str) -> None:
    make, accepted, method, refined = SCENARIOS[name]
    ref, moving = make()
    cpu, gpu = OpenCVRegistrar(S), GpuRegistrar(S, emu)
    cpu.set_reference(ref)
    gpu.set_reference(ref)
    c, g = cpu.register(moving), gpu.register(moving)
    assert (g.accepted, g.method, g.residual is not None) == (accepted, method, refined), g.reason
    assert (c.accepted, c.method, c.reason) == (g.accepted, g.method, g.reason)
    assert abs(c.tracked - g.tracked) <= 2 and abs(c.inliers - g.inliers) <= 2
    assert grid_error(c.homography, g.homography, W, H) <= 0.02
    assert set(gpu.stage_ms) == set(cpu.stage_ms)
    if refined:
        assert c.residual is not None and g.residual is not None
        assert float(np.abs(c.residual - g.residual).max()) <= 0.01
    if not accepted:
        return
    image = rgb(moving)
    a, va = cpu.warp(image, c)
    b, vb = gpu.warp(image, g)
    assert float(np.abs(a - b).mean()) <= 1e-5 and float(np.abs(a - b).max()) <= 0.05
    assert int((va != vb).sum()) <= 2 * (H + W)
    if refined:  # and the refinement is what brings it onto the reference
        plain, _ = gpu.warp(image, dataclasses.replace(g, residual=None))
        assert err(b[..., 0], ref) < 0.5 * err(plain[..., 0], ref)
    gpu.close()


@pytest.mark.parametrize(("shape", "grid"), [((360, 480), (360, 480)), ((361, 479), (97, 131))])
def test_warp_map_reproduces_warp_with_residual(
    emu: EmulatedBackend, shape: tuple[int, int], grid: tuple[int, int]
) -> None:
    """The kernel against the CPU warp on the same homography and residual field, at the
    full resolution and on a coarser, non-integer grid (the map upsampled on the device)."""
    rng = np.random.default_rng(0)
    h, w = shape
    gray = np.asarray(cv2.resize(texture(3), (w, h)), np.float32)
    field = rng.normal(0, 3, (6, 8, 2)).astype(np.float32)
    residual = np.asarray(cv2.resize(field, grid[::-1], interpolation=cv2.INTER_CUBIC), np.float32)
    Hm = np.array([[1.0, 0.002, 3.37], [-0.002, 1.0, -2.21], [1e-6, 0.0, 1.0]])
    for image in (gray, rgb(gray)):
        got, valid = warp_on(emu, image, Hm, residual=residual)
        want, want_valid = warp_with_residual(image, Hm, residual)
        assert got.shape == image.shape and got.dtype == np.float32
        assert float(np.abs(got - want).max()) <= 1e-6
        assert np.array_equal(valid, want_valid)


def test_resident_path_refines_as_the_host_paths() -> None:
    """uint8 frames through the device-resident aligner (the gray for the dense flow
    derived on the host from the same frame, the residual map uploaded, the frame warped
    where it lies) against the same registrar fed from the host (exactly) and the CPU
    aligner (within the parity tolerance)."""
    ref_g = texture(5)
    first = srgb_to_linear(linear_to_srgb(rgb(ref_g)))
    frames = [linear_to_srgb(rgb(rolling_shutter(ref_g, s))) for s in (6.0, 20.0)]
    dev_b, host_b = EmulatedBackend(), EmulatedBackend()
    device = DeviceAligner(GpuRegistrar(S, dev_b))
    host = RegistrarAligner(GpuRegistrar(S, host_b))
    cpu = RegistrarAligner(OpenCVRegistrar(S))
    for aligner in (device, host, cpu):
        aligner.set_reference(first)
    methods = []
    for frame in frames:
        (rd, ad), (rh, ah), (rc, ac) = (a.align(frame) for a in (device, host, cpu))
        assert rd.accepted and rd.residual is not None, rd.reason
        assert rh.residual is not None and rc.residual is not None
        methods.append(rd.method)
        assert np.array_equal(rd.homography, rh.homography)
        assert np.array_equal(rd.residual, rh.residual)
        assert np.array_equal(dev_b.download(ad.image), ah.image)
        assert np.array_equal(dev_b.download(ad.valid), ah.valid)
        assert (rd.method, rd.reason) == (rc.method, rc.reason)
        assert grid_error(rd.homography, rc.homography, W, H) <= 0.02
        diff = np.abs(ah.image - ac.image)
        assert float(diff.mean()) <= 1e-5 and float(diff.max()) <= 0.05
        plain, _ = warp_homography(srgb_to_linear(frame)[..., 0], rd.homography)
        assert err(ah.image[..., 0], first[..., 0]) < 0.5 * err(plain, first[..., 0])
    assert methods == ["corners", "dense"]
    device.close()
    host.close()


def test_without_refinement_the_gpu_registrar_fits_corners_only(emu: EmulatedBackend) -> None:
    off = RegistrationSettings(refine=False, dense_fallback=False)
    ref = texture(5)
    gpu = GpuRegistrar(off, emu)
    gpu.set_reference(ref)
    assert "refine" not in gpu.stage_ms
    reg = gpu.register(rolling_shutter(ref, 20.0))
    assert reg.method == "corners" and reg.residual is None
    assert "refine" not in gpu.stage_ms
    gpu.close()
