"""Result files: atomic writes, retention by count and bytes, saved bursts, disk errors."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deblurd.burstdir import Burst, FrameInfo, frame_names, read_burst
from deblurd.errors import DeblurdError
from deblurd.service.results import OutputError, ResultStore
from deblurd.settings.output import OutputSettings

MIB = 1024**2


def _store(folder: Path, **kw: Any) -> ResultStore:
    return ResultStore(OutputSettings(directory=str(folder), **kw))


def _age(folder: Path, capture_id: str, seconds_ago: float) -> None:
    """Set the mtime of a result's files (retention orders by it)."""
    t = time.time() - seconds_ago
    for p in folder.glob(f"{capture_id}.*"):
        os.utime(p, (t, t))


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _small_burst(count: int = 3) -> Burst:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(count)]
    infos = [FrameInfo(n, i * 33_000_000, 8000, 2.0) for i, n in enumerate(frame_names(count))]
    return Burst(frames, infos, trigger_index=1)


def test_save_writes_image_and_json(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "nested"  # created on demand, parents too
    store = _store(folder)
    path = store.save("cap-001", b"\x89PNG fake", "png", {"psnr_db": 31.5, "frames": [1, 2]})
    assert path == folder / "cap-001.png"
    assert path.read_bytes() == b"\x89PNG fake"
    doc = json.loads((folder / "cap-001.json").read_text())
    assert doc == {
        "psnr_db": 31.5,
        "frames": [1, 2],
        "capture_id": "cap-001",
        "file": "cap-001.png",
    }
    assert _listing(folder) == ["cap-001.json", "cap-001.png"]  # no temp files left
    want = 0o640 & ~_umask()
    assert stat.S_IMODE(path.stat().st_mode) == want
    assert stat.S_IMODE((folder / "cap-001.json").stat().st_mode) == want


def test_json_lands_after_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real = os.replace

    def spy(src: Any, dst: Any) -> None:
        order.append(Path(dst).name)
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    _store(tmp_path).save("a", b"img", ".JPG", {})
    assert order == ["a.jpg", "a.json"]


def test_folder_recreated_when_removed_at_run_time(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    store = _store(folder)
    store.save("one", b"1", "png", {})
    shutil.rmtree(folder)
    store.save("two", b"2", "png", {})
    assert _listing(folder) == ["two.json", "two.png"]


def test_retention_by_count_oldest_first(tmp_path: Path) -> None:
    store = _store(tmp_path, max_files=3)
    for i in range(5):
        store.save(f"c{i}", b"x" * 100, "png", {})
        _age(tmp_path, f"c{i}", seconds_ago=100 - i)  # c0 oldest
    assert _listing(tmp_path) == [f"c{i}.{e}" for i in (2, 3, 4) for e in ("json", "png")]


def test_retention_by_bytes(tmp_path: Path) -> None:
    store = _store(tmp_path, max_bytes=MIB)
    size = 300 * 1024
    for i in range(6):
        store.save(f"r{i}", b"y" * size, "png", {})
        _age(tmp_path, f"r{i}", seconds_ago=100 - i)
    kept = sorted(p.stem for p in tmp_path.glob("*.png"))
    assert kept == ["r3", "r4", "r5"]  # 3 x 300 KiB (+ JSON) <= 1 MiB, 4 would not be
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert total <= MIB


def test_retention_never_removes_the_one_just_written(tmp_path: Path) -> None:
    store = _store(tmp_path, max_files=2, max_bytes=MIB)
    store.save("old", b"o", "png", {})
    _age(tmp_path, "old", seconds_ago=-1000)  # newer mtime than anything to come
    store.save("huge", b"h" * (MIB + 10), "png", {})  # alone over max_bytes
    assert _listing(tmp_path) == ["huge.json", "huge.png"]


def test_retention_leaves_foreign_files_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "holiday.png").write_bytes(b"not a result: no JSON beside it")
    (tmp_path / "sub").mkdir()
    store = _store(tmp_path, max_files=1)
    store.save("a", b"1", "png", {})
    store.save("b", b"2", "png", {})
    assert _listing(tmp_path) == ["b.json", "b.png", "holiday.png", "notes.txt", "sub"]


def test_save_burst(tmp_path: Path) -> None:
    assert _store(tmp_path).save_burst("x", _small_burst()) is None  # off by default
    assert not (tmp_path / "bursts").exists()
    store = _store(tmp_path, save_bursts=True)
    path = store.save_burst("cap-7", _small_burst())
    assert path == tmp_path / "bursts" / "cap-7"
    back = read_burst(path)
    assert len(back.frames) == 3 and back.trigger_index == 1
    with pytest.raises(OutputError) as info:
        store.save_burst("cap-7", _small_burst())  # never overwritten in place
    assert isinstance(info.value.__cause__, DeblurdError)


def test_retention_removes_a_result_with_its_burst(tmp_path: Path) -> None:
    store = _store(tmp_path, save_bursts=True, max_files=2)
    for i in range(3):
        store.save_burst(f"j{i}", _small_burst())
        store.save(f"j{i}", b"r", "png", {})
        _age(tmp_path, f"j{i}", seconds_ago=100 - i)
        t = time.time() - (100 - i)
        os.utime(tmp_path / "bursts" / f"j{i}", (t, t))
    assert sorted(p.name for p in (tmp_path / "bursts").iterdir()) == ["j1", "j2"]
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == ["j1", "j2"]


class _HalfWriter:
    """A binary file whose ``write`` stores half of the data, then fails with ENOSPC."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, data: bytes) -> int:
        self._fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


class _FullDisk:
    """Stands in for ``os.fdopen`` (used by imaging.atomic_write_bytes): the Nth file
    opened hits ENOSPC halfway through its write."""

    def __init__(self, fail_on: int) -> None:
        self.fail_on = fail_on
        self.calls = 0
        self.real = os.fdopen

    def __call__(self, fd: int, mode: str = "r", *a: Any, **kw: Any) -> Any:
        fh = self.real(fd, mode, *a, **kw)
        self.calls += 1
        return _HalfWriter(fh) if self.calls == self.fail_on else fh


@pytest.mark.parametrize("fail_on", [1, 2], ids=["image", "json"])
def test_disk_full_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_on: int
) -> None:
    store = _store(tmp_path)
    store.save("before", b"ok", "png", {})
    monkeypatch.setattr(os, "fdopen", _FullDisk(fail_on))
    with pytest.raises(OutputError) as info:
        store.save("full", b"z" * 4096, "png", {"a": 1})
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC
    assert "No space left on device" in str(info.value)
    assert info.value.path.name.startswith("full.")
    assert _listing(tmp_path) == ["before.json", "before.png"]  # nothing of "full", no temp
    monkeypatch.undo()
    store.save("after", b"ok", "png", {})  # the next job still works
    assert (tmp_path / "after.json").is_file()


def test_read_only_filesystem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def erofs(*a: Any, **kw: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", erofs)
    with pytest.raises(OutputError) as info:
        _store(tmp_path).save("ro", b"1", "png", {})
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.EROFS
    assert _listing(tmp_path) == []


def test_a_file_where_the_folder_should_be(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as info:
        _store(blocker).save("x", b"1", "png", {})
    assert info.value.path == blocker
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(OutputError):
        _store(blocker / "deeper").save("x", b"1", "png", {})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError) as info:
            _store(folder).save("x", b"1", "png", {})
        assert isinstance(info.value.__cause__, PermissionError)
        assert _listing(folder) == []
    finally:
        folder.chmod(0o700)


def test_bad_names_and_metadata_write_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for bad in ("../escape", "", ".hidden", "a/b"):
        with pytest.raises(OutputError):
            store.save(bad, b"1", "png", {})
    with pytest.raises(OutputError):
        store.save("ok", b"1", "p/ng", {})
    with pytest.raises(OutputError):
        store.save("ok", b"1", "png", {"not json": object()})
    with pytest.raises(OutputError):
        store.save("ok", b"1", "png", {"nan": float("nan")})
    assert not tmp_path.exists() or _listing(tmp_path) == []


def test_stale_temp_files_removed_at_start(tmp_path: Path) -> None:
    stale = tmp_path / ".x.png.abc123.tmp"
    fresh = tmp_path / ".y.png.def456.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written by someone")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    _store(tmp_path)
    assert not stale.exists() and fresh.exists()
