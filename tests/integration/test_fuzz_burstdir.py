"""Hostile burst directories through ``deblurd process`` (issue 14).

Hypothesis builds burst directories: ``burst.json`` as a mutated valid manifest, an
arbitrary JSON tree, deep nesting, random bytes or nothing; frames as genuine PNGs of a
simulated burst, truncated or byte-flipped copies, random bytes, empty files, PNGs whose
header promises gigabytes, JPEGs, frames of another size, symbolic links inside and out of
the folder, a FIFO, a folder, ``/dev/zero``, missing files. The real CLI runs in this
process (``main([...])``) under an address-space limit (``resource.setrlimit``) of 1 GiB
beyond what the process had mapped. Every case must end in exit 0 with the image and
report written, or exit 1 with exactly one ``deblurd: error:`` line on stderr (file
descriptor 2: libpng's own lines would show) and nothing left in the output folder; never
a traceback, never a partial output, never a hang (a FIFO is never opened).
150 cases take about 10 s; ``FUZZ_BURST_EXAMPLES=3000`` runs a longer search.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deblurd.cli import main

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_BURST_EXAMPLES", "150")),  # a long run: 3000
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
    database=None,
)  # fmt: skip
HEADROOM = 1 << 30  # address space allowed beyond the process's at the start of a case
W, H = 96, 64  # frames of the simulated burst (the pipeline wants >= 64 px)

FRAME_KINDS = ["good", "good", "good", "truncated", "flipped", "random", "empty", "bomb",
               "jpeg", "other_size", "link_inside", "link_outside", "fifo", "folder",
               "dev_zero", "missing", "loop"]  # fmt: skip


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "burst"
    assert main(["simulate", str(out), "--width", str(W), "--height", str(H), "--frames", "4",
                 "--extra", "1", "--seed", "3"]) == 0  # fmt: skip
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def header_bomb(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` with one compressed row behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * min(width, 4096)))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(
        b"IEND", b"")  # fmt: skip


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=4),
    max_leaves=12,
)  # fmt: skip
odd_numbers = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**63, 2**63 - 1, 10**30, 1e30, True, "5", None]),
)  # fmt: skip


@st.composite
def bursts(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 4))
    frames = []
    for i in range(n):
        entry: dict[str, Any] = {
            "file": f"{i:03d}.png",
            "timestamp_ns": i * 33_333_333,
            "exposure_us": 8000,
            "analogue_gain": 4.0,
            "role": "ring",
        }
        mutated = draw(st.sampled_from([False, False, False, True]))
        for key in draw(st.sets(st.sampled_from(sorted(entry)), max_size=2)) if mutated else ():
            entry[key] = (
                draw(odd_numbers | json_values)
                if key != "file"
                else draw(
                    st.sampled_from(["../x.png", "", "a/b.png", "000.png", f"{i:03d}.png", 7])
                )
            )
        frames.append(entry)
    trigger = draw(st.sampled_from([0, 0, 0, -1, n]) | st.integers(0, n - 1))
    doc: Any = {"version": 1, "trigger_index": trigger, "frames": frames}
    manifest = draw(st.sampled_from(["doc"] * 8 + ["tree", "deep", "bytes", "none"]))
    return {
        "doc": doc,
        "manifest": manifest,
        "tree": draw(json_values) if manifest == "tree" else None,
        "depth": draw(st.integers(17, 100_000)) if manifest == "deep" else 0,
        "bytes": draw(st.binary(max_size=64)) if manifest == "bytes" else b"",
        "kinds": [draw(st.sampled_from(FRAME_KINDS)) for _ in range(n)],
        "cut": draw(st.floats(0.0, 0.999)),
        "flip": draw(st.integers(0, 10**9)),
        "noise": draw(st.binary(max_size=200)),
        "bomb": draw(
            st.sampled_from(
                [(30000, 30000), (12000, 12000), (70000, 1), (1, 2**31 - 1), (2**31 - 1, 2**31 - 1)]
            )
        ),
    }


def build(case: dict[str, Any], source: Path, root: Path) -> Path:
    burst = root / "burst"
    burst.mkdir()
    outside = root / "outside.png"
    shutil.copy(source / "000.png", outside)
    genuine = sorted(source.glob("*.png"))
    for i, kind in enumerate(case["kinds"]):
        path = burst / f"{i:03d}.png"
        good = genuine[i % len(genuine)].read_bytes()
        if kind == "good":
            path.write_bytes(good)
        elif kind == "truncated":
            path.write_bytes(good[: int(len(good) * case["cut"])])
        elif kind == "flipped":
            data = bytearray(good)
            data[case["flip"] % len(data)] ^= 0x5A
            path.write_bytes(bytes(data))
        elif kind == "random":
            path.write_bytes(case["noise"])
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "bomb":
            path.write_bytes(header_bomb(*case["bomb"]))
        elif kind == "jpeg":
            import cv2
            import numpy as np

            img = cv2.imdecode(np.frombuffer(good, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None
            path.write_bytes(cv2.imencode(".jpg", img)[1].tobytes())
        elif kind == "other_size":
            path.write_bytes(header_bomb(W + 1, H))
        elif kind == "link_inside":
            (burst / f"real{i}.png").write_bytes(good)
            path.symlink_to(f"real{i}.png")
        elif kind == "link_outside":
            path.symlink_to(outside)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "folder":
            path.mkdir()
        elif kind == "dev_zero":
            path.symlink_to("/dev/zero")
        elif kind == "loop":
            path.symlink_to(path.name)
    manifest = burst / "burst.json"
    if case["manifest"] == "doc":
        manifest.write_text(json.dumps(case["doc"]))
    elif case["manifest"] == "tree":
        manifest.write_text(json.dumps(case["tree"]))
    elif case["manifest"] == "deep":
        manifest.write_text("[" * case["depth"])
    elif case["manifest"] == "bytes":
        manifest.write_bytes(case["bytes"])
    return burst


@pytest.fixture
def memory_limit() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def mapped_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


@FUZZ
@given(case=bursts())
def test_any_burst_directory_ends_cleanly(
    case: dict[str, Any], source: Path, capfd: pytest.CaptureFixture[str], memory_limit: None
) -> None:
    with tempfile.TemporaryDirectory(prefix="deblurd-fuzz-") as tmp:
        root = Path(tmp)
        burst = build(case, source, root)
        out_dir = root / "out"
        out_dir.mkdir()
        out, report = out_dir / "result.png", out_dir / "report.json"
        capfd.readouterr()
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = mapped_bytes() + HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard < 0 else min(limit, hard), hard))
        try:
            code = main(["process", str(burst), "-o", str(out), "--json", str(report),
                         "--unet", "off"])  # fmt: skip
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, hard))
        captured = capfd.readouterr()
        lines = captured.err.splitlines()
        event(f"exit {code}: " + (lines[0].split(": ")[-1][:40] if code and lines else "ok"))
        assert "Traceback" not in captured.err, (case, captured.err)
        if code == 0:
            assert sorted(p.name for p in out_dir.iterdir()) == ["report.json", "result.png"]
            assert json.loads(report.read_text())["output"] == str(out)
            assert not [ln for ln in lines if ln.startswith("deblurd: error")], lines
        else:
            assert code == 1, (case, captured.err)
            assert len(lines) == 1 and lines[0].startswith("deblurd: error: "), (case, lines)
            assert list(out_dir.iterdir()) == [], case  # nothing half-done
