"""Colour transfer functions, image reading/writing and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deblurd.errors import ImageError
from deblurd.imaging import (
    atomic_write_bytes,
    atomic_write_files,
    linear_to_srgb,
    read_rgb8,
    srgb_to_linear,
    to_gray,
    write_image,
)


def test_srgb_round_trip_is_exact_for_every_code() -> None:
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(linear_to_srgb(srgb_to_linear(codes)), codes)


def test_srgb_known_values() -> None:
    lin = srgb_to_linear(np.array([0, 128, 255], np.uint8))
    np.testing.assert_allclose(lin, [0.0, 0.21586, 1.0], atol=1e-4)


def test_srgb_to_linear_refuses_float() -> None:
    with pytest.raises(ImageError):
        srgb_to_linear(np.zeros((2, 2), np.float32))  # type: ignore[arg-type]


def test_to_gray_weights_and_scale() -> None:
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 1] = 255
    np.testing.assert_allclose(to_gray(img), 0.587, atol=1.0 / 255.0)  # fixed-point luma
    with pytest.raises(ImageError):
        to_gray(np.zeros((2, 2, 4), np.uint8))


def test_write_read_png_and_jpeg(tmp_path: Path) -> None:
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :, 2] = 255  # blue in RGB
    write_image(tmp_path / "a.png", img)
    np.testing.assert_array_equal(read_rgb8(tmp_path / "a.png"), img)
    write_image(tmp_path / "a.jpg", img)
    back = read_rgb8(tmp_path / "a.jpg")
    assert back[..., 2].mean() > 240 and back[..., 0].mean() < 15


def test_write_image_missing_folder_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        write_image(tmp_path / "nope" / "a.png", np.zeros((2, 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_atomic_write_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_atomic_write_files_writes_all_before_renaming_and_undoes_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every temp file exists (written) before the first rename; a failing second rename
    leaves neither file, and no temp file."""
    first, second = tmp_path / "a.png", tmp_path / "a.json"
    real_replace = os.replace
    seen: list[list[str]] = []

    def spy(src: str, dst: str) -> None:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    assert atomic_write_files([(first, b"img"), (second, b"{}")]) == [first, second]
    assert len(seen) == 2 and sum(n.endswith(".tmp") for n in seen[0]) == 2
    assert first.read_bytes() == b"img" and second.read_bytes() == b"{}"

    calls = []

    def fail_second(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    b1, b2 = tmp_path / "b.png", tmp_path / "b.json"
    with pytest.raises(OSError):
        atomic_write_files([(b1, b"img"), (b2, b"{}")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.png"]


def test_atomic_write_respects_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "private", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o600
