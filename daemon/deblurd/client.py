"""``deblurctl``: a small client of the daemon's ZeroMQ protocol (DESIGN §4).

It doubles as the protocol's example: a REQ socket to the control endpoint (one JSON
object per request and reply) and a SUB socket to the results endpoint (multipart:
topic, JSON metadata, and for ``result`` the encoded image).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from deblurd.errors import DeblurdError
from deblurd.imaging import atomic_write_bytes
from deblurd.service.runtime import (
    default_control_endpoint,
    default_results_endpoint,
    default_runtime_dir,
)

__all__ = [
    "ControlClient",
    "default_control_endpoint",
    "default_results_endpoint",
    "default_runtime_dir",
    "main",
]


class ControlClient:
    """Request/reply over the control socket, with a timeout (a dead daemon is an error)."""

    def __init__(self, endpoint: str, timeout_s: float = 5.0) -> None:
        import zmq

        self._zmq = zmq
        self._ctx: Any = zmq.Context.instance()
        self._endpoint = endpoint
        self._timeout_ms = int(timeout_s * 1000)

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        zmq = self._zmq
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self._endpoint)
            sock.send_json(message)
            if not sock.poll(self._timeout_ms, zmq.POLLIN):
                raise DeblurdError(
                    f"no reply from {self._endpoint} within {self._timeout_ms / 1000:.1f} s "
                    "(is the daemon running?)"
                )
            reply = sock.recv_json()
        finally:
            sock.close()
        if not isinstance(reply, dict):
            raise DeblurdError(f"malformed reply from {self._endpoint}: {reply!r}")
        return reply


def _subscribe(endpoint: str) -> Any:
    import zmq

    sock: Any = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    return sock


def _wait_for_result(sub: Any, capture_id: str, timeout_s: float, output: str | None) -> int:
    import zmq

    deadline_ms = int(timeout_s * 1000)
    while sub.poll(deadline_ms, zmq.POLLIN):
        parts = sub.recv_multipart()
        topic, meta = parts[0].decode("ascii", "replace"), json.loads(parts[1])
        if meta.get("capture_id") != capture_id:
            continue
        print(f"{topic}: {json.dumps(meta)}")
        if topic == "error":
            return 1
        if topic == "result":
            if output and len(parts) > 2:
                atomic_write_bytes(output, parts[2])
                print(f"saved {output}")
            return 0
    print(f"deblurctl: no result for {capture_id} within {timeout_s:.0f} s", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deblurctl", description="Talk to a running deblurd.")
    parser.add_argument("--control", default=default_control_endpoint(), metavar="ENDPOINT")
    parser.add_argument("--results", default=default_results_endpoint(), metavar="ENDPOINT")
    parser.add_argument("--timeout", type=float, default=5.0, help="reply timeout, s")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trigger", help="press the shutter")
    t.add_argument("--wait", action="store_true", help="wait for the result")
    t.add_argument("-o", "--output", metavar="OUT", help="save the result image (implies --wait)")
    t.add_argument("--wait-timeout", type=float, default=60.0, help="result timeout, s")
    sub.add_parser("status", help="print the daemon's state")
    sub.add_parser("ping", help="check the daemon answers")
    sub.add_parser("watch", help="print every event, result and error as it is published")
    args = parser.parse_args(argv)
    try:
        if args.command == "watch":
            sock = _subscribe(args.results)
            while True:
                parts = sock.recv_multipart()
                print(f"{parts[0].decode('ascii', 'replace')}: {parts[1].decode()}", flush=True)
        client = ControlClient(args.control, args.timeout)
        if args.command == "trigger":
            wait = args.wait or args.output is not None
            sub_sock = _subscribe(args.results) if wait else None
            reply = client.request({"cmd": "trigger"})
            print(json.dumps(reply))
            if not reply.get("ok"):
                return 1
            if sub_sock is not None:
                return _wait_for_result(
                    sub_sock, str(reply["capture_id"]), args.wait_timeout, args.output
                )
            return 0
        reply = client.request({"cmd": args.command})
        print(json.dumps(reply, indent=2))
        return 0 if reply.get("ok") else 1
    except DeblurdError as exc:
        print(f"deblurctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
