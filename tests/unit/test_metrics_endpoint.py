"""The Prometheus endpoint (:mod:`deblurd.service.metrics`), scraped over loopback: the same
figures as the status reply, stage histograms from finished jobs, and its config errors."""

from __future__ import annotations

import socket
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from deblurd.errors import ConfigError, DeblurdError
from deblurd.service.metrics import KEY, MetricsServer, parse_endpoint
from deblurd.service.status import StatusBoard
from deblurd.settings.service import ServiceSettings

parser = pytest.importorskip("prometheus_client.parser")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from ``GET /metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def snapshot_of(board: StatusBoard, **live: Any) -> dict[str, Any]:
    return board.snapshot(
        queue={"depth": 1, "size": 2},
        ring={"fill": 37, "capacity": 48, "frames_missed": 0},
        worker_alive=True,
        **live,
    )


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, StatusBoard]]:
    board = StatusBoard()
    board.info = {
        "version": "9.9",
        "backends": {
            "camera": "sim",
            "inference": "off",
            "registration": {"configured": "auto", "active": "opencv", "note": "no GPU"},
        },
    }
    server = MetricsServer(f"127.0.0.1:{free_port()}", board, lambda: snapshot_of(board))
    server.start()
    try:
        yield server, board
    finally:
        server.close()


def test_scrape_matches_the_status_reply(served: tuple[MetricsServer, StatusBoard]) -> None:
    server, board = served
    board.set_state("ready")
    board.frames.received, board.frames.dropped, board.frames.fps = 1234, 7, 29.5
    board.count("jobs_accepted", 5)
    board.count("jobs_busy", 2)
    board.job_finished(True, {"trigger_to_result": 800.0, "select": 12.0})
    board.job_finished(True, {"trigger_to_result": 1800.0, "select": 30.0})
    board.job_finished(False)
    board.error("camera", "no frame for 2.0 s")
    m = scrape(server.port)
    status = snapshot_of(board)
    assert m[("deblurd_frames_total", ())] == status["camera"]["frames_received"] == 1234
    assert m[("deblurd_frames_dropped_total", ())] == 7
    assert m[("deblurd_camera_fps", ())] == pytest.approx(29.5)
    assert m[("deblurd_ring_fill", ())] == 37
    assert m[("deblurd_ring_capacity", ())] == 48
    assert m[("deblurd_queue_depth", ())] == 1
    assert m[("deblurd_jobs_total", (("result", "done"),))] == 2
    assert m[("deblurd_jobs_total", (("result", "failed"),))] == 1
    assert m[("deblurd_jobs_accepted_total", ())] == 5
    assert m[("deblurd_busy_total", ())] == 2
    assert m[("deblurd_last_error_timestamp_seconds", ())] == pytest.approx(
        status["last_error"]["time_ns"] / 1e9
    )
    assert m[("deblurd_state", (("state", "ready"),))] == 1
    info = (("camera", "sim"), ("inference", "off"), ("registration", "opencv"), ("version", "9.9"))
    assert m[("deblurd_info", info)] == 1
    # Histograms: every job's stage times, in seconds.
    ttr = (("stage", "trigger_to_result"),)
    assert m[("deblurd_stage_seconds_count", ttr)] == 2
    assert m[("deblurd_stage_seconds_sum", ttr)] == pytest.approx(2.6)
    assert m[("deblurd_stage_seconds_bucket", (("le", "1.0"), ("stage", "trigger_to_result")))] == 1
    assert m[("deblurd_stage_seconds_bucket", (("le", "2.5"), ("stage", "trigger_to_result")))] == 2
    assert m[("deblurd_stage_seconds_count", (("stage", "select"),))] == 2


def test_no_error_yet_reads_zero(served: tuple[MetricsServer, StatusBoard]) -> None:
    server, _board = served
    m = scrape(server.port)
    assert m[("deblurd_last_error_timestamp_seconds", ())] == 0
    assert m[("deblurd_jobs_total", (("result", "done"),))] == 0
    assert ("deblurd_last_frame_age_seconds", ()) not in m  # no frame yet


def test_close_stops_serving(served: tuple[MetricsServer, StatusBoard]) -> None:
    server, _board = served
    port = server.port
    scrape(port)
    server.close()
    server.close()  # idempotent
    with pytest.raises(OSError):
        scrape(port)


def test_missing_library_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import -> ImportError
    server = MetricsServer("127.0.0.1:9464", StatusBoard(), dict)
    with pytest.raises(ConfigError) as info:
        server.start()
    assert info.value.problems[0][0] == KEY == "service.metrics_endpoint"
    assert "prometheus-client" in str(info.value)


def test_port_in_use_and_foreign_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(DeblurdError, match="in use") as busy:
            MetricsServer(f"127.0.0.1:{port}", StatusBoard(), dict).start()
        assert not isinstance(busy.value, ConfigError)  # a restart may help: not exit 78
    with pytest.raises(ConfigError) as info:  # TEST-NET-1: not an address of this host
        MetricsServer(f"192.0.2.1:{free_port()}", StatusBoard(), dict).start()
    assert info.value.problems[0][0] == KEY


def test_endpoint_forms() -> None:
    assert parse_endpoint("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_endpoint("[::1]:9464") == ("::1", 9464)
    assert parse_endpoint("localhost:80") == ("localhost", 80)
    for bad in ("9464", ":9464", "host:port", "h:70000"):
        with pytest.raises(ConfigError):
            parse_endpoint(bad)
    assert ServiceSettings().metrics_endpoint is None
    assert ServiceSettings(metrics_endpoint="[::1]:9464").metrics_endpoint == "[::1]:9464"
    for bad in ("127.0.0.1", "tcp://127.0.0.1:9464", "127.0.0.1:0", "127.0.0.1:65536"):
        with pytest.raises(ValidationError, match="HOST:PORT"):
            ServiceSettings(metrics_endpoint=bad)


def test_deblurd_run_exits_78_without_the_library(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    run_in_process: Callable[[Path], int],
) -> None:
    """Configured but not installed: fails before the camera starts, exit 78, key named."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    cfg = tmp_path / "deblurd.toml"
    cfg.write_text(
        f"""
[service]
control_endpoint = "ipc://{tmp_path}/control.sock"
results_endpoint = "ipc://{tmp_path}/results.sock"
metrics_endpoint = "127.0.0.1:{free_port()}"
[output]
directory = "{tmp_path}/out"
[inference]
passes = "off"
[triggers]
terminal = false
"""
    )
    assert run_in_process(cfg) == 78
    err = capsys.readouterr().err
    assert "config error: service.metrics_endpoint:" in err
    assert "prometheus-client" in err
    assert not (tmp_path / "control.sock").exists()  # the sockets were closed and removed
