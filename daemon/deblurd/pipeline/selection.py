"""Stage 1b: pick the first frame among the ring frames around the trigger.

The candidates are a window of ring frames (indices ``0 .. count-1`` here) around the
*reference* (the frame captured at the trigger). Rule "sharpest": the lowest blur score.
Optional rule "threshold": walk the candidates from nearest to farthest from the reference
— reference, one earlier, one later, two earlier, two later … (F2, F1, F3, F0, F4 for
reference 2 of 5) — and take the first whose score is under the *first blur threshold*;
when none is, fall back to the sharpest (rule ``"sharpest_fallback"``). Nearer frames are
preferred because they show the scene as it was when the shutter was pressed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

SelectionRule = Literal["sharpest", "threshold", "sharpest_fallback"]


@dataclass(frozen=True)
class Selection:
    """The chosen first frame.

    ``index``: position in the candidate list; ``score``: its blur score (dB);
    ``rule``: ``"sharpest"`` (no threshold set), ``"threshold"`` (the first frame in walk
    order under the threshold), ``"sharpest_fallback"`` (a threshold was set but no frame
    was under it, so the sharpest was taken).
    """

    index: int
    rule: SelectionRule
    score: float


def walk_order(count: int, reference: int) -> list[int]:
    """Indices ``0 .. count-1`` from nearest to farthest from ``reference``.

    Order: ``reference``, ``reference-1``, ``reference+1``, ``reference-2``,
    ``reference+2`` …, skipping indices outside the range (at equal distance the earlier
    frame comes first). ``walk_order(5, 2) == [2, 1, 3, 0, 4]``.
    Raises ``ValueError`` when ``count < 1`` or ``reference`` is not in ``[0, count)``.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not 0 <= reference < count:
        raise ValueError(f"reference {reference} is outside 0..{count - 1}")
    order = [reference]
    for step in range(1, max(reference, count - 1 - reference) + 1):
        for index in (reference - step, reference + step):
            if 0 <= index < count:
                order.append(index)
    return order


def select_first_frame(
    scores: Sequence[float], reference: int, first_blur_threshold: float | None
) -> Selection:
    """Choose the first frame from the candidates' blur ``scores`` (dB, higher = blurrier).

    ``reference``: the index (into ``scores``) of the frame captured at the trigger.
    ``first_blur_threshold``: ``None`` → the sharpest frame (ties: the one nearest the
    reference in walk order); a number → the first frame in :func:`walk_order` whose score is
    strictly under it, else the sharpest (rule ``"sharpest_fallback"``).
    Raises ``ValueError`` for no scores, a NaN score or a reference out of range.
    """
    values = [float(s) for s in scores]
    if any(math.isnan(s) for s in values):
        raise ValueError(f"blur scores must not be NaN: {values}")
    order = walk_order(len(values), reference)
    if first_blur_threshold is not None:
        for index in order:
            if values[index] < first_blur_threshold:
                return Selection(index, "threshold", values[index])
    sharpest = min(order, key=lambda i: values[i])  # min keeps the first of equal scores
    rule: SelectionRule = "sharpest" if first_blur_threshold is None else "sharpest_fallback"
    return Selection(sharpest, rule, values[sharpest])
