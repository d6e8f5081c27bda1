"""Settings of the daemon: ZeroMQ endpoints, the job queue, lifecycle bounds."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from deblurd.settings.base import Section

METRICS_ENDPOINT_PATTERN = (
    r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):"
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$"
)
TCP_ENDPOINT_PATTERN = (
    r"^tcp://(\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):"
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$"
)
"""``tcp://HOST:PORT``: HOST a name, an IPv4 address, ``[IPv6]`` or ``*`` (every interface)."""
IPC_PATH_MAX = 107
"""Longest path of an ``ipc://`` socket file, bytes (``sun_path`` less its NUL)."""


def check_endpoint(value: str) -> str:
    """``value`` when it is an endpoint the daemon can serve and clients in other processes
    can reach: ``ipc://PATH`` (``ipc://@NAME``: Linux abstract namespace) or
    ``tcp://HOST:PORT``; else ValueError saying what is wrong with it."""
    if value.startswith("ipc://"):
        path = value[len("ipc://") :]
        if not path or path == "@":
            raise ValueError(f"{value!r}: ipc:// needs the path of the socket file")
        if len(path.encode()) > IPC_PATH_MAX:
            raise ValueError(
                f"{value!r}: the socket path is {len(path.encode())} bytes, longer than the "
                f"{IPC_PATH_MAX} a Unix socket allows"
            )
        if "\0" in path:
            raise ValueError(f"{value!r}: the socket path holds a NUL byte")
        return value
    if value.startswith("tcp://"):
        if re.fullmatch(TCP_ENDPOINT_PATTERN, value) is None:
            raise ValueError(
                f"{value!r} is not tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555, "
                "tcp://[::1]:5555, tcp://*:5555; port 1-65535)"
            )
        return value
    if value.startswith("inproc://"):
        raise ValueError(
            f"{value!r}: inproc:// reaches only this process, no client can connect; use "
            "ipc://PATH or tcp://HOST:PORT"
        )
    raise ValueError(
        f"{value!r} is not a ZeroMQ endpoint this daemon serves: ipc://PATH or tcp://HOST:PORT"
    )


class ServiceSettings(Section):
    """ZeroMQ endpoints, the capture-job queue, and the daemon's time limits."""

    control_endpoint: str | None = Field(
        None,
        description="control socket (REP-compatible: REQ clients work), e.g. "
        "tcp://127.0.0.1:5555 (ipc://PATH or tcp://HOST:PORT; the folder of an ipc:// "
        "path must exist); unset = ipc:// in the runtime directory ($RUNTIME_DIRECTORY "
        "under systemd, else $XDG_RUNTIME_DIR/deblurd, else /run/deblurd for root, else "
        "/tmp/deblurd-$UID), which deblurd creates",
    )
    results_endpoint: str | None = Field(
        None,
        description="PUB socket for events and results; unset = ipc:// in the runtime directory",
    )
    curve_keys_dir: str | None = Field(
        None,
        description="folder of the CURVE keys a tcp:// endpoint needs (server.key_secret, "
        "and the allowed clients' public keys clients/*.key; make them with `deblurd keys "
        "DIR`); unset = $CREDENTIALS_DIRECTORY (systemd LoadCredential=) when set, else "
        "curve/ in the state directory ($STATE_DIRECTORY, else ~/.local/state/deblurd). "
        "Keys are never read from this file",
    )
    insecure: bool = Field(
        False,
        description="serve tcp:// endpoints without CURVE (no authentication, no "
        "encryption: anyone who can reach the port can trigger and read every result); "
        "without it a tcp:// endpoint without keys refuses to start",
    )
    queue_size: int = Field(2, ge=1, le=64, description="capture jobs waiting at most; more = busy")
    max_request_bytes: int = Field(
        65536,
        ge=256,
        le=16 * 1024 * 1024,
        description="largest control request answered normally, bytes; larger ones get the "
        "error code too_large, and ones over 16 times this (at least 1 MiB) make ZeroMQ drop "
        "the sender's connection without reading them",
    )
    results_hwm: int = Field(
        50,
        ge=1,
        le=100_000,
        description="messages queued per results subscriber before ZeroMQ drops new ones for "
        "it (a result with its image is one message)",
    )
    start_timeout_s: float = Field(
        15.0, gt=0.0, le=600.0, description="longest wait for the camera's first frames, s"
    )
    window_margin_s: float = Field(
        1.0,
        gt=0.0,
        le=60.0,
        description="extra wait, beyond the frames' own duration, for the ring frames after "
        "a trigger, s",
    )
    shutdown_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=300.0,
        description="on SIGTERM the running job gets this long to finish before it is "
        "abandoned and the daemon exits, s",
    )
    camera_stale_s: float = Field(
        2.0,
        gt=0.0,
        le=600.0,
        description="no frame for this long = the camera has failed: status and an error "
        "event say so, the watchdog stops being fed and the camera is restarted, s",
    )
    camera_retry_max_s: float = Field(
        30.0,
        gt=0.0,
        le=3600.0,
        description="longest pause between camera restarts (the back-off doubles up to it), s",
    )
    status_interval_s: float = Field(
        10.0, gt=0.0, le=3600.0, description="how often the sd_notify STATUS= line is refreshed, s"
    )
    metrics_endpoint: str | None = Field(
        None,
        description="HOST:PORT of an HTTP endpoint serving Prometheus metrics at /metrics, "
        'e.g. "127.0.0.1:9464" ("[::1]:9464" for IPv6); unset = none. Needs the '
        "prometheus-client package (the deblurd[metrics] extra)",
    )

    @field_validator("control_endpoint", "results_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint(value)

    @field_validator("metrics_endpoint")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and re.fullmatch(METRICS_ENDPOINT_PATTERN, value) is None:
            raise ValueError(
                f'{value!r} is not HOST:PORT (e.g. "127.0.0.1:9464", "[::1]:9464"; port 1-65535)'
            )
        return value
