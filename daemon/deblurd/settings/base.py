"""The base of every settings model: strict, unknown keys rejected, immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys are errors (a typo must never be ignored)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, validate_default=True)
