"""The control socket: request validation and error replies, over a real ROUTER socket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from deblurd.service.control import (
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
    ],
)
def test_parse_request_errors(body: list[bytes], code: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(body, 2500 if code == "bad_json" else 1000)
    assert info.value.code == code and str(info.value)


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

    s = Served(tmp_path, {"ping": lambda r, t: {}, "boom": boom, "trigger": busy,
                          "when": lambda r, t: {"received_ns": t}})  # fmt: skip
    yield s
    s.close()


def test_req_client_gets_replies_and_errors(served: Served) -> None:
    assert served.ask(b'{"cmd": "ping"}') == {"ok": True}
    reply = served.ask(b'{"cmd": "nope"}')
    assert reply["ok"] is False and reply["error"]["code"] == "unknown_command"
    assert "ping" in reply["error"]["message"]
    assert served.ask(b'{"cmd": "trigger"}')["error"] == {"code": "busy", "message": "queue full"}
    reply = served.ask(b'{"cmd": "boom"}')
    assert reply["error"]["code"] == "internal" and "handler bug" in reply["error"]["message"]
    assert served.ask(b'{"cmd": "when"}')["received_ns"] > 0
    assert served.server.served == 5


def test_dealer_client_with_delimiter_works(served: Served) -> None:
    assert served.ask(b"", b'{"cmd": "ping"}', kind=zmq.DEALER) == {"ok": True}


def test_over_hard_limit_drops_the_sender_only(served: Served) -> None:
    assert served.ask(b"x" * (hard_limit(1000) + 1), timeout_ms=500) is None
    assert served.ask(b'{"cmd": "ping"}') == {"ok": True}
