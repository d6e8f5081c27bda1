"""The GPIO shutter button: gpiozero (Raspberry Pi) or libgpiod v2 (``gpiod``; Jetson, any board).

Backends (``triggers.gpio.backend``):

* ``gpiozero``: ``Button(pin, pull_up=..., bounce_time=...)``; ``when_pressed`` stamps the
  press with ``time.monotonic_ns()`` first thing in the handler (gpiozero's event thread).
* ``gpiod``: the line requested with rising-edge detection on the *logical* value
  (``active_low`` makes a falling wire a rising edge), bias and kernel debounce; a thread
  waits on edge events. The press time is the kernel's event timestamp (CLOCK_MONOTONIC,
  the clock of ``time.monotonic_ns``), so it is the time of the edge, not of the read.
* ``auto``: gpiozero when it imports and has a working pin factory (a Raspberry Pi, or
  ``GPIOZERO_PIN_FACTORY=mock``), else gpiod.

On top of the backend's debounce every backend applies a lockout: an edge less than
``bounce_ms`` after the last accepted press is ignored (gpiozero's mock pins ignore
``bounce_time``, and not every GPIO chip debounces in hardware).

Hardware libraries are imported lazily, inside their backend. A library that is not
installed is a :class:`ConfigError` naming ``triggers.gpio.backend``; a chip that is not
there a :class:`ConfigError` naming ``triggers.gpio.chip``; no permission or a busy line
a :class:`TriggerError` naming the device node and the group to join.
"""

from __future__ import annotations

import errno
import grp
import importlib
import logging
import os
import threading
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, assert_never

from deblurd.errors import ConfigError
from deblurd.service.triggers.base import TriggerCallback, TriggerError, deliver
from deblurd.settings.triggers import GpioSettings

log = logging.getLogger(__name__)

_POLL_S = 0.2  # how often the gpiod thread checks for stop(), s
_MAX_EVENT_AGE_NS = 10_000_000_000  # an event timestamp older than this is not trusted, ns
GpioLibrary = Literal["gpiozero", "gpiod"]
"""The GPIO libraries a button runs on (``auto`` resolves to one of them)."""

_INSTALL = {
    "gpiozero": "pip install gpiozero (Raspberry Pi: the deblurd[pi] extra, or python3-gpiozero)",
    "gpiod": "pip install gpiod (libgpiod v2 bindings; the deblurd[jetson] extra)",
}


class GpioTrigger:
    """A push button on a GPIO line; ``name`` = ``"gpio"``."""

    def __init__(self, settings: GpioSettings, on_press: TriggerCallback) -> None:
        self._settings = settings
        self._on_press = on_press
        self._bounce_ns = settings.bounce_ms * 1_000_000
        self._last_press_ns: int | None = None
        self._press_lock = threading.Lock()
        self._backend: GpioLibrary | None = None
        self._button: Any = None  # gpiozero.Button
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return "gpio"

    @property
    def backend(self) -> GpioLibrary | None:
        """The backend in use after :meth:`start` (``"gpiozero"`` or ``"gpiod"``), else None."""
        return self._backend

    def start(self) -> None:
        """Arm the button. Raises :class:`ConfigError` or :class:`TriggerError` (see module)."""
        if self._backend is not None:
            return
        backend = resolve_backend(self._settings.backend)
        match backend:
            case "gpiozero":
                self._start_gpiozero()
            case "gpiod":
                self._start_gpiod()
            case _:
                assert_never(backend)
        self._backend = backend
        log.info("GPIO button armed: %s (%s)", self._where(backend), backend)

    def stop(self) -> None:
        """Disarm the button and release the line (returns within about 0.2 s)."""
        self._stop.set()
        button, self._button = self._button, None
        if button is not None:
            try:
                button.close()
            except Exception:  # closing must not fail shutdown
                log.debug("closing the gpiozero button failed", exc_info=True)
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)
        self._backend = None

    # -- presses ---------------------------------------------------------------------

    def _press(self, timestamp_ns: int) -> None:
        """Deliver a press unless it falls within ``bounce_ms`` of the last accepted one."""
        with self._press_lock:
            last = self._last_press_ns
            if last is not None and 0 <= timestamp_ns - last < self._bounce_ns:
                log.debug(
                    "GPIO edge %.1f ms after the last press ignored (bounce)",
                    (timestamp_ns - last) / 1e6,
                )
                return
            self._last_press_ns = timestamp_ns
        deliver(self._on_press, timestamp_ns, self.name)

    def _where(self, backend: GpioLibrary) -> str:
        s = self._settings
        match backend:
            case "gpiozero":
                return f"GPIO{s.pin}"
            case "gpiod":
                return f"{chip_path(s.chip)} line {s.line_offset}"
            case _:
                assert_never(backend)

    # -- gpiozero --------------------------------------------------------------------

    def _start_gpiozero(self) -> None:
        s = self._settings
        if s.active_low is not None and s.active_low != s.pull_up:
            raise ConfigError(
                "triggers.gpio.active_low must equal pull_up with the gpiozero backend "
                "(a pulled-up button is pressed when low)",
                [("triggers.gpio.active_low", "must equal triggers.gpio.pull_up for gpiozero")],
            )
        gz = _import_backend("gpiozero")
        problem = _pin_factory_problem(gz)
        if problem is not None:
            raise TriggerError(
                f"gpiozero has no working pin factory ({problem}); on a Raspberry Pi install "
                'lgpio (python3-lgpio), elsewhere set triggers.gpio.backend = "gpiod"'
            )
        self._stop.clear()
        try:
            button = gz.Button(
                s.pin, pull_up=s.pull_up, bounce_time=s.bounce_ms / 1000 if s.bounce_ms else None
            )
        except gz.PinInvalidPin as exc:
            raise ConfigError(
                f"triggers.gpio.pin = {s.pin}: not a GPIO pin on this board: {exc}",
                [("triggers.gpio.pin", str(exc))],
            ) from exc
        except gz.GPIOPinInUse as exc:
            raise TriggerError(f"GPIO{s.pin} is already in use: {exc}") from exc
        except Exception as exc:
            raise TriggerError(
                f"GPIO{s.pin}: cannot set up the button: {exc}; check that /dev/gpiochip* "
                "is readable by the daemon's user (group 'gpio')"
            ) from exc
        button.when_pressed = self._on_gpiozero_pressed
        self._button = button

    def _on_gpiozero_pressed(self) -> None:
        now = time.monotonic_ns()  # first: the press time, not the time we get to it
        self._press(now)

    # -- gpiod (libgpiod v2) ---------------------------------------------------------

    def _start_gpiod(self) -> None:
        s = self._settings
        gpiod = _import_backend("gpiod")
        chip = chip_path(s.chip)
        offset = s.line_offset
        line = gpiod.line
        line_settings = gpiod.LineSettings(
            direction=line.Direction.INPUT,
            edge_detection=line.Edge.RISING,  # logical: inactive -> active = pressed
            bias=line.Bias.PULL_UP if s.pull_up else line.Bias.PULL_DOWN,
            active_low=s.pressed_low,
            debounce_period=timedelta(milliseconds=s.bounce_ms),
            event_clock=line.Clock.MONOTONIC,
        )
        try:
            request = gpiod.request_lines(chip, config={offset: line_settings}, consumer="deblurd")
        except FileNotFoundError as exc:
            raise ConfigError(
                f"triggers.gpio.chip = {s.chip!r}: {chip} does not exist "
                f"(GPIO chips here: {', '.join(available_chips()) or 'none'})",
                [("triggers.gpio.chip", f"{chip} does not exist")],
            ) from exc
        except PermissionError as exc:
            raise TriggerError(
                f"{chip}: permission denied: add the daemon's user to group "
                f"'{device_group(chip)}' (the group owning {chip})"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise TriggerError(
                    f"{chip} line {offset} is busy: another program holds it (see gpioinfo)"
                ) from exc
            raise TriggerError(
                f"{chip} line {offset}: cannot request it: {exc.strerror or exc}"
            ) from exc
        except ValueError as exc:  # offset not on this chip
            raise ConfigError(
                f"triggers.gpio.line = {offset}: not a line of {chip}: {exc}",
                [("triggers.gpio.line", str(exc))],
            ) from exc
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._gpiod_loop,
            args=(request, gpiod.EdgeEvent.Type.RISING_EDGE),
            name="deblurd-gpio-trigger",
            daemon=True,
        )
        self._thread.start()

    def _gpiod_loop(self, request: Any, rising: Any) -> None:
        warned = False
        try:
            while not self._stop.is_set():
                try:
                    if not request.wait_edge_events(_POLL_S):
                        continue
                    events = request.read_edge_events()
                except Exception as exc:
                    log.error("GPIO button: waiting for edge events failed: %s", exc)
                    return
                now = time.monotonic_ns()
                for event in events:
                    if event.event_type != rising:
                        continue
                    ts, trusted = event_time_ns(int(event.timestamp_ns), now)
                    if not trusted and not warned:
                        warned = True
                        log.warning(
                            "GPIO edge timestamps are not on CLOCK_MONOTONIC: "
                            "using the time they were read"
                        )
                    self._press(ts)
        finally:
            try:
                request.release()
            except Exception:
                log.debug("releasing the GPIO line failed", exc_info=True)


def event_time_ns(event_ns: int, now_ns: int) -> tuple[int, bool]:
    """The press time on ``time.monotonic_ns``'s clock from a kernel edge-event timestamp.

    The line is requested with ``event_clock = MONOTONIC``, the clock ``time.monotonic_ns``
    reads on Linux, so the event time is used as is. A timestamp in the future or more
    than 10 s old means another clock (realtime, HTE): then ``now_ns`` (the read time) is
    used. Returns ``(timestamp_ns, trusted)``.
    """
    if 0 <= now_ns - event_ns <= _MAX_EVENT_AGE_NS:
        return event_ns, True
    return now_ns, False


def resolve_backend(backend: Literal["auto"] | GpioLibrary) -> GpioLibrary:
    """``"gpiozero"`` or ``"gpiod"`` for a configured backend (``auto`` picks, see module)."""
    if backend != "auto":
        return backend
    reasons: list[str] = []
    try:
        gz = importlib.import_module("gpiozero")
    except ImportError as exc:
        reasons.append(f"gpiozero not installed ({exc})")
    else:
        problem = _pin_factory_problem(gz)
        if problem is None:
            return "gpiozero"
        reasons.append(f"gpiozero has no working pin factory ({problem})")
    try:
        importlib.import_module("gpiod")
    except ImportError as exc:
        reasons.append(f"gpiod not installed ({exc})")
    else:
        return "gpiod"
    message = (
        f'triggers.gpio.backend = "auto": no usable GPIO library: {"; ".join(reasons)}. '
        f"Install one: {_INSTALL['gpiozero']}; or {_INSTALL['gpiod']}"
    )
    raise ConfigError(message, [("triggers.gpio.backend", message)])


def _import_backend(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f'triggers.gpio.backend = "{name}" but {name} is not installed: {_INSTALL[name]}'
        raise ConfigError(message, [("triggers.gpio.backend", message)]) from exc


def _pin_factory_problem(gz: Any) -> str | None:
    """None when gpiozero has a pin factory that knows this board, else why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PinFactoryFallback chatter
            gz.Device.ensure_pin_factory()
            gz.Device.pin_factory.board_info  # noqa: B018 - raises off a Raspberry Pi
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return None


def chip_path(chip: str) -> str:
    """``/dev/gpiochipN`` for ``gpiochipN`` or ``N``; a path is returned as is."""
    if chip.isdigit():
        return f"/dev/gpiochip{chip}"
    if "/" not in chip:
        return f"/dev/{chip}"
    return chip


def available_chips() -> list[str]:
    """The GPIO character devices present, ``/dev/gpiochip*``, sorted."""
    return sorted(str(p) for p in Path("/dev").glob("gpiochip*"))


def device_group(path: str) -> str:
    """The group owning ``path`` (``gpio`` when it cannot be read or is root)."""
    try:
        gid = os.stat(path).st_gid
        name = grp.getgrgid(gid).gr_name
    except (OSError, KeyError):
        return "gpio"
    return "gpio" if name == "root" else name
