"""Argument types shared by the command-line tools (``tools/``, ``deblurd.training``).

Each is an ``argparse`` ``type=`` callable: a malformed value becomes an
:class:`argparse.ArgumentTypeError`, which argparse reports as a usage error naming the
option and the value (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

#: The smallest frame side the tools accept, px (the U-Net's multiple).
MIN_SIDE = 16


def frame_size(text: str, minimum: int = MIN_SIDE) -> tuple[int, int]:
    """``"WxH"`` (case-insensitive ``x``) → ``(width, height)`` px, each ``>= minimum``."""
    try:
        w, h = (int(v) for v in text.strip().lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be WxH, got {text!r}") from exc
    if w < minimum or h < minimum:
        raise argparse.ArgumentTypeError(f"size must be at least {minimum}x{minimum}, got {text!r}")
    return w, h


def frame_size_at_least(minimum: int) -> Callable[[str], tuple[int, int]]:
    """A :func:`frame_size` type with another minimum side, px."""

    def parse(text: str) -> tuple[int, int]:
        return frame_size(text, minimum)

    return parse


def frame_sizes(text: str) -> list[tuple[int, int]]:
    """``"WxH,WxH,..."`` → a non-empty list of :func:`frame_size` ``(width, height)``."""
    sizes = [frame_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected WxH[,WxH...], got {text!r}")
    return sizes


def nonnegative_floats(text: str) -> list[float]:
    """``"0.5,1,2"`` → ``[0.5, 1.0, 2.0]``: a non-empty list of finite numbers ``>= 0``."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from exc
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers >= 0, got {text!r}")
    return values
