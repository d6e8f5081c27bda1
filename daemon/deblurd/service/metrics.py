"""The optional Prometheus endpoint (``service.metrics_endpoint``, e.g. ``127.0.0.1:9464``).

An HTTP server thread (prometheus-client's) answers ``GET /metrics`` with the figures of
the ``status`` reply, read from the same snapshot at scrape time, so both always agree:

=========================================  ========  ==========================================
metric                                     type      from the status reply
=========================================  ========  ==========================================
``deblurd_info{version,camera,inference,   gauge 1   ``version``, ``backends``
registration}``
``deblurd_state{state}``                   gauge 1   ``state`` (ready, camera_failed, ...)
``deblurd_uptime_seconds``                 gauge     ``uptime_s``
``deblurd_frames_total``                   counter   ``camera.frames_received``
``deblurd_frames_dropped_total``           counter   ``camera.frames_dropped``
``deblurd_camera_fps``                     gauge     ``camera.fps`` (measured)
``deblurd_camera_restarts_total``          counter   ``camera.restarts``
``deblurd_last_frame_age_seconds``         gauge     ``camera.last_frame_age_s`` (after one)
``deblurd_ring_fill``                      gauge     ``ring.fill`` (frames)
``deblurd_ring_capacity``                  gauge     ``ring.capacity`` (frames)
``deblurd_queue_depth``                    gauge     ``queue.depth`` (jobs waiting)
``deblurd_jobs_accepted_total``            counter   ``jobs.accepted``
``deblurd_jobs_total{result}``             counter   ``jobs.done`` (result="done"),
                                                     ``jobs.failed`` (result="failed")
``deblurd_busy_total``                     counter   ``jobs.busy`` (triggers refused: busy)
``deblurd_last_error_timestamp_seconds``   gauge     ``last_error.time_ns`` / 1e9; 0 = none
``deblurd_stage_seconds{stage}``           histo.    every job's stage times (``latency_ms``
                                                     keeps only the last 100 per stage)
``deblurd_remote_requests_total``          counter   ``inference_remote.requests`` (Triton
                                                     runtime only: requests = tiles sent)
``deblurd_remote_failures_total``          counter   ``inference_remote.failures``
``deblurd_remote_fallbacks_total``         counter   ``inference_remote.fallbacks`` (passes
                                                     run locally instead)
``deblurd_remote_latency_seconds{q}``      gauge     ``inference_remote.latency_ms`` p50, p95
                                                     (q="0.5", "0.95"; last 100 requests)
=========================================  ========  ==========================================

prometheus-client is imported lazily in :meth:`MetricsServer.start`: without it a
configured endpoint is a :class:`ConfigError` naming ``service.metrics_endpoint`` (exit
78). An address that is not this machine's, or a port it may not bind, is a config error
too; a port already in use is a plain start-up error (systemd retries it).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from deblurd.errors import ConfigError, DeblurdError
from deblurd.service.status import StatusBoard

log = logging.getLogger(__name__)

KEY = "service.metrics_endpoint"
STAGE_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds of the stage-time histogram buckets, s (stages take 1 ms to seconds)."""

Snapshot = Callable[[], dict[str, Any]]
"""Returns the ``status`` reply (without ``ok``): :meth:`Daemon.status_snapshot`."""


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``"HOST:PORT"`` or ``"[IPV6]:PORT"`` → ``(host, port)`` (brackets removed).

    Raises :class:`ConfigError` naming ``service.metrics_endpoint`` when malformed (the
    settings model already checks the form; this guards direct callers)."""
    host, sep, port_text = endpoint.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not host or not 0 <= port <= 65535:
        message = f"{endpoint!r} is not HOST:PORT (e.g. 127.0.0.1:9464)"
        raise ConfigError(message, [(KEY, message)])
    return host, port


class _StatusCollector:
    """A prometheus-client collector that turns one status snapshot into metric families."""

    def __init__(self, snapshot: Snapshot, families: Any) -> None:
        self._snapshot = snapshot
        self._f = families  # prometheus_client.core

    def describe(self) -> list[Any]:
        return []  # no collect() at registration (the daemon may not be started yet)

    def collect(self) -> Iterator[Any]:
        f = self._f
        try:
            s = self._snapshot()
        except Exception:
            log.exception("metrics: reading the status failed")
            return
        camera: dict[str, Any] = s.get("camera", {})
        jobs: dict[str, Any] = s.get("jobs", {})
        ring: dict[str, Any] = s.get("ring", {})
        backends: dict[str, Any] = s.get("backends", {})
        registration = backends.get("registration", {})
        info = f.GaugeMetricFamily(
            "deblurd_info",
            "deblurd version and backends (value 1)",
            labels=["version", "camera", "inference", "registration"],
        )
        info.add_metric(
            [
                str(s.get("version", "")),
                str(backends.get("camera", "")),
                str(backends.get("inference", "")),
                str(registration.get("active", "") if isinstance(registration, dict) else ""),
            ],
            1.0,
        )
        yield info
        state = f.GaugeMetricFamily(
            "deblurd_state", "the daemon's state (value 1)", labels=["state"]
        )
        state.add_metric([str(s.get("state", "unknown"))], 1.0)
        yield state

        def gauge(name: str, doc: str, value: Any) -> Any:
            return f.GaugeMetricFamily(name, doc, value=float(value or 0))

        def counter(name: str, doc: str, value: Any) -> Any:
            return f.CounterMetricFamily(name, doc, value=float(value or 0))

        yield gauge("deblurd_uptime_seconds", "seconds since the daemon started", s.get("uptime_s"))
        yield counter(
            "deblurd_frames", "frames received from the camera", camera.get("frames_received")
        )
        yield counter(
            "deblurd_frames_dropped",
            "frames the camera numbered but never delivered",
            camera.get("frames_dropped"),
        )
        yield gauge("deblurd_camera_fps", "measured camera frame rate, frames/s", camera.get("fps"))
        yield counter("deblurd_camera_restarts", "camera restarts", camera.get("restarts"))
        age = camera.get("last_frame_age_s")
        if age is not None:
            yield gauge("deblurd_last_frame_age_seconds", "seconds since the last frame", age)
        yield gauge("deblurd_ring_fill", "frames in the preview ring", ring.get("fill"))
        yield gauge("deblurd_ring_capacity", "frames the preview ring holds", ring.get("capacity"))
        yield gauge("deblurd_queue_depth", "capture jobs waiting", s.get("queue", {}).get("depth"))
        yield counter("deblurd_jobs_accepted", "captures queued", jobs.get("accepted"))
        finished = f.CounterMetricFamily(
            "deblurd_jobs", "capture jobs finished, by result", labels=["result"]
        )
        finished.add_metric(["done"], float(jobs.get("done") or 0))
        finished.add_metric(["failed"], float(jobs.get("failed") or 0))
        yield finished
        yield counter(
            "deblurd_busy", "triggers refused because the queue was full", jobs.get("busy")
        )
        err = s.get("last_error")
        yield gauge(
            "deblurd_last_error_timestamp_seconds",
            "Unix time of the last error (0 = none since start)",
            err["time_ns"] / 1e9 if isinstance(err, dict) else 0,
        )
        remote = s.get("inference_remote")
        if isinstance(remote, dict):
            yield counter("deblurd_remote_requests", "requests (tiles) sent to the inference "
                          "server", remote.get("requests"))  # fmt: skip
            yield counter("deblurd_remote_failures", "requests to the inference server "
                          "that failed (down, timeout, error, garbage)",
                          remote.get("failures"))  # fmt: skip
            yield counter("deblurd_remote_fallbacks", "U-Net passes run locally because the "
                          "inference server failed", remote.get("fallbacks"))  # fmt: skip
            latency = remote.get("latency_ms") or {}
            if latency:
                lat = f.GaugeMetricFamily(
                    "deblurd_remote_latency_seconds",
                    "inference server round trip per request, last 100 requests",
                    labels=["quantile"],
                )
                lat.add_metric(["0.5"], float(latency.get("p50", 0)) / 1000.0)
                lat.add_metric(["0.95"], float(latency.get("p95", 0)) / 1000.0)
                yield lat


class MetricsServer:
    """``GET /metrics`` on ``endpoint`` (``HOST:PORT``) for the daemon of ``board`` and
    ``snapshot``. :meth:`start` binds (raises, see module), :meth:`close` stops."""

    def __init__(self, endpoint: str, board: StatusBoard, snapshot: Snapshot) -> None:
        self.endpoint = endpoint
        self._host, self._port = parse_endpoint(endpoint)
        self._board = board
        self._snapshot = snapshot
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._histogram: Any = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`; the configured one before)."""
        if self._server is not None:
            return int(self._server.server_port)
        return self._port

    def start(self) -> None:
        if self._server is not None:
            return
        try:
            import prometheus_client
            from prometheus_client import core
        except ImportError as exc:
            message = (
                f"{self.endpoint}: serving metrics needs the prometheus-client package "
                "(pip install prometheus-client, or the deblurd[metrics] extra), or unset "
                "the key"
            )
            raise ConfigError(message, [(KEY, message)]) from exc
        registry = prometheus_client.CollectorRegistry(auto_describe=False)
        registry.register(_StatusCollector(self._snapshot, core))
        self._histogram = prometheus_client.Histogram(
            "deblurd_stage_seconds",
            "time per stage of each capture job, s (stage 'trigger_to_result': the whole "
            "capture as the user sees it)",
            ["stage"],
            buckets=STAGE_BUCKETS_S,
            registry=registry,
        )
        try:
            server, thread = prometheus_client.start_http_server(
                self._port, addr=self._host, registry=registry
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DeblurdError(
                    f"{KEY} = {self.endpoint!r}: the port is in use by another program"
                ) from exc
            message = f"{self.endpoint}: cannot serve metrics there: {exc.strerror or exc}"
            raise ConfigError(message, [(KEY, message)]) from exc
        self._server, self._thread = server, thread
        self._board.on_job_finished(self._observe)
        log.info("metrics: http://%s:%d/metrics", self._host, self.port)

    def _observe(self, _ok: bool, stage_ms: dict[str, float]) -> None:
        histogram = self._histogram
        if histogram is None or self._server is None:
            return
        for stage, ms in stage_ms.items():
            histogram.labels(stage=stage).observe(ms / 1000.0)

    def close(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
