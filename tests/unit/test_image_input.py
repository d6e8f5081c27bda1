"""Hostile image files (issue 14): a header-checked reader that refuses decompression bombs
before decoding, says precisely what is wrong with a frame that is no regular file, is
truncated or damaged, and never blocks on a FIFO or prints libpng's own lines."""

from __future__ import annotations

import os
import re
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from deblurd.errors import ImageError, OutputError
from deblurd.imaging import (
    DEFAULT_MAX_FRAME_PIXELS,
    check_output_file,
    read_image_header,
    read_rgb8,
)
from deblurd.settings.limits import DEFAULT_MAX_FRAME_PIXELS as SETTINGS_DEFAULT


def png_bytes(h: int = 12, w: int = 16) -> bytes:
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return bytes(buf.tobytes())


def test_defaults_agree() -> None:
    assert DEFAULT_MAX_FRAME_PIXELS == SETTINGS_DEFAULT == 1 << 26


def test_decompression_bomb_refused_from_its_header(tmp_path: Path, black_png: Any) -> None:
    bomb = black_png(tmp_path / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 3_000_000
    header = read_image_header(bomb)
    assert (header.format, header.width, header.height) == ("png", 30000, 30000)
    with pytest.raises(ImageError, match=r"bomb.png: 30000x30000 is 900.0 MP, more than the "
                       r"limit of 67.1 MP.*not decoded"):  # fmt: skip
        read_rgb8(bomb)  # decoding it would take 2.7 GB: this returns at once


def test_limit_is_a_parameter(tmp_path: Path, black_png: Any) -> None:
    small = black_png(tmp_path / "s.png", 40, 30)
    assert read_rgb8(small, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageError, match=r"40x30 is 0.0 MP"):
        read_rgb8(small, max_pixels=1199)


def test_jpeg_header_and_bomb(tmp_path: Path) -> None:
    img = np.full((20, 30, 3), 100, np.uint8)
    _ok, buf = cv2.imencode(".jpg", img)
    data = bytearray(buf.tobytes())
    (tmp_path / "a.jpg").write_bytes(data)
    header = read_image_header(tmp_path / "a.jpg")
    assert (header.format, header.width, header.height, header.channels) == ("jpeg", 30, 20, 3)
    sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xC0)
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)  # header claims 3.6 GP
    (tmp_path / "bomb.jpg").write_bytes(data)
    with pytest.raises(ImageError, match=r"60000x60000 is 3600.0 MP"):
        read_rgb8(tmp_path / "bomb.jpg")


def test_file_far_larger_than_its_pixels_is_not_read(tmp_path: Path) -> None:
    p = tmp_path / "big.png"
    p.write_bytes(png_bytes())
    with p.open("ab") as fh:
        fh.truncate(40 << 20)  # 40 MB of trailing zeros behind a 16x12 image
    with pytest.raises(ImageError, match="far more than a 16x12 image needs"):
        read_rgb8(p)


@pytest.mark.parametrize("cut", [8, 20, 40, -30, -12, -1])
def test_truncated_png_one_message_of_ours(
    tmp_path: Path, cut: int, capfd: pytest.CaptureFixture[str]
) -> None:
    data = png_bytes()
    p = tmp_path / "t.png"
    p.write_bytes(data[:cut])
    with pytest.raises(ImageError, match=r"t.png: not a readable image: truncated PNG"):
        read_rgb8(p)
    assert capfd.readouterr().err == ""  # libpng printed nothing of its own


def test_damaged_png_names_the_chunk(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    data = bytearray(png_bytes())
    data[60] ^= 0xFF  # inside IDAT
    p = tmp_path / "d.png"
    p.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"damaged PNG \(CRC error in the IDAT chunk"):
        read_rgb8(p)
    assert capfd.readouterr().err == ""


def test_truncated_jpeg(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _ok, buf = cv2.imencode(".jpg", np.full((40, 40, 3), 90, np.uint8))
    data = buf.tobytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"t.jpg: not a readable image: truncated JPEG"):
        read_rgb8(tmp_path / "t.jpg")
    (tmp_path / "h.jpg").write_bytes(data[:3])
    with pytest.raises(ImageError, match=r"h.jpg: not a readable image"):
        read_rgb8(tmp_path / "h.jpg")
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"GIF89a....", "not a PNG or JPEG file"), (b"\x89PNG garbage", "")],
)
def test_not_an_image(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=f"x.png: not a readable image.*{message}"):
        read_rgb8(p)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            read_rgb8(fifo)
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(5.0)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], ImageError)
    assert str(outcome[0]) == f"{fifo}: is a FIFO (named pipe), not a regular file"


def test_device_folder_and_missing_say_what_they_are(tmp_path: Path) -> None:
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    with pytest.raises(ImageError, match=r"zero.png: is a character device, not a regular file"):
        read_rgb8(link)
    with pytest.raises(ImageError, match=r": is a folder, not an image file"):
        read_rgb8(tmp_path)
    with pytest.raises(ImageError, match=r"nope.png: no such file"):
        read_rgb8(tmp_path / "nope.png")
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageError, match=r"dangling.png: is a broken symbolic link"):
        read_rgb8(dangling)


def test_output_file_checked_before_any_work(tmp_path: Path) -> None:
    assert check_output_file(tmp_path / "ok.png") == tmp_path / "ok.png"
    assert list(tmp_path.iterdir()) == []  # the probe left nothing
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(OutputError, match=r"output folder .* does not exist"):
        check_output_file(tmp_path / "no" / "x.png")
    with pytest.raises(OutputError, match="cannot write there: File name too long"):
        check_output_file(tmp_path / ("x" * 250 + ".png"))
    with pytest.raises(OutputError, match="cannot write there"):
        check_output_file("/proc/x.png")


def test_short_image_data_with_good_crcs_is_ours_to_report(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A crafted PNG: valid chunks and CRCs, but one row of data for a 97x64 header
    (libpng would print "Not enough image data"), or a bad row filter."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 97, 64, 8, 2, 0, 0, 0))
    for rows, message in [
        (b"\x00" * (1 + 3 * 97), "truncated PNG (image data holds 292 of 18688 bytes)"),
        ((b"\x07" + b"\x00" * 3 * 97) * 64, "damaged PNG (invalid row filter)"),
        (b"\x00" * (1 + 3 * 97) * 65, "more image data than its header says"),
    ]:
        p = tmp_path / "crafted.png"
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(rows))
                      + chunk(b"IEND", b""))  # fmt: skip
        with pytest.raises(ImageError, match=re.escape(message)):
            read_rgb8(p)
    assert capfd.readouterr().err == ""


def test_interlaced_png_is_read(tmp_path: Path) -> None:
    """Adam7: the image data is seven reduced images; their sizes are what is checked."""
    rgb = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    raw = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                           (1, 0, 2, 2), (0, 1, 1, 2)]:  # fmt: skip
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 53, 37, 8, 2, 0, 0, 1)
    idat = chunk(b"IDAT", zlib.compress(raw))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")
    (tmp_path / "i.png").write_bytes(png)
    np.testing.assert_array_equal(read_rgb8(tmp_path / "i.png"), rgb)


def test_a_second_ihdr_is_refused(tmp_path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    good = png_bytes()
    bad_ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 12, 8, 9, 0, 0, 0))
    p = tmp_path / "two.png"
    p.write_bytes(good[:33] + bad_ihdr + good[33:])
    with pytest.raises(ImageError, match=r"IHDR not the first chunk"):
        read_rgb8(p)
