"""Shutter triggers: GPIO (gpiozero mock pins; gpiod against a fake of its v2 API), terminal."""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import queue
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any

import pytest
from pydantic import ValidationError

from deblurd.errors import ConfigError
from deblurd.service.triggers.base import Trigger, TriggerError
from deblurd.service.triggers.gpio import GpioTrigger, event_time_ns, resolve_backend
from deblurd.service.triggers.terminal import TerminalTrigger
from deblurd.settings.triggers import GpioSettings, TriggerSettings


class Presses:
    """Collects ``(timestamp_ns, source)`` calls; ``wait(n)`` blocks until n arrived."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self._cond = threading.Condition()

    def __call__(self, timestamp_ns: int, source: str) -> None:
        with self._cond:
            self.calls.append((timestamp_ns, source))
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 3.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.calls) >= count, timeout)


# -- settings --------------------------------------------------------------------------


def test_trigger_settings_defaults_and_validation() -> None:
    t = TriggerSettings()
    assert t.terminal is True
    assert t.gpio.enabled is False
    assert t.gpio.backend == "auto"
    g = GpioSettings.model_validate({"enabled": True, "pin": 27, "pull_up": False})
    assert g.pressed_low is False  # active_low follows pull_up when unset
    assert g.line_offset == 27  # line follows pin when unset
    g2 = GpioSettings.model_validate({"line": 5, "active_low": True, "pull_up": False})
    assert g2.line_offset == 5 and g2.pressed_low is True
    with pytest.raises(ValidationError):
        GpioSettings.model_validate({"backend": "rpi"})
    with pytest.raises(ValidationError):
        GpioSettings.model_validate({"bounce_ms": -1})
    with pytest.raises(ValidationError):
        GpioSettings.model_validate({"pinn": 3})


# -- gpiozero with mock pins -----------------------------------------------------------


@pytest.fixture
def mock_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    previous = gpiozero.Device.pin_factory
    factory = MockFactory()
    gpiozero.Device.pin_factory = factory
    yield factory
    factory.reset()
    gpiozero.Device.pin_factory = previous


def test_gpiozero_press_fires_once_with_press_time(mock_factory: Any) -> None:
    presses = Presses()
    trigger = GpioTrigger(GpioSettings(enabled=True, backend="gpiozero", pin=17), presses)
    assert isinstance(trigger, Trigger)
    trigger.start()
    try:
        assert trigger.backend == "gpiozero"
        pin = mock_factory.pin(17)
        assert pin.state  # pulled up, idle high
        t0 = time.monotonic_ns()
        pin.drive_low()
        t1 = time.monotonic_ns()
        pin.drive_high()  # release: not a press
        assert presses.wait(1)
        time.sleep(0.05)
        assert len(presses.calls) == 1
        ts, source = presses.calls[0]
        assert source == "gpio"
        assert t0 <= ts <= t1  # stamped at the press, not later
    finally:
        trigger.stop()
    pin.drive_low()  # disarmed: nothing more
    assert len(presses.calls) == 1


def test_gpiozero_bounce_respected(mock_factory: Any) -> None:
    presses = Presses()
    settings = GpioSettings(enabled=True, backend="gpiozero", pin=22, bounce_ms=200)
    trigger = GpioTrigger(settings, presses)
    trigger.start()
    try:
        pin = mock_factory.pin(22)
        for _ in range(4):  # contact chatter within a few ms
            pin.drive_low()
            pin.drive_high()
        assert len(presses.calls) == 1
        time.sleep(0.25)  # past the bounce time: a real second press
        pin.drive_low()
        pin.drive_high()
        assert len(presses.calls) == 2
        gap_ms = (presses.calls[1][0] - presses.calls[0][0]) / 1e6
        assert gap_ms >= 200
    finally:
        trigger.stop()


def test_gpiozero_callback_error_does_not_break_trigger(
    mock_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def flaky(ts: int, source: str) -> None:
        calls.append(ts)
        if len(calls) == 1:
            raise RuntimeError("queue exploded")

    trigger = GpioTrigger(GpioSettings(backend="gpiozero", pin=5, bounce_ms=0), flaky)
    trigger.start()
    try:
        pin = mock_factory.pin(5)
        with caplog.at_level(logging.ERROR):
            pin.drive_low()
            pin.drive_high()
        pin.drive_low()
        assert len(calls) == 2
        assert "queue exploded" in caplog.text
    finally:
        trigger.stop()


def test_gpiozero_active_low_mismatch_is_config_error(mock_factory: Any) -> None:
    settings = GpioSettings(backend="gpiozero", pull_up=True, active_low=False)
    with pytest.raises(ConfigError) as info:
        GpioTrigger(settings, Presses()).start()
    assert info.value.problems[0][0] == "triggers.gpio.active_low"


def test_gpiozero_invalid_pin_is_config_error(mock_factory: Any) -> None:
    with pytest.raises(ConfigError) as info:
        GpioTrigger(GpioSettings(backend="gpiozero", pin=99), Presses()).start()
    assert info.value.problems[0][0] == "triggers.gpio.pin"


def test_auto_picks_gpiozero_with_a_working_pin_factory(mock_factory: Any) -> None:
    assert resolve_backend("auto") == "gpiozero"


def test_missing_library_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # import -> ImportError
    monkeypatch.setitem(sys.modules, "gpiod", None)
    with pytest.raises(ConfigError) as info:
        GpioTrigger(GpioSettings(backend="gpiozero"), Presses()).start()
    assert "triggers.gpio.backend" in str(info.value) and "pip install gpiozero" in str(info.value)
    with pytest.raises(ConfigError) as info:
        GpioTrigger(GpioSettings(backend="gpiod"), Presses()).start()
    assert "pip install gpiod" in str(info.value)
    with pytest.raises(ConfigError) as info:
        resolve_backend("auto")
    assert info.value.problems[0][0] == "triggers.gpio.backend"


# -- gpiod (libgpiod v2) against a fake of its API -------------------------------------


class _Direction(Enum):
    AS_IS = 1
    INPUT = 2


class _Edge(Enum):
    NONE = 1
    RISING = 2
    FALLING = 3
    BOTH = 4


class _Bias(Enum):
    AS_IS = 1
    PULL_UP = 2
    PULL_DOWN = 3


class _Clock(Enum):
    MONOTONIC = 1
    REALTIME = 2


class _EventType(Enum):
    RISING_EDGE = 1
    FALLING_EDGE = 2


@dataclass
class _LineSettings:
    direction: _Direction = _Direction.AS_IS
    edge_detection: _Edge = _Edge.NONE
    bias: _Bias = _Bias.AS_IS
    active_low: bool = False
    debounce_period: timedelta = timedelta()
    event_clock: _Clock = _Clock.MONOTONIC


@dataclass
class _EdgeEvent:
    event_type: _EventType
    timestamp_ns: int
    line_offset: int = 0
    global_seqno: int = 0
    line_seqno: int = 0


class FakeRequest:
    """Follows gpiod.LineRequest: wait_edge_events(timeout) / read_edge_events() / release()."""

    def __init__(self) -> None:
        self.events: queue.Queue[_EdgeEvent] = queue.Queue()
        self.released = threading.Event()

    def wait_edge_events(self, timeout: float | None = None) -> bool:
        deadline = time.monotonic() + (timeout or 0.0)
        while self.events.empty():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def read_edge_events(self, max_events: int | None = None) -> list[_EdgeEvent]:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    def release(self) -> None:
        self.released.set()


class FakeGpiod(types.ModuleType):
    def __init__(self) -> None:
        super().__init__("gpiod")
        self.line = types.SimpleNamespace(
            Direction=_Direction, Edge=_Edge, Bias=_Bias, Clock=_Clock
        )
        self.LineSettings = _LineSettings
        self.EdgeEvent = types.SimpleNamespace(Type=_EventType)
        self.request = FakeRequest()
        self.requested: list[tuple[str, dict[Any, Any], str | None]] = []
        self.error: BaseException | None = None

    def request_lines(
        self, path: str, config: dict[Any, Any], consumer: str | None = None
    ) -> FakeRequest:
        if self.error is not None:
            raise self.error
        self.requested.append((path, config, consumer))
        return self.request


@pytest.fixture
def fake_gpiod(monkeypatch: pytest.MonkeyPatch) -> FakeGpiod:
    fake = FakeGpiod()
    monkeypatch.setitem(sys.modules, "gpiod", fake)
    return fake


def test_gpiod_requests_line_with_edge_detection(fake_gpiod: FakeGpiod) -> None:
    settings = GpioSettings(backend="gpiod", chip="gpiochip4", pin=17, bounce_ms=30)
    trigger = GpioTrigger(settings, Presses())
    trigger.start()
    trigger.stop()
    path, config, consumer = fake_gpiod.requested[0]
    assert path == "/dev/gpiochip4" and consumer == "deblurd"
    ls = config[17]
    assert ls.direction is _Direction.INPUT
    assert ls.edge_detection is _Edge.RISING
    assert ls.bias is _Bias.PULL_UP and ls.active_low is True  # button to ground
    assert ls.debounce_period == timedelta(milliseconds=30)
    assert ls.event_clock is _Clock.MONOTONIC
    assert fake_gpiod.request.released.wait(2.0)  # stop() releases the line


def test_gpiod_press_uses_kernel_timestamp_and_debounces(fake_gpiod: FakeGpiod) -> None:
    presses = Presses()
    settings = GpioSettings(backend="gpiod", pin=3, line=12, pull_up=False, bounce_ms=50)
    trigger = GpioTrigger(settings, presses)
    trigger.start()
    try:
        assert trigger.backend == "gpiod"
        assert fake_gpiod.requested[0][1][12].bias is _Bias.PULL_DOWN
        t = time.monotonic_ns() - 100_000_000  # the edge happened 100 ms before we read it
        ev = fake_gpiod.request.events
        ev.put(_EdgeEvent(_EventType.RISING_EDGE, t))
        ev.put(_EdgeEvent(_EventType.FALLING_EDGE, t + 2_000_000))  # release: ignored
        ev.put(_EdgeEvent(_EventType.RISING_EDGE, t + 5_000_000))  # bounce: ignored
        assert presses.wait(1)
        ev.put(_EdgeEvent(_EventType.RISING_EDGE, t + 60_000_000))  # a new press
        assert presses.wait(2)
        time.sleep(0.05)
        assert presses.calls == [(t, "gpio"), (t + 60_000_000, "gpio")]
    finally:
        trigger.stop()


def test_gpiod_foreign_clock_falls_back_to_read_time(fake_gpiod: FakeGpiod) -> None:
    presses = Presses()
    trigger = GpioTrigger(GpioSettings(backend="gpiod"), presses)
    trigger.start()
    try:
        realtime = time.time_ns()  # a REALTIME stamp, decades away from CLOCK_MONOTONIC
        t0 = time.monotonic_ns()
        fake_gpiod.request.events.put(_EdgeEvent(_EventType.RISING_EDGE, realtime))
        assert presses.wait(1)
        assert t0 <= presses.calls[0][0] <= time.monotonic_ns()
    finally:
        trigger.stop()


def test_event_time_ns() -> None:
    assert event_time_ns(1_000, 5_000) == (1_000, True)
    assert event_time_ns(9_000, 5_000) == (5_000, False)  # in the future
    assert event_time_ns(0, 20_000_000_000) == (20_000_000_000, False)  # too old


@pytest.mark.parametrize(
    ("error", "kind", "words"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file"), ConfigError, ["/dev/gpiochip9"]),
        (
            PermissionError(errno.EACCES, "Permission denied"),
            TriggerError,
            ["/dev/gpiochip9", "gpio"],
        ),
        (OSError(errno.EBUSY, "Device or resource busy"), TriggerError, ["busy", "line 17"]),
        (ValueError("invalid offset"), ConfigError, ["triggers.gpio.line"]),
    ],
)
def test_gpiod_errors_name_the_device(
    fake_gpiod: FakeGpiod, error: BaseException, kind: type[Exception], words: list[str]
) -> None:
    fake_gpiod.error = error
    with pytest.raises(kind) as info:
        GpioTrigger(GpioSettings(backend="gpiod", chip="/dev/gpiochip9"), Presses()).start()
    for word in words:
        assert word in str(info.value)
    assert info.value.__cause__ is error
    if isinstance(info.value, ConfigError):
        assert info.value.problems[0][0].startswith("triggers.gpio.")


def test_auto_falls_back_to_gpiod_without_pin_factory(
    fake_gpiod: FakeGpiod, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpiozero = pytest.importorskip("gpiozero")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(gpiozero.Device, "pin_factory", None)
    # No Raspberry Pi here (and on a Jetson): gpiozero loads no pin factory.
    assert resolve_backend("auto") == "gpiod"


def test_real_gpiod_api_accepts_our_line_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real bindings' LineSettings/enums take what we pass (no /dev/gpiochip here)."""
    gpiod = pytest.importorskip("gpiod")
    request = FakeRequest()
    seen: dict[str, Any] = {}

    def request_lines(path: str, config: dict[Any, Any], consumer: str | None = None) -> Any:
        seen.update(path=path, config=config, consumer=consumer)
        return request

    monkeypatch.setattr(gpiod, "request_lines", request_lines)
    presses = Presses()
    trigger = GpioTrigger(GpioSettings(backend="gpiod", pin=4, bounce_ms=20), presses)
    trigger.start()
    try:
        ls = seen["config"][4]
        assert isinstance(ls, gpiod.LineSettings)
        assert ls.edge_detection == gpiod.line.Edge.RISING
        assert ls.event_clock == gpiod.line.Clock.MONOTONIC
        t = time.monotonic_ns()
        event = gpiod.EdgeEvent(gpiod.EdgeEvent.Type.RISING_EDGE.value, t, 4, 1, 1)
        request.events.put(event)
        assert presses.wait(1)
        assert presses.calls[0] == (t, "gpio")
    finally:
        trigger.stop()


# -- terminal --------------------------------------------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, io.TextIOWrapper]]:
    master, slave = os.openpty()
    stream = os.fdopen(slave, "r")
    yield master, stream
    stream.close()
    with contextlib.suppress(OSError):
        os.close(master)


def test_terminal_each_enter_is_a_press(pty_pair: tuple[int, io.TextIOWrapper]) -> None:
    master, stream = pty_pair
    presses = Presses()
    trigger = TerminalTrigger(presses, stream=stream)
    assert isinstance(trigger, Trigger)
    trigger.start()
    try:
        assert trigger.running
        t0 = time.monotonic_ns()
        os.write(master, b"\n")
        assert presses.wait(1)
        t1 = time.monotonic_ns()
        assert t0 <= presses.calls[0][0] <= t1
        assert presses.calls[0][1] == "terminal"
        os.write(master, b"shoot\n\n")
        assert presses.wait(3)
        time.sleep(0.05)
        assert len(presses.calls) == 3
    finally:
        trigger.stop()
    assert not trigger.running


def test_terminal_eof_ends_quietly(pty_pair: tuple[int, io.TextIOWrapper]) -> None:
    master, stream = pty_pair
    presses = Presses()
    trigger = TerminalTrigger(presses, stream=stream)
    trigger.start()
    os.write(master, b"\x04")  # Ctrl-D: end of input in canonical mode
    deadline = time.monotonic() + 3.0
    while trigger.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not trigger.running
    assert presses.calls == []
    trigger.stop()


def test_terminal_closed_terminal_ends_quietly(pty_pair: tuple[int, io.TextIOWrapper]) -> None:
    master, stream = pty_pair
    trigger = TerminalTrigger(Presses(), stream=stream)
    trigger.start()
    os.close(master)  # the terminal goes away: reads fail with EIO
    deadline = time.monotonic() + 3.0
    while trigger.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not trigger.running
    trigger.stop()


def test_terminal_not_a_tty_is_a_noop(caplog: pytest.LogCaptureFixture) -> None:
    r, w = os.pipe()
    with os.fdopen(r, "r") as stream, caplog.at_level(logging.INFO):
        trigger = TerminalTrigger(Presses(), stream=stream)
        trigger.start()
        assert not trigger.running
        assert "not a terminal" in caplog.text
        trigger.stop()
    os.close(w)
    TerminalTrigger(Presses(), stream=io.StringIO("\n")).start()  # no fileno: no-op too
