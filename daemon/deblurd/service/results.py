"""Result files in the output folder: written atomically, kept within a count and a size.

Layout of ``output.directory``::

    <capture_id>.<ext>              the encoded result (png or jpg)
    <capture_id>.json               its metadata (with "capture_id" and "file" added)
    bursts/<capture_id>/            the job's burst in the burst-directory format (optional)

Each file appears whole or not at all: written to a temp file in the same folder,
fsynced, renamed. Both temp files are written before either is renamed, the image
first and the JSON right after, so a ``.json`` always names an image that is there (a
client may watch for ``*.json``).
Files are created with mode ``0o640`` less the process umask (owner read/write, group
read: a client in the daemon's group can read them); folders ``0o750`` less the umask.

Retention counts a *result* as everything under one capture id: the image, its JSON
and its saved burst. After each save the oldest results (by modification time) go
until at most ``max_files`` are left and they take at most ``max_bytes``; the result
just written is never removed. Only files that look like ours are counted or
removed: ``<id>.json`` with ``<id>.png``/``.jpg``/``.jpeg``, and ``bursts/<id>/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deblurd.burstdir import Burst, write_burst
from deblurd.errors import DeblurdError
from deblurd.imaging import atomic_write_bytes, atomic_write_files
from deblurd.settings.output import OutputSettings

log = logging.getLogger(__name__)

FILE_MODE = 0o640  # less the umask
DIR_MODE = 0o750  # less the umask
BURSTS = "bursts"
_RESULT_EXTS = ("png", "jpg", "jpeg", "json")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_EXT_RE = re.compile(r"[A-Za-z0-9]{1,8}")
_STALE_TMP_S = 600.0  # leftover temp files older than this are removed at start, s


class OutputError(DeblurdError):
    """A result could not be written (disk full, folder unwritable …). ``path``: where."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


@dataclass
class _Entry:
    """One result on disk: its paths, total size (bytes) and newest mtime (ns)."""

    paths: list[Path] = field(default_factory=list)
    size: int = 0
    mtime_ns: int = 0
    has_json: bool = False


class ResultStore:
    """Writes results and saved bursts into ``settings.directory``. Thread-safe."""

    def __init__(self, settings: OutputSettings) -> None:
        self._settings = settings
        self.directory = Path(settings.directory).expanduser()
        self._lock = threading.Lock()
        self._remove_stale_temp_files()

    @property
    def bursts_directory(self) -> Path:
        """``<directory>/bursts``: where saved bursts go."""
        return self.directory / BURSTS

    def save(self, capture_id: str, data: bytes, ext: str, metadata: dict[str, Any]) -> Path:
        """Write ``<dir>/<capture_id>.<ext>`` (``data``: the encoded image) and
        ``<dir>/<capture_id>.json`` (``metadata`` plus ``capture_id`` and ``file``), then
        apply retention. Returns the image's path.

        Raises :class:`OutputError` (cause chained) when anything cannot be written; then
        neither file is left behind.
        """
        _check_name(capture_id, _ID_RE, "capture id", self.directory)
        ext = ext.lower().lstrip(".")
        _check_name(ext, _EXT_RE, "extension", self.directory)
        image = self.directory / f"{capture_id}.{ext}"
        sidecar = self.directory / f"{capture_id}.json"
        doc = {**metadata, "capture_id": capture_id, "file": image.name}
        try:
            text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise OutputError(f"{sidecar}: metadata is not JSON: {exc}", sidecar) from exc
        with self._lock:
            self._ensure_directory()
            try:
                # Both written and fsynced before either is renamed, the image first: a
                # crash cannot leave a JSON without its image, and an image without its
                # JSON only in the instant between the two renames.
                atomic_write_files([(image, data), (sidecar, text.encode("utf-8"))], FILE_MODE)
            except (OSError, DeblurdError) as exc:
                raise OutputError(
                    f"{image} and {sidecar.name}: cannot write: {_why(exc)}", image
                ) from exc
            _fsync_directory(self.directory)
            self._apply_retention(keep=capture_id)
        return image

    def save_burst(self, capture_id: str, burst: Burst) -> Path | None:
        """Write ``burst`` to ``<dir>/bursts/<capture_id>/`` (burst-directory format)
        when ``save_bursts`` is on, and apply retention. Returns its path, or None when
        saving bursts is off. Raises :class:`OutputError`; no partial folder is left.
        """
        if not self._settings.save_bursts:
            return None
        _check_name(capture_id, _ID_RE, "capture id", self.directory)
        target = self.bursts_directory / capture_id
        with self._lock:
            self._ensure_directory()
            try:
                self.bursts_directory.mkdir(mode=DIR_MODE, exist_ok=True)
                write_burst(target, burst)
            except (OSError, DeblurdError) as exc:
                raise OutputError(f"{target}: cannot save the burst: {_why(exc)}", target) from exc
            self._apply_retention(keep=capture_id)
        return target

    # -- writing ---------------------------------------------------------------------

    def check_writable(self) -> None:
        """Create the output folder if missing and check a file can be written in it (a
        temp file made and removed): the daemon calls this at start, so that an output
        folder it cannot use stops it there rather than failing every job. Raises
        :class:`OutputError`."""
        with self._lock:
            self._ensure_directory()
            try:
                fd, tmp = tempfile.mkstemp(prefix=".deblurd-check.", suffix=".tmp",
                                           dir=self.directory)  # fmt: skip
            except OSError as exc:
                raise OutputError(
                    f"{self.directory}: cannot write in the output folder: {_why(exc)}",
                    self.directory,
                ) from exc
            os.close(fd)
            os.unlink(tmp)

    def _ensure_directory(self) -> None:
        """Create the output folder if missing (also when removed while running)."""
        try:
            self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"{self.directory}: cannot create the output folder: {_why(exc)}", self.directory
            ) from exc
        if not self.directory.is_dir():
            raise OutputError(f"{self.directory}: not a folder", self.directory)

    def _write(self, path: Path, data: bytes) -> None:
        try:
            atomic_write_bytes(path, data, mode=FILE_MODE)
        except (OSError, DeblurdError) as exc:
            raise OutputError(f"{path}: cannot write: {_why(exc)}", path) from exc

    # -- retention -------------------------------------------------------------------

    def _apply_retention(self, keep: str) -> None:
        """Remove the oldest results beyond ``max_files`` / ``max_bytes``, never ``keep``."""
        try:
            entries = self._scan()
        except OSError as exc:
            log.warning("retention: cannot list %s: %s", self.directory, _why(exc))
            return
        count = len(entries)
        total = sum(e.size for e in entries.values())
        max_files, max_bytes = self._settings.max_files, self._settings.max_bytes
        if count <= max_files and total <= max_bytes:
            return
        oldest_first = sorted(
            ((cid, e) for cid, e in entries.items() if cid != keep),
            key=lambda item: (item[1].mtime_ns, item[0]),
        )
        for cid, entry in oldest_first:
            if count <= max_files and total <= max_bytes:
                break
            for path in entry.paths:
                try:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("retention: cannot remove %s: %s", path, _why(exc))
            count -= 1
            total -= entry.size
            log.debug("retention: removed result %s (%d bytes)", cid, entry.size)

    def _scan(self) -> dict[str, _Entry]:
        """The results on disk by capture id (only ids that have a JSON or a saved burst)."""
        entries: dict[str, _Entry] = {}
        with os.scandir(self.directory) as it:
            for item in it:
                stem, dot, ext = item.name.rpartition(".")
                if not dot or ext.lower() not in _RESULT_EXTS or not _ID_RE.fullmatch(stem):
                    continue
                if not item.is_file(follow_symlinks=False):
                    continue
                st = item.stat(follow_symlinks=False)
                entry = entries.setdefault(stem, _Entry())
                entry.paths.append(Path(item.path))
                entry.size += st.st_size
                entry.mtime_ns = max(entry.mtime_ns, st.st_mtime_ns)
                entry.has_json |= ext.lower() == "json"
        entries = {cid: e for cid, e in entries.items() if e.has_json}
        bursts = self.bursts_directory
        if bursts.is_dir():
            with os.scandir(bursts) as it:
                for item in it:
                    if not _ID_RE.fullmatch(item.name) or not item.is_dir(follow_symlinks=False):
                        continue
                    entry = entries.setdefault(item.name, _Entry())
                    entry.paths.append(Path(item.path))
                    st = item.stat(follow_symlinks=False)
                    entry.mtime_ns = max(entry.mtime_ns, st.st_mtime_ns)
                    entry.size += _tree_size(Path(item.path))
        return entries

    def _remove_stale_temp_files(self) -> None:
        """Remove temp files a crash left behind (``.<name>.*.tmp``, older than 10 min)."""
        cutoff = time.time() - _STALE_TMP_S
        for folder in (self.directory, self.bursts_directory):
            try:
                with os.scandir(folder) as it:
                    stale = [
                        Path(i.path)
                        for i in it
                        if i.name.startswith(".")
                        and (i.name.endswith(".tmp") or folder == self.bursts_directory)
                        and i.stat(follow_symlinks=False).st_mtime < cutoff
                    ]
            except OSError:
                continue
            for path in stale:
                with contextlib.suppress(OSError):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _fsync_directory(path: Path) -> None:
    """Make the renames durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_name(value: str, pattern: re.Pattern[str], what: str, where: Path) -> None:
    if not pattern.fullmatch(value):
        raise OutputError(f"{where}: invalid {what} {value!r} for a file name", where)


def _why(exc: BaseException) -> str:
    """The cause in words: strerror for an OSError (``No space left on device``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
