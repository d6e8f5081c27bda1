"""The capture thread of the backends that run their own loop (sim, replay, v4l2).

:class:`ThreadedCamera` owns the thread and its stop event: :meth:`ThreadedCamera._start_thread`
runs the backend's :meth:`ThreadedCamera._run` in a daemon thread named ``camera-<name>``
(``name``: the backend's :attr:`CameraBackend.name`), and :meth:`ThreadedCamera._stop_thread`
signals it and waits for it (never for itself: a backend stopped from its own frame callback
returns at once). Opening the device and releasing it stay in each backend's ``start`` and
``stop``, around these two calls.
"""

from __future__ import annotations

import abc
import threading

from deblurd.camera.base import CameraBackend, FrameCallback

_JOIN_S = 10.0  # how long stop() waits for the capture thread, s


class ThreadedCamera(CameraBackend):
    """A :class:`CameraBackend` whose frames come from :meth:`_run` on a thread of its own.

    ``_stop`` is set while stopping (the loop in :meth:`_run` watches it); ``_thread`` is
    the running thread, None before :meth:`_start_thread` and after :meth:`_stop_thread`.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def _run(self, on_frame: FrameCallback) -> None:
        """The capture loop: deliver frames to ``on_frame`` until ``_stop`` is set."""

    def _start_thread(self, on_frame: FrameCallback) -> None:
        """Clear ``_stop`` and start ``_run(on_frame)`` in the daemon thread
        ``camera-<name>``. The caller has checked that no thread runs."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(on_frame,), name=f"camera-{self.name}", daemon=True
        )
        self._thread.start()

    def _stop_thread(self) -> None:
        """Set ``_stop`` and wait up to 10 s for the thread to end (not when called from the
        thread itself). Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_S)
