"""The burst-directory format, version 1 (DESIGN §4): read, validate, write.

::

    BURST_DIR/burst.json
    BURST_DIR/000.png 001.png ...   8-bit sRGB PNG (RGB order), all the same size

``burst.json``::

    {"version": 1, "trigger_index": 4,
     "frames": [{"file": "000.png", "timestamp_ns": 0, "exposure_us": 10000,
                 "analogue_gain": 2.0, "role": "ring"}]}

``role`` is ``ring`` (preview ring, short exposure, around the trigger) or ``extra``
(captured after the trigger at a longer exposure). ``trigger_index`` indexes ``frames``
and must name a ``ring`` frame.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deblurd.errors import BurstError, ImageError
from deblurd.imaging import (
    DEFAULT_MAX_FRAME_PIXELS,
    U8,
    atomic_write_bytes,
    check_pixels,
    current_umask,
    encode_image,
    open_regular,
    read_image_header,
    read_rgb8,
)

FORMAT_VERSION = 1
Role = Literal["ring", "extra"]
_ROLES = ("ring", "extra")

MAX_MANIFEST_BYTES = 1 << 20
"""Largest ``burst.json`` read, bytes (a frame's entry is about 120 bytes)."""
MAX_MANIFEST_DEPTH = 16
"""Deepest nesting of arrays and objects in ``burst.json`` (the format needs 3)."""
DEFAULT_MAX_BURST_PIXELS = 1 << 28
"""Pixels of all frames of a burst together, by default (``limits.max_burst_pixels``)."""
MAX_TIMESTAMP_NS = 2**63 - 1  # a signed 64-bit sensor timestamp
MAX_EXPOSURE_US = 3_600_000_000  # one hour
MAX_GAIN = 1000.0
_JSON_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = re.compile(r"[\[\]{}]")


@dataclass(frozen=True)
class FrameInfo:
    """Metadata of one frame, as the sensor reported it.

    ``timestamp_ns``: sensor timestamp (start of exposure), ns, any epoch.
    ``exposure_us``: exposure time, µs. ``analogue_gain``: sensor gain (1.0 = unity).
    """

    file: str
    timestamp_ns: int
    exposure_us: int
    analogue_gain: float
    role: Role = "ring"

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "timestamp_ns": self.timestamp_ns,
            "exposure_us": self.exposure_us,
            "analogue_gain": self.analogue_gain,
            "role": self.role,
        }


@dataclass
class Burst:
    """A burst in memory: frames ``uint8 (H, W, 3)`` RGB sRGB, and their metadata."""

    frames: list[U8]
    infos: list[FrameInfo]
    trigger_index: int
    source: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of every frame, px."""
        h, w = self.frames[0].shape[:2]
        return int(h), int(w)

    def indices(self, role: Role) -> list[int]:
        """Indices of the frames with this role, in file order."""
        return [i for i, info in enumerate(self.infos) if info.role == role]


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise BurstError(f"{where}: missing field '{key}'")
    value = obj[key]
    # bool is an int subclass in Python; it is never a valid number here.
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BurstError(f"{where}: field '{key}' must be {names}, got {value!r}")
    return value


def parse_manifest(doc: Any, where: str = "burst.json") -> tuple[int, list[FrameInfo]]:
    """Validate a parsed ``burst.json`` and return ``(trigger_index, frame infos)``."""
    if not isinstance(doc, dict):
        raise BurstError(f"{where}: expected a JSON object at the top level")
    version = _field(doc, "version", int, where)
    if version != FORMAT_VERSION:
        raise BurstError(f"{where}: unsupported version {version} (this reads version 1)")
    frames = _field(doc, "frames", list, where)
    if not frames:
        raise BurstError(f"{where}: 'frames' is empty: a burst needs at least one frame")
    trigger_index = _field(doc, "trigger_index", int, where)
    infos: list[FrameInfo] = []
    seen: set[str] = set()
    for i, entry in enumerate(frames):
        loc = f"{where}: frames[{i}]"
        if not isinstance(entry, dict):
            raise BurstError(f"{loc}: expected an object")
        name = _field(entry, "file", str, loc)
        if Path(name).name != name or name in ("", ".", ".."):
            raise BurstError(f"{loc}: field 'file' must be a plain file name, got {name!r}")
        if name in seen:
            raise BurstError(f"{loc}: file {name!r} is listed twice")
        seen.add(name)
        ts = _field(entry, "timestamp_ns", int, loc)
        if not 0 <= ts <= MAX_TIMESTAMP_NS:
            raise BurstError(
                f"{loc}: field 'timestamp_ns' must be 0..{MAX_TIMESTAMP_NS} ns, got {ts}"
            )
        exposure = _field(entry, "exposure_us", int, loc)
        if not 0 < exposure <= MAX_EXPOSURE_US:
            raise BurstError(
                f"{loc}: field 'exposure_us' must be 1..{MAX_EXPOSURE_US} µs, got {exposure}"
            )
        gain_value = _field(entry, "analogue_gain", (int, float), loc)
        gain = float(gain_value) if abs(gain_value) < 1e300 else math.inf
        if not (math.isfinite(gain) and 0 < gain <= MAX_GAIN):
            raise BurstError(
                f"{loc}: field 'analogue_gain' must be a finite number above 0 and at most "
                f"{MAX_GAIN:g}, got {gain_value!r}"
            )
        role = entry.get("role", "ring")
        if role not in _ROLES:
            raise BurstError(f"{loc}: field 'role' must be 'ring' or 'extra', got {role!r}")
        infos.append(FrameInfo(name, ts, exposure, gain, role))
    if not 0 <= trigger_index < len(infos):
        raise BurstError(
            f"{where}: trigger_index {trigger_index} is out of range (0..{len(infos) - 1})"
        )
    if infos[trigger_index].role != "ring":
        raise BurstError(f"{where}: trigger_index {trigger_index} names an 'extra' frame")
    return trigger_index, infos


def _json_depth(text: str) -> int:
    """Deepest nesting of arrays and objects in JSON ``text`` (strings skipped), without
    recursion (``json.loads`` recurses, and 100 000 ``[`` overflow its stack)."""
    depth = deepest = 0
    for m in _JSON_BRACKETS.finditer(_JSON_STRINGS.sub("", text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def read_manifest(path: Path) -> tuple[int, list[FrameInfo]]:
    """Read and validate ``burst.json``: a regular file of at most ``MAX_MANIFEST_BYTES``,
    nested at most ``MAX_MANIFEST_DEPTH`` deep (``NaN`` is refused by the field checks)."""
    try:
        with open_regular(path) as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except ImageError as exc:
        message = str(exc)
        if message.endswith(": no such file"):
            message = f"{path}: missing"
        raise BurstError(message) from exc
    except OSError as exc:
        raise BurstError(f"{path}: unreadable: {exc.strerror or exc}") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BurstError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not a burst manifest")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BurstError(f"{path}: unreadable: not UTF-8 text ({exc.reason})") from exc
    depth = _json_depth(text)
    if depth > MAX_MANIFEST_DEPTH:
        raise BurstError(
            f"{path}: nested {depth} levels deep, more than the {MAX_MANIFEST_DEPTH} allowed"
        )
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BurstError(f"{path}: not valid JSON: {exc}") from exc
    return parse_manifest(doc, str(path))


def _frame_path(root: Path, real_root: Path, name: str) -> Path:
    """The frame file ``name`` of the burst at ``root``. A symbolic link is followed only
    when it stays inside the burst folder (the rule ``"file": "../x"`` already follows):
    a link out of it is refused, as is a link loop."""
    file = root / name
    if file.is_symlink():
        try:
            target = file.resolve(strict=False)
        except (OSError, RuntimeError) as exc:
            raise BurstError(f"{file}: symbolic link cannot be resolved: {exc}") from exc
        if not target.is_relative_to(real_root):
            raise BurstError(
                f"{file}: is a symbolic link to {target}, outside the burst folder (a "
                "burst's files must be in its folder)"
            )
    return file


def read_burst(
    path: str | os.PathLike[str],
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    max_burst_pixels: int = DEFAULT_MAX_BURST_PIXELS,
) -> Burst:
    """Read and validate a burst directory. Every problem raises :class:`BurstError`
    naming the file or field.

    Every frame's header is read before any frame is decoded: sizes that differ, a frame
    over ``max_frame_pixels`` px or frames over ``max_burst_pixels`` px together are
    refused without decoding anything (``limits`` in the config). Frames must be PNG
    files, regular files inside the folder (a symbolic link is followed only within it)."""
    root = Path(path)
    if not root.is_dir():
        what = "not a folder" if root.exists() else "no such folder"
        raise BurstError(f"{root}: not a burst directory ({what})")
    real_root = root.resolve()
    trigger_index, infos = read_manifest(_frame_path(root, real_root, "burst.json"))
    files = [_frame_path(root, real_root, info.file) for info in infos]
    total = 0
    first: tuple[int, int] | None = None
    for file in files:
        try:
            header = read_image_header(file)
            check_pixels(header, max_frame_pixels, str(file))
        except ImageError as exc:
            raise BurstError(str(exc)) from exc
        if header.format != "png":
            raise BurstError(f"{file}: is a {header.format.upper()} file; burst frames are PNG")
        if first is None:
            first = (header.width, header.height)
        elif (header.width, header.height) != first:
            raise BurstError(
                f"{file}: size {header.width}x{header.height} differs from "
                f"{infos[0].file} ({first[0]}x{first[1]}); all frames must be the same size"
            )
        total += header.pixels
        if total > max_burst_pixels:
            raise BurstError(
                f"{root}: its {len(infos)} frames of {header.width}x{header.height} are "
                f"{header.pixels * len(infos) / 1e6:.1f} MP together, more than the limit of "
                f"{max_burst_pixels / 1e6:.1f} MP per burst (limits.max_burst_pixels); not decoded"
            )
    frames: list[U8] = []
    for file in files:
        try:
            frame = read_rgb8(file, max_frame_pixels)
        except ImageError as exc:
            raise BurstError(str(exc)) from exc
        if frames and frame.shape != frames[0].shape:  # changed since its header was read
            raise BurstError(f"{file}: changed while the burst was read")
        frames.append(frame)
    return Burst(frames, infos, trigger_index, source=root)


def write_burst(path: str | os.PathLike[str], burst: Burst) -> Path:
    """Write a burst directory atomically: built in a temp folder beside it, then renamed.

    ``path`` must not exist yet (an existing burst is never overwritten in place).
    """
    root = Path(path)
    if root.exists():
        raise BurstError(f"{root}: already exists")
    if len(burst.frames) != len(burst.infos) or not burst.frames:
        raise BurstError("a burst needs as many infos as frames, and at least one frame")
    shape = burst.frames[0].shape
    for info, frame in zip(burst.infos, burst.frames, strict=True):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape != shape:
            raise BurstError(
                f"{info.file}: frame must be uint8 {shape}, got {frame.dtype} {frame.shape}"
            )
    parent = root.parent if str(root.parent) else Path(".")
    if not parent.is_dir():
        raise BurstError(f"{root}: parent folder {parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=parent))
    try:
        for info, frame in zip(burst.infos, burst.frames, strict=True):
            atomic_write_bytes(tmp / info.file, encode_image(frame, "png"))
        doc = {
            "version": FORMAT_VERSION,
            "trigger_index": burst.trigger_index,
            "frames": [i.to_json() for i in burst.infos],
        }
        parse_manifest(doc)  # what we write must be what we read
        atomic_write_bytes(tmp / "burst.json", (json.dumps(doc, indent=1) + "\n").encode())
        os.chmod(tmp, 0o755 & ~current_umask())  # as mkdir would (mkdtemp made it 0700)
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def frame_names(count: int) -> Sequence[str]:
    """The conventional file names ``000.png``, ``001.png`` … for ``count`` frames."""
    return [f"{i:03d}.png" for i in range(count)]
