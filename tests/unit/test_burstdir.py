"""The burst-directory format v1: round trip and every kind of bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from deblurd.burstdir import MAX_MANIFEST_BYTES, Burst, FrameInfo, read_burst, write_burst
from deblurd.errors import BurstError


def _manifest(burst_dir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((burst_dir / "burst.json").read_text())


def _rewrite(burst_dir: Path, doc: object) -> None:
    (burst_dir / "burst.json").write_text(json.dumps(doc))


def test_round_trip(small_burst_dir: Path) -> None:
    burst = read_burst(small_burst_dir)
    assert len(burst.frames) == 5
    assert burst.trigger_index == 2
    assert burst.indices("ring") == [0, 1, 2, 3]
    assert burst.indices("extra") == [4]
    assert burst.infos[4].exposure_us == 33000
    assert burst.size == (64, 80)
    assert all(f.dtype == np.uint8 and f.shape == (64, 80, 3) for f in burst.frames)


def test_pixels_survive_round_trip(tmp_path: Path) -> None:
    frame = np.zeros((8, 9, 3), np.uint8)
    frame[..., 0] = 200  # pure red: catches a BGR/RGB swap
    burst = Burst([frame], [FrameInfo("000.png", 0, 1000, 1.0)], 0)
    back = read_burst(write_burst(tmp_path / "b", burst))
    np.testing.assert_array_equal(back.frames[0], frame)


def test_write_refuses_existing(small_burst_dir: Path) -> None:
    burst = read_burst(small_burst_dir)
    with pytest.raises(BurstError, match="already exists"):
        write_burst(small_burst_dir, burst)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("frames"), "missing field 'frames'"),
        (lambda d: d.pop("trigger_index"), "missing field 'trigger_index'"),
        (lambda d: d.update(version=2), "unsupported version 2"),
        (lambda d: d.update(frames=[]), "'frames' is empty"),
        (lambda d: d.update(trigger_index=9), "trigger_index 9 is out of range"),
        (lambda d: d.update(trigger_index=-1), "trigger_index -1 is out of range"),
        (lambda d: d.update(trigger_index=4), "names an 'extra' frame"),
        (lambda d: d.update(trigger_index="2"), "'trigger_index' must be int"),
        (lambda d: d["frames"][1].pop("exposure_us"), r"frames\[1\]: missing field 'exposure_us'"),
        (lambda d: d["frames"][0].update(role="preview"), r"frames\[0\]: field 'role'"),
        (lambda d: d["frames"][0].update(file="../x.png"), "plain file name"),
        (lambda d: d["frames"][0].update(analogue_gain=True), "'analogue_gain' must be"),
        (lambda d: d["frames"][3].update(file="000.png"), "listed twice"),
    ],
)
def test_bad_manifest_names_the_field(small_burst_dir: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    doc = _manifest(small_burst_dir)
    mutate(doc)
    _rewrite(small_burst_dir, doc)
    with pytest.raises(BurstError, match=message):
        read_burst(small_burst_dir)


def test_not_json(small_burst_dir: Path) -> None:
    (small_burst_dir / "burst.json").write_text("{not json")
    with pytest.raises(BurstError, match=r"burst.json: not valid JSON"):
        read_burst(small_burst_dir)


def test_top_level_not_object(small_burst_dir: Path) -> None:
    _rewrite(small_burst_dir, [1, 2])
    with pytest.raises(BurstError, match="expected a JSON object"):
        read_burst(small_burst_dir)


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(BurstError, match="no such folder"):
        read_burst(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BurstError, match=r"burst\.json: missing"):
        read_burst(tmp_path / "empty")


def test_missing_frame_file(small_burst_dir: Path) -> None:
    (small_burst_dir / "003.png").unlink()
    with pytest.raises(BurstError, match=r"003.png: no such file"):
        read_burst(small_burst_dir)


def test_corrupt_frame(small_burst_dir: Path) -> None:
    (small_burst_dir / "001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(BurstError, match=r"001.png: not a readable image"):
        read_burst(small_burst_dir)


def test_frames_of_different_sizes(small_burst_dir: Path) -> None:
    cv2.imwrite(str(small_burst_dir / "002.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(BurstError, match=r"002.png: size 10x10 differs"):
        read_burst(small_burst_dir)


def test_sixteen_bit_png(small_burst_dir: Path) -> None:
    cv2.imwrite(str(small_burst_dir / "000.png"), np.zeros((64, 80, 3), np.uint16))
    with pytest.raises(BurstError, match=r"000.png: expected 8 bits per channel"):
        read_burst(small_burst_dir)


@pytest.mark.parametrize("shape", [(64, 80), (64, 80, 4)])
def test_not_rgb_png(small_burst_dir: Path, shape: tuple[int, ...]) -> None:
    cv2.imwrite(str(small_burst_dir / "000.png"), np.zeros(shape, np.uint8))
    with pytest.raises(BurstError, match=r"000.png: expected an RGB image with 3 channels"):
        read_burst(small_burst_dir)


def test_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    good = np.zeros((4, 4, 3), np.uint8)
    bad = np.zeros((5, 4, 3), np.uint8)
    burst = Burst(
        [good, bad], [FrameInfo("000.png", 0, 1, 1.0), FrameInfo("001.png", 1, 1, 1.0)], 0
    )
    with pytest.raises(BurstError):
        write_burst(tmp_path / "b", burst)
    assert list(tmp_path.iterdir()) == []


# -- hostile burst directories (issue 14) ---------------------------------------------------


def test_deep_nesting_is_one_error_not_a_recursion_error(small_burst_dir: Path) -> None:
    (small_burst_dir / "burst.json").write_text("[" * 100_000)
    with pytest.raises(BurstError, match=r"nested 100000 levels deep, more than the 16"):
        read_burst(small_burst_dir)


def test_brackets_in_strings_do_not_count(small_burst_dir: Path) -> None:
    doc = _manifest(small_burst_dir)
    doc["frames"][0]["role"] = "[" * 50 + '\\"' + "{" * 50
    _rewrite(small_burst_dir, doc)
    with pytest.raises(BurstError, match=r"frames\[0\]: field 'role'"):
        read_burst(small_burst_dir)


def test_huge_manifest_is_refused_unread(small_burst_dir: Path) -> None:
    with (small_burst_dir / "burst.json").open("ab") as fh:
        fh.truncate(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(BurstError, match=r"burst.json: larger than 1048576 bytes"):
        read_burst(small_burst_dir)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("analogue_gain", float("nan"), r"'analogue_gain' must be a finite number.*got nan"),
        ("analogue_gain", float("inf"), r"'analogue_gain' must be a finite number.*got inf"),
        ("analogue_gain", 10**400, "'analogue_gain' must be a finite number"),
        ("analogue_gain", 0, "'analogue_gain' must be a finite number above 0"),
        ("analogue_gain", 1e6, "at most 1000"),
        ("timestamp_ns", 10**30, r"'timestamp_ns' must be 0\.\.9223372036854775807 ns"),
        ("timestamp_ns", 1e30, "'timestamp_ns' must be int"),
        ("timestamp_ns", -1, "'timestamp_ns' must be 0"),
        ("exposure_us", 0, r"'exposure_us' must be 1\.\.3600000000 µs, got 0"),
        ("exposure_us", 10**12, "'exposure_us' must be 1"),
    ],
)
def test_frame_metadata_is_validated(
    small_burst_dir: Path, field: str, value: object, message: str
) -> None:
    doc = _manifest(small_burst_dir)
    doc["frames"][1][field] = value
    _rewrite(small_burst_dir, doc)  # json.dumps writes NaN / Infinity as Python reads them
    with pytest.raises(BurstError, match=rf"frames\[1\]: .*{message}"):
        read_burst(small_burst_dir)


def test_symlinks_leaving_the_folder_are_refused(small_burst_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    (small_burst_dir / "001.png").rename(outside)
    (small_burst_dir / "001.png").symlink_to(outside)
    with pytest.raises(BurstError, match=r"001.png: is a symbolic link to .*outside.png, outside "
                       r"the burst folder"):  # fmt: skip
        read_burst(small_burst_dir)
    (small_burst_dir / "001.png").unlink()
    (small_burst_dir / "001.png").symlink_to("../outside.png")  # relative, same rule
    with pytest.raises(BurstError, match="outside the burst folder"):
        read_burst(small_burst_dir)


def test_symlinks_inside_the_folder_are_followed(small_burst_dir: Path) -> None:
    (small_burst_dir / "001.png").rename(small_burst_dir / "real.png")
    (small_burst_dir / "001.png").symlink_to("real.png")
    assert len(read_burst(small_burst_dir).frames) == 5


def test_a_link_loop_is_one_error(small_burst_dir: Path) -> None:
    (small_burst_dir / "001.png").unlink()
    (small_burst_dir / "001.png").symlink_to("001.png")
    with pytest.raises(BurstError, match=r"001.png"):
        read_burst(small_burst_dir)


def test_special_frames_say_what_they_are(small_burst_dir: Path) -> None:
    (small_burst_dir / "001.png").unlink()
    os.mkfifo(small_burst_dir / "001.png")
    with pytest.raises(BurstError, match=r"001.png: is a FIFO \(named pipe\), not a regular file"):
        read_burst(small_burst_dir)  # and did not block
    (small_burst_dir / "001.png").unlink()
    (small_burst_dir / "001.png").mkdir()
    with pytest.raises(BurstError, match=r"001.png: is a folder, not an image file"):
        read_burst(small_burst_dir)
    (small_burst_dir / "001.png").rmdir()
    (small_burst_dir / "001.png").symlink_to("/dev/zero")
    with pytest.raises(BurstError, match="outside the burst folder"):  # the link rule first
        read_burst(small_burst_dir)
    (small_burst_dir / "burst.json").unlink()
    os.mkfifo(small_burst_dir / "burst.json")
    with pytest.raises(BurstError, match=r"burst.json: is a FIFO"):
        read_burst(small_burst_dir)


def test_pixel_limits_checked_on_headers_before_decoding(
    small_burst_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append("x") or real(*a))
    with pytest.raises(BurstError, match=r"000.png: 80x64 is 0.0 MP, more than the limit"):
        read_burst(small_burst_dir, max_frame_pixels=80 * 64 - 1)
    with pytest.raises(BurstError, match=r"5 frames of 80x64 are 0.0 MP together, more than "
                       r"the limit of 0.0 MP per burst \(limits.max_burst_pixels\)"):  # fmt: skip
        read_burst(small_burst_dir, max_burst_pixels=80 * 64 * 5 - 1)
    cv2.imwrite(str(small_burst_dir / "003.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(BurstError, match=r"003.png: size 10x10 differs"):
        read_burst(small_burst_dir)
    assert decoded == []  # every refusal came from the headers alone


def test_not_a_folder(small_burst_dir: Path) -> None:
    with pytest.raises(BurstError, match=r"000.png: not a burst directory \(not a folder\)"):
        read_burst(small_burst_dir / "000.png")


def test_frames_are_png(small_burst_dir: Path) -> None:
    _, buf = cv2.imencode(".jpg", np.zeros((64, 80, 3), np.uint8))
    (small_burst_dir / "002.png").write_bytes(buf.tobytes())
    with pytest.raises(BurstError, match=r"002.png: is a JPEG file; burst frames are PNG"):
        read_burst(small_burst_dir)
