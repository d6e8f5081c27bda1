"""The CUDA kernels (deblurd/gpu/*.cu) built for the CPU with cuda_host_emu.h, each
against the numpy/OpenCV reference it replaces, within the tolerances stated here.

Measured on this machine (x86-64, g++ 12, OpenCV 5.0): float pyrDown ≤ 1.2e-7 abs;
uint8 levels, Harris corners and persistence identical; Harris response ≤ 1e-6 of the
largest (3.8e-7 measured); LK tracks ≤ 5e-4 px from calcOpticalFlowPyrLK with the same
status; warp ≤ 1e-4 abs from cv2.warpPerspective (its 1/32-px position grid) and ≤ 3e-5
from exact float64 bilinear (float32 source coordinates); the valid mask differs from
fillConvexPoly's only on boundary pixels; fused images ≤ 3e-8 mean abs from the CPU fuser.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import pytest
from test_fusion_measured_noise import aligned, moving_patch_burst

from deblurd.evaluation.pairs import photo_gray, warp_to_moving
from deblurd.gpu.backend import grid_2d
from deblurd.gpu.emulation import EmulatedBackend
from deblurd.gpu.fuser import GpuFuser, area_taps, linear_taps
from deblurd.gpu.registrar import HARRIS_SCALE, GpuRegistrar, warp_on
from deblurd.imaging import F32, F64
from deblurd.pipeline.corners import harris_response
from deblurd.pipeline.fusion import AlignedFrame, FusionResult, fuse
from deblurd.pipeline.pyramid import tracking_pyramid
from deblurd.pipeline.registration import (
    OpenCVRegistrar,
    global_shift,
    track,
    valid_mask,
    warp_homography,
)
from deblurd.settings.fusion import FusionSettings
from deblurd.settings.registration import RegistrationSettings

skdata: Any = pytest.importorskip("skimage.data")


def noisy(rng: np.random.Generator, img: F32, sigma: float) -> F32:
    out: F32 = np.clip(img + rng.normal(0, sigma, img.shape), 0, 1).astype(np.float32)
    return out


def small_shake(rng: np.random.Generator, w: int, h: int) -> F64:
    a = math.radians(rng.uniform(-1, 1))
    c = np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]])
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    persp = np.eye(3)
    persp[2, :2] = rng.uniform(-5e-6, 5e-6, 2)
    shift = np.eye(3)
    shift[:2, 2] = rng.uniform(-8, 8, 2)
    out: F64 = shift @ c @ persp @ rot @ np.linalg.inv(c)
    return out


# --- pyramid ------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(120, 160), (121, 159)])
def test_float_pyr_down_matches_cv2_pyrdown(emu: EmulatedBackend, h: int, w: int) -> None:
    src = noisy(np.random.default_rng(0), np.zeros((h, w), np.float32) + 0.5, 0.2)
    dh, dw = (h + 1) // 2, (w + 1) // 2
    a = emu.upload_new("t/src", src)
    b = emu.buffer("t/dst", (dh, dw), np.float32)
    emu.launch(
        "pyr_down_f32", *grid_2d(dw, dh), a, np.int32(w), np.int32(h), b, np.int32(dw), np.int32(dh)
    )
    ref = cv2.pyrDown(src, dstsize=(dw, dh))
    assert np.abs(emu.download(b) - ref).max() <= 2e-7


def test_tracking_pyramid_is_bit_identical(emu: EmulatedBackend) -> None:
    """Float levels to the base, normalisation to uint8, uint8 levels above (odd size)."""
    photo = photo_gray("astronaut")[:501, :447]
    gray = noisy(np.random.default_rng(1), photo, 0.01) * np.float32(0.6)
    s = RegistrationSettings(tracking_max_side_px=256)
    reg = GpuRegistrar(s, emu)
    reg.set_reference(gray)
    assert reg.tracking_level == 1
    ours = [emu.download(reg._u8("ref", k)) for k in range(1, reg._top + 1)]
    theirs = tracking_pyramid(gray, reg._top, 1)
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    for o, t in zip(ours, theirs, strict=True):
        assert np.abs(o.astype(int) - t).max() <= 1
        assert np.mean(o != t) <= 1e-3


# --- Harris, NMS, persistence -------------------------------------------------------------


def test_harris_response_matches_cv2_cornerharris(emu: EmulatedBackend) -> None:
    img = (photo_gray("camera") * 255).astype(np.uint8)[:200, :260]
    h, w = img.shape
    a = emu.upload_new("t/u8", img)
    r = emu.buffer("t/resp", (h, w), np.float32)
    emu.launch(
        "harris_response",
        *grid_2d(w, h),
        a,
        np.int32(w),
        np.int32(h),
        np.float32(0.04),
        np.float32(HARRIS_SCALE),
        r,
    )
    ref = harris_response(img)
    assert np.abs(emu.download(r) - ref).max() <= 1e-5 * np.abs(ref).max()


def test_persistent_corners_are_the_opencv_registrars(emu: EmulatedBackend) -> None:
    gray = noisy(np.random.default_rng(2), photo_gray("astronaut"), 0.01)
    s = RegistrationSettings()
    gpu, cpu = GpuRegistrar(s, emu), OpenCVRegistrar(s)
    gpu.set_reference(gray)
    cpu.set_reference(gray)
    assert len(cpu.corners) >= 100
    assert gpu.corners.shape == cpu.corners.shape
    d = np.hypot(*(gpu.corners[:, None, :] - cpu.corners[None, :, :]).transpose(2, 0, 1))
    assert np.all(d.min(axis=1) <= 0.01)


@pytest.mark.parametrize("persistence", [2, 0])
def test_noise_corners_do_not_persist_but_corners_of_shapes_do(
    emu: EmulatedBackend, persistence: int
) -> None:
    """Blocks on the left, flat noise on the right (test_registration's scene)."""
    rng = np.random.default_rng(0)
    img = np.full((256, 512), 0.5, np.float32)
    for _ in range(25):
        x, y = int(rng.integers(20, 200)), int(rng.integers(20, 200))
        img[y : y + int(rng.integers(24, 48)), x : x + int(rng.integers(24, 48))] = rng.uniform(
            0.2, 0.8
        )
    img[:, :280] += rng.normal(0.0, 0.005, (256, 280)).astype(np.float32)
    img[:, 280:] += rng.normal(0.0, 0.05, (256, 232)).astype(np.float32)
    img = np.clip(img, 0.0, 1.0)
    s = RegistrationSettings(persistence_levels=persistence)
    gpu, cpu = GpuRegistrar(s, emu), OpenCVRegistrar(s)
    gpu.set_reference(img)
    cpu.set_reference(img)
    assert np.array_equal(gpu.corners, cpu.corners)
    if persistence:
        assert len(gpu.corners) >= 30 and (gpu.corners[:, 0] >= 275).sum() == 0
    else:
        assert (gpu.corners[:, 0] >= 275).mean() > 0.5


# --- Lucas–Kanade -------------------------------------------------------------------------


def test_lk_tracks_match_calcopticalflowpyrlk(emu: EmulatedBackend) -> None:
    rng = np.random.default_rng(4)
    clean = photo_gray("astronaut")
    h, w = clean.shape
    H = small_shake(rng, w, h)
    moving = noisy(rng, warp_to_moving(clean, H), 0.015)
    reg = GpuRegistrar(RegistrationSettings(), emu)
    reg.set_reference(noisy(rng, clean, 0.01))
    r = reg.register(moving)
    assert r.accepted, r.reason
    n = len(reg._corners)
    cap = reg.settings.max_corners
    fwd = emu.download(emu.buffer("reg/fwd", (cap, 2), np.float32))[:n]
    ok = emu.download(emu.buffer("reg/status_f", (cap,), np.uint8))[:n] != 0
    rp = [emu.download(reg._u8("ref", k)) for k in range(reg._top + 1)]
    fp = [emu.download(reg._u8("frm", k)) for k in range(reg._top + 1)]
    prior = global_shift(rp[-1], fp[-1], reg._window)
    ref_pts, ref_ok = track(rp, fp, reg._corners, 15, 20, 1e-3, prior=prior)
    assert np.mean(ok == ref_ok) >= 0.99
    both = ok & ref_ok
    assert np.hypot(*(fwd[both] - ref_pts[both]).T).max() <= 0.01
    # and against the truth: the reference corner p sits at H^-1 p in the moving frame
    truth = cv2.perspectiveTransform(
        reg._corners.reshape(-1, 1, 2).astype(np.float64), np.linalg.inv(H)
    ).reshape(-1, 2)
    assert float(np.median(np.hypot(*(fwd[ok] - truth[ok]).T))) <= 0.1


# --- warp -----------------------------------------------------------------------------------


def bilinear_replicate(img: F32, H: F64) -> F32:
    """Exact float64 bilinear warp with replicated border (the kernel's definition)."""
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    M = np.linalg.inv(H)
    z = M[2, 0] * xs + M[2, 1] * ys + M[2, 2]
    u = np.clip((M[0, 0] * xs + M[0, 1] * ys + M[0, 2]) / z, -1, w)
    v = np.clip((M[1, 0] * xs + M[1, 1] * ys + M[1, 2]) / z, -1, h)
    x0, y0 = np.floor(u).astype(int), np.floor(v).astype(int)
    a, b = (u - x0)[..., None], (v - y0)[..., None]
    xa, xb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    ya, yb = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    im = img.reshape(h, w, -1).astype(np.float64)
    out = (im[ya, xa] * (1 - a) + im[ya, xb] * a) * (1 - b) + (
        im[yb, xa] * (1 - a) + im[yb, xb] * a
    ) * b
    res: F32 = out.reshape(img.shape).astype(np.float32)
    return res


@pytest.mark.parametrize("channels", [None, 3])
def test_warp_matches_warpperspective_and_valid_mask(
    emu: EmulatedBackend, channels: int | None
) -> None:
    rng = np.random.default_rng(5)
    g = photo_gray("astronaut")[:300, :380]
    img = g if channels is None else np.dstack([g, g**2, 1 - g]).astype(np.float32)
    h, w = g.shape
    H = small_shake(rng, w, h)
    warped, valid = warp_on(emu, img, H)
    ref, ref_valid = warp_homography(img, H)
    assert warped.shape == img.shape and warped.dtype == np.float32
    assert np.abs(warped - ref).max() <= 2e-3
    assert np.abs(warped - ref).mean() <= 1e-5
    assert np.abs(warped - bilinear_replicate(img, H)).max() <= 1e-4
    # valid: the same quadrilateral, rasterised differently only on its boundary
    differ = valid != ref_valid
    assert differ.sum() <= 2 * (h + w)
    assert np.array_equal(ref_valid, valid_mask(H, (h, w)))
    inner = cv2.erode(ref_valid, np.ones((3, 3), np.uint8))
    outer = cv2.dilate(ref_valid, np.ones((3, 3), np.uint8))
    assert not np.any(differ & (inner == 1)) and not np.any(differ & (outer == 0))


# --- fusion ---------------------------------------------------------------------------------


def test_resize_tables_reproduce_cv2_resize() -> None:
    rng = np.random.default_rng(6)
    for h, w in ((40, 60), (41, 59)):
        src = rng.random((h, w)).astype(np.float32)
        h2, w2 = (h + 1) // 2, (w + 1) // 2
        (xi, xw), (yi, yw) = area_taps(w, w2), area_taps(h, h2)
        rows = (src[:, xi] * xw).sum(axis=2)
        area = (rows[yi] * yw[..., None]).sum(axis=1)
        ref = cv2.resize(src, (w2, h2), interpolation=cv2.INTER_AREA)
        assert np.abs(area - ref).max() <= 1e-6
        half = ref
        (lx, la), (ly, lb) = linear_taps(w2, w), linear_taps(h2, h)
        lx1, ly1 = np.minimum(lx + 1, w2 - 1), np.minimum(ly + 1, h2 - 1)
        t0 = half[ly][:, lx] * (1 - la) + half[ly][:, lx1] * la
        t1 = half[ly1][:, lx] * (1 - la) + half[ly1][:, lx1] * la
        up = t0 * (1 - lb)[:, None] + t1 * lb[:, None]
        ref_up = cv2.resize(half, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.abs(up - ref_up).max() <= 1e-6


def fusion_case(h: int, w: int, seed: int) -> tuple[F32, list[AlignedFrame]]:
    """A reference and 4 aligned frames: a partial valid mask, a moving subject, another
    exposure, a blurry frame with a lower frame weight."""
    rng = np.random.default_rng(seed)
    clean = (cv2.resize(np.asarray(skdata.astronaut()), (w, h)).astype(np.float32) / 255) ** 2.2
    sig = 0.02
    ref = np.clip(clean + rng.normal(0, sig, clean.shape), 0, 1).astype(np.float32)
    frames = []
    for i in range(4):
        x = clean.copy()
        if i == 1:
            x[h // 4 : h // 2, w // 4 : w // 2] = np.roll(clean, 30, axis=1)[
                h // 4 : h // 2, w // 4 : w // 2
            ]
        if i == 2:
            x = x * np.float32(0.8)
        if i == 3:
            x = np.asarray(cv2.GaussianBlur(x, (0, 0), 2.0), np.float32)
        x = np.clip(x + rng.normal(0, sig, x.shape), 0, 1).astype(np.float32)
        valid = np.ones((h, w), np.float32)
        if i == 0:
            valid[:, :13] = 0
            valid[:7] = 0
        frames.append(AlignedFrame(np.asarray(x, np.float32), valid, 0.6 if i == 3 else 1.0))
    return ref, frames


def assert_fusers_agree(cpu: FusionResult, gpu: FusionResult) -> None:
    """The GPU fuser's result is the CPU fuser's, within the parity tolerances."""
    assert gpu.image.shape == cpu.image.shape and gpu.image.dtype == np.float32
    assert float(np.abs(gpu.image - cpu.image).mean()) <= 1e-5  # target: 1/255
    assert float(np.abs(gpu.weight_sum - cpu.weight_sum).max()) <= 1e-4
    assert np.allclose(gpu.frame_weights, cpu.frame_weights, atol=1e-5)
    assert gpu.noise_model == cpu.noise_model
    assert gpu.noise_factor == pytest.approx(cpu.noise_factor, rel=1e-5)


@pytest.mark.parametrize("calibrate_detail", [True, False])
@pytest.mark.parametrize("mode", ["reference", "sequential"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"robust": False},
        {"calibrate_noise": False, "detail_guard": False},
        {"match_exposure": False, "reject_grow_px": 0, "weight_smooth_px": 0.0},
    ],
)
def test_fused_image_matches_the_cpu_fuser(
    emu: EmulatedBackend, mode: str, options: dict[str, Any], calibrate_detail: bool
) -> None:
    ref, frames = fusion_case(121, 163, 7)  # odd: the general area-resize path
    settings = FusionSettings(mode=mode, calibrate_detail=calibrate_detail, **options)  # type: ignore[arg-type]
    cpu = fuse(ref, frames, settings)
    gpu = GpuFuser(emu).fuse(ref, frames, settings)
    assert_fusers_agree(cpu, gpu)


def correlated_noise_case() -> tuple[F32, list[AlignedFrame]]:
    """test_fusion_measured_noise's ISP burst (spatially correlated noise: the detail
    test's measured factor is well below the motion test's) with a textured object moving
    6 px per frame, whose edges the detail test judges."""
    _gt, ref, moved = moving_patch_burst()
    return ref, aligned(moved)


@pytest.mark.parametrize("calibrate_detail", [True, False])
@pytest.mark.parametrize("mode", ["reference", "sequential"])
def test_fused_image_matches_the_cpu_fuser_on_correlated_noise(
    emu: EmulatedBackend, mode: str, calibrate_detail: bool
) -> None:
    ref, frames = correlated_noise_case()
    settings = FusionSettings(mode=mode, calibrate_detail=calibrate_detail)  # type: ignore[arg-type]
    cpu = fuse(ref, frames, settings)
    job = GpuFuser(emu).job(ref, settings)
    for frame in frames:
        job.add(frame)
    assert_fusers_agree(cpu, job.result())
    cal = job._guide.calibrator
    assert cal.least is not None
    if not calibrate_detail:
        assert cal.least_detail is None
        return
    # the premise: the detail test's own factor differs from the motion test's, and
    # changes the fused result far beyond the parity tolerances
    assert cal.least_detail is not None
    assert np.all(cal.least_detail < 0.9 * cal.least)
    other = fuse(ref, frames, settings.model_copy(update={"calibrate_detail": False}))
    assert float(np.abs(other.image - cpu.image).mean()) > 10 * 1e-5
    assert float(np.abs(other.weight_sum - cpu.weight_sum).max()) > 0.5


def test_fusion_rejects_the_moving_subject_like_the_cpu(emu: EmulatedBackend) -> None:
    ref, frames = fusion_case(120, 160, 8)
    settings = FusionSettings()
    gpu = GpuFuser(emu).fuse(ref, frames, settings)
    # frame 1 moved a block: its weight there is ~0, so that block's weight sum stays low
    block = gpu.weight_sum[40:50, 50:70]
    assert float(block.mean()) < float(gpu.weight_sum[80:, 100:].mean()) - 0.5
