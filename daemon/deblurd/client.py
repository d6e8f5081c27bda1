"""``deblurctl``: a small client of the daemon's ZeroMQ protocol (DESIGN §4).

It doubles as the protocol's example: a REQ socket to the control endpoint (one JSON
object per request and reply) and a SUB socket to the results endpoint (multipart:
topic, JSON metadata, and for ``result`` the encoded image).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deblurd.errors import DeblurdError
from deblurd.imaging import atomic_write_bytes, check_output_file
from deblurd.service.runtime import (
    check_ipc_access,
    client_endpoints,
    default_control_endpoint,
    default_results_endpoint,
    default_runtime_dir,
    ipc_path,
)

if TYPE_CHECKING:
    from deblurd.service.auth import ClientKeys

__all__ = [
    "ControlClient",
    "default_control_endpoint",
    "default_results_endpoint",
    "default_runtime_dir",
    "format_status",
    "main",
]


class ControlClient:
    """Request/reply over the control socket, with a timeout (a dead daemon is an error)."""

    def __init__(
        self, endpoint: str, timeout_s: float = 5.0, curve: ClientKeys | None = None
    ) -> None:
        import zmq

        self._zmq = zmq
        self._ctx: Any = zmq.Context.instance()
        self._endpoint = endpoint
        self._timeout_ms = int(timeout_s * 1000)
        self._curve = curve

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        zmq = self._zmq
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            if self._curve is not None:
                from deblurd.service.auth import apply_client

                apply_client(sock, self._curve, self._endpoint)
            check_ipc_access(self._endpoint)
            path = ipc_path(self._endpoint)
            if path is not None and not path.exists():
                raise DeblurdError(
                    f"nothing answers at {self._endpoint}: {path} does not exist "
                    "(is the daemon running?)"
                )
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


def _load_curve(server_key: str | None, client_key: str | None) -> ClientKeys | None:
    """The CURVE keys for tcp:// endpoints, when given (ipc:// endpoints ignore them)."""
    if server_key is None or client_key is None:
        return None
    from deblurd.service.auth import load_client_keys

    return load_client_keys(server_key, client_key)


def _subscribe(endpoint: str, curve: ClientKeys | None = None) -> Any:
    import zmq

    sock: Any = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    if curve is not None:
        from deblurd.service.auth import apply_client

        apply_client(sock, curve, endpoint)
    check_ipc_access(endpoint)
    sock.connect(endpoint)
    return sock


MAX_TIMEOUT_S = 86400.0
_IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def _seconds(text: str) -> float:
    """A timeout on the command line: a finite number of seconds, above 0, at most a day
    (``-1`` would wait forever, ``1e12`` overflows ZeroMQ's milliseconds)."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from exc
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise argparse.ArgumentTypeError(
            f"{text}: must be above 0 and at most {MAX_TIMEOUT_S:.0f} s (one day)"
        )
    return value


def check_result_path(output: str) -> Path:
    """``trigger -o OUT``, checked before the capture is taken: ``.png``, ``.jpg`` or
    ``.jpeg``, and a file that can be written there (see ``imaging.check_output_file``)."""
    p = check_output_file(output)
    if p.suffix.lower() not in _IMAGE_SUFFIXES:
        raise DeblurdError(f"{p}: output must end in .png, .jpg or .jpeg")
    return p


def _image_for(output: str, data: bytes) -> bytes:
    """The result's encoded image as the file name's suffix wants it: the daemon's bytes
    when they are of that format, else re-encoded (a daemon set to JPEG, ``-o x.png``)."""
    want = _IMAGE_SUFFIXES[Path(output).suffix.lower()]
    have = "png" if data.startswith(b"\x89PNG") else "jpeg" if data.startswith(b"\xff\xd8") else "?"
    if have == want:
        return data
    import cv2
    import numpy as np

    from deblurd.imaging import encode_image

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DeblurdError(f"{output}: the daemon's result image cannot be decoded")
    return encode_image(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8), want)


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
                try:
                    atomic_write_bytes(output, _image_for(output, parts[2]))
                except OSError as exc:
                    raise DeblurdError(f"{output}: cannot write: {exc.strerror or exc}") from exc
                print(f"saved {output}")
            return 0
    print(f"deblurctl: no result for {capture_id} within {timeout_s:.0f} s", file=sys.stderr)
    return 1


def _num(value: Any, fmt: str = "{:.0f}", none: str = "-") -> str:
    return none if not isinstance(value, (int, float)) else fmt.format(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def _remote_rows(remote: Any) -> list[tuple[str, str]]:
    """The ``remote`` row of ``deblurctl status`` for a runtime on an inference server."""
    if not isinstance(remote, dict):
        return []
    lat = remote.get("latency_ms") or {}
    p50, p95 = _num(lat.get("p50"), "{:.1f}"), _num(lat.get("p95"), "{:.1f}")
    latency = (f"latency p50 {p50} ms, p95 {p95} ms"
               if lat else "no request answered yet")  # fmt: skip
    row = (f"{remote.get('url', '-')}: {_num(remote.get('requests'))} requests, "
           f"{_num(remote.get('failures'))} failed, {_num(remote.get('fallbacks'))} run "
           f"locally (fallback {remote.get('fallback', '-')}); {latency}")  # fmt: skip
    if remote.get("last_error"):
        row += f"; last error: {remote['last_error']}"
    return [("remote", row)]


def format_status(reply: dict[str, Any], now_ns: int | None = None) -> str:
    """The ``status`` reply as a table for people (``deblurctl status``; ``--json`` prints
    the reply itself). Keys a daemon does not send are shown as ``-``."""
    import time

    now_ns = time.time_ns() if now_ns is None else now_ns
    cam: dict[str, Any] = reply.get("camera") or {}
    ring: dict[str, Any] = reply.get("ring") or {}
    jobs: dict[str, Any] = reply.get("jobs") or {}
    queue: dict[str, Any] = reply.get("queue") or {}
    backends: dict[str, Any] = reply.get("backends") or {}
    ends: dict[str, Any] = reply.get("endpoints") or {}
    reg = backends.get("registration")
    if isinstance(reg, dict):
        registration = str(reg.get("active", "-"))
        if reg.get("configured") not in (None, reg.get("active")):
            registration += f" (configured: {reg['configured']})"
        if reg.get("note"):
            registration += f"; {reg['note']}"
    else:
        registration = str(reg or "-")
    size = f"{cam['width']}x{cam['height']} " if "width" in cam and "height" in cam else ""
    age = cam.get("last_frame_age_s")
    err = reply.get("last_error")
    if isinstance(err, dict):
        when = err.get("time_ns")
        ago = f" ({_duration((now_ns - when) / 1e9)} ago)" if isinstance(when, int) else ""
        stamp = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when / 1e9))
            if isinstance(when, int)
            else "-"
        )
        capture = f" [capture {err['capture_id']}]" if err.get("capture_id") else ""
        last_error = f"{stamp}{ago} {err.get('code', '?')}: {err.get('message', '')}{capture}"
    else:
        last_error = "none"
    rows = [
        ("camera", f"{backends.get('camera', '-')} {size}{_num(cam.get('fps'), '{:.1f}')} fps "
                   f"(nominal {_num(cam.get('nominal_fps'))}), "
                   f"{_num(cam.get('frames_received'))} frames, "
                   f"{_num(cam.get('frames_dropped'))} dropped, "
                   f"{_num(cam.get('restarts'))} restarts"
                   + (f", last frame {age:.2f} s ago" if isinstance(age, (int, float)) else "")),
        ("ring", f"{_num(ring.get('fill'))}/{_num(ring.get('capacity'))} frames, "
                 f"{_num(ring.get('frames_missed'))} missed"),
        ("engine", str(backends.get("inference", "-"))),
        *_remote_rows(reply.get("inference_remote")),
        ("registration", registration),
        ("triggers", ", ".join(str(t) for t in backends.get("triggers", [])) or "-"),
        ("jobs", f"{_num(jobs.get('done'))} done, {_num(jobs.get('failed'))} failed, "
                 f"{_num(jobs.get('busy'))} refused busy, {_num(jobs.get('accepted'))} accepted; "
                 f"queue {_num(queue.get('depth'))}/{_num(queue.get('size'))}; "
                 f"running {jobs.get('running') or '-'}"),
        ("last error", last_error),
        ("output", str(reply.get("output_directory", "-"))),
        ("endpoints", f"control {ends.get('control', '-')}, results {ends.get('results', '-')}"),
    ]  # fmt: skip
    head = (
        f"deblurd {reply.get('version', '?')}: {reply.get('state', '?')}, "
        f"up {_duration(reply.get('uptime_s'))}"
    )
    if reply.get("worker_alive") is False:
        head += " (worker thread dead)"
    lines = [head, *(f"  {name:<13} {value}" for name, value in rows)]
    latency: dict[str, dict[str, Any]] = reply.get("latency_ms") or {}
    if latency:
        width = max(13, *(len(stage) for stage in latency))
        lines += ["", f"  {'stage':<{width}} {'p50 ms':>9} {'p95 ms':>9} {'last ms':>9} "
                      f"{'max ms':>9} {'jobs':>5}"]  # fmt: skip
        for stage, v in sorted(latency.items()):
            lines.append(
                f"  {stage:<{width}} {_num(v.get('p50'), '{:.1f}'):>9} "
                f"{_num(v.get('p95'), '{:.1f}'):>9} {_num(v.get('last'), '{:.1f}'):>9} "
                f"{_num(v.get('max'), '{:.1f}'):>9} {_num(v.get('count')):>5}"
            )
    else:
        lines += ["", "  no capture finished yet: no stage latencies"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``deblurctl``: the exit status (a closed stdout or stderr ends it quietly)."""
    from deblurd.console import run_main

    return run_main(_main, argv)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deblurctl", description="Talk to a running deblurd.")
    parser.add_argument(
        "--control",
        metavar="ENDPOINT",
        help="the daemon's control endpoint (default: control.sock in the per-user runtime "
        f"folder {default_runtime_dir()} when there, else in /run/deblurd, the service's)",
    )
    parser.add_argument(
        "--results",
        metavar="ENDPOINT",
        help="the daemon's results endpoint (default: results.sock beside the control socket)",
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=5.0, help="reply timeout, s (above 0, at most a day)"
    )
    parser.add_argument(
        "--server-key",
        metavar="FILE",
        help="the daemon's public CURVE key (server.key), for tcp:// endpoints",
    )
    parser.add_argument(
        "--client-key",
        metavar="FILE",
        help="this client's CURVE key pair (NAME.key_secret; its public key must be allowed "
        "by the daemon)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trigger", help="press the shutter")
    t.add_argument("--wait", action="store_true", help="wait for the result")
    t.add_argument("-o", "--output", metavar="OUT", help="save the result image (implies --wait)")
    t.add_argument("--wait-timeout", type=_seconds, default=60.0, help="result timeout, s")
    st = sub.add_parser("status", help="print the daemon's state (a table)")
    st.add_argument("--json", action="store_true", help="print the raw status reply (JSON)")
    sub.add_parser("ping", help="check the daemon answers")
    w = sub.add_parser("watch", help="print every event, result and error as it is published")
    w.add_argument(
        "--forever",
        action="store_true",
        help="wait even when no daemon answers (yet); without it, watch first checks that "
        "one answers on the control socket within --timeout",
    )
    args = parser.parse_args(argv)
    ends = client_endpoints(args.control, args.results)
    args.control, args.results = ends.control, ends.results
    if (args.server_key is None) != (args.client_key is None):
        parser.error("--server-key and --client-key go together")
    try:
        curve = _load_curve(args.server_key, args.client_key)
        if args.command == "watch":
            if args.forever:
                print(f"deblurctl: watching {args.results}", file=sys.stderr, flush=True)
            else:  # a daemon must answer, else watching would be silence forever
                ControlClient(args.control, args.timeout, curve).request({"cmd": "ping"})
            sock = _subscribe(args.results, curve)
            while True:
                parts = sock.recv_multipart()
                print(f"{parts[0].decode('ascii', 'replace')}: {parts[1].decode()}", flush=True)
        if args.command == "trigger" and args.output is not None:
            check_result_path(args.output)  # before the capture is taken
        client = ControlClient(args.control, args.timeout, curve)
        if args.command == "trigger":
            wait = args.wait or args.output is not None
            sub_sock = _subscribe(args.results, curve) if wait else None
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
        if args.command == "status" and not args.json and reply.get("ok"):
            print(format_status(reply))
        else:
            print(json.dumps(reply, indent=2))
        return 0 if reply.get("ok") else 1
    except DeblurdError as exc:
        print(f"deblurctl: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
