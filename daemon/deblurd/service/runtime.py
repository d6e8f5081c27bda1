"""Where the daemon's sockets live: the per-user runtime directory and the endpoints.

Defaults (DESIGN §4): ``ipc://`` endpoints in ``$XDG_RUNTIME_DIR/deblurd/`` (systemd's
per-user tmpfs), else ``/tmp/deblurd-$UID/deblurd/``; the folder is created ``0700`` so
only its owner can talk to the daemon. TCP only when configured. ``deblurctl`` uses the
same functions, so daemon and client agree without a config file.

No ZeroMQ import here: the client's start-up stays cheap.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from deblurd.errors import DeblurdError

CONTROL_SOCKET = "control.sock"
RESULTS_SOCKET = "results.sock"
_IPC = "ipc://"


def default_runtime_dir() -> Path:
    """Where the daemon puts its ipc sockets when none are configured."""
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/deblurd-{os.getuid()}"
    return Path(base) / "deblurd"


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


def prepare_ipc_folder(endpoint: str) -> None:
    """Create the folder of an ``ipc://`` endpoint (``0700`` when we create it).

    Raises :class:`DeblurdError` naming the folder when it cannot be made, or when it is
    the default runtime folder and someone else can enter it. (A stale socket file left by
    a daemon that died is replaced by ZeroMQ's bind.)"""
    path = ipc_path(endpoint)
    if path is None:
        return
    folder = path.parent
    try:
        if not folder.is_dir():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
        if folder == default_runtime_dir():
            st = folder.stat()
            if st.st_uid != os.getuid() or st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise DeblurdError(
                    f"{folder}: runtime folder must be owned by this user with mode 0700 "
                    "(fix: chmod 700, or remove it and let the daemon create it)"
                )
    except OSError as exc:
        raise DeblurdError(f"{folder}: cannot create the socket folder: {exc}") from exc


def remove_ipc_file(endpoint: str) -> None:
    """Remove the socket file of an ``ipc://`` endpoint after the daemon closed it."""
    path = ipc_path(endpoint)
    if path is not None:
        try:
            if path.is_socket():
                path.unlink()
        except OSError:
            pass
