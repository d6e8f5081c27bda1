"""The control socket (DESIGN §4): one JSON object per request, one per reply.

A ROUTER socket, so REQ clients (and DEALER clients that send the empty delimiter
frame) work, and a malformed request never wedges the socket the way a REP's strict
send/receive alternation would. Requests (schema: :mod:`deblurd.service.requests`):

* ``{"cmd": "trigger"}`` → ``{"ok": true, "capture_id": "..."}`` (the trigger's time is
  taken on receipt); a full queue → error code ``busy``;
* ``{"cmd": "status"}`` → ``{"ok": true, ...state...}``;
* ``{"cmd": "ping"}`` → ``{"ok": true}``.

Anything else gets ``{"ok": false, "error": {"code": C, "message": M}}`` and the daemon
carries on; codes: ``too_large`` (over ``service.max_request_bytes``), ``multipart`` (more
than one body frame), ``bad_encoding`` (not UTF-8), ``bad_json`` (not JSON, nested too
deep, a number too long), ``not_an_object``, ``bad_request`` (``cmd`` missing or not a
string, an unknown key, a value of the wrong type), ``unknown_command``, ``busy``,
``shutting_down``, ``internal``. A request over 16 × ``max_request_bytes`` (at least 1 MiB)
is refused by ZeroMQ itself (``MAXMSGSIZE``): the sender's connection is dropped unread,
so it gets no reply (its REQ socket times out).

Hostile peers: every request is bounded in size before it is read, parsed with
every failure of the JSON parser (deep nesting included) turned into ``bad_json``,
validated against the pydantic schema, and answered without blocking (a peer that does
not read its replies loses them past the high-water mark). One :meth:`serve_once` answers
at most ``_BATCH`` requests so a flood cannot keep the daemon from noticing a stop, and
error replies are logged at most ``_LOG_BURST`` times per ``_LOG_WINDOW_S``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import zmq

from deblurd.errors import DeblurdError
from deblurd.service.auth import SocketSecurity, bind_server
from deblurd.service.requests import SchemaError, validate_request

log = logging.getLogger(__name__)

MAX_KEYS = 16
_BATCH = 200
_LOG_BURST = 20
_LOG_WINDOW_S = 10.0
SEND_TIMEOUT_MS = 0
Handler = Callable[[dict[str, Any], int], dict[str, Any]]
"""A command: ``(request, received_ns) -> reply fields`` (``ok`` is added); raise
:class:`RequestError` for an error reply. ``request`` has passed the schema."""


class RequestError(DeblurdError):
    """A request that gets an error reply: ``code`` and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_reply(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def hard_limit(max_request_bytes: int) -> int:
    """ZeroMQ's ``MAXMSGSIZE`` for a soft limit: 16 × it, at least 1 MiB."""
    return max(16 * max_request_bytes, 1024 * 1024)


def parse_request(body: list[bytes], max_bytes: int) -> dict[str, Any]:
    """Validate a request's body frames against the schema; return the request object
    (``cmd`` and the command's keys) or raise RequestError."""
    if len(body) != 1:
        raise RequestError(
            "multipart", f"a request is one message frame holding JSON, got {len(body)} frames"
        )
    raw = body[0]
    if len(raw) > max_bytes:
        raise RequestError("too_large", f"request of {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("bad_encoding", f"request is not UTF-8 text: {exc}") from exc
    try:
        doc = json.loads(text)
    except RecursionError as exc:
        raise RequestError("bad_json", "request is not JSON: nested too deep") from exc
    except ValueError as exc:  # JSONDecodeError, and int() past sys.get_int_max_str_digits
        raise RequestError("bad_json", f"request is not JSON: {str(exc)[:120]}") from exc
    if not isinstance(doc, dict):
        raise RequestError("not_an_object", f"a request is a JSON object, got {type(doc).__name__}")
    if len(doc) > MAX_KEYS:
        raise RequestError("bad_request", f"too many keys ({len(doc)})")
    try:
        model = validate_request(doc)
    except SchemaError as exc:
        raise RequestError(exc.code, str(exc)) from exc
    return model.model_dump()


def _split_envelope(parts: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER message → (routing envelope up to the empty delimiter, body frames)."""
    for i, part in enumerate(parts[1:], start=1):
        if part == b"":
            return parts[: i + 1], parts[i + 1 :]
    return parts[:1], parts[1:]  # a DEALER without a delimiter: identity, then body


class _RateLimitedLog:
    """At most ``burst`` lines per ``window_s``; then one line counting the rest."""

    def __init__(self, burst: int, window_s: float) -> None:
        self.burst, self.window_s = burst, window_s
        self._start = time.monotonic()
        self._count = self._suppressed = 0

    def info(self, message: str) -> None:
        now = time.monotonic()
        if now - self._start >= self.window_s:
            if self._suppressed:
                log.info("control: %d more error replies in the last %.0f s not logged",
                         self._suppressed, now - self._start)  # fmt: skip
            self._start, self._count, self._suppressed = now, 0, 0
        self._count += 1
        if self._count <= self.burst:
            log.info("control: %s", message)
        else:
            self._suppressed += 1


class ControlServer:
    """Serves the control socket from the thread that calls :meth:`serve`.

    ``security`` (:class:`~deblurd.service.auth.SocketSecurity`) makes the socket a CURVE
    server when the endpoint is a network one."""

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        max_request_bytes: int,
        handlers: dict[str, Handler],
        security: SocketSecurity | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.max_request_bytes = max_request_bytes
        self.handlers = handlers
        self.served = 0
        self.errors: dict[str, int] = {}
        self._errlog = _RateLimitedLog(_LOG_BURST, _LOG_WINDOW_S)
        self._sock: zmq.Socket[Any] = context.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.MAXMSGSIZE, hard_limit(max_request_bytes))
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 1000)
        self._sock.setsockopt(zmq.RCVHWM, 1000)
        self._sock.setsockopt(zmq.RCVTIMEO, 0)  # reads follow a poll; never wait in recv
        self._sock.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.endpoint, self.curve = bind_server(self._sock, endpoint, security, "control")

    def handle(self, body: list[bytes], received_ns: int) -> dict[str, Any]:
        """The reply to one request (never raises)."""
        try:
            request = parse_request(body, self.max_request_bytes)
            cmd = request["cmd"]
            handler = self.handlers.get(cmd)
            if handler is None:
                known = ", ".join(sorted(self.handlers))
                raise RequestError("unknown_command", f"unknown cmd {cmd!r} (known: {known})")
            return {"ok": True, **handler(request, received_ns)}
        except RequestError as exc:
            return error_reply(exc.code, str(exc))
        except Exception as exc:  # a bug in a handler must not stop the daemon
            log.exception("control: request failed")
            return error_reply("internal", f"{type(exc).__name__}: {exc}")

    def serve_once(self, timeout_ms: int) -> bool:
        """Answer the requests waiting (waiting up to ``timeout_ms`` for the first; at most
        ``_BATCH`` of them). Returns True when something was served."""
        if not self._sock.poll(timeout_ms, zmq.POLLIN):
            return False
        for _ in range(_BATCH):
            try:
                parts = self._sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            received_ns = time.monotonic_ns()
            envelope, body = _split_envelope(parts)
            reply = self.handle(body, received_ns)
            if not reply.get("ok"):
                code = reply["error"]["code"]
                self.errors[code] = self.errors.get(code, 0) + 1
                self._errlog.info(f"{code}: {reply['error']['message'][:200]}")
            payload = json.dumps(reply).encode("utf-8")
            self.served += 1
            try:
                self._sock.send_multipart([*envelope, payload], flags=zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # the client went away: nothing to do
                log.debug("control: reply not sent: %s", exc)
        return True

    def serve(self, stopping: Callable[[], bool], tick: Callable[[], None] | None = None) -> None:
        """Serve until ``stopping()``; ``tick()`` runs about every 100 ms between requests."""
        while not stopping():
            self.serve_once(100)
            if tick is not None:
                tick()

    def close(self) -> None:
        self._sock.close(linger=0)


def check_no_fields(request: dict[str, Any], allowed: tuple[str, ...] = ()) -> None:
    """RequestError ``bad_request`` for keys other than ``cmd`` and ``allowed`` (the schema
    already refuses them; kept for handlers that take plain dicts)."""
    extra = sorted(set(request) - {"cmd", *allowed})
    if extra:
        raise RequestError("bad_request", f"unknown key(s) for {request['cmd']!r}: {extra}")
