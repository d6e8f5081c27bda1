"""The whole stage 4 through ``process_burst`` with ``registration.backend = "emulated"``:
what crosses between host and device per second frame (counted on a wrapped emulated
backend), the result against the OpenCV path, and the factory's streaming interfaces."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from deblurd.gpu import backend as backend_mod
from deblurd.gpu.backend import Buffer
from deblurd.gpu.emulation import EmulatedBackend
from deblurd.gpu.factory import open_aligner, open_fusion_job, stage4_for
from deblurd.gpu.fuser import GpuSequentialFuser
from deblurd.gpu.handoff import DeviceAligner
from deblurd.gpu.registrar import GpuRegistrar
from deblurd.pipeline.fusion import AlignedFrame
from deblurd.pipeline.process import ProcessResult, process_burst
from deblurd.pipeline.pyramid import coarsest_level, tracking_level
from deblurd.pipeline.registration import OpenCVRegistrar
from deblurd.pipeline.stage4 import CpuFusionJob, RegistrarAligner
from deblurd.settings.fusion import FusionSettings
from deblurd.settings.models import DeblurdSettings
from deblurd.sim.burst import SimParams, simulate_burst

pytestmark = pytest.mark.usefixtures("emulation_compiler")

Transfer = tuple[str, str, tuple[int, ...], int]  # (up/down, pool key, shape, bytes)


class CountingBackend(EmulatedBackend):
    """The emulated backend, recording every transfer with the pool key of its buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[Transfer] = []

    def _key(self, buf: Buffer) -> str:
        return next((k for k, b in self._pool.items() if b is buf), "?")

    def upload(self, buf: Buffer, host: npt.NDArray[np.generic]) -> None:
        self.log.append(("up", self._key(buf), buf.shape, buf.nbytes))
        super().upload(buf, host)

    def download(self, buf: Buffer) -> npt.NDArray[np.generic]:
        self.log.append(("down", self._key(buf), buf.shape, buf.nbytes))
        return super().download(buf)


def settings_for(backend: str, mode: str = "reference", refine: bool = False) -> DeblurdSettings:
    s = DeblurdSettings()
    # model_copy: "emulated" is no value of the settings literal (tests and CI only).
    # The U-Net passes are off: these tests compare registration and fusion backends.
    # The local refinement and the dense fallback (both backends run them, on the host:
    # test_gpu_refine) are off unless ``refine``: the transfer counts are those of frames
    # the corners' homography registers.
    return s.model_copy(
        update={
            "inference": s.inference.model_copy(update={"passes": "off"}),
            "registration": s.registration.model_copy(
                update={"backend": backend, "refine": refine, "dense_fallback": refine}
            ),
            "fusion": s.fusion.model_copy(update={"mode": mode}),
        }
    )


def attempted(result: ProcessResult) -> int:
    """Second frames that reached registration (passed the blur gate)."""
    rep = result.report
    return len(rep.used) + sum(r.reason.startswith("registration") for r in rep.rejected)


@pytest.mark.parametrize("mode", ["reference", "sequential"])
def test_each_second_frame_is_uploaded_once_and_nothing_full_size_comes_back(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    w, h = 640, 480
    sim = simulate_burst(SimParams(width=w, height=h, ring_frames=7, seed=1), None)
    counting = CountingBackend()
    monkeypatch.setitem(backend_mod._shared, "emulated", counting)
    settings = settings_for("emulated", mode)
    result = process_burst(sim.burst, settings, stage4=stage4_for(settings.registration))
    log = counting.log
    n = attempted(result)
    assert len(result.report.used) >= 3 and n >= 3
    frame_bytes = h * w * 3

    # The uint8 frames: the reference's (once per job), then one per second frame.
    at = [i for i, t in enumerate(log) if t[:2] == ("up", "reg/frame")]
    assert len(at) == 1 + n
    assert all(log[i][2:] == ((h, w, 3), frame_bytes) for i in at)
    # What the host round trip moved and the resident path never does.
    moved = {t[:2] for t in log}
    assert not moved & {
        ("up", "reg/in"),
        ("up", "reg/warp/src"),
        ("up", "fuse/img"),
        ("up", "fuse/valid"),
        ("down", "reg/warp/dst"),
        ("down", "reg/warp/valid"),
    }
    # The result: the last two transfers, the only full-size downloads after the reference.
    result_keys = ("fuse/out", "fuse/wsum") if mode == "reference" else ("fuse/acc", "fuse/wsum")
    assert [t[1] for t in log[-2:]] == list(result_keys)
    assert [t[2][:2] for t in log[-2:]] == [(h, w), (h, w)]

    s = settings_for("emulated").registration
    base = tracking_level((h, w), s.tracking_max_side_px, s.levels)
    small = {
        f"reg/frm/u8/{coarsest_level(s.levels, base)}",
        "reg/fwd",
        "reg/back",
        "reg/status_f",
        "reg/status_b",
        "fuse/exp_d",
        "fuse/exp_v",
        "fuse/cal_d",
        "fuse/cal_v",
        "fuse/cal_r",
        "fuse/rows",
    }
    ends = [*at[2:], len(log) - 2]
    per_frame = []
    for start, end in zip(at[1:], ends, strict=True):  # one segment per second frame
        seg = log[start:end]
        ups = [t for t in seg if t[0] == "up"]
        downs = [t for t in seg if t[0] == "down"]
        # exactly one full-frame upload: the frame; the rest are tables of < 2 kB
        assert [t for t in ups if t[3] >= h * w] == [ups[0]] and ups[0][1] == "reg/frame"
        assert sum(t[3] for t in ups[1:]) <= 2048, ups
        # downloads: coarsest level, tracked points, sample grids, row sums; none full size
        assert {t[1] for t in downs} <= small, downs
        assert all(t[2][:2] != (h, w) for t in downs), downs
        per_frame.append((sum(t[3] for t in ups), sum(t[3] for t in downs)))
    assert len(per_frame) == n
    assert all(up <= frame_bytes + 2048 for up, _down in per_frame), per_frame


def test_emulated_process_burst_matches_opencv() -> None:
    """The end-to-end tolerances of test_cli_process (never worse than the selected
    frame, clearly better on average) and agreement with the OpenCV path: the same frames
    fused and rejected, images within a few hundredths of a code on average (the warp's
    exact bilinear weights against OpenCV's 1/32-px grid: measured ≤ 0.022 codes mean,
    0.42 % of pixels off by more than one code)."""
    crop = (slice(16, -16), slice(16, -16))

    def mse(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
        return float(np.mean((a[crop].astype(np.float64) - b[crop]) ** 2))

    ratios: dict[str, list[float]] = {"opencv": [], "emulated": []}
    for seed in range(4):
        sim = simulate_burst(SimParams(width=320, height=240, ring_frames=7, seed=seed), None)
        for mode, refine in (("reference", True), ("sequential", False)):
            cpu = process_burst(sim.burst, settings_for("opencv", mode, refine))
            emu_settings = settings_for("emulated", mode, refine)
            emu = process_burst(
                sim.burst, emu_settings, stage4=stage4_for(emu_settings.registration)
            )
            a, b = cpu.report, emu.report
            assert [u.index for u in a.used] == [u.index for u in b.used] and b.used
            assert [(r.index, r.reason) for r in a.rejected] == [
                (r.index, r.reason) for r in b.rejected
            ]
            for u, v in zip(a.used, b.used, strict=True):
                assert abs(u.inliers - v.inliers) <= 2
                assert u.frame_weight == v.frame_weight
                assert abs(u.mean_pixel_weight - v.mean_pixel_weight) <= 0.02
            assert {"register", "warp", "fuse"} <= set(b.stage_ms)
            diff = np.abs(cpu.image.astype(np.int16) - emu.image)
            assert float(diff.mean()) <= 0.05 and float(np.mean(diff > 1)) <= 0.01
            sel = a.selected
            truth = sim.truth[sel]
            for name, res in (("opencv", cpu), ("emulated", emu)):
                ratios[name].append(mse(res.image, truth) / mse(sim.burst.frames[sel], truth))
    assert max(ratios["emulated"]) < 1.0 and float(np.mean(ratios["emulated"])) < 0.75
    assert np.allclose(ratios["emulated"], ratios["opencv"], rtol=0.01)


def test_factory_opens_streaming_stages_on_one_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = np.full((64, 80, 3), 0.5, np.float32)
    cpu_settings = settings_for("opencv")
    aligner = open_aligner(cpu_settings.registration)
    assert isinstance(aligner, RegistrarAligner)
    assert isinstance(aligner.registrar, OpenCVRegistrar)
    assert isinstance(
        open_fusion_job(cpu_settings.registration, ref, FusionSettings()), CpuFusionJob
    )
    counting = CountingBackend()
    monkeypatch.setitem(backend_mod._shared, "emulated", counting)
    emu_settings = settings_for("emulated")
    device = open_aligner(emu_settings.registration)
    assert isinstance(device, DeviceAligner) and isinstance(device.registrar, GpuRegistrar)
    job = open_fusion_job(emu_settings.registration, ref, FusionSettings(mode="sequential"))
    assert isinstance(job, GpuSequentialFuser)
    assert device.registrar.backend is counting and job.backend is counting


@pytest.mark.parametrize("mode", ["sequential", "reference"])
def test_fusion_job_matches_the_cpu_job(mode: str) -> None:
    """The raw selected frame as the reference: the emulated device job weighs and
    averages as the CPU job does."""
    sim = simulate_burst(SimParams(width=160, height=128, ring_frames=5, seed=3, fast=True))
    from deblurd.imaging import srgb_to_linear
    from deblurd.pipeline.noise import estimate_noise_model

    raw = srgb_to_linear(sim.burst.frames[2])
    noise = estimate_noise_model(raw)
    settings = FusionSettings(mode=mode)  # type: ignore[arg-type]
    cpu = CpuFusionJob(raw, settings, noise)
    gpu = open_fusion_job(settings_for("emulated").registration, raw, settings, noise)
    for i in (1, 3):
        image = srgb_to_linear(sim.burst.frames[i])
        frame = AlignedFrame(image, np.ones(image.shape[:2], np.float32), 0.8)
        assert abs(cpu.add(frame) - gpu.add(frame)) < 1e-4
    a, b = cpu.result(), gpu.result()
    assert float(np.abs(a.image - b.image).mean()) < 1e-5
    np.testing.assert_allclose(a.weight_sum, b.weight_sum, atol=1e-4)
