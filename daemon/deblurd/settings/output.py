"""Settings of where and how results are written."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deblurd.settings.base import Section


class OutputSettings(Section):
    """Result files and their encoding."""

    directory: str = Field("deblurd-results", description="folder for result files")
    format: Literal["png", "jpeg"] = Field("png", description="result encoding")
    jpeg_quality: int = Field(92, ge=1, le=100, description="JPEG quality when format = jpeg")
    save_bursts: bool = Field(False, description="also save each job's burst directory")
