"""Settings of where and how results are written."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deblurd.settings.base import Section


class OutputSettings(Section):
    """Result files and their encoding, and how many are kept."""

    directory: str = Field(
        "deblurd-results",
        description="folder for result files (a relative path is from the working "
        "directory); this default becomes $STATE_DIRECTORY/results under systemd's "
        "StateDirectory= (/var/lib/deblurd/results for the installed service)",
    )
    format: Literal["png", "jpeg"] = Field("png", description="result encoding")
    jpeg_quality: int = Field(92, ge=1, le=100, description="JPEG quality when format = jpeg")
    save_bursts: bool = Field(
        False, description="also save each job's burst directory (under bursts/ in directory)"
    )
    max_files: int = Field(
        200,
        ge=1,
        le=1_000_000,
        description="results kept at most (one result = image + JSON [+ burst]); "
        "oldest removed first",
    )
    max_bytes: int = Field(
        2 * 1024**3,
        ge=1024**2,
        description="total size of the kept results at most, bytes (default 2 GiB); "
        "oldest removed first",
    )
