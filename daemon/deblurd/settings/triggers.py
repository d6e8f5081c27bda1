"""Settings of the shutter triggers: GPIO button, terminal key."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deblurd.settings.base import Section


class GpioSettings(Section):
    """A push button on a GPIO line (see ``deblurd.service.triggers.gpio``).

    The usual wiring: the button connects the pin to ground and the line is pulled up,
    so a press drives it low (``pull_up = true``, ``active_low`` unset).
    """

    enabled: bool = Field(False, description="arm the GPIO button")
    backend: Literal["auto", "gpiozero", "gpiod"] = Field(
        "auto",
        description="gpiozero (Raspberry Pi), gpiod = libgpiod v2 (Jetson, any Linux board); "
        "auto = gpiozero when it has a working pin factory, else gpiod",
    )
    pin: int = Field(
        17, ge=0, le=1023, description="BCM GPIO number of the button (17 = header pin 11 on a Pi)"
    )
    chip: str = Field(
        "/dev/gpiochip0", description="GPIO character device of the line (gpiod backend)"
    )
    line: int | None = Field(
        None, ge=0, le=1023, description="line offset on chip (gpiod backend); unset = pin"
    )
    pull_up: bool = Field(
        True, description="internal bias: true = pull-up (button to ground), false = pull-down"
    )
    active_low: bool | None = Field(
        None,
        description="a press drives the line low; unset = same as pull_up "
        "(the gpiozero backend needs them equal)",
    )
    bounce_ms: int = Field(
        50,
        ge=0,
        le=2000,
        description="debounce time: edges closer than this to the last press are ignored, ms",
    )

    @property
    def pressed_low(self) -> bool:
        """True when a press drives the line low (``active_low``, or ``pull_up`` when unset)."""
        return self.pull_up if self.active_low is None else self.active_low

    @property
    def line_offset(self) -> int:
        """The line offset on ``chip``: ``line``, or ``pin`` when unset."""
        return self.pin if self.line is None else self.line


class TriggerSettings(Section):
    """Which triggers are armed (the ZeroMQ control socket is always on)."""

    terminal: bool = Field(
        True, description="the Enter key is a shutter press when stdin is a terminal"
    )
    gpio: GpioSettings = Field(default_factory=GpioSettings)
