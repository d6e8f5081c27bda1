"""Settings of the daemon: endpoints, job queue, lifecycle (the daemon issue fills this)."""

from __future__ import annotations

from pydantic import Field

from deblurd.settings.base import Section


class ServiceSettings(Section):
    """ZeroMQ endpoints and the job queue."""

    control_endpoint: str | None = Field(
        None, description="REP socket for requests; unset = ipc:// in the runtime directory"
    )
    results_endpoint: str | None = Field(
        None,
        description="PUB socket for events and results; unset = ipc:// in the runtime directory",
    )
    queue_size: int = Field(2, ge=1, le=64, description="capture jobs waiting at most; more = busy")
