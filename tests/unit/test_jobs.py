"""Capture jobs: the bounded queue, the burst built from the ring window, the extra
capture acted on before fusion, and failures that leave the worker working."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deblurd.camera.base import CameraBackend, CameraError, FrameCallback, FrameMeta
from deblurd.camera.ring import FrameRing
from deblurd.service.jobs import (
    BusyError,
    CaptureRequest,
    CaptureWorker,
    JobQueue,
    frame_infos,
    new_capture_id,
    trigger_position,
)
from deblurd.service.results import ResultStore
from deblurd.service.status import StatusBoard
from deblurd.settings.models import DeblurdSettings

H, W, PERIOD = 96, 128, 50_000_000


def request(cid: str = "c1", t: int = 0) -> CaptureRequest:
    return CaptureRequest(cid, t, "test", 0)


def test_queue_is_bounded_and_refuses_at_once() -> None:
    q = JobQueue(2)
    q.submit(request("a"))
    q.submit(request("b"))
    with pytest.raises(BusyError) as info:
        q.submit(request("c"))
    assert info.value.code == "busy" and q.depth == 2
    assert [r.capture_id for r in q.close()] == ["a", "b"]
    with pytest.raises(BusyError) as info:
        q.submit(request("d"))
    assert info.value.code == "shutting_down"


def test_capture_ids_are_unique_and_file_safe() -> None:
    ids = [new_capture_id() for _ in range(500)]
    assert len(set(ids)) == 500
    assert all(c.replace("-", "").isdigit() for c in ids)


def test_trigger_position_is_the_frame_being_exposed() -> None:
    metas = [FrameMeta(i, i * PERIOD, 8000, 4.0) for i in range(5)]
    assert trigger_position(metas, 2 * PERIOD + 1) == 2
    assert trigger_position(metas, 2 * PERIOD) == 2
    assert trigger_position(metas, -1) == 0
    infos = frame_infos(metas, "extra", 3)
    assert [i.file for i in infos[:2]] == ["003.png", "004.png"]
    assert all(i.role == "extra" for i in infos)


class FakeCamera(CameraBackend):
    name = "fake"

    @property
    def size(self) -> tuple[int, int]:
        return H, W

    @property
    def fps(self) -> float:
        return 20.0

    def start(self, on_frame: FrameCallback) -> None: ...
    def stop(self) -> None: ...
    def request_exposure(self, exposure_us: int, analogue_gain: float) -> None: ...
    def restore_preview(self) -> None: ...


class FakePublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def event(self, capture_id: str | None, event: str, **fields: Any) -> None:
        self.messages.append(("event", {"capture_id": capture_id, "event": event, **fields}))

    def result(self, capture_id: str, meta: dict[str, Any], image: bytes) -> None:
        self.messages.append(("result", {"capture_id": capture_id, **meta, "bytes": len(image)}))

    def error(self, capture_id: str | None, code: str, message: str, **fields: Any) -> None:
        self.messages.append(("error", {"capture_id": capture_id, "code": code, "msg": message}))


def textured(seed: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    noise = np.random.default_rng(seed).integers(-3, 4, (H, W, 3))
    return np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)


def make_worker(
    tmp: Path, capture_extra: Any = None, **sections: Any
) -> tuple[CaptureWorker, FakePublisher, FrameRing]:
    doc: dict[str, Any] = {
        "output": {"directory": str(tmp / "out")},
        "decision": {"second_blur_threshold": 1000.0},  # ring frames unless a test says
        "inference": {"passes": "off"},  # job mechanics: the worker gets no deblurrer
        **sections,
    }
    settings = DeblurdSettings.model_validate(doc)
    ring = FrameRing(32, H, W)
    for i in range(20):
        ring.push(textured(i), FrameMeta(i, i * PERIOD, 8000, 4.0))
    pub = FakePublisher()
    status = StatusBoard()
    worker = CaptureWorker(
        settings,
        FakeCamera(),
        ring,
        None,
        pub,  # type: ignore[arg-type]
        ResultStore(settings.output),
        status,
        JobQueue(2),
        capture_extra,
    )
    return worker, pub, ring


def test_ring_job_publishes_selected_then_result(tmp_path: Path) -> None:
    worker, pub, _ = make_worker(tmp_path)
    assert worker.run_job(request("job1", 10 * PERIOD + 5))
    kinds = [(k, m.get("event")) for k, m in pub.messages]
    assert kinds == [("event", "selected"), ("result", None)]
    meta = pub.messages[-1][1]
    # frames_before 4 + the trigger frame + frames_after 4, the trigger frame in the middle
    assert [f["frame_number"] for f in meta["frames"]] == list(range(6, 15))
    assert meta["trigger_index"] == 4 and meta["decision"]["source"] == "ring"
    saved = json.loads((tmp_path / "out" / "job1.json").read_text())
    assert saved["capture_id"] == "job1" and Path(meta["file"]).is_file()
    assert worker.status.jobs_done == 1 and "trigger_to_result" in worker.status.latency()


def test_extra_decision_captures_before_fusing(tmp_path: Path) -> None:
    calls: list[tuple[int, float, int]] = []

    def capture_extra(
        camera: Any,
        ring: FrameRing,
        exposure_us: int,
        gain: float,
        frames: int,
        timeout_s: float,
        on_event: Any,
        tolerance: float = 0.05,
    ) -> list[Any]:
        calls.append((exposure_us, gain, frames))
        on_event("hold_still", {"exposure_us": exposure_us})
        on_event("done", {"ok": True})
        return [(textured(100 + i), FrameMeta(30 + i, (30 + i) * PERIOD, exposure_us, gain))
                for i in range(frames)]  # fmt: skip

    worker, pub, _ = make_worker(
        tmp_path, capture_extra, decision={"second_blur_threshold": -100.0}
    )
    assert worker.run_job(request("x", 10 * PERIOD))
    exposure, gain, frames = calls[0]
    # The gain keeps the trigger frame's brightness (exposure x gain), never under unity.
    assert gain == pytest.approx(max(8000 * 4.0 / exposure, 1.0))
    events = [m["event"] for k, m in pub.messages if k == "event"]
    assert events == ["selected", "extra_capture", "hold_still", "done"]
    meta = pub.messages[-1][1]
    extra = [f for f in meta["frames"] if f["role"] == "extra"]
    assert len(extra) == frames and all(f["exposure_us"] == exposure for f in extra)
    assert next(f["file"] for f in extra) == "009.png"
    # The extra frames went into stage 4 (fused, or rejected with a reason).
    report = meta["report"]
    considered = {u["index"] for u in report["used"]} | {r["index"] for r in report["rejected"]}
    assert set(range(9, 9 + frames)) <= considered


def test_failed_job_publishes_error_and_next_job_works(tmp_path: Path) -> None:
    def failing(*_a: Any, **_k: Any) -> list[Any]:
        raise CameraError("exposure 20000 µs never applied within 2.0 s")

    worker, pub, _ = make_worker(tmp_path, failing, decision={"second_blur_threshold": -100.0})
    assert not worker.run_job(request("bad", 10 * PERIOD))
    kind, err = pub.messages[-1]
    assert kind == "error" and err["code"] == "camera" and "never applied" in err["msg"]
    assert not list((tmp_path / "out").glob("bad*")) if (tmp_path / "out").exists() else True
    worker.settings = DeblurdSettings.model_validate(
        {
            "output": {"directory": str(tmp_path / "out")},
            "decision": {"second_blur_threshold": 1e3},
            "inference": {"passes": "off"},
        }
    )
    assert worker.run_job(request("good", 10 * PERIOD))
    assert worker.status.jobs_failed == 1 and worker.status.jobs_done == 1


def test_unwritable_output_is_an_error_with_no_partial_file(tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("a file where the folder should be")
    worker, pub, _ = make_worker(tmp_path)
    assert not worker.run_job(request("o", 10 * PERIOD))
    assert pub.messages[-1][0] == "error" and pub.messages[-1][1]["code"] == "output"


def test_worker_thread_stops_within_bound(tmp_path: Path) -> None:
    worker, _, _ = make_worker(tmp_path)
    worker.start()
    assert worker.alive()
    t = threading.Thread(target=worker.stop, args=(2.0,))
    t.start()
    t.join(4)
    assert not worker.alive()
