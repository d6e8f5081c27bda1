"""The burst-directory format v1: round trip and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from deblurd.burstdir import Burst, FrameInfo, read_burst, write_burst
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
