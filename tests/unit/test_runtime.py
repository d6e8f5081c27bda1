"""Where the daemon's sockets and results go under systemd and without it
(:mod:`deblurd.service.runtime`), and how ``deblurctl`` finds them: all env-driven, in
temporary folders."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deblurd.cli import run_settings
from deblurd.client import main as deblurctl
from deblurd.errors import ConfigError, DeblurdError
from deblurd.service import runtime
from deblurd.settings.models import DeblurdSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUNTIME_DIRECTORY", "STATE_DIRECTORY", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)


def unix_socket_file(path: Path) -> None:
    """A socket file at ``path`` (what ZeroMQ's ipc:// bind leaves), closed at once."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    finally:
        sock.close()


# -- the runtime folder --------------------------------------------------------------------


def test_runtime_dir_prefers_systemd_then_xdg_then_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime.os, "getuid", lambda: 1000)
    assert runtime.default_runtime_dir() == Path("/tmp/deblurd-1000")
    monkeypatch.setattr(runtime.os, "getuid", lambda: 0)
    # root: /run/deblurd, as under systemd (/tmp/deblurd-0 is shared by every root process)
    assert runtime.default_runtime_dir() == Path("/run/deblurd") == runtime.SYSTEM_RUNTIME_DIR
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert runtime.default_runtime_dir() == tmp_path / "xdg" / "deblurd"
    monkeypatch.setenv("RUNTIME_DIRECTORY", f"{tmp_path / 'run'}:{tmp_path / 'other'}")
    assert runtime.default_runtime_dir() == tmp_path / "run"  # the first of several
    assert runtime.default_control_endpoint() == f"ipc://{tmp_path / 'run' / 'control.sock'}"
    assert runtime.default_results_endpoint() == f"ipc://{tmp_path / 'run' / 'results.sock'}"
    monkeypatch.setenv("RUNTIME_DIRECTORY", "")
    assert runtime.default_runtime_dir() == tmp_path / "xdg" / "deblurd"


def test_per_user_folder_is_created_0700_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    old = os.umask(0)
    try:
        runtime.prepare_ipc_folder(runtime.default_control_endpoint())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "deblurd").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("mode", "systemd", "ok"),
    [
        (0o700, False, True),
        (0o750, False, False),  # a per-user folder must be private
        (0o700, True, True),
        (0o750, True, True),  # systemd's RuntimeDirectoryMode=0750: group deblurd enters
        (0o770, True, False),  # but the group must not be able to replace the sockets
        (0o755, True, False),
    ],
)
def test_default_folder_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int, systemd: bool, ok: bool
) -> None:
    folder = tmp_path / "deblurd"
    folder.mkdir()
    folder.chmod(mode)
    if systemd:
        monkeypatch.setenv("RUNTIME_DIRECTORY", str(folder))
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    endpoint = runtime.default_control_endpoint()
    assert runtime.ipc_path(endpoint) == folder / "control.sock"
    if ok:
        runtime.prepare_ipc_folder(endpoint)
    else:
        with pytest.raises(DeblurdError, match=f"{folder}: runtime folder") as info:
            runtime.prepare_ipc_folder(endpoint)
        assert f"{mode:04o}" in str(info.value)


def test_a_symlink_is_no_runtime_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "deblurd").symlink_to(real)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(DeblurdError, match="runtime folder"):
        runtime.prepare_ipc_folder(runtime.default_control_endpoint())


def test_share_ipc_file_opens_the_socket_to_the_group(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    old = os.umask(0o077)
    try:
        unix_socket_file(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    runtime.share_ipc_file(f"ipc://{path}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    runtime.share_ipc_file("tcp://127.0.0.1:5555")  # nothing to do for other transports
    runtime.share_ipc_file("ipc://@abstract")
    with pytest.raises(DeblurdError, match="cannot set the socket's mode"):
        runtime.share_ipc_file(f"ipc://{tmp_path / 'missing.sock'}")


# -- the results folder --------------------------------------------------------------------


def test_output_directory_follows_state_directory_only_for_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = DeblurdSettings().output.directory
    assert runtime.output_directory(default, default) == default
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}:{tmp_path / 'b'}")
    assert runtime.output_directory(default, default) == str(tmp_path / "results")
    assert runtime.output_directory("/srv/shots", default) == "/srv/shots"


def test_run_settings_use_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = DeblurdSettings()
    assert run_settings(base).output.directory == base.output.directory
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert run_settings(base).output.directory == str(tmp_path / "results")
    assert run_settings(base, output="/x/y").output.directory == "/x/y"  # the flag wins
    configured = DeblurdSettings.model_validate({"output": {"directory": "/srv/shots"}})
    assert run_settings(configured).output.directory == "/srv/shots"  # the config wins


def test_run_settings_camera_flag_switches_the_backend_and_its_table() -> None:
    camera = {"backend": "sim", "width": 640, "sim": {"seed": 3}}
    base = DeblurdSettings.model_validate({"camera": camera})
    assert run_settings(base, camera="sim").camera == base.camera  # the same backend: kept
    switched = run_settings(base, camera="v4l2").camera
    assert switched.backend == "v4l2" and switched.width == 640  # the shared keys stay
    assert not hasattr(switched, "sim")  # the configured backend's table goes
    with pytest.raises(ConfigError) as info:
        run_settings(base, camera="nonsense")
    assert info.value.problems[0][0] == "camera.backend"
    with pytest.raises(ConfigError) as info:
        run_settings(base, camera="replay")  # no replay.path
    assert info.value.problems[0][0] == "camera"


# -- deblurctl's endpoints -----------------------------------------------------------------


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """(per-user folder, stand-in for /run/deblurd), both empty."""
    user = tmp_path / "xdg" / "deblurd"
    system = tmp_path / "run" / "deblurd"
    user.mkdir(parents=True)
    system.mkdir(parents=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    monkeypatch.setattr(runtime, "SYSTEM_RUNTIME_DIR", system)
    yield user, system


def test_client_uses_per_user_sockets_when_there(folders: tuple[Path, Path]) -> None:
    user, system = folders
    unix_socket_file(user / "control.sock")
    unix_socket_file(system / "control.sock")
    ends = runtime.client_endpoints()
    assert ends.control == f"ipc://{user / 'control.sock'}"
    assert ends.results == f"ipc://{user / 'results.sock'}"


def test_client_falls_back_to_the_service_sockets(folders: tuple[Path, Path]) -> None:
    user, system = folders
    assert runtime.client_endpoints().control == f"ipc://{user / 'control.sock'}"  # neither
    unix_socket_file(system / "control.sock")
    ends = runtime.client_endpoints()
    assert ends.control == f"ipc://{system / 'control.sock'}"
    assert ends.results == f"ipc://{system / 'results.sock'}"
    assert runtime.client_endpoints(results="tcp://h:1").results == "tcp://h:1"


def test_client_given_endpoints_win(folders: tuple[Path, Path], tmp_path: Path) -> None:
    _user, system = folders
    unix_socket_file(system / "control.sock")
    ends = runtime.client_endpoints(f"ipc://{tmp_path}/c.sock")
    assert ends.control == f"ipc://{tmp_path}/c.sock"
    assert ends.results == f"ipc://{tmp_path}/results.sock"  # beside the given control
    ends = runtime.client_endpoints("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
    assert ends == runtime.Endpoints("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")


def test_deblurctl_without_flags_talks_to_the_service_folder(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """No daemon answers at the fallback: the error names the endpoint deblurctl chose."""
    _user, system = folders
    unix_socket_file(system / "control.sock")
    assert deblurctl(["--timeout", "0.3", "ping"]) == 1
    assert f"ipc://{system / 'control.sock'}" in capsys.readouterr().err


def check_as_other_user(endpoint: str) -> tuple[int, str]:
    """``check_ipc_access`` in a forked child that is another user when we are root (root
    may open anything): (0, "") when allowed, (3, message) when refused."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code, message = 0, ""
        try:
            os.close(read_fd)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                runtime.check_ipc_access(endpoint)
            except DeblurdError as exc:
                code, message = 3, str(exc)
            os.write(write_fd, message.encode())
        except BaseException as exc:
            code = 4
            os.write(write_fd, repr(exc).encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        out = f.read().decode()
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def test_client_names_the_group_to_join() -> None:
    """A socket the user cannot write, in a folder it cannot enter: both name the group."""
    top = Path(tempfile.mkdtemp(prefix="deblurd-access-"))
    try:
        top.chmod(0o755)
        open_dir = top / "open"
        open_dir.mkdir(mode=0o755)
        open_dir.chmod(0o755)
        sock = open_dir / "control.sock"
        unix_socket_file(sock)
        sock.chmod(0o640 if os.geteuid() == 0 else 0o400)
        code, out = check_as_other_user(f"ipc://{sock}")
        assert code == 3, out
        assert f"permission denied on {sock}" in out
        assert "join group" in out and "usermod -aG" in out
        if os.geteuid() == 0:  # an unsearchable folder only stops someone else
            closed = top / "closed"
            closed.mkdir(mode=0o750)
            closed.chmod(0o750)
            unix_socket_file(closed / "control.sock")
            code, out = check_as_other_user(f"ipc://{closed / 'control.sock'}")
            assert code == 3, out
            assert f"permission denied on {closed}: join group 'root'" in out
            # ... and deblurctl's fallback still picks a folder it cannot look into.
            assert runtime._is_there(closed / "control.sock")
        sock.chmod(0o666)
        assert check_as_other_user(f"ipc://{sock}") == (0, "")
        assert check_as_other_user(f"ipc://{open_dir / 'missing.sock'}") == (0, "")
    finally:
        shutil.rmtree(top, ignore_errors=True)


# -- issue 14: only our own runtime folder is created; who holds a socket -------------------


def test_a_configured_ipc_folder_is_never_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    endpoint = f"ipc://{tmp_path}/nonexistent/dir/c.sock"
    with pytest.raises(ConfigError, match=r"folder .*/nonexistent/dir does not exist") as info:
        runtime.prepare_ipc_folder(endpoint, "service.control_endpoint")
    assert info.value.problems[0][0] == "service.control_endpoint"
    assert not (tmp_path / "nonexistent").exists()
    with pytest.raises(DeblurdError, match="does not exist"):
        runtime.prepare_ipc_folder(endpoint)
    (tmp_path / "nonexistent" / "dir").mkdir(parents=True)
    runtime.prepare_ipc_folder(endpoint)  # an existing folder is used as it is


def test_the_default_folder_is_made_without_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "gone"))
    with pytest.raises(DeblurdError, match="cannot create the socket folder"):
        runtime.prepare_ipc_folder(runtime.default_control_endpoint())
    assert not (tmp_path / "gone").exists()


def test_root_accepts_the_services_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "run-deblurd"
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setattr(runtime, "SYSTEM_RUNTIME_DIR", folder)
    monkeypatch.setattr(runtime.os, "getuid", lambda: 0)
    if os.geteuid() == 0:
        os.chown(folder, 4321, 4321)  # the service user's, not ours
    runtime.prepare_ipc_folder(runtime.default_control_endpoint())
    folder.chmod(0o770)
    with pytest.raises(DeblurdError, match="runtime folder"):
        runtime.prepare_ipc_folder(runtime.default_control_endpoint())


def test_socket_holder_names_the_process(tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/control.sock"
    script = (
        "import sys, zmq\n"
        "s = zmq.Context().socket(zmq.REP); s.bind(sys.argv[1]); print('up', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, endpoint, "holder-marker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        holder = runtime.socket_holder(endpoint)
        assert holder is not None and holder.startswith(f"pid {proc.pid} (")
        assert "holder-marker" in holder
    finally:
        proc.communicate("", timeout=10)
    assert runtime.socket_holder(f"ipc://{tmp_path}/none.sock") is None
    assert runtime.socket_holder("tcp://127.0.0.1:5555") is None
