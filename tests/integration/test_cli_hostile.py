"""Hostile files, paths and pipes through the real command line (issue 14): one
``deblurd: error:`` line, nothing half-done, bounded memory, quiet on a closed pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deblurd.cli import main

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "burst"
    assert main(["simulate", str(out), "--width", "96", "--height", "64", "--frames", "3"]) == 0
    return out


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deblurd: error: "), err
    return err[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_json_into_an_existing_folder_is_refused_before_any_work(
    burst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rep").mkdir()
    out = tmp_path / "out.png"
    code = main(["process", str(burst), "-o", str(out), "--json", str(tmp_path / "rep"), "--unet",
                 "off"])  # fmt: skip
    assert code == 1
    assert one_error(capsys).endswith("rep: is a folder; give a file name")
    assert leftovers(tmp_path) == ["rep"]


def test_image_and_report_appear_together_or_not_at_all(
    burst: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = os.replace

    def fail_on_report(src: str, dst: str) -> None:
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_report)
    out, rep = tmp_path / "out.png", tmp_path / "r.json"
    code = main(["process", str(burst), "-o", str(out), "--json", str(rep), "--unet", "off"])
    assert code == 1
    assert "No space left on device" in one_error(capsys)
    assert leftovers(tmp_path) == []  # the image renamed first was taken back
    monkeypatch.setattr(os, "replace", real)
    assert main(["process", str(burst), "-o", str(out), "--json", str(rep), "--unet", "off"]) == 0
    assert json.loads(rep.read_text())["output"] == str(out)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("{tmp}/dir.png", "dir.png: is a folder; give a file name"),
        ("{tmp}/x.txt", "output must end in .png, .jpg or .jpeg"),
        ("/proc/x.png", "cannot write there"),
        ("{tmp}/" + "x" * 251 + ".png", "File name too long"),
    ],
)
def test_bad_output_paths(
    burst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str, message: str
) -> None:
    (tmp_path / "dir.png").mkdir()
    out = output.format(tmp=tmp_path)
    assert main(["process", str(burst), "-o", out, "--unet", "off"]) == 1
    assert message in one_error(capsys)
    assert leftovers(tmp_path) == ["dir.png"]
    assert main(["deblur", str(burst / "000.png"), "-o", out]) == 1
    assert message in one_error(capsys)


def test_deblur_refuses_a_bomb_and_special_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], black_png: Any
) -> None:
    bomb = black_png(tmp_path / "bomb.png", 30000, 30000)
    out = tmp_path / "o.png"
    assert main(["deblur", str(bomb), "-o", str(out)]) == 1
    assert "30000x30000 is 900.0 MP, more than the limit" in one_error(capsys)
    os.mkfifo(tmp_path / "fifo.png")
    assert main(["deblur", str(tmp_path / "fifo.png"), "-o", str(out)]) == 1
    assert one_error(capsys).endswith("fifo.png: is a FIFO (named pipe), not a regular file")
    assert main(["deblur", str(tmp_path), "-o", str(out)]) == 1
    assert one_error(capsys).endswith(": is a folder, not an image file")
    assert not out.exists()


def test_the_limit_is_the_config_key(
    burst: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[limits]\nmax_frame_pixels = 6000\nmax_burst_pixels = 20000\n")
    out = tmp_path / "o.png"
    assert main(["process", str(burst), "-o", str(out), "--config", str(cfg)]) == 1
    assert "96x64 is 0.0 MP, more than the limit of 0.0 MP per image" in one_error(capsys)
    cfg.write_text("[limits]\nmax_frame_pixels = 7000\nmax_burst_pixels = 15000\n")
    assert main(["process", str(burst), "-o", str(out), "--config", str(cfg)]) == 1
    assert "(limits.max_burst_pixels); not decoded" in one_error(capsys)


def test_process_bomb_is_refused_under_a_memory_limit(
    burst: Path, tmp_path: Path, black_png: Any
) -> None:
    """The 9 x 12000x12000 burst of the issue (420 KB a frame), in a process limited to
    1.5 GB of address space beyond its start-up: refused from the headers at once."""
    bombs = tmp_path / "bombs"
    bombs.mkdir()
    black_png(bombs / "000.png", 12000, 12000)
    frames = []
    for i in range(9):
        if i:
            os.link(bombs / "000.png", bombs / f"{i:03d}.png")
        frames.append({"file": f"{i:03d}.png", "timestamp_ns": i, "exposure_us": 1000,
                       "analogue_gain": 1.0, "role": "ring"})  # fmt: skip
    doc = {"version": 1, "trigger_index": 0, "frames": frames}
    (bombs / "burst.json").write_text(json.dumps(doc))
    script = (
        "import resource, sys\n"
        "from deblurd.cli import main\n"
        "vm = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 1500 * 2**20, resource.RLIM_INFINITY))\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "o.png"
    proc = subprocess.run(
        [sys.executable, "-c", script, "process", str(bombs), "-o", str(out), "--unet", "off"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"deblurd: error: {bombs / '000.png'}: 12000x12000 is 144.0 MP, more than the limit of "
        "67.1 MP per image (limits.max_frame_pixels); not decoded"
    ]
    assert not out.exists()


def test_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """``deblurd simulate ... | head -0``: no BrokenPipeError traceback, exit 141 as ``ls``."""
    proc = subprocess.Popen(
        [str(BIN / "deblurd"), "simulate", str(tmp_path / "b"), "--width", "64", "--height",
         "48", "--frames", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader went away before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert err == ""
    assert (tmp_path / "b" / "burst.json").is_file()  # the work itself was done, atomically


def test_closed_stderr_ends_quietly(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.close(r)
    proc = subprocess.run(
        [str(BIN / "deblurd"), "deblur", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png")],
        stdout=subprocess.PIPE, stderr=w, timeout=60,
    )  # fmt: skip
    os.close(w)
    assert proc.returncode == 141


def run_daemon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "deblurd"), "run", "--camera", "sim", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "key", "message"),
    [
        (["--control", "bogus://x"], {}, "service.control_endpoint",
         "'bogus://x' is not a ZeroMQ endpoint this daemon serves"),
        ([], {"DEBLURD_SERVICE__CONTROL_ENDPOINT": "tcp://host"}, "service.control_endpoint",
         "'tcp://host' is not tcp://HOST:PORT"),
        (["--results", "tcp://127.0.0.1:99999"], {}, "service.results_endpoint",
         "is not tcp://HOST:PORT"),
        (["--results", "inproc://x"], {}, "service.results_endpoint",
         "inproc:// reaches only this process"),
        (["--control", "ipc://"], {}, "service.control_endpoint", "needs the path"),
        (["--control", "ipc:///nonexistent-14/dir/c.sock"], {}, "service.control_endpoint",
         "folder /nonexistent-14/dir does not exist (deblurd creates only its own runtime"),
        (["--output", "/proc/deblurd-results"], {}, "output.directory",
         "/proc/deblurd-results: cannot create the output folder"),
    ],
)  # fmt: skip
def test_daemon_refuses_bad_endpoints_and_output_at_start(
    tmp_path: Path, args: list[str], env: dict[str, str], key: str, message: str
) -> None:
    defaults = {"--control": f"ipc://{tmp_path}/c.sock", "--results": f"ipc://{tmp_path}/r.sock",
                "--output": str(tmp_path / "out")}  # fmt: skip
    for flag, value in defaults.items():
        if flag not in args and not any(flag[2:] in k.lower() for k in env):
            args = [*args, flag, value]
    proc = run_daemon(*args, env=env)
    assert proc.returncode == 78, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("deblurd: config error")]
    assert len(lines) == 1 and lines[0].startswith(f"deblurd: config error: {key}: "), proc.stderr
    assert message in lines[0]
    assert "ready" not in proc.stdout and "Traceback" not in proc.stderr
    assert not Path("/nonexistent-14").exists()


def test_a_second_daemon_names_the_process_holding_the_socket(tmp_path: Path) -> None:
    import zmq

    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    endpoint = f"ipc://{tmp_path}/c.sock"
    rep.bind(endpoint)
    try:
        proc = subprocess.Popen(
            [str(BIN / "deblurd"), "run", "--camera", "sim", "--control", endpoint, "--results",
             f"ipc://{tmp_path}/r.sock", "--output", str(tmp_path / "out")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert rep.poll(30_000), "the second daemon did not probe the endpoint"
        assert rep.recv_json() == {"cmd": "ping"}
        rep.send_json({"ok": True})
        _, err = proc.communicate(timeout=60)
    finally:
        rep.close(0)
        ctx.term()
    assert proc.returncode == 1
    line = [ln for ln in err.splitlines() if ln.startswith("deblurd: error:")]
    assert line == [
        f"deblurd: error: another deblurd already answers at {endpoint}: pid {os.getpid()} "
        f"({' '.join(Path(f'/proc/{os.getpid()}/cmdline').read_text().split(chr(0))).strip()}); "
        "stop it, or give this one other endpoints (--control, --results)"
    ]
