"""The argument types shared by the tools: sizes and number lists, with usage errors."""

from __future__ import annotations

import argparse

import pytest

from deblurd.evaluation.cli_args import (
    frame_size,
    frame_size_at_least,
    frame_sizes,
    nonnegative_floats,
)


def test_frame_size_parses_width_by_height() -> None:
    assert frame_size("1920x1080") == (1920, 1080)
    assert frame_size(" 640X480 ") == (640, 480)
    assert frame_sizes("320x240,1280x720") == [(320, 240), (1280, 720)]
    assert frame_size_at_least(64)("64x64") == (64, 64)


@pytest.mark.parametrize("text", ["1920", "1920x", "x1080", "axb", "1x2x3", "8x480", "640x15"])
def test_frame_size_rejects_with_the_value(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="size must be"):
        frame_size(text)


def test_minimum_and_empty_lists() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="at least 64x64"):
        frame_size_at_least(64)("32x32")
    with pytest.raises(argparse.ArgumentTypeError, match="expected WxH"):
        frame_sizes(" , ")


def test_nonnegative_floats() -> None:
    assert nonnegative_floats("0.5,1,2") == [0.5, 1.0, 2.0]
    for bad in ("", "a", "1,-1", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            nonnegative_floats(bad)


def test_argparse_reports_a_bad_size_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser(prog="tool")
    p.add_argument("--size", type=frame_size, default="1280x720")
    assert p.parse_args([]).size == (1280, 720)  # string defaults go through the type too
    with pytest.raises(SystemExit) as exc:
        p.parse_args(["--size", "big"])
    assert exc.value.code == 2
    assert "--size: size must be WxH, got 'big'" in capsys.readouterr().err
