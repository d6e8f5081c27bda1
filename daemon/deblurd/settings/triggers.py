"""Settings of the shutter triggers: GPIO button, terminal key."""

from __future__ import annotations

from deblurd.settings.base import Section


class TriggerSettings(Section):
    """Which triggers are armed (the ZeroMQ control socket is always on)."""
