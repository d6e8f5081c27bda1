"""Fuzz the real daemon's control socket, then check it still works.

    python tools/fuzz_control.py --messages 10000 [--seed N]
    python tools/fuzz_control.py --control ipc:///run/deblurd/control.sock \
        --results ipc:///run/deblurd/results.sock --messages 10000   # a running daemon

Without ``--control`` it starts ``python -m deblurd.cli run`` on the simulated camera
(160x120, U-Net off, ipc endpoints in a temporary folder, ``max_request_bytes`` 256 KiB
so that 100 000 nested lists reach the JSON parser). Messages, by category: random bytes,
truncated JSON, JSON over ``max_request_bytes`` (error ``too_large``) and over ZeroMQ's
``MAXMSGSIZE`` (no reply: the connection is dropped), wrong types, extra keys, deep
nesting, huge numbers, odd Unicode, unknown commands, multipart, DEALER envelopes without
a delimiter, and floods (hundreds of requests sent without reading the replies). Every
``--check-every`` messages: ``ping`` must answer and a real ``trigger`` must produce a
``result`` on the PUB socket.

Prints the counts per category (sent, replied ok, replied error by code, no reply,
malformed reply) and the final health; exit 1 when something unexpected happened: a
reply missing where one was due, a malformed reply, a failed health check, the daemon
gone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

MAX_REQUEST = 256 * 1024
HARD_LIMIT = max(16 * MAX_REQUEST, 1 << 20)  # deblurd.service.control.hard_limit
CODES = {"too_large", "multipart", "bad_encoding", "bad_json", "not_an_object", "bad_request",
         "unknown_command", "busy", "shutting_down", "internal"}  # fmt: skip

Message = tuple[list[bytes], bool]  # (body frames, a reply is due)


def _valid(rng: random.Random) -> dict[str, Any]:
    return {"cmd": rng.choice(["ping", "status"])}


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(2**70), 2**70)
    if kind == 3:
        return rng.choice([rng.uniform(-1e300, 1e300), float("nan"), float("inf"), -0.0])
    if kind in (4, 5):
        return "".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(rng.randrange(0, 20)))
    if kind in (6, 7):
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {str(rng.random()): _json_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def gen_random_bytes(rng: random.Random) -> Message:
    return [rng.randbytes(rng.randrange(0, 4096))], True


def gen_truncated_json(rng: random.Random) -> Message:
    doc = json.dumps({"cmd": rng.choice(["ping", "status", "trigger"]), "x": _json_value(rng)})
    raw = doc.encode()
    return [raw[: rng.randrange(0, max(1, len(raw) - 1))]], True


def gen_over_soft_limit(rng: random.Random) -> Message:
    pad = "x" * (MAX_REQUEST + rng.randrange(1, 100_000))
    return [json.dumps({"cmd": "ping", "pad": pad}).encode()], True


def gen_over_hard_limit(rng: random.Random) -> Message:
    return [b"{" + b" " * (HARD_LIMIT + rng.randrange(1, 4096))], False


def gen_wrong_types(rng: random.Random) -> Message:
    doc: Any = rng.choice(
        [
            {"cmd": _json_value(rng)},
            {"cmd": rng.choice(["ping", "status", "trigger"]), rng.choice(["when", "x", ""]): 1},
            {"nocmd": "ping"},
            _json_value(rng),
            {str(i): i for i in range(rng.randrange(17, 40))},
        ]
    )
    return [json.dumps(doc).encode()], True


def gen_deep_nesting(rng: random.Random) -> Message:
    n = rng.choice([1_000, 5_000, 30_000, 100_000])
    if rng.random() < 0.5:
        raw = b"[" * n + b"]" * n
    else:
        raw = b'{"cmd": ' + b'{"a": ' * (n // 2) + b"1" + b"}" * (n // 2 + 1)
    if len(raw) > MAX_REQUEST:
        raw = raw[:MAX_REQUEST]  # truncated: deep and unterminated
    return [raw], True


def gen_huge_number(rng: random.Random) -> Message:
    digits = str(rng.randint(1, 9)) * rng.choice([5_000, 50_000])
    return [('{"cmd": "ping", "n": ' + digits + "}").encode()], True


def gen_unicode(rng: random.Random) -> Message:
    raw = rng.choice(
        [
            b'{"cmd": "\\ud800"}',
            b'{"cmd": "ping\\u0000"}',
            '{"cmd": "pïng"}'.encode(),
            b'\xef\xbb\xbf{"cmd": "ping"}',  # UTF-8 BOM
            '{"cmd": "ping"}'.encode("utf-16"),
            b'{"cmd": NaN}',
            b'{"cmd": "ping", "cmd": "trigger", "cmd": "ping"}',
        ]
    )
    return [raw], True


def gen_unknown_command(rng: random.Random) -> Message:
    name = rng.choice(["shoot", "TRIGGER", "Ping ", "", "status\n", "x" * rng.randrange(1, 5000)])
    return [json.dumps({"cmd": name}).encode()], True


def gen_multipart(rng: random.Random) -> Message:
    frames = [json.dumps(_valid(rng)).encode() for _ in range(rng.randrange(2, 6))]
    if rng.random() < 0.3:
        frames.append(b"")
    return frames, True


def gen_valid(rng: random.Random) -> Message:
    return [json.dumps(_valid(rng)).encode()], True


GENERATORS: dict[str, Callable[[random.Random], Message]] = {
    "random_bytes": gen_random_bytes,
    "truncated_json": gen_truncated_json,
    "over_max_request_bytes": gen_over_soft_limit,
    "over_maxmsgsize": gen_over_hard_limit,
    "wrong_types": gen_wrong_types,
    "deep_nesting": gen_deep_nesting,
    "huge_number": gen_huge_number,
    "unicode": gen_unicode,
    "unknown_command": gen_unknown_command,
    "multipart": gen_multipart,
    "valid_ping_status": gen_valid,
}
WEIGHTS = {"over_maxmsgsize": 0.2, "over_max_request_bytes": 0.5, "deep_nesting": 0.5}


class Stats:
    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.ok: Counter[str] = Counter()
        self.errors: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.no_reply: Counter[str] = Counter()
        self.unexpected: list[str] = []

    def record(self, category: str, reply: bytes | None, due: bool) -> None:
        self.sent[category] += 1
        if reply is None:
            self.no_reply[category] += 1
            if due:
                self.unexpected.append(f"{category}: no reply")
            return
        try:
            doc = json.loads(reply)
            ok = doc["ok"]
            code = None if ok is True else doc["error"]["code"]
        except (ValueError, KeyError, TypeError):
            self.unexpected.append(f"{category}: malformed reply {reply[:100]!r}")
            return
        if ok is True:
            self.ok[category] += 1
        elif code in CODES:
            self.errors[category][code] += 1
            if code == "internal":
                self.unexpected.append(f"{category}: internal error {doc['error']['message']}")
        else:
            self.unexpected.append(f"{category}: unknown error code {code!r}")

    def print(self) -> None:
        print(f"{'category':<24}{'sent':>7}{'ok':>7}{'no reply':>10}  errors by code")
        for cat in sorted(self.sent):
            errs = ", ".join(f"{c} {n}" for c, n in sorted(self.errors[cat].items()))
            print(f"{cat:<24}{self.sent[cat]:>7}{self.ok[cat]:>7}{self.no_reply[cat]:>10}  {errs}")
        total_err: Counter[str] = Counter()
        for c in self.errors.values():
            total_err.update(c)
        print(f"{'TOTAL':<24}{sum(self.sent.values()):>7}{sum(self.ok.values()):>7}"
              f"{sum(self.no_reply.values()):>10}  "
              + ", ".join(f"{c} {n}" for c, n in sorted(total_err.items())))  # fmt: skip


def dealer(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    """A DEALER socket (no linger) connected to the control ``endpoint``."""
    sock: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


class Daemon:
    """``python -m deblurd.cli run`` on the sim camera in a temporary folder, its output
    in ``daemon.log`` there (also the daemon of ``tests/integration/test_fuzz_control.py``,
    which loads this file)."""

    def __init__(self, folder: Path) -> None:
        self.control = f"ipc://{folder}/control.sock"
        self.results = f"ipc://{folder}/results.sock"
        cfg = folder / "deblurd.toml"
        cfg.write_text(
            f"""
[camera]
backend = "sim"
width = 160
height = 120
fps = 30.0
ring_memory_mb = 16
[service]
control_endpoint = "{self.control}"
results_endpoint = "{self.results}"
results_hwm = 10000
max_request_bytes = {MAX_REQUEST}
[output]
directory = "{folder}/out"
[inference]
passes = "off"
[triggers]
terminal = false
"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEBLURD_")}
        env.pop("NOTIFY_SOCKET", None)
        self.log = (folder / "daemon.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deblurd.cli", "run", "--config", str(cfg)],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        self.log_path = folder / "daemon.log"

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "deblurd: ready" in self.log_path.read_text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit("daemon did not start:\n" + self.log_path.read_text())

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return -1

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        finally:
            self.log.close()


class Fuzzer:
    def __init__(self, control: str, results: str, timeout_ms: int) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.control, self.results, self.timeout_ms = control, results, timeout_ms
        self.sock = self._dealer()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, 100_000)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.connect(results)
        self._seq = 0
        time.sleep(0.3)

    def _dealer(self) -> zmq.Socket[Any]:
        return dealer(self.ctx, self.control)

    def exchange(self, frames: list[bytes], due: bool) -> bytes | None:
        """Send one request (REQ framing over a DEALER) and wait for its reply."""
        sock = self.sock if due else self._dealer()  # a dropped connection: its own socket
        try:
            sock.send_multipart([b"", *frames])
            if not sock.poll(self.timeout_ms if due else 1000):
                if due:  # replies to come would be out of step: start over
                    self.sock.close(0)
                    self.sock = self._dealer()
                return None
            return sock.recv_multipart()[-1]
        finally:
            if not due:
                sock.close(0)

    def flood(self, stats: Stats, rng: random.Random, n: int) -> None:
        """``n`` requests without reading, then every reply."""
        sock = self._dealer()
        sock.setsockopt(zmq.SNDHWM, 0)
        msgs = [rng.choice([gen_valid, gen_random_bytes, gen_wrong_types, gen_unknown_command])(rng)
                for _ in range(n)]  # fmt: skip
        for frames, _ in msgs:
            sock.send_multipart([b"", *frames])
        replies: list[bytes] = []
        while len(replies) < n and sock.poll(self.timeout_ms):
            replies.append(sock.recv_multipart()[-1])
        for i in range(n):
            stats.record("flood", replies[i] if i < len(replies) else None, True)
        sock.close(0)

    def health(self) -> tuple[bool, str]:
        """``ping`` answers and a real trigger gives a ``result``."""
        ping = self.exchange([b'{"cmd": "ping"}'], True)
        if ping is None or json.loads(ping).get("ok") is not True:
            return False, f"ping: {ping!r}"
        reply = self.exchange([b'{"cmd": "trigger"}'], True)
        if reply is None:
            return False, "trigger: no reply"
        doc = json.loads(reply)
        if not doc.get("ok"):
            return False, f"trigger: {doc}"
        cid = doc["capture_id"]
        deadline = time.monotonic() + 30
        while (left := deadline - time.monotonic()) > 0 and self.sub.poll(int(left * 1000)):
            parts = self.sub.recv_multipart()
            if json.loads(parts[1]).get("capture_id") == cid and parts[0] in (b"result", b"error"):
                ok = parts[0] == b"result" and len(parts) == 3 and len(parts[2]) > 0
                return ok, f"trigger {cid}: {parts[0].decode()} ({len(parts[-1])} bytes)"
        return False, f"trigger {cid}: no result within 30 s"

    def close(self) -> None:
        self.ctx.destroy(0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--control", help="a running daemon's control endpoint (else start one)")
    ap.add_argument("--results", help="its results endpoint")
    ap.add_argument("--check-every", type=int, default=1000, help="health check period")
    ap.add_argument("--flood", type=int, default=500, help="requests per flood")
    ap.add_argument("--flood-share", type=float, default=0.2, help="share of messages in floods")
    ap.add_argument("--timeout-ms", type=int, default=5000)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="deblurd-fuzz-")
    daemon = None
    if args.control:
        control, results = args.control, args.results or args.control
    else:
        daemon = Daemon(Path(tmp.name))
        daemon.wait_ready()
        control, results = daemon.control, daemon.results
    fuzz = Fuzzer(control, results, args.timeout_ms)
    stats = Stats()
    health_fail: list[str] = []
    rss: list[int] = [daemon.rss_kib()] if daemon else []
    names = list(GENERATORS)
    share = min(max(args.flood_share, 0.0), 0.9)
    flood_p = share / (args.flood * (1.0 - share))
    weights = [WEIGHTS.get(n, 1.0) for n in names]
    t0 = time.monotonic()
    checks = 0
    done = 0
    next_check = args.check_every
    try:
        while done < args.messages:
            if rng.random() < flood_p and args.messages - done >= args.flood:
                fuzz.flood(stats, rng, args.flood)
                done += args.flood
            else:
                cat = rng.choices(names, weights)[0]
                frames, due = GENERATORS[cat](rng)
                stats.record(cat, fuzz.exchange(frames, due), due)
                done += 1
            if done >= next_check or done >= args.messages:
                next_check += args.check_every
                ok, what = fuzz.health()
                checks += 1
                if not ok:
                    health_fail.append(f"after {done}: {what}")
                if daemon:
                    rss.append(daemon.rss_kib())
                print(f"{done:>7} messages, {time.monotonic() - t0:6.1f} s: health "
                      f"{'ok' if ok else 'FAILED'} ({what})", flush=True)  # fmt: skip
                if daemon and daemon.proc.poll() is not None:
                    health_fail.append(f"daemon exited with {daemon.proc.returncode}")
                    break
    except KeyboardInterrupt:
        print("interrupted")
    elapsed = time.monotonic() - t0
    print()
    stats.print()
    print(f"\n{sum(stats.sent.values())} messages in {elapsed:.1f} s; {checks} health checks "
          f"(ping + trigger -> result), {len(health_fail)} failed")  # fmt: skip
    status = fuzz.exchange([b'{"cmd": "status"}'], True)
    if status is not None:
        st = json.loads(status)
        print(f"final status: state {st.get('state')}, jobs {st.get('jobs')}")
    if rss:
        print(f"daemon RSS (MiB) at start and after each check: "
              f"{' '.join(f'{r / 1024:.0f}' for r in rss)}")  # fmt: skip
    fuzz.close()
    if daemon:
        rc = daemon.stop()
        print(f"daemon exit status on SIGTERM: {rc}")
        if rc != 0:
            health_fail.append(f"exit status {rc}")
        log = daemon.log_path.read_text()
        tracebacks = log.count("Traceback")
        print(f"daemon log: {len(log.splitlines())} lines, {tracebacks} tracebacks")
        if tracebacks:
            health_fail.append(f"{tracebacks} tracebacks in the daemon's log")
    tmp.cleanup()
    for line in stats.unexpected[:20]:
        print(f"UNEXPECTED {line}")
    for line in health_fail:
        print(f"HEALTH {line}")
    return 1 if stats.unexpected or health_fail else 0


if __name__ == "__main__":
    sys.exit(main())
