"""Stage 1b: first-frame selection (deblurd.pipeline.selection)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deblurd.imaging import linear_to_srgb, srgb_to_linear
from deblurd.pipeline.blur import blur_scores
from deblurd.pipeline.selection import Selection, select_first_frame, walk_order

# --------------------------------------------------------------------------- walk order


@pytest.mark.parametrize(
    ("count", "reference", "expected"),
    [
        (5, 2, [2, 1, 3, 0, 4]),  # DESIGN §1: F2, F1, F3, F0, F4
        (9, 4, [4, 3, 5, 2, 6, 1, 7, 0, 8]),
        (5, 0, [0, 1, 2, 3, 4]),
        (5, 4, [4, 3, 2, 1, 0]),
        (6, 1, [1, 0, 2, 3, 4, 5]),
        (6, 4, [4, 3, 5, 2, 1, 0]),
        (1, 0, [0]),
    ],
)
def test_walk_order(count: int, reference: int, expected: list[int]) -> None:
    assert walk_order(count, reference) == expected


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_walk_order_is_a_permutation_nearest_first_earlier_first(args: tuple[int, int]) -> None:
    count, reference = args
    order = walk_order(count, reference)
    assert sorted(order) == list(range(count))
    assert order[0] == reference
    keys = [(abs(i - reference), i) for i in order]  # distance, then earlier before later
    assert keys == sorted(keys)


@pytest.mark.parametrize(("count", "reference"), [(0, 0), (5, 5), (5, -1), (-3, 0)])
def test_walk_order_rejects_bad_arguments(count: int, reference: int) -> None:
    with pytest.raises(ValueError):
        walk_order(count, reference)


# --------------------------------------------------------------------------- sharpest


def test_sharpest_is_the_lowest_score() -> None:
    sel = select_first_frame([30.0, 27.5, 29.0, 26.1, 31.0], 2, None)
    assert sel == Selection(index=3, rule="sharpest", score=26.1)


def test_sharpest_ties_go_to_the_frame_nearest_the_reference() -> None:
    # 0 and 4 are both 2 away from the reference: the earlier wins; 1 beats 0 (nearer).
    assert select_first_frame([25.0, 26.0, 28.0, 27.0, 25.0], 2, None).index == 0
    assert select_first_frame([25.0, 25.0, 28.0, 27.0, 25.0], 2, None).index == 1
    assert select_first_frame([25.0, 25.0, 25.0, 25.0, 25.0], 3, None).index == 3


def test_a_single_frame_is_selected() -> None:
    assert select_first_frame([40.0], 0, None) == Selection(0, "sharpest", 40.0)
    assert select_first_frame([40.0], 0, 30.0) == Selection(0, "sharpest_fallback", 40.0)


# --------------------------------------------------------------------------- threshold


def test_threshold_takes_the_first_frame_under_it_in_walk_order() -> None:
    scores = [24.0, 26.5, 29.0, 26.0, 25.0]  # sharpest is 0, but it is farthest
    sel = select_first_frame(scores, 2, 27.0)
    assert sel == Selection(index=1, rule="threshold", score=26.5)  # F2 too blurry, F1 is under
    assert select_first_frame(scores, 2, 26.2).index == 3  # F1 above; F3 under
    assert select_first_frame(scores, 2, 25.5).index == 0  # F1, F3 above; F0 under (before F4)


def test_threshold_prefers_the_reference_when_it_is_under() -> None:
    assert select_first_frame([20.0, 21.0, 26.0, 22.0], 2, 27.0) == Selection(2, "threshold", 26.0)


def test_threshold_is_strict() -> None:
    """A score equal to the threshold is not under it."""
    sel = select_first_frame([27.0, 27.0, 27.0], 1, 27.0)
    assert sel.rule == "sharpest_fallback" and sel.index == 1


def test_threshold_falls_back_to_the_sharpest_and_says_so() -> None:
    sel = select_first_frame([31.0, 33.0, 32.0, 30.5, 34.0], 2, 28.0)
    assert sel == Selection(index=3, rule="sharpest_fallback", score=30.5)


def test_bad_scores_are_rejected() -> None:
    with pytest.raises(ValueError):
        select_first_frame([], 0, None)
    with pytest.raises(ValueError, match="NaN"):
        select_first_frame([25.0, float("nan"), 26.0], 0, None)
    with pytest.raises(ValueError):
        select_first_frame([25.0, 26.0], 2, None)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(10.0, 60.0), min_size=1, max_size=12).flatmap(
        lambda s: st.tuples(st.just(s), st.integers(0, len(s) - 1))
    ),
    st.one_of(st.none(), st.floats(10.0, 60.0)),
)
def test_selection_rules_hold_for_any_scores(
    args: tuple[list[float], int], threshold: float | None
) -> None:
    scores, reference = args
    sel = select_first_frame(scores, reference, threshold)
    assert sel.score == scores[sel.index]
    order = walk_order(len(scores), reference)
    if sel.rule == "threshold":
        assert threshold is not None and sel.score < threshold
        before = order[: order.index(sel.index)]
        assert all(scores[i] >= threshold for i in before)  # nothing nearer was under
    else:
        assert sel.score == min(scores)
        assert sel.rule == ("sharpest" if threshold is None else "sharpest_fallback")
        if threshold is not None:
            assert min(scores) >= threshold


# --------------------------------------------------------------------------- with scores


def test_selects_the_sharpest_frame_of_a_synthetic_burst() -> None:
    """Blur scores of a burst whose frames shake by different amounts pick the least shaken
    frame; with a threshold, the nearest frame that is sharp enough."""
    rng = np.random.default_rng(3)
    base = rng.random((90, 160)).astype(np.float32)
    scene = cv2.resize(base, (640, 360), interpolation=cv2.INTER_CUBIC)
    scene = np.clip(scene + 0.15 * rng.random((360, 640)).astype(np.float32), 0.0, 1.0)
    lin = srgb_to_linear(linear_to_srgb(np.stack([scene] * 3, -1)))
    blur_px = [9, 5, 7, 3, 1, 11]  # horizontal shake, px; the trigger is frame 2
    frames = []
    for i, length in enumerate(blur_px):
        k = np.zeros((15, 15), np.float32)
        k[7, 7 - length // 2 : 7 + length // 2 + 1] = 1.0 / length
        img = np.asarray(cv2.filter2D(lin, -1, k, borderType=cv2.BORDER_REFLECT), np.float32)
        noise = np.random.default_rng(i).normal(0.0, 0.004, size=img.shape)
        frames.append(linear_to_srgb(img + noise.astype(np.float32)))
    scores = blur_scores(frames)
    assert np.argsort(scores).tolist() == np.argsort(blur_px).tolist()
    assert select_first_frame(scores, 2, None).index == 4
    threshold = (scores[1] + scores[3]) / 2.0  # frame 3 is under, 1 and 2 are not
    assert select_first_frame(scores, 2, threshold) == Selection(3, "threshold", scores[3])
