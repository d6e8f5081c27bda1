"""The daemon's lifecycle: start-up, serving, health, shutdown (DESIGN §2, issue 4).

Start-up, in order: bind the ZeroMQ sockets (refusing to steal the endpoint of a daemon
that answers there) → open and start the camera, frames into the preallocated ring →
wait for the first frames → open the U-Net runtime and warm it on one frame → start the
worker and the triggers → ``READY=1``. Then the calling thread serves the control socket
until :meth:`Daemon.request_stop` (SIGTERM/SIGINT in ``deblurd run``).

A monitor thread, about every 0.25 s: feeds the systemd watchdog only while frames are
recent and the worker thread is alive; declares the camera failed after
``service.camera_stale_s`` without a frame (status, ``error`` event with code ``camera``)
and restarts it with a doubling back-off up to ``service.camera_retry_max_s``; refreshes
the ``STATUS=`` line.

Shutdown: ``STOPPING=1``; triggers off; waiting jobs are dropped with an ``error``
(``shutting_down``); the running job gets ``service.shutdown_timeout_s`` to finish, then
it is abandoned; camera, sockets and the runtime are closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq

from deblurd import __version__
from deblurd.camera.base import CameraBackend, CameraError, FrameMeta
from deblurd.camera.ring import FrameRing, capacity_for_budget
from deblurd.errors import ConfigError, DeblurdError, InferenceError
from deblurd.inference.base import Deblurrer, remote_status, runtime_report
from deblurd.inference.factory import open_deblurrer
from deblurd.service import runtime
from deblurd.service.auth import SocketSecurity
from deblurd.service.control import ControlServer, Handler, RequestError, check_no_fields
from deblurd.service.frameguard import FrameGuard
from deblurd.service.jobs import BusyError, CaptureRequest, CaptureWorker, JobQueue, new_capture_id
from deblurd.service.metrics import MetricsServer
from deblurd.service.publisher import Publisher
from deblurd.service.results import ResultStore
from deblurd.service.sdnotify import SystemdNotifier
from deblurd.service.status import StatusBoard
from deblurd.service.triggers.base import Trigger
from deblurd.settings.models import DeblurdSettings

log = logging.getLogger(__name__)

_MONITOR_S = 0.25


def _open_camera(settings: DeblurdSettings) -> CameraBackend:
    from deblurd.camera.factory import open_camera

    return open_camera(settings.camera, settings.limits)


class Daemon:
    """One running deblurd. ``camera_factory`` (tests) replaces the configured backend;
    ``terminal``: arm the Enter key when stdin is a terminal (and the config allows)."""

    def __init__(
        self,
        settings: DeblurdSettings,
        notifier: SystemdNotifier | None = None,
        camera_factory: Callable[[], CameraBackend] | None = None,
        terminal: bool = True,
    ) -> None:
        self.settings = settings
        svc = settings.service
        self.endpoints = runtime.resolve_endpoints(svc.control_endpoint, svc.results_endpoint)
        self.notifier = notifier or SystemdNotifier()
        self._camera_factory = camera_factory or (lambda: _open_camera(settings))
        self._terminal = terminal and settings.triggers.terminal
        self.status = StatusBoard()
        self.jobs = JobQueue(svc.queue_size)
        self.store = ResultStore(settings.output)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._ctx: zmq.Context[Any] | None = None
        self._security: SocketSecurity | None = None
        self.publisher: Publisher | None = None
        self.control: ControlServer | None = None
        self.camera: CameraBackend | None = None
        self.ring: FrameRing | None = None
        self.deblurrer: Deblurrer | None = None
        self.worker: CaptureWorker | None = None
        self.triggers: list[Trigger] = []
        self.metrics: MetricsServer | None = None
        self._monitor: threading.Thread | None = None
        self._camera_failed_since: float | None = None
        self._next_restart = 0.0
        self._backoff_s = 1.0
        self._guard = FrameGuard()  # frame numbers across restarts, timestamps going back
        self._rejected_seen = 0

    # -- public -----------------------------------------------------------------------

    @property
    def output_directory(self) -> Path:
        return self.store.directory.resolve()

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return (safe from a signal handler or any thread)."""
        self._stop.set()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    def run(self, on_ready: Callable[[Daemon], None] | None = None) -> int:
        """Start, serve until stopped, shut down. Returns the exit status (0)."""
        try:
            self.start()
            if on_ready is not None:
                on_ready(self)
            self.serve()
        finally:
            self.shutdown()
        return 0

    def trigger(self, timestamp_ns: int, source: str) -> str:
        """Queue a capture for a press at ``timestamp_ns`` (monotonic ns); returns its
        capture id or raises :class:`BusyError`."""
        if self._stop.is_set() or not self._ready.is_set():
            raise BusyError("the daemon is not accepting captures now", code="shutting_down")
        request = CaptureRequest(new_capture_id(), timestamp_ns, source, time.time_ns())
        try:
            self.jobs.submit(request)
        except BusyError:
            self.status.count("jobs_busy")
            raise
        self.status.count("jobs_accepted")
        self._pub().event(request.capture_id, "accepted", source=source)
        return request.capture_id

    # -- start-up ---------------------------------------------------------------------

    def start(self) -> None:
        """Everything up to ``READY=1``. Raises DeblurdError (ConfigError for settings)."""
        s = self.settings
        self.notifier.status("starting")
        try:  # an output folder it cannot use would fail every job after "ready"
            self.store.check_writable()
        except DeblurdError as exc:
            raise ConfigError(str(exc), [("output.directory", str(exc))]) from exc
        self._bind()
        self.status.info = {
            "version": __version__,
            "endpoints": {"control": self.endpoints.control, "results": self.endpoints.results},
            "output_directory": str(self.output_directory),
        }
        self.notifier.status("starting the camera")
        camera = self._camera_factory()
        h, w = camera.size
        capacity = capacity_for_budget(s.camera.ring_bytes, h, w)
        needed = s.selection.frames_before + s.selection.frames_after + 1
        if capacity < needed:
            log.warning(
                "the ring holds %d frames, fewer than the %d a capture window wants "
                "(raise camera.ring_memory_mb)", capacity, needed,
            )  # fmt: skip
        self.ring = FrameRing(capacity, h, w)
        self.camera = camera
        camera.start(self._on_frame)
        try:
            self.ring.wait_for(lambda _m: True, 1, s.service.start_timeout_s, start_after_frame=-1)
        except CameraError as exc:
            raise CameraError(
                f"camera {camera.name!r} delivered no frame within "
                f"{s.service.start_timeout_s:.0f} s"
            ) from exc
        log.info("camera %s: %dx%d at %.0f fps, ring of %d frames (%.0f MiB)",
                 camera.name, w, h, camera.fps, capacity, self.ring.nbytes / 2**20)  # fmt: skip

        self.notifier.status("warming up the U-Net")
        self.deblurrer = open_deblurrer(s.inference)
        if self.deblurrer is not None:
            t0 = time.perf_counter()
            try:
                self.deblurrer.deblur(np.zeros((h, w, 3), np.float32), "first")
            except InferenceError as exc:
                if remote_status(self.deblurrer) is None:
                    raise
                # A server that is down is the jobs' error (or their fallback), not ours.
                log.warning("U-Net %s not warm: %s", self.deblurrer.name, exc)
            else:
                log.info("U-Net %s warm in %.0f ms", self.deblurrer.name,
                         (time.perf_counter() - t0) * 1000)  # fmt: skip
            runtime_report(self.deblurrer)  # the warm-up's notes are no job's

        self.worker = CaptureWorker(
            s, camera, self.ring, self.deblurrer, self._pub(), self.store, self.status, self.jobs
        )
        self.worker.start()
        self._start_triggers()
        from deblurd.gpu.factory import resolve_backend

        registration, why = resolve_backend(s.registration)
        self.status.info["backends"] = {
            "camera": camera.name,
            "inference": self.deblurrer.name if self.deblurrer is not None else "off",
            "registration": {
                "configured": s.registration.backend,
                "active": registration,
                "note": why,
            },
            "triggers": ["zmq", *[t.name for t in self.triggers]],
        }
        self.status.info["camera"] = {"width": w, "height": h, "nominal_fps": camera.fps}
        self.status.set_state("ready")
        self._ready.set()
        self._monitor = threading.Thread(target=self._monitor_loop, name="deblurd-monitor",
                                         daemon=True)  # fmt: skip
        self._monitor.start()
        self.notifier.ready(self.status.status_line(0))
        log.info("ready: control %s, results %s, output %s",
                 self.endpoints.control, self.endpoints.results, self.output_directory)  # fmt: skip

    def _bind(self) -> None:
        for key, endpoint in (
            ("service.control_endpoint", self.endpoints.control),
            ("service.results_endpoint", self.endpoints.results),
        ):
            runtime.prepare_ipc_folder(endpoint, key)
        _refuse_if_answering(self.endpoints.control)
        svc = self.settings.service
        # CURVE keys for network endpoints (ConfigError without them), before any socket.
        security = SocketSecurity.for_service(svc, (self.endpoints.control, self.endpoints.results))
        self._ctx = zmq.Context()
        self._security = security
        security.start(self._ctx)
        self.publisher = Publisher(self._ctx, self.endpoints.results, svc.results_hwm, security)
        handlers: dict[str, Handler] = {"trigger": self._cmd_trigger, "status": self._cmd_status,
                    "ping": self._cmd_ping}  # fmt: skip
        self.control = ControlServer(
            self._ctx, self.endpoints.control, svc.max_request_bytes, handlers, security
        )
        for endpoint in (self.endpoints.control, self.endpoints.results):
            runtime.share_ipc_file(endpoint)  # 0660: the folder decides who may connect
        if svc.metrics_endpoint is not None:
            self.metrics = MetricsServer(svc.metrics_endpoint, self.status, self.status_snapshot)
            self.metrics.start()

    def _start_triggers(self) -> None:
        t = self.settings.triggers
        if t.gpio.enabled:
            from deblurd.service.triggers.gpio import GpioTrigger

            gpio = GpioTrigger(t.gpio, self._on_press)
            gpio.start()  # ConfigError / TriggerError: a configured button must work
            self.triggers.append(gpio)
        if self._terminal:
            from deblurd.service.triggers.terminal import TerminalTrigger

            terminal = TerminalTrigger(self._on_press)
            terminal.start()
            if terminal.running:
                self.triggers.append(terminal)
                log.info("press Enter to take a photo")

    def _pub(self) -> Publisher:
        if self.publisher is None:
            raise DeblurdError("the daemon is not started")
        return self.publisher

    # -- frames and presses (other threads) ---------------------------------------------

    def _on_frame(self, frame: npt.NDArray[np.uint8], meta: FrameMeta) -> None:
        """The camera thread's callback: copy into the ring, count; never waits."""
        checked = self._guard.check(meta)
        if checked is None:  # timestamp not after the last frame's: kept out of the ring
            self.status.frames.rejected = self._guard.rejected
            return
        ring = self.ring
        if ring is not None:
            ring.push(frame, checked)
        self.status.frames.record(checked)

    def _on_press(self, timestamp_ns: int, source: str) -> None:
        try:
            cid = self.trigger(timestamp_ns, source)
            log.info("%s press: capture %s queued", source, cid)
        except BusyError as exc:
            log.warning("%s press ignored: %s", source, exc)
            self._pub().error(None, exc.code, f"{source} press ignored: {exc}", source=source)

    # -- control commands ---------------------------------------------------------------

    def _cmd_trigger(self, request: dict[str, Any], received_ns: int) -> dict[str, Any]:
        check_no_fields(request)
        try:
            return {"capture_id": self.trigger(received_ns, "zmq")}
        except BusyError as exc:
            raise RequestError(exc.code, str(exc)) from exc

    def _cmd_status(self, request: dict[str, Any], _received_ns: int) -> dict[str, Any]:
        check_no_fields(request)
        return self.status_snapshot()

    def status_snapshot(self) -> dict[str, Any]:
        """The ``status`` reply without ``ok`` (also what the metrics endpoint serves)."""
        ring = self.ring
        return self.status.snapshot(
            queue={"depth": self.jobs.depth, "size": self.jobs.size},
            ring={
                "fill": ring.fill if ring else 0,
                "capacity": ring.capacity if ring else 0,
                "frames_missed": ring.frames_missed if ring else 0,
            },
            worker_alive=self.worker.alive() if self.worker else False,
            **({} if (remote := remote_status(self.deblurrer)) is None
               else {"inference_remote": remote}),
        )  # fmt: skip

    def _cmd_ping(self, request: dict[str, Any], _received_ns: int) -> dict[str, Any]:
        check_no_fields(request)
        return {}

    # -- serving and health -------------------------------------------------------------

    def serve(self) -> None:
        """Answer control requests until :meth:`request_stop`."""
        if self.control is None:
            raise DeblurdError("the daemon is not started")
        self.control.serve(self._stop.is_set)

    def _monitor_loop(self) -> None:
        interval = self.notifier.watchdog_interval_s()
        next_feed = next_status = 0.0
        while not self._stop.wait(_MONITOR_S):
            now = time.monotonic()
            self._check_clock()
            healthy = self._check_camera(now)
            worker_ok = self.worker is not None and self.worker.alive()
            if interval is not None and now >= next_feed and healthy and worker_ok:
                self.notifier.watchdog()
                next_feed = now + interval
            if now >= next_status:
                self.notifier.status(self.status.status_line(self.jobs.depth))
                next_status = now + self.settings.service.status_interval_s

    def _check_clock(self) -> None:
        """Report frames the guard rejected since the last check (timestamps going back)."""
        rejected = self._guard.rejected
        if rejected == self._rejected_seen:
            return
        new, self._rejected_seen = rejected - self._rejected_seen, rejected
        message = (
            f"{new} frame(s) rejected: timestamp {self._guard.backwards_s():.3f} s before the "
            f"previous frame's, the sensor clock went back ({rejected} rejected in all)"
        )
        log.error("camera: %s", message)
        self.status.error("camera_clock", message)
        self._pub().error(None, "camera_clock", message)

    def _check_camera(self, now: float) -> bool:
        """True while frames are recent; otherwise report and restart the camera."""
        svc = self.settings.service
        age = self.status.frames.age_s()
        if age is not None and age < svc.camera_stale_s:
            if self._camera_failed_since is not None:
                log.info("camera: frames again after %.1f s", now - self._camera_failed_since)
                self._camera_failed_since = None
                self._backoff_s = 1.0
                self.status.set_state("ready")
            return True
        if self._camera_failed_since is None:
            self._camera_failed_since = now
            self._next_restart = now + self._backoff_s
            message = f"no frame from the camera for {svc.camera_stale_s:.1f} s"
            log.error("camera: %s", message)
            self.status.set_state("camera_failed")
            self.status.error("camera", message)
            self._pub().error(None, "camera", message)
        elif now >= self._next_restart:
            self._restart_camera()
            self._backoff_s = min(self._backoff_s * 2, svc.camera_retry_max_s)
            self._next_restart = time.monotonic() + self._backoff_s
        return False

    def _restart_camera(self) -> None:
        old = self.camera
        self.status.count("camera_restarts")
        log.warning("camera: restarting (next try in %.0f s)", self._backoff_s)
        try:
            if old is not None:
                old.stop()
            camera = self._camera_factory()
            if self.ring is None or camera.size != (self.ring.height, self.ring.width):
                raise CameraError(f"camera came back at another size {camera.size}")
            camera.start(self._on_frame)
        except DeblurdError as exc:
            log.error("camera: restart failed: %s", exc)
            self.status.error("camera", f"restart failed: {exc}")
            self._pub().error(None, "camera", f"restart failed: {exc}")
            return
        self.camera = camera
        if self.worker is not None:
            self.worker.camera = camera

    # -- shutdown -----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop everything (idempotent; safe after a failed start)."""
        self._stop.set()
        self.status.set_state("stopping")
        self.notifier.stopping()
        for trigger in self.triggers:
            try:
                trigger.stop()
            except Exception:
                log.exception("stopping the %s trigger failed", trigger.name)
        self.triggers = []
        for left in self.jobs.close():
            if self.publisher is not None:
                self.publisher.error(left.capture_id, "shutting_down",
                                     "the daemon stopped before this capture ran")  # fmt: skip
        if self.worker is not None:
            ok = self.worker.stop(self.settings.service.shutdown_timeout_s)
            if not ok:
                log.warning("the worker did not stop; exiting anyway")
        if self._monitor is not None:
            self._monitor.join(2.0)
        if self.camera is not None:
            try:
                self.camera.stop()
            except Exception:
                log.exception("stopping the camera failed")
            self.camera = None
        if self.ring is not None:
            self.ring.close()
        if self.deblurrer is not None:
            self.deblurrer.close()
            self.deblurrer = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        for sock in (self.control, self.publisher):
            if sock is not None:
                sock.close()
        self.control, self.publisher = None, None
        if self._security is not None:
            self._security.stop()  # the ZAP handler's sockets, before the context ends
            self._security = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
            for endpoint in (self.endpoints.control, self.endpoints.results):
                runtime.remove_ipc_file(endpoint)
        self.notifier.close()
        log.info("stopped")


def _refuse_if_answering(endpoint: str) -> None:
    """Raise when a daemon already answers at an ``ipc://`` endpoint (binding would steal
    its socket file)."""
    path = runtime.ipc_path(endpoint)
    if path is None or not path.exists():
        return
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_json({"cmd": "ping"})
        answered = bool(sock.poll(300, zmq.POLLIN))
    finally:
        sock.close(0)
    if answered:
        holder = runtime.socket_holder(endpoint)
        raise DeblurdError(
            f"another deblurd already answers at {endpoint}"
            + (f": {holder}" if holder else "")
            + "; stop it, or give this one other endpoints (--control, --results)"
        )
