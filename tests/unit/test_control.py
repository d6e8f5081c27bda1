"""The control socket: request validation and error replies, over a real ROUTER socket."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from deblurd.service.control import (
    _BATCH,
    ControlServer,
    RequestError,
    check_no_fields,
    hard_limit,
    parse_request,
)


def test_parse_request_accepts_an_object_with_a_string_cmd() -> None:
    assert parse_request([b'{"cmd": "ping"}'], 1000) == {"cmd": "ping"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([b"{"], "bad_json"),
        ([b"\xc3\x28"], "bad_encoding"),
        ([b'"ping"'], "not_an_object"),
        ([b"null"], "not_an_object"),
        ([b"{}"], "bad_request"),
        ([b'{"cmd": ["ping"]}'], "bad_request"),
        ([b'{"cmd": null}'], "bad_request"),
        ([b"x" * 1001], "too_large"),
        ([], "multipart"),
        ([b'{"cmd": "ping"}', b""], "multipart"),
        ([b"[" * 100_0 + b"]" * 100_0], "bad_json"),  # deep nesting within the size limit
        ([b"1" * 5000], "bad_json"),  # int() past sys.get_int_max_str_digits: a ValueError
        ([b'{"cmd": "ping", "x": ' + b"9" * 5000 + b"}"], "bad_json"),
        ([b'{"cmd": "shoot"}'], "unknown_command"),
        ([b'{"cmd": "ping", "when": 1}'], "bad_request"),  # extra="forbid"
        ([b'{"cmd": "trigger", "cmd2": "x"}'], "bad_request"),
        ([b'{"cmd": 1}'], "bad_request"),  # strict: no coercion
        ([b'{"cmd": true}'], "bad_request"),
        ([b"{" + b",".join(b'"k%d": 1' % i for i in range(20)) + b"}"], "too_many_keys"),
    ],
)
def test_parse_request_errors(body: list[bytes], code: str) -> None:
    expected = "bad_request" if code == "too_many_keys" else code
    with pytest.raises(RequestError) as info:
        parse_request(body, 8000 if code == "bad_json" else 1000)
    assert info.value.code == expected and str(info.value)
    assert len(str(info.value)) < 300  # never echoes the request back


def test_deep_nesting_far_past_the_recursion_limit_is_bad_json() -> None:
    # 100 000 nested lists: Python's json raises RecursionError, which must become a reply.
    with pytest.raises(RequestError) as info:
        parse_request([b"[" * 100_000 + b"]" * 100_000], 1 << 20)
    assert info.value.code == "bad_json" and "deep" in str(info.value)
    with pytest.raises(RequestError) as info:
        parse_request([b'{"cmd": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001], 1 << 20)
    assert info.value.code == "bad_json"


def test_schema_returns_the_validated_request() -> None:
    for cmd in ("trigger", "status", "ping"):
        assert parse_request([json.dumps({"cmd": cmd}).encode()], 1000) == {"cmd": cmd}
    with pytest.raises(RequestError, match="unknown key"):
        parse_request([b'{"cmd": "status", "verbose": true}'], 1000)
    with pytest.raises(RequestError, match="known: ping, status, trigger"):
        parse_request([b'{"cmd": "' + b"z" * 500 + b'"}'], 1000)


def test_extra_keys_are_refused() -> None:
    check_no_fields({"cmd": "ping"})
    with pytest.raises(RequestError, match="unknown key"):
        check_no_fields({"cmd": "ping", "x": 1})


def test_hard_limit_is_at_least_a_mebibyte() -> None:
    assert hard_limit(1000) == 1024 * 1024
    assert hard_limit(1 << 20) == 16 << 20


class Served:
    def __init__(self, tmp: Path, handlers: dict[str, Any]) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.endpoint = f"ipc://{tmp}/c.sock"
        self.server = ControlServer(self.ctx, self.endpoint, 1000, handlers)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve, args=(self.stop.is_set,))
        self.thread.start()

    def ask(self, *frames: bytes, kind: int = zmq.REQ, timeout_ms: int = 3000) -> Any:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        try:
            sock.send_multipart(list(frames))
            if not sock.poll(timeout_ms):
                return None
            return json.loads(sock.recv_multipart()[-1])
        finally:
            sock.close(0)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.close()
        self.ctx.term()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    def boom(_r: dict[str, Any], _t: int) -> dict[str, Any]:
        raise RuntimeError("handler bug")

    def busy(_r: dict[str, Any], _t: int) -> dict[str, Any]:
        raise RequestError("busy", "queue full")

    s = Served(tmp_path, {"ping": lambda r, t: {"received_ns": t}, "status": boom,
                          "trigger": busy})  # fmt: skip
    yield s
    s.close()


def test_req_client_gets_replies_and_errors(served: Served) -> None:
    reply = served.ask(b'{"cmd": "ping"}')
    assert reply["ok"] is True and reply["received_ns"] > 0
    reply = served.ask(b'{"cmd": "nope"}')
    assert reply["ok"] is False and reply["error"]["code"] == "unknown_command"
    assert "ping" in reply["error"]["message"]
    assert served.ask(b'{"cmd": "trigger"}')["error"] == {"code": "busy", "message": "queue full"}
    reply = served.ask(b'{"cmd": "status"}')
    assert reply["error"]["code"] == "internal" and "handler bug" in reply["error"]["message"]
    reply = served.ask(b'{"cmd": "ping", "x": 1}')
    assert reply["error"]["code"] == "bad_request"
    assert served.server.served == 5
    assert served.server.errors == {"unknown_command": 1, "busy": 1, "internal": 1,
                                    "bad_request": 1}  # fmt: skip


def test_dealer_client_with_delimiter_works(served: Served) -> None:
    assert served.ask(b"", b'{"cmd": "ping"}', kind=zmq.DEALER)["ok"] is True


def test_over_hard_limit_drops_the_sender_only(served: Served) -> None:
    assert served.ask(b"x" * (hard_limit(1000) + 1), timeout_ms=500) is None
    assert served.ask(b'{"cmd": "ping"}')["ok"] is True


def test_socket_options_bound_every_peer(served: Served) -> None:
    sock = served.server._sock
    assert sock.getsockopt(zmq.MAXMSGSIZE) == hard_limit(1000)
    assert sock.getsockopt(zmq.LINGER) == 0
    assert sock.getsockopt(zmq.RCVTIMEO) == 0 and sock.getsockopt(zmq.SNDTIMEO) == 0


def test_a_flood_without_reading_replies_is_served_in_bounded_batches(served: Served) -> None:
    # A DEALER that sends 3000 requests and never reads: the server answers in batches of
    # at most _BATCH (so a stop is noticed between them), drops replies past the HWM, and a
    # well-behaved client is still answered.
    flood = served.ctx.socket(zmq.DEALER)
    flood.setsockopt(zmq.LINGER, 0)
    flood.setsockopt(zmq.SNDHWM, 0)
    flood.connect(served.endpoint)
    for _ in range(3000):
        flood.send_multipart([b"", b'{"cmd": "ping"}'])
    assert served.ask(b'{"cmd": "ping"}', timeout_ms=10_000)["ok"] is True
    deadline = time.monotonic() + 10
    while served.server.served < 3001 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.server.served >= 3001
    flood.close(0)


def test_serve_once_answers_at_most_one_batch(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    server = ControlServer(ctx, f"ipc://{tmp_path}/b.sock", 1000, {"ping": lambda r, t: {}})
    client = ctx.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    client.connect(server.endpoint)
    try:
        for _ in range(_BATCH + 50):
            client.send_multipart([b"", b'{"cmd": "ping"}'])
        deadline = time.monotonic() + 5
        while server.served < _BATCH + 50 and time.monotonic() < deadline:
            before = server.served
            server.serve_once(200)
            assert server.served - before <= _BATCH
        assert server.served == _BATCH + 50
    finally:
        client.close(0)
        server.close()
        ctx.term()
