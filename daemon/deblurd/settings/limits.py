"""Settings of how large an input image or burst may be: refused before it is decoded."""

from __future__ import annotations

from pydantic import Field, model_validator

from deblurd.settings.base import Section

DEFAULT_MAX_FRAME_PIXELS = 1 << 26
"""64 Mi px (67.1 MP); the same as ``deblurd.imaging.DEFAULT_MAX_FRAME_PIXELS`` (settings import
no image library)."""
DEFAULT_MAX_BURST_PIXELS = 1 << 28
"""256 Mi px: about 770 MiB of 8-bit frames (four frames at the per-frame limit, thirty at
3840x2160)."""


class LimitsSettings(Section):
    """Size limits of the images deblurd reads (``deblurd process``, ``deblurd deblur``, the
    replay camera). Each image's header is checked before it is decoded: a
    small PNG can promise gigabytes of pixels."""

    max_frame_pixels: int = Field(
        DEFAULT_MAX_FRAME_PIXELS,
        ge=1,
        le=1 << 31,
        description="largest image read, px (width x height; default 64 Mi px = 67.1 MP, "
        "a little above the largest supported sensor, 64 MP)",
    )
    max_burst_pixels: int = Field(
        DEFAULT_MAX_BURST_PIXELS,
        ge=1,
        le=1 << 34,
        description="largest burst directory read, px summed over its frames (default "
        "256 Mi px, about 770 MiB of 8-bit frames)",
    )

    @model_validator(mode="after")
    def _burst_holds_a_frame(self) -> LimitsSettings:
        if self.max_burst_pixels < self.max_frame_pixels:
            raise ValueError(
                f"max_burst_pixels ({self.max_burst_pixels}) is smaller than max_frame_pixels "
                f"({self.max_frame_pixels})"
            )
        return self
