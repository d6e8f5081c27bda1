"""The results PUB socket (DESIGN §4): events, results and errors, as multipart messages.

Every message is ``[topic, metadata]`` or, for ``result``, ``[topic, metadata, image]``:

* topic: ASCII ``event`` | ``result`` | ``error``;
* metadata: one JSON object (UTF-8) with ``capture_id`` (``null`` for errors that belong
  to no capture, e.g. the camera failing) and ``time_ns`` (``time.time_ns()`` when sent);
  ``event`` adds ``event`` (``accepted``, ``selected``, ``hold_still``, ``extra_capture``,
  ``done``), ``error`` adds ``code`` and ``message``;
* image: the encoded result (PNG or JPEG per ``output.format``).

A PUB socket drops messages for a subscriber whose queue is full (``results_hwm``)
instead of blocking: the daemon never waits on a slow reader. Sends from several threads
(control, worker) go through one lock: ZeroMQ sockets are not thread-safe.

Hostile peers: the socket reads only subscriptions, capped at ``MAX_SUBSCRIPTION_BYTES``
(``MAXMSGSIZE``); on a network endpoint it is a CURVE server (``security``), so a
subscriber without an allowed key receives nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Literal

import zmq

from deblurd.service.auth import SocketSecurity, bind_server

log = logging.getLogger(__name__)

MAX_SUBSCRIPTION_BYTES = 4096
CLOSE_LINGER_MS = 200

Topic = Literal["event", "result", "error"]
EventName = Literal["accepted", "selected", "hold_still", "extra_capture", "done"]


class Publisher:
    """Owns the PUB socket bound at ``endpoint``. Thread-safe; sends never block."""

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        hwm: int,
        security: SocketSecurity | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self.endpoint = endpoint
        self._sock: zmq.Socket[Any] | None = context.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        # What a PUB socket reads are its subscribers' (un)subscribe messages: topics of a
        # few bytes. Anything bigger is a hostile peer; ZeroMQ drops its connection.
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        self._sock.setsockopt(zmq.SNDTIMEO, 0)  # sends are NOBLOCK anyway: never wait
        # Bounded, so that the last error events of a shutdown still leave; close()
        # never waits longer than this on a subscriber that does not read.
        self._sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        self.endpoint, self.curve = bind_server(self._sock, endpoint, security, "results")
        self.sent = 0

    def _send(self, topic: Topic, meta: dict[str, Any], image: bytes | None = None) -> None:
        doc = {**meta, "time_ns": time.time_ns()}
        parts: list[bytes] = [topic.encode("ascii"), json.dumps(doc).encode("utf-8")]
        if image is not None:
            parts.append(image)
        with self._lock:
            if self._sock is None:
                return
            try:
                self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=image is None)
                self.sent += 1
            except zmq.Again:  # PUB does not raise this, but never block the worker
                log.warning("results: %s message for %s dropped", topic, meta.get("capture_id"))
            except zmq.ZMQError as exc:
                log.error("results: cannot publish %s: %s", topic, exc)

    def event(self, capture_id: str | None, event: EventName | str, **fields: Any) -> None:
        """Progress of a capture (``accepted``, ``selected``, ``hold_still`` …)."""
        self._send("event", {"capture_id": capture_id, "event": event, **fields})

    def result(self, capture_id: str, meta: dict[str, Any], image: bytes) -> None:
        """The finished capture: metadata and the encoded image."""
        self._send("result", {"capture_id": capture_id, **meta}, image)

    def error(self, capture_id: str | None, code: str, message: str, **fields: Any) -> None:
        """A failure, for a capture (``capture_id``) or of the daemon (``None``)."""
        self._send("error", {"capture_id": capture_id, "code": code, "message": message, **fields})

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
