"""The backends' own thread: every backend (sim, replay, v4l2, picamera2, argus) is a
:class:`ThreadedCamera`.

:class:`ThreadedCamera` owns the thread and its stop event: :meth:`ThreadedCamera._start_thread`
runs the backend's :meth:`ThreadedCamera._run` in a daemon thread named ``camera-<name>``
(``name``: the backend's :attr:`CameraBackend.name`), and :meth:`ThreadedCamera._stop_thread`
signals it and waits for it, at most :data:`JOIN_TIMEOUT_S` (never for itself: a backend
stopped from its own frame callback returns at once). What the thread does is the
backend's: render, decode or read frames and call ``on_frame`` (sim, replay, v4l2), wait
for picamera2's completed requests, or manage Argus's GStreamer pipeline (whose frames
arrive on GStreamer's streaming thread). Opening the device and releasing it stay in each
backend's ``start`` and ``stop``, around these two calls.
"""

from __future__ import annotations

import abc
import logging
import threading
from typing import TYPE_CHECKING

from deblurd.camera.base import CameraBackend, CameraError, FrameCallback

if TYPE_CHECKING:
    from deblurd.settings.camera import CameraSectionBase

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0
"""How long ``stop()`` waits for a backend's thread, s, the same for every backend. Each
loop watches ``_stop`` between steps, and no step is long: picamera2 waits for a request
0.1 s at a time; Argus's manager polls every 20 ms, and tearing a pipeline down
(``set_state(NULL)`` waits for ``nvarguscamerasrc``) takes about a second; the sim camera
renders one frame (~0.1 s at 1080p), replay decodes one, v4l2 reads one. 10 s is ample
for all of those; beyond it the thread is stuck (in ``on_frame``, or a driver call that
hangs): ``stop`` logs that and releases the device anyway rather than hang the daemon's
camera restart forever."""


class ThreadedCamera(CameraBackend):
    """A :class:`CameraBackend` whose work runs in :meth:`_run` on a thread of its own.

    ``_stop`` is set while stopping (the loop in :meth:`_run` watches it); ``_thread`` is
    the running thread, None before :meth:`_start_thread` and after :meth:`_stop_thread`.
    ``settings`` is the backend's ``[camera]`` section: the frame size and rate are the
    configured ones (a backend whose frames differ overrides :attr:`size`).
    """

    settings: CameraSectionBase

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.settings.height, self.settings.width

    @property
    def fps(self) -> float:
        return self.settings.fps

    @abc.abstractmethod
    def _run(self, on_frame: FrameCallback) -> None:
        """The thread's loop: deliver frames to ``on_frame`` until ``_stop`` is set."""

    def _refuse_if_started(self) -> None:
        """:class:`CameraError` while the thread runs (``start`` calls this first)."""
        if self._thread is not None:
            raise CameraError(f"{self.name} camera: already started")

    def _start_thread(self, on_frame: FrameCallback) -> None:
        """Clear ``_stop`` and start ``_run(on_frame)`` in the daemon thread
        ``camera-<name>``. The caller has checked that no thread runs."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(on_frame,), name=f"camera-{self.name}", daemon=True
        )
        self._thread.start()

    def _stop_thread(self) -> bool:
        """Set ``_stop`` and wait up to :data:`JOIN_TIMEOUT_S` for the thread to end (not
        when called from the thread itself). False, logged, when it is still running then.
        Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(JOIN_TIMEOUT_S)
        if thread.is_alive():
            log.error(
                "%s camera: its thread did not finish within %g s (on_frame stuck?)",
                self.name,
                JOIN_TIMEOUT_S,
            )
            return False
        return True
