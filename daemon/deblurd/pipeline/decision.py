"""Stage 3: decide where the second frames come from, from the deblurred frame's blur.

After the first deblur the deblurred frame is scored (``deblurd.pipeline.blur``, dB,
higher = blurrier):

* under ``second_blur_threshold``: the second frames come from the ring buffer (regular
  shooting time, same short exposure); how many from ``ring_frames``;
* at or above it: the sensor switches to a longer exposure and captures extra frames right
  after the trigger (additional shooting time); exposure and count from
  ``extra_exposures``. :func:`exposure_gain` gives the analogue gain that keeps the
  preview's brightness at the new exposure.

In both tables the first row whose ``max_blur`` is at or above the score applies, and a
score above every row takes the last row; frame counts never decrease down a table, so
the number of second frames grows with the blur.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from deblurd.settings.selection import DecisionSettings

DEFAULT_MAX_GAIN = 16.0
"""Default ceiling of :func:`exposure_gain` (``DecisionSettings.max_analogue_gain``)."""


@dataclass(frozen=True)
class Decision:
    """What to fuse with the deblurred frame.

    ``source``: ``"ring"`` (frames already in the ring buffer) or ``"extra"`` (capture new
    frames after the trigger); ``frames``: how many second frames are wanted (the job takes
    at most what is available); ``exposure_us``: the extra frames' exposure, µs (``None``
    for ring frames); ``reason``: one human-readable line with the numbers behind it.
    """

    source: Literal["ring", "extra"]
    frames: int
    exposure_us: int | None
    reason: str


class _Row(Protocol):
    @property
    def max_blur(self) -> float: ...


RowT = TypeVar("RowT", bound=_Row)


def table_row(rows: Sequence[RowT], score: float) -> RowT:
    """The first row whose ``max_blur`` is ≥ ``score``; the last row when none is.

    ``rows`` must be non-empty and sorted by ``max_blur`` (``DecisionSettings`` checks).
    """
    if not rows:
        raise ValueError("empty table")
    for row in rows:
        if score <= row.max_blur:
            return row
    return rows[-1]


def decide(deblurred_blur: float, settings: DecisionSettings) -> Decision:
    """Decide the second frames from the deblurred frame's blur score ``deblurred_blur`` (dB).

    ``deblurred_blur < settings.second_blur_threshold`` → ring frames, count from
    ``settings.ring_frames``; otherwise → extra frames at the exposure and count of
    ``settings.extra_exposures``. Raises ``ValueError`` for a NaN score (+inf counts as
    blurrier than every row).
    """
    score = float(deblurred_blur)
    if math.isnan(score):
        raise ValueError("blur score of the deblurred frame is NaN")
    threshold = settings.second_blur_threshold
    if score < threshold:
        ring = table_row(settings.ring_frames, score)
        return Decision(
            "ring",
            ring.frames,
            None,
            f"deblurred blur {score:.2f} dB < second threshold {threshold:.2f} dB: "
            f"{ring.frames} ring frames ({_row_note(ring.max_blur, score)})",
        )
    extra = table_row(settings.extra_exposures, score)
    return Decision(
        "extra",
        extra.frames,
        extra.exposure_us,
        f"deblurred blur {score:.2f} dB >= second threshold {threshold:.2f} dB: "
        f"{extra.frames} extra frames at {extra.exposure_us} us "
        f"({_row_note(extra.max_blur, score)})",
    )


def _row_note(max_blur: float, score: float) -> str:
    if score <= max_blur:
        return f"table row max_blur {max_blur:.2f} dB"
    return f"above the last table row, max_blur {max_blur:.2f} dB"


def exposure_gain(
    preview_exposure_us: float,
    preview_gain: float,
    new_exposure_us: float,
    max_gain: float = DEFAULT_MAX_GAIN,
) -> float:
    """Analogue gain for ``new_exposure_us`` that keeps the preview's brightness.

    Brightness ∝ exposure × gain, so the gain is
    ``preview_exposure_us × preview_gain / new_exposure_us``, clipped to ``[1, max_gain]``
    (a sensor cannot go under unity gain: a longer exposure than ``exposure × gain`` of the
    preview comes out brighter; the caller may shorten it to
    ``preview_exposure_us × preview_gain`` to avoid that). Exposures in µs, gains as factors.
    Raises ``ValueError`` for non-positive or non-finite inputs or ``max_gain < 1``.
    """
    values = (preview_exposure_us, preview_gain, new_exposure_us, max_gain)
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"exposures and gains must be positive and finite, got {values}")
    if max_gain < 1.0:
        raise ValueError(f"max_gain must be at least 1, got {max_gain}")
    gain = preview_exposure_us * preview_gain / new_exposure_us
    return float(min(max(gain, 1.0), max_gain))
