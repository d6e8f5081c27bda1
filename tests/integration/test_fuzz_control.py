"""Hostile input on the control socket of the real ``deblurd run`` process (issue 7).

One daemon (sim camera 160x120, U-Net off, ipc endpoints in a tmp folder,
``max_request_bytes`` 256 KiB so 100 000 nested lists reach the JSON parser) takes
hypothesis-generated garbage: random bytes, arbitrary JSON documents, truncated JSON,
multipart messages, unknown commands, plus the fixed worst cases (deep nesting, messages
over each size limit, a flood). Every message is answered with the error code its defect
calls for (or dropped unanswered only when it is over ZeroMQ's MAXMSGSIZE), and after
each batch the daemon still answers ``ping`` and a real trigger still produces a result.
The long run is ``tools/fuzz_control.py --messages 10000``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tool_modules import load_tool

CODES = {"too_large", "multipart", "bad_encoding", "bad_json", "not_an_object", "bad_request",
         "unknown_command", "busy"}  # fmt: skip
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


fuzz_control = load_tool("fuzz_control")  # the long run of this test: daemon, DEALER socket
MAX_REQUEST: int = fuzz_control.MAX_REQUEST  # the daemon's service.max_request_bytes
HARD_LIMIT: int = fuzz_control.HARD_LIMIT


class Daemon:
    """The tool's daemon (sim camera 160x120, U-Net off, ``max_request_bytes`` MAX_REQUEST),
    waited for, with a DEALER on its control socket and a SUB on its results."""

    def __init__(self, folder: Path) -> None:
        self._tool_daemon = fuzz_control.Daemon(folder)
        self.proc: subprocess.Popen[bytes] = self._tool_daemon.proc
        self.log_path: Path = self._tool_daemon.log_path
        self.control: str = self._tool_daemon.control
        self.results: str = self._tool_daemon.results
        self.ctx: zmq.Context[Any] = zmq.Context()
        deadline = time.monotonic() + 60
        while "deblurd: ready" not in self.log_path.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, (
                self.log_path.read_text()
            )
            time.sleep(0.1)
        self.dealer = self._dealer()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        self.sub.connect(self.results)
        time.sleep(0.3)

    def _dealer(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = fuzz_control.dealer(self.ctx, self.control)
        return sock

    def send(self, *frames: bytes, timeout_ms: int = 5000) -> dict[str, Any] | None:
        """One request with REQ framing; its reply, or None (then a fresh socket)."""
        self.dealer.send_multipart([b"", *frames])
        if not self.dealer.poll(timeout_ms):
            self.dealer.close(0)
            self.dealer = self._dealer()
            return None
        parts = self.dealer.recv_multipart()
        assert parts[0] == b"" and len(parts) == 2, parts
        reply: dict[str, Any] = json.loads(parts[1])
        assert isinstance(reply["ok"], bool)
        if not reply["ok"]:
            assert reply["error"]["code"] in CODES, reply
            assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
        return reply

    def code(self, *frames: bytes) -> str:
        reply = self.send(*frames)
        assert reply is not None, f"no reply to {frames[0][:80]!r}"
        return "ok" if reply["ok"] else str(reply["error"]["code"])

    def assert_healthy(self) -> None:
        """``ping`` answers, and a real trigger produces a result image."""
        assert self.proc.poll() is None, self.log_path.read_text()
        assert self.send(b'{"cmd": "ping"}') == {"ok": True}
        reply = self.send(b'{"cmd": "trigger"}')
        assert reply is not None and reply["ok"], reply
        cid = reply["capture_id"]
        deadline = time.monotonic() + 30
        while (left := deadline - time.monotonic()) > 0 and self.sub.poll(int(left * 1000)):
            parts = self.sub.recv_multipart()
            if json.loads(parts[1]).get("capture_id") != cid:
                continue
            if parts[0] in (b"result", b"error"):
                assert parts[0] == b"result" and len(parts) == 3 and parts[2][:4] == b"\x89PNG"
                return
        raise AssertionError(f"no result for {cid}")

    def stop(self) -> int:
        rc: int = self._tool_daemon.stop()  # SIGTERM, 30 s for it to exit, log closed
        self.ctx.destroy(0)
        return rc


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("fuzz"))
    yield d
    assert d.stop() == 0
    log = d.log_path.read_text()
    assert "Traceback" not in log, log


def expected_code(doc: Any) -> str:
    """The reply a decoded JSON document must get (DESIGN §4, the request schema)."""
    if not isinstance(doc, dict):
        return "not_an_object"
    if len(doc) > 16:
        return "bad_request"
    cmd = doc.get("cmd")
    if not isinstance(cmd, str):
        return "bad_request"
    if cmd not in ("ping", "status", "trigger"):
        return "unknown_command"
    if set(doc) != {"cmd"}:
        return "bad_request"
    return "ok"


json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
)  # fmt: skip
requests = st.one_of(
    json_docs,
    st.builds(lambda c: {"cmd": c}, json_docs),
    st.builds(lambda c: {"cmd": c}, st.sampled_from(["ping", "status", "Ping", "trigger "])),
    st.builds(
        lambda c, k, v: {"cmd": c, k: v}, st.sampled_from(["ping", "status"]),
        st.text(max_size=5), json_docs,
    ),
)  # fmt: skip


def test_random_bytes(daemon: Daemon) -> None:
    @FUZZ
    @given(st.binary(max_size=4096))
    def check(raw: bytes) -> None:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            want = "bad_encoding"
        except ValueError:
            want = "bad_json"
        else:
            want = expected_code(doc)
        got = daemon.code(raw)
        assert got == want or (want == "ok" and got == "busy"), (raw[:80], got)

    check()
    daemon.assert_healthy()


def test_json_documents_get_the_code_the_schema_says(daemon: Daemon) -> None:
    @FUZZ
    @given(requests)
    def check(doc: Any) -> None:
        want = expected_code(doc)
        if want == "ok" and doc["cmd"] == "trigger":
            return  # real captures are covered by assert_healthy
        assert daemon.code(json.dumps(doc).encode()) == want, doc

    check()
    daemon.assert_healthy()


def test_truncated_json_and_multipart(daemon: Daemon) -> None:
    @FUZZ
    @given(requests, st.data())
    def truncated(doc: Any, data: st.DataObject) -> None:
        raw = json.dumps({"cmd": "ping", "x": doc}, ensure_ascii=False).encode()
        cut = data.draw(st.integers(0, len(raw) - 1))
        assert daemon.code(raw[:cut]) in ("bad_json", "bad_encoding")

    @FUZZ
    @given(st.lists(st.binary(max_size=64), min_size=2, max_size=5))
    def multipart(frames: list[bytes]) -> None:
        if frames[0] == b"":
            return  # an empty first body frame is a second delimiter (REQ envelope rules)
        assert daemon.code(*frames) == "multipart"

    truncated()
    multipart()
    daemon.assert_healthy()


def test_unknown_commands(daemon: Daemon) -> None:
    @FUZZ
    @given(st.text(max_size=200).filter(lambda c: c not in ("ping", "status", "trigger")))
    def check(cmd: str) -> None:
        assert daemon.code(json.dumps({"cmd": cmd}).encode()) == "unknown_command"

    check()
    daemon.assert_healthy()


def test_worst_cases_sizes_nesting_numbers(daemon: Daemon) -> None:
    # 100 000 nested lists: Python's json raises RecursionError -> bad_json, daemon fine.
    assert daemon.code(b"[" * 100_000 + b"]" * 100_000) == "bad_json"
    assert daemon.code(b'{"cmd": ' + b'{"a": ' * 30_000 + b"1" + b"}" * 30_001) == "bad_json"
    assert daemon.code(b"[" * MAX_REQUEST) == "bad_json"  # deep and unterminated
    assert daemon.code(b'{"cmd": "ping", "n": ' + b"7" * 100_000 + b"}") == "bad_json"
    assert daemon.code(b'{"cmd": "ping", "p": "' + b"x" * MAX_REQUEST + b'"}') == "too_large"
    # Over MAXMSGSIZE: ZeroMQ drops the connection unread, so no reply, only to that peer.
    big = daemon._dealer()
    big.send_multipart([b"", b"{" + b" " * HARD_LIMIT])
    assert not big.poll(1000)
    big.close(0)
    assert daemon.send(b'{"cmd": "ping"}') == {"ok": True}
    daemon.assert_healthy()


def test_flood_without_reading_then_serving_on(daemon: Daemon) -> None:
    flood = daemon._dealer()
    flood.setsockopt(zmq.SNDHWM, 0)
    for i in range(2000):
        flood.send_multipart([b"", b'{"cmd": "ping"}' if i % 2 else b"\xff garbage"])
    assert daemon.send(b'{"cmd": "ping"}', timeout_ms=20_000) == {"ok": True}
    got = 0
    while got < 2000 and flood.poll(5000):
        flood.recv_multipart()
        got += 1
    assert got == 2000  # under the HWM every one was answered, in order
    flood.close(0)
    daemon.assert_healthy()
