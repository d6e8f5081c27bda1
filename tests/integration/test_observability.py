"""The real ``deblurd run`` process as systemd starts it (``RUNTIME_DIRECTORY``,
``STATE_DIRECTORY``, no endpoints or output folder in the config), observed the way an
operator does: ``deblurctl status`` (table and ``--json``) and the Prometheus endpoint;
and start-up failures that must exit 78 (no restart loop).

Small frames (320x240 at 20 fps) and the U-Net off keep the job to a few hundred ms.
"""

from __future__ import annotations

import json
import stat
import sys
import types
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProc, daemon_env, free_port, sim_daemon_doc, write_config

from deblurd.client import main as deblurctl

W, H, FPS = 320, 240, 20.0


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parser = pytest.importorskip("prometheus_client.parser")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


class ServiceLike(DaemonProc):
    """``deblurd run`` with systemd's directory variables, working directory the state
    directory (as ``WorkingDirectory=/var/lib/deblurd``), the runtime directory 0750."""

    def __init__(self, tmp: Path, metrics_port: int) -> None:
        self.run_dir = tmp / "run" / "deblurd"
        self.state_dir = tmp / "lib" / "deblurd"
        self.run_dir.mkdir(parents=True)
        self.run_dir.chmod(0o750)
        self.state_dir.mkdir(parents=True)
        sim = {"seed": 5, "shake": 40.0}
        service = {"metrics_endpoint": f"127.0.0.1:{metrics_port}"}
        doc = sim_daemon_doc(W, H, FPS, 32, camera={"sim": sim}, service=service)
        env = daemon_env(
            drop=("NOTIFY_SOCKET", "WATCHDOG_USEC", "XDG_RUNTIME_DIR"),
            RUNTIME_DIRECTORY=str(self.run_dir),
            STATE_DIRECTORY=str(self.state_dir),
        )
        super().__init__(write_config(tmp / "deblurd.toml", doc), env, cwd=self.state_dir)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceLike, int]]:
    pytest.importorskip("prometheus_client")
    port = free_port()
    svc = ServiceLike(tmp_path_factory.mktemp("svc"), port)
    svc.wait_ready()
    yield svc, port
    assert svc.stop() == 0, "\n".join(svc.lines)


@pytest.fixture
def client_env(service: tuple[ServiceLike, int], monkeypatch: pytest.MonkeyPatch) -> ServiceLike:
    """deblurctl's environment: a user session with no per-user daemon, so it falls back to
    the service's folder (pointed at the test's stand-in for /run/deblurd)."""
    from deblurd.service import runtime

    svc = service[0]
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(svc.run_dir.parent.parent / "user"))
    monkeypatch.setattr(runtime, "SYSTEM_RUNTIME_DIR", svc.run_dir)
    return svc


def test_systemd_directories_are_used(service: tuple[ServiceLike, int]) -> None:
    svc = service[0]
    out = "\n".join(svc.lines)
    assert f"control endpoint ipc://{svc.run_dir / 'control.sock'}" in out
    assert f"results endpoint ipc://{svc.run_dir / 'results.sock'}" in out
    assert f"output folder {svc.state_dir / 'results'}" in out
    for name in ("control.sock", "results.sock"):
        mode = (svc.run_dir / name).stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660  # the group 'deblurd' may connect


def test_status_metrics_and_table_after_a_capture(
    service: tuple[ServiceLike, int],
    client_env: ServiceLike,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    svc, port = service
    shot = tmp_path / "shot.png"
    assert deblurctl(["trigger", "-o", str(shot), "--wait-timeout", "60"]) == 0
    assert shot.stat().st_size > 0
    assert list((svc.state_dir / "results").glob("*.png"))  # the result went to the state dir
    capsys.readouterr()

    assert deblurctl(["status", "--json"]) == 0
    reply: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert reply["ok"] is True
    cam, jobs = reply["camera"], reply["jobs"]
    assert cam["fps"] == pytest.approx(FPS, rel=0.3)
    assert cam["frames_received"] > 0 and cam["frames_dropped"] >= 0
    assert 0 < reply["ring"]["fill"] <= reply["ring"]["capacity"]
    assert reply["backends"]["inference"] == "off"
    assert reply["backends"]["registration"] == {
        "configured": "opencv",
        "active": "opencv",
        "note": None,
    }
    assert (jobs["done"], jobs["failed"], jobs["busy"]) == (1, 0, 0)
    ttr = reply["latency_ms"]["trigger_to_result"]
    assert 0 < ttr["p50"] <= ttr["p95"] < 60_000 and ttr["count"] == 1
    assert reply["last_error"] is None

    m = scrape(port)
    assert m[("deblurd_jobs_total", (("result", "done"),))] == 1
    assert m[("deblurd_jobs_total", (("result", "failed"),))] == 0
    assert m[("deblurd_busy_total", ())] == 0
    assert m[("deblurd_frames_total", ())] >= cam["frames_received"]  # scraped later
    assert m[("deblurd_ring_capacity", ())] == reply["ring"]["capacity"]
    assert m[("deblurd_camera_fps", ())] == pytest.approx(FPS, rel=0.3)
    assert m[("deblurd_stage_seconds_count", (("stage", "trigger_to_result"),))] == 1
    seconds = m[("deblurd_stage_seconds_sum", (("stage", "trigger_to_result"),))]
    assert seconds == pytest.approx(ttr["last"] / 1000, abs=0.001)
    assert m[("deblurd_last_error_timestamp_seconds", ())] == 0

    assert deblurctl(["status"]) == 0
    table = capsys.readouterr().out
    print(table)  # shown with -s / on failure
    assert table.startswith("deblurd ") and ": ready, up " in table.splitlines()[0]
    rows = {line.split()[0]: line for line in table.splitlines()[1:] if line.strip()}
    assert f"sim {W}x{H}" in rows["camera"] and "0 dropped" in rows["camera"]
    assert rows["engine"].split()[-1] == "off"
    assert rows["registration"].split()[-1] == "opencv"
    assert "1 done, 0 failed, 0 refused busy" in rows["jobs"]
    assert f"/{reply['ring']['capacity']} frames" in rows["ring"]
    assert rows["last"].endswith("none")
    header = rows["stage"].split()[1:]
    assert header == ["p50", "ms", "p95", "ms", "last", "ms", "max", "ms", "jobs"]
    assert rows["trigger_to_result"].split()[-1] == "1"


# -- start-up failures that a restart would not fix: exit 78 ---------------------------------


def fake_gpiod(error: BaseException) -> types.ModuleType:
    """Just enough of libgpiod v2's Python API for GpioTrigger to request a line."""
    mod = types.ModuleType("gpiod")
    ns = types.SimpleNamespace
    mod.line = ns(  # type: ignore[attr-defined]
        Direction=ns(INPUT="input"),
        Edge=ns(RISING="rising"),
        Bias=ns(PULL_UP="up", PULL_DOWN="down"),
        Clock=ns(MONOTONIC="monotonic"),
    )
    mod.LineSettings = lambda **kw: kw  # type: ignore[attr-defined]

    def request_lines(*_args: Any, **_kw: Any) -> None:
        raise error

    mod.request_lines = request_lines  # type: ignore[attr-defined]
    return mod


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (PermissionError(13, "Permission denied"), ["permission denied", "group 'gpio'"]),
        (OSError(16, "Device or resource busy"), ["busy", "line 17", "group 'gpio'"]),
    ],
)
def test_gpio_trigger_problem_exits_78(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    run_in_process: Callable[[Path], int],
    error: BaseException,
    words: list[str],
) -> None:
    chip = tmp_path / "gpiochip7"  # stands in for the device node (owned by root: 'gpio')
    chip.touch()
    monkeypatch.setitem(sys.modules, "gpiod", fake_gpiod(error))
    gpio = {"enabled": True, "backend": "gpiod", "chip": str(chip), "pin": 17}
    doc = sim_daemon_doc(W, H, FPS, 16, tmp_path, triggers={"gpio": gpio})
    assert run_in_process(write_config(tmp_path / "deblurd.toml", doc)) == 78
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("deblurd: config error:"))
    assert line.startswith("deblurd: config error: triggers.gpio: ")
    assert str(chip) in line
    for word in words:
        assert word in line
    assert not (tmp_path / "control.sock").exists()  # shut down cleanly
