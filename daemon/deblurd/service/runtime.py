"""Where the daemon's sockets and results live: runtime directory, endpoints, output folder.

Defaults (DESIGN §4): ``ipc://`` endpoints in

1. ``$RUNTIME_DIRECTORY`` when set: systemd's ``RuntimeDirectory=`` (``/run/deblurd`` for
   the installed service, mode ``0750`` so that members of the ``deblurd`` group may talk
   to the daemon);
2. else ``$XDG_RUNTIME_DIR/deblurd`` (systemd's per-user tmpfs);
3. else, for root, ``/run/deblurd`` (as under systemd: ``/tmp/deblurd-0`` would be shared
   by every root process on the machine);
4. else ``/tmp/deblurd-$UID``.

A folder of cases 2-4 is created ``0700`` (its parent must exist) so that only its owner
can talk to the daemon. That is the only folder deblurd creates for a socket: the folder
of a configured ``ipc://`` endpoint must exist (:func:`prepare_ipc_folder`). After
binding, the daemon makes its socket files ``0660`` (:func:`share_ipc_file`): connecting
needs write permission, and the folder decides who gets that far. TCP only when
configured.

Results (``output.directory``) go to ``$STATE_DIRECTORY/results`` (systemd's
``StateDirectory=``) when the config leaves the default (:func:`output_directory`).

``deblurctl`` uses the same functions (:func:`client_endpoints`), so daemon and client
agree without a config file; when the per-user sockets are not there it falls back to the
installed service's ``/run/deblurd``.

No ZeroMQ or settings import here: the client's start-up stays cheap.
"""

from __future__ import annotations

import grp
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from deblurd.errors import ConfigError, DeblurdError

CONTROL_SOCKET = "control.sock"
RESULTS_SOCKET = "results.sock"
SYSTEM_RUNTIME_DIR = Path("/run/deblurd")
"""The installed service's runtime directory (``RuntimeDirectory=deblurd``)."""
RESULTS_SUBDIR = "results"
SOCKET_MODE = 0o660
_IPC = "ipc://"


def _first_dir(variable: str) -> Path | None:
    """The first folder of a systemd directory variable (``A:B`` when the unit lists
    several), None when unset or empty."""
    value = os.environ.get(variable, "").split(":")[0]
    return Path(value) if value else None


def systemd_runtime_dir() -> Path | None:
    """``$RUNTIME_DIRECTORY`` (set by systemd's ``RuntimeDirectory=``), or None."""
    return _first_dir("RUNTIME_DIRECTORY")


def default_runtime_dir() -> Path:
    """Where the daemon puts its ipc sockets when none are configured (see module)."""
    systemd = systemd_runtime_dir()
    if systemd is not None:
        return systemd
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "deblurd"
    if os.getuid() == 0:
        return SYSTEM_RUNTIME_DIR
    return Path(f"/tmp/deblurd-{os.getuid()}")


def default_control_endpoint() -> str:
    return f"{_IPC}{default_runtime_dir() / CONTROL_SOCKET}"


def default_results_endpoint() -> str:
    return f"{_IPC}{default_runtime_dir() / RESULTS_SOCKET}"


@dataclass(frozen=True)
class Endpoints:
    """The two endpoints the daemon binds."""

    control: str
    results: str


def resolve_endpoints(control: str | None, results: str | None) -> Endpoints:
    """The configured endpoints, or the defaults for those unset."""
    return Endpoints(control or default_control_endpoint(), results or default_results_endpoint())


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ``ipc://`` endpoint; None for other transports."""
    if endpoint.startswith(_IPC):
        rest = endpoint[len(_IPC) :]
        if rest and not rest.startswith("@"):  # "@name": Linux abstract namespace, no file
            return Path(rest)
    return None


def _is_there(path: Path) -> bool:
    """True when ``path`` exists, or may: a folder we cannot search hides it (then the
    client names the group to join rather than timing out)."""
    try:
        path.lstat()
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def client_endpoints(control: str | None = None, results: str | None = None) -> Endpoints:
    """The endpoints ``deblurctl`` talks to: the given ones; for those not given, the
    per-user default folder when its control socket exists, else ``/run/deblurd`` (the
    installed service) when its control socket exists, else the per-user default.

    A results endpoint not given next to a given ``ipc://`` control endpoint is the
    ``results.sock`` beside it (the daemon's default layout)."""
    if control is not None:
        path = ipc_path(control)
        if results is None and path is not None:
            results = f"{_IPC}{path.parent / RESULTS_SOCKET}"
        return Endpoints(control, results or default_results_endpoint())
    folder = default_runtime_dir()
    if not _is_there(folder / CONTROL_SOCKET) and _is_there(SYSTEM_RUNTIME_DIR / CONTROL_SOCKET):
        folder = SYSTEM_RUNTIME_DIR
    return Endpoints(
        f"{_IPC}{folder / CONTROL_SOCKET}", results or f"{_IPC}{folder / RESULTS_SOCKET}"
    )


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_ipc_access(endpoint: str) -> None:
    """Raise :class:`DeblurdError` naming the group to join when this user cannot connect
    to the existing socket file of an ``ipc://`` endpoint (ZeroMQ itself would only retry
    in silence). A missing file is left to the caller's timeout."""
    path = ipc_path(endpoint)
    if path is None:
        return
    try:
        st = path.stat()
    except PermissionError as exc:  # a folder on the way cannot be searched
        folder = path.parent
        try:
            group = _group_name(folder.stat().st_gid)
        except OSError:
            group = "deblurd"
        raise DeblurdError(
            f"{endpoint}: permission denied on {folder}: {_join_hint(group)}"
        ) from exc
    except OSError:
        return
    if not os.access(path, os.R_OK | os.W_OK):
        group = _group_name(st.st_gid)
        raise DeblurdError(
            f"{endpoint}: permission denied on {path} (mode {stat.S_IMODE(st.st_mode):04o}, "
            f"group {group}): {_join_hint(group)}"
        )


def _join_hint(group: str) -> str:
    return f"join group '{group}' (sudo usermod -aG {group} $USER, then log in again)"


def prepare_ipc_folder(endpoint: str, key: str | None = None) -> None:
    """Make sure the folder of an ``ipc://`` endpoint is there: the default runtime folder
    is created (``0700``, its parent must exist); any other folder must exist already (a
    configured ``ipc:///nonexistent/dir/c.sock`` must not make root create
    ``/nonexistent/dir``).

    Raises :class:`ConfigError` naming ``key`` (when given) for a configured endpoint whose
    folder does not exist, else :class:`DeblurdError` naming the folder when it cannot be
    made, or when it is the default runtime folder and not safe: not a real folder owned by
    this user, or open to others (mode ``0700``; ``0750`` is accepted for systemd's
    ``$RUNTIME_DIRECTORY``, whose group is the service's, and for ``/run/deblurd`` as root,
    whatever its owner: only root or systemd can make it). A stale socket file left by a
    daemon that died is replaced by ZeroMQ's bind."""
    path = ipc_path(endpoint)
    if path is None:
        return
    folder = path.parent
    default = folder == default_runtime_dir()
    if not default and not folder.is_dir():
        message = (
            f"{endpoint}: folder {folder} does not exist (deblurd creates only its own "
            f"runtime folder, {default_runtime_dir()}): create it, or choose another endpoint"
        )
        if key is None:
            raise DeblurdError(message)
        raise ConfigError(message, [(key, message)])
    try:
        if not folder.is_dir():
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
        if default:
            system = folder == SYSTEM_RUNTIME_DIR and os.getuid() == 0
            systemd = folder == systemd_runtime_dir() or system
            allowed = stat.S_IRGRP | stat.S_IXGRP if systemd else 0
            st = folder.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if (
                not stat.S_ISDIR(st.st_mode)
                or (st.st_uid != os.getuid() and not system)
                or mode & (stat.S_IRWXG | stat.S_IRWXO) & ~allowed
            ):
                wanted = "0750 or 0700" if systemd else "0700"
                raise DeblurdError(
                    f"{folder}: runtime folder must be a folder owned by this user (uid "
                    f"{os.getuid()}) with mode {wanted}, not uid {st.st_uid} mode {mode:04o} "
                    "(fix: chmod 700, or remove it and let the daemon create it)"
                )
    except OSError as exc:
        raise DeblurdError(f"{folder}: cannot create the socket folder: {exc}") from exc


def socket_holder(endpoint: str) -> str | None:
    """Which process has the socket file of an ``ipc://`` endpoint open: ``"pid N (command
    line)"``, or None when it cannot be found (another user's process, no ``/proc``).
    Found by the socket's inode in ``/proc/net/unix`` and each process's open files."""
    path = ipc_path(endpoint)
    if path is None:
        return None
    inodes: set[str] = set()
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as fh:
            next(fh, None)
            for line in fh:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == str(path):
                    inodes.add(fields[6])
    except OSError:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    if not wanted:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    raw = (proc / "cmdline").read_bytes()
                    command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"pid {proc.name} ({command or '?'})"
        except OSError:
            continue
    return None


def share_ipc_file(endpoint: str, mode: int = SOCKET_MODE) -> None:
    """Give the socket file of a bound ``ipc://`` endpoint ``mode`` (default ``0660``):
    ZeroMQ creates it with the umask, and connecting needs write permission, so the
    group (``deblurd`` for the installed service) could not connect otherwise. Who may
    reach the file at all is the folder's business (see module)."""
    path = ipc_path(endpoint)
    if path is None:
        return
    try:
        os.chmod(path, mode)
    except OSError as exc:
        raise DeblurdError(f"{path}: cannot set the socket's mode to {mode:04o}: {exc}") from exc


def remove_ipc_file(endpoint: str) -> None:
    """Remove the socket file of an ``ipc://`` endpoint after the daemon closed it."""
    path = ipc_path(endpoint)
    if path is not None:
        try:
            if path.is_socket():
                path.unlink()
        except OSError:
            pass


def state_directory() -> Path | None:
    """``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``), or None."""
    return _first_dir("STATE_DIRECTORY")


def output_directory(configured: str, default: str) -> str:
    """The results folder: ``configured``, except that the built-in ``default`` becomes
    ``$STATE_DIRECTORY/results`` under systemd's ``StateDirectory=``."""
    state = state_directory()
    if configured == default and state is not None:
        return str(state / RESULTS_SUBDIR)
    return configured
