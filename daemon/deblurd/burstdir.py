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
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deblurd.errors import BurstError, ImageError
from deblurd.imaging import U8Image, atomic_write_bytes, current_umask, encode_image, read_rgb8

FORMAT_VERSION = 1
Role = Literal["ring", "extra"]
_ROLES = ("ring", "extra")


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

    frames: list[U8Image]
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
        exposure = _field(entry, "exposure_us", int, loc)
        if exposure <= 0:
            raise BurstError(f"{loc}: field 'exposure_us' must be positive, got {exposure}")
        gain = float(_field(entry, "analogue_gain", (int, float), loc))
        if gain <= 0:
            raise BurstError(f"{loc}: field 'analogue_gain' must be positive, got {gain}")
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


def read_burst(path: str | os.PathLike[str]) -> Burst:
    """Read and validate a burst directory. Every problem raises :class:`BurstError`
    naming the file or field."""
    root = Path(path)
    if not root.is_dir():
        raise BurstError(f"{root}: not a burst directory (no such folder)")
    manifest = root / "burst.json"
    try:
        text = manifest.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BurstError(f"{manifest}: missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise BurstError(f"{manifest}: unreadable: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BurstError(f"{manifest}: not valid JSON: {exc}") from exc
    trigger_index, infos = parse_manifest(doc, str(manifest))
    frames: list[U8Image] = []
    for info in infos:
        file = root / info.file
        try:
            frame = read_rgb8(file)
        except ImageError as exc:
            raise BurstError(str(exc)) from exc
        if frames and frame.shape != frames[0].shape:
            h0, w0 = frames[0].shape[:2]
            raise BurstError(
                f"{file}: size {frame.shape[1]}x{frame.shape[0]} differs from "
                f"{infos[0].file} ({w0}x{h0}); all frames must be the same size"
            )
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
