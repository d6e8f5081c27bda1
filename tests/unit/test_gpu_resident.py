"""The device-resident handoff on the host-emulated kernels: the two conversion kernels
bit-identical to deblurd.imaging, the resident registration and warp identical to the
host round trip, resident fusion identical to fusing host frames, and the checks that
keep a device frame from being fused when it is not (or no longer) what it claims.

Tolerance throughout: exact (np.array_equal). The resident path runs the same kernels
on bit-identical inputs, so nothing may differ.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from deblurd.errors import ImageError, RegistrationError
from deblurd.evaluation.pairs import handheld_homography
from deblurd.gpu import resident
from deblurd.gpu.backend import GpuError, grid_2d
from deblurd.gpu.emulation import EmulatedBackend
from deblurd.gpu.fuser import GpuFuser
from deblurd.gpu.handoff import DeviceAligner
from deblurd.gpu.registrar import GpuRegistrar
from deblurd.gpu.resident import (
    KNOWN_GRAY_FORMULAS,
    DeviceAlignedFrame,
    gray_into,
    gray_probe,
    linear_into,
    opencv_gray_formula,
)
from deblurd.imaging import F32, U8, linear_to_srgb, srgb_to_linear, to_gray
from deblurd.pipeline.fusion import AlignedFrame, fuse_sequential, fuse_to_reference
from deblurd.pipeline.stage4 import CpuFusionJob, RegistrarAligner
from deblurd.settings.fusion import FusionSettings
from deblurd.settings.registration import RegistrationSettings

skdata: Any = pytest.importorskip("skimage.data")
pytestmark = pytest.mark.usefixtures("emulation_compiler")

S = RegistrationSettings()


def all_rgb_triples() -> U8:
    """Every uint8 RGB triple once: ``(4096, 4096, 3)``."""
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8)
    return rgb.reshape(4096, 4096, 3)


# --- the conversion kernels -----------------------------------------------------------------


def test_opencv_gray_formula_is_found_and_exact_on_every_triple() -> None:
    formula = opencv_gray_formula()
    assert formula is not None, f"OpenCV {cv2.__version__}: RGB2GRAY formula not among the known"
    rgb = all_rgb_triples()
    assert np.array_equal(formula.apply(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    # the probe tells the known formulas apart (each other one fails it)
    probe = gray_probe()
    got = cv2.cvtColor(probe, cv2.COLOR_RGB2GRAY)
    others = [f for f in KNOWN_GRAY_FORMULAS if f != formula]
    assert others and all(np.count_nonzero(f.apply(probe) != got) >= 20 for f in others)


def test_gray_kernel_is_bit_identical_to_to_gray(emu: EmulatedBackend) -> None:
    rng = np.random.default_rng(0)
    images = [all_rgb_triples()] + [
        rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((1, 1), (37, 53), (240, 321))
    ]
    for img in images:
        buf = emu.upload_new("t/frame", img)
        out = emu.download(gray_into(emu, buf, img, "t/gray"))
        ref = to_gray(img)
        assert out.dtype == np.float32 and out.shape == img.shape[:2]
        assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))  # bit for bit


def test_linear_kernel_is_bit_identical_to_srgb_to_linear(
    emu: EmulatedBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    emu.release(resident.LUT_KEY)
    uploaded: list[str] = []
    upload = emu.upload
    monkeypatch.setattr(
        emu,
        "upload",
        lambda buf, host: (
            uploaded.append("lut" if buf is emu._pool.get(resident.LUT_KEY) else "frame"),
            upload(buf, host),
        ),
    )
    for img in (codes, rng.integers(0, 256, (121, 163, 3), dtype=np.uint8)):
        src = emu.upload_new("t/frame", img)
        dst = emu.buffer("t/lin", img.shape, np.float32)
        linear_into(emu, src, dst)
        out, ref = emu.download(dst), srgb_to_linear(img)
        assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))
    assert uploaded == ["frame", "lut", "frame"]  # the table once, for every frame after
    with pytest.raises(GpuError, match="linear_into"):
        linear_into(emu, src, emu.buffer("t/bad", (121, 163), np.float32))


# --- registration and warp: resident against the host round trip ----------------------------


def rgb_scene(w: int = 1280, h: int = 720) -> F32:
    """Linear RGB in [0, 1] (astronaut, resized: tracking level 1 at 1280 px)."""
    img = cv2.resize(
        np.asarray(skdata.astronaut(), np.uint8), (w, h), interpolation=cv2.INTER_CUBIC
    )
    out: F32 = srgb_to_linear(img)
    return out


def frames(n: int, seed: int = 3) -> tuple[U8, list[U8]]:
    """A reference and ``n`` shaken, noisy uint8 sRGB frames of :func:`rgb_scene`."""
    rng = np.random.default_rng(seed)
    clean = rgb_scene()
    h, w = clean.shape[:2]

    def shot(img: F32) -> U8:
        noisy = np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1).astype(np.float32)
        return linear_to_srgb(noisy)

    moving = []
    for _ in range(n):
        H = handheld_homography(rng, w, h)
        warped = cv2.warpPerspective(
            clean,
            H,
            (w, h),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT,
        )
        moving.append(shot(np.asarray(warped, np.float32)))
    return shot(clean), moving


def test_resident_registration_and_warp_equal_the_host_round_trip() -> None:
    ref, (mov,) = frames(1)
    host_b, dev_b = EmulatedBackend(), EmulatedBackend()  # one registrar each: own pools
    host, dev = GpuRegistrar(S, host_b), GpuRegistrar(S, dev_b)
    host.set_reference(to_gray(ref))
    dev.set_reference_frame(ref)
    assert host.tracking_level == dev.tracking_level == 1
    assert np.array_equal(host.corners, dev.corners) and len(dev.corners) >= 100
    a, b = host.register(to_gray(mov)), dev.register_frame(mov)
    assert a.accepted and b.accepted, (a.reason, b.reason)
    assert np.array_equal(a.homography, b.homography)
    assert (a.tracked, a.inliers, a.residual_px) == (b.tracked, b.inliers, b.residual_px)
    assert set(dev.stage_ms) == {"pyramid", "lk", "homography", "refine"}
    for k in range(dev.tracking_level, dev._top + 1):
        assert np.array_equal(
            host_b.download(host._u8("frm", k)), dev_b.download(dev._u8("frm", k))
        )
    warped, valid = host.warp(srgb_to_linear(mov), a)
    aligned = dev.warp_resident(b, 0.5)
    assert aligned.weight == 0.5 and aligned.lease is not None and aligned.lease.alive
    assert aligned.image.shape == (*mov.shape[:2], 3) and aligned.valid.shape == mov.shape[:2]
    assert np.array_equal(dev_b.download(aligned.image), warped)
    assert np.array_equal(dev_b.download(aligned.valid), valid)
    assert set(dev.stage_ms) == {"warp"}
    dev.close()
    assert not aligned.lease.alive and not dev_b.owns(aligned.image)


def test_unknown_gray_formula_falls_back_to_a_host_conversion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref, (mov,) = frames(1, seed=4)
    a_b, b_b = EmulatedBackend(), EmulatedBackend()
    on_device, fallback = GpuRegistrar(S, a_b), GpuRegistrar(S, b_b)
    on_device.set_reference_frame(ref)
    a = on_device.register_frame(mov)
    monkeypatch.setattr(resident, "opencv_gray_formula", lambda: None)
    uploads: list[tuple[int, ...]] = []
    upload = b_b.upload
    monkeypatch.setattr(
        b_b, "upload", lambda buf, host: (uploads.append(buf.shape), upload(buf, host))
    )
    fallback.set_reference_frame(ref)
    uploads.clear()
    b = fallback.register_frame(mov)
    assert np.array_equal(a.homography, b.homography) and a.inliers == b.inliers
    h, w = mov.shape[:2]
    assert uploads == [(h, w, 3), (h, w)]  # the frame, and its gray from the host


def test_resident_registrar_refuses_what_it_cannot_process(emu: EmulatedBackend) -> None:
    ref, (mov,) = frames(1, seed=5)
    reg = GpuRegistrar(S, emu)
    with pytest.raises(RegistrationError, match="before set_reference"):
        reg.register_frame(mov)
    with pytest.raises(RegistrationError, match="uint8"):
        reg.set_reference_frame(ref.astype(np.float32))
    with pytest.raises(RegistrationError, match="uint8"):
        reg.set_reference_frame(ref[..., 0])
    reg.set_reference_frame(ref)
    r = reg.register(to_gray(mov))
    with pytest.raises(RegistrationError, match="register_frame"):
        reg.warp_resident(r)  # the frame buffer holds no registered frame
    with pytest.raises(RegistrationError, match="reference is"):
        reg.register_frame(mov[:-2])
    with pytest.raises(RegistrationError, match="smaller than"):
        reg.set_reference_frame(mov[:20])
    reg.close()


# --- fusion: device frames ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reference", "sequential"])
def test_resident_stream_fuses_exactly_like_the_host_round_trip(mode: str) -> None:
    ref, moving = frames(3, seed=6)
    first = srgb_to_linear(ref)
    settings = FusionSettings(mode=mode)  # type: ignore[arg-type]
    results = []
    for resident_path in (False, True):
        b = EmulatedBackend()
        gpu = GpuRegistrar(S, b)
        aligner = DeviceAligner(gpu) if resident_path else RegistrarAligner(gpu)
        aligner.set_reference(first)
        job = GpuFuser(b).job(first, settings)
        kinds = []
        for i, frame in enumerate(moving):
            reg, aligned = aligner.align(frame, 1.0 - 0.2 * i)
            assert reg.accepted and aligned is not None, reg.reason
            kinds.append(type(aligned))
            job.add(aligned)
        assert kinds == [DeviceAlignedFrame if resident_path else AlignedFrame] * 3
        results.append(job.result())
    host, dev = results
    assert np.array_equal(host.image, dev.image)
    assert np.array_equal(host.weight_sum, dev.weight_sum)
    assert host.frame_weights == dev.frame_weights and len(dev.frame_weights) == 3
    assert min(dev.frame_weights) > 0.5


def test_device_frames_are_checked_before_fusion() -> None:
    ref, moving = frames(2, seed=7)
    first = srgb_to_linear(ref)
    b, other = EmulatedBackend(), EmulatedBackend()
    gpu = GpuRegistrar(S, b)
    aligner = DeviceAligner(gpu)
    aligner.set_reference(first)
    job = GpuFuser(b).job(first, FusionSettings(mode="reference"))
    _r1, f1 = aligner.align(moving[0])
    _r2, f2 = aligner.align(moving[1])
    assert isinstance(f1, DeviceAlignedFrame) and isinstance(f2, DeviceAlignedFrame)
    with pytest.raises(GpuError, match="overwritten by a later warp"):
        job.add(f1)  # its buffers now hold frame 2
    h, w = ref.shape[:2]
    foreign = other.buffer("x/img", (h, w, 3), np.float32)
    with pytest.raises(GpuError, match="not live buffers"):
        job.add(DeviceAlignedFrame(foreign, f2.valid))
    with pytest.raises(ImageError, match="device image"):
        job.add(DeviceAlignedFrame(b.buffer("x/small", (h, w - 1, 3), np.float32), f2.valid))
    with pytest.raises(ImageError, match="valid mask"):
        job.add(DeviceAlignedFrame(f2.image, b.buffer("x/u8", (h, w), np.uint8)))
    with pytest.raises(ImageError, match="frame weight"):
        job.add(DeviceAlignedFrame(f2.image, f2.valid, -1.0))
    with pytest.raises(ImageError, match="host AlignedFrames"):
        CpuFusionJob(first, FusionSettings()).add(f2)
    assert job.add(f2) > 0.5  # the live frame fuses
    gpu.warp(srgb_to_linear(moving[0]), _r1)  # a host warp reuses the buffers too
    with pytest.raises(GpuError, match="overwritten"):
        job.add(f2)
    b.release("reg/")
    with pytest.raises(GpuError, match="not live buffers"):
        job.add(DeviceAlignedFrame(f2.image, f2.valid))  # freed


# --- the CPU streaming job ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reference", "sequential"])
def test_cpu_streaming_job_is_bit_identical_to_the_fuse_functions(mode: str) -> None:
    rng = np.random.default_rng(8)
    h, w = 96, 130
    clean = rng.random((h, w, 3)).astype(np.float32) * 0.8 + 0.1
    ref = np.clip(clean + rng.normal(0, 0.02, clean.shape), 0, 1).astype(np.float32)
    aligned = []
    for i in range(4):
        x = clean * np.float32(0.9 if i == 2 else 1.0)
        x = np.clip(x + rng.normal(0, 0.02, x.shape), 0, 1).astype(np.float32)
        valid = np.ones((h, w), np.float32)
        valid[:, : 5 * i] = 0
        aligned.append(AlignedFrame(x, valid, (1.0, 0.0, 0.7, 1.0)[i]))
    settings = FusionSettings(mode=mode)  # type: ignore[arg-type]
    fn = fuse_to_reference if mode == "reference" else fuse_sequential
    want = fn(ref, aligned, settings)
    job = CpuFusionJob(ref, settings)
    means = [job.add(f) for f in aligned]
    got = job.result()
    assert np.array_equal(got.image, want.image)
    assert np.array_equal(got.weight_sum, want.weight_sum)
    assert got.frame_weights == want.frame_weights == means
    assert got.noise_model == want.noise_model


def test_gray_kernel_launch_matches_the_formula_on_odd_grids(emu: EmulatedBackend) -> None:
    """The kernel's own bounds: grids larger than the image write nothing outside it."""
    formula = opencv_gray_formula()
    assert formula is not None
    img = np.random.default_rng(9).integers(0, 256, (17, 19, 3), dtype=np.uint8)
    src = emu.upload_new("t/f17", img)
    dst = emu.upload_new("t/g17", np.full((20, 19), -1.0, np.float32))  # 3 spare rows
    emu.launch(
        "rgb8_to_gray",
        *grid_2d(19, 17),
        src,
        np.int32(19),
        np.int32(17),
        np.int32(formula.r),
        np.int32(formula.g),
        np.int32(formula.b),
        np.int32(formula.shift),
        resident.GRAY_SCALE,
        dst,
    )
    out = emu.download(dst)
    assert np.array_equal(out[:17], to_gray(img)) and np.all(out[17:] == -1.0)
