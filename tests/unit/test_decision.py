"""Stage 3: the decision after the first deblur (deblurd.pipeline.decision)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from deblurd.pipeline.decision import Decision, decide, exposure_gain, table_row
from deblurd.settings.selection import DecisionSettings, ExposureStep, RingStep

DEFAULTS = DecisionSettings()


def custom(threshold: float = 10.0) -> DecisionSettings:
    return DecisionSettings(
        second_blur_threshold=threshold,
        ring_frames=[RingStep(max_blur=5.0, frames=1), RingStep(max_blur=8.0, frames=3)],
        extra_exposures=[
            ExposureStep(max_blur=12.0, exposure_us=16000, frames=4),
            ExposureStep(max_blur=15.0, exposure_us=25000, frames=5),
            ExposureStep(max_blur=20.0, exposure_us=40000, frames=7),
        ],
    )


# --------------------------------------------------------------------------- tables


def test_ring_rows_and_their_boundaries() -> None:
    s = custom()
    assert decide(2.0, s) == Decision("ring", 1, None, decide(2.0, s).reason)
    assert decide(5.0, s).frames == 1  # max_blur is inclusive
    assert decide(5.0001, s).frames == 3
    assert decide(8.0, s).frames == 3
    assert decide(9.5, s).frames == 3  # above every ring row, under the threshold: last row
    assert all(decide(x, s).source == "ring" for x in (-5.0, 0.0, 9.999))


def test_extra_rows_and_their_boundaries() -> None:
    s = custom()
    assert (decide(10.0, s).source, decide(10.0, s).frames) == ("extra", 4)  # at threshold
    assert decide(12.0, s).exposure_us == 16000
    assert (decide(12.01, s).frames, decide(12.01, s).exposure_us) == (5, 25000)
    assert (decide(15.0, s).frames, decide(15.0, s).exposure_us) == (5, 25000)
    assert (decide(19.0, s).frames, decide(19.0, s).exposure_us) == (7, 40000)
    assert (decide(55.0, s).frames, decide(55.0, s).exposure_us) == (7, 40000)  # past the end
    assert decide(math.inf, s).exposure_us == 40000


def test_ring_decisions_have_no_exposure() -> None:
    assert decide(3.0, custom()).exposure_us is None


def test_threshold_is_strict_for_ring_frames() -> None:
    s = custom(threshold=8.0)
    assert decide(7.999, s).source == "ring"
    assert decide(8.0, s).source == "extra"


def test_reason_gives_the_numbers() -> None:
    ring = decide(6.25, custom()).reason
    assert "6.25" in ring and "10.00" in ring and "3 ring frames" in ring and "8.00" in ring
    extra = decide(13.5, custom()).reason
    assert "13.50" in extra and ">=" in extra and "5 extra frames" in extra and "25000" in extra
    assert "above the last" in decide(30.0, custom()).reason


def test_table_row_picks_the_first_row_at_or_above() -> None:
    rows = [RingStep(max_blur=1.0, frames=1), RingStep(max_blur=2.0, frames=2)]
    assert table_row(rows, 0.5).frames == 1
    assert table_row(rows, 1.0).frames == 1
    assert table_row(rows, 1.5).frames == 2
    assert table_row(rows, 3.0).frames == 2
    with pytest.raises(ValueError):
        table_row([], 1.0)


def test_nan_is_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        decide(float("nan"), DEFAULTS)


# --------------------------------------------------------------------------- monotone


def test_default_frame_count_grows_with_blur_across_both_sources() -> None:
    scores = [x / 10.0 for x in range(150, 450)]  # 15 .. 45 dB
    decisions = [decide(x, DEFAULTS) for x in scores]
    frames = [d.frames for d in decisions]
    assert frames == sorted(frames)
    assert frames[0] < frames[-1]
    exposures = [d.exposure_us for d in decisions if d.exposure_us is not None]
    assert exposures == sorted(exposures) and len(set(exposures)) == 3
    sources = [d.source for d in decisions]
    first_extra = sources.index("extra")
    assert set(sources[:first_extra]) == {"ring"} and set(sources[first_extra:]) == {"extra"}
    assert scores[first_extra] == DEFAULTS.second_blur_threshold


def test_defaults_are_calibrated_to_the_blur_score_scale() -> None:
    """Sharp photos score ~19-31 dB at size 512; 3 px of 1080p motion blur ≈ 27 dB on a
    typical photo (see deblurd.pipeline.blur): the threshold sits in that range and the
    tables span it."""
    d = DEFAULTS
    assert 25.0 <= d.second_blur_threshold <= 29.0
    assert d.ring_frames[0].max_blur < d.second_blur_threshold <= d.ring_frames[-1].max_blur
    assert d.extra_exposures[0].max_blur > d.second_blur_threshold
    assert decide(25.0, d).source == "ring" and decide(32.0, d).source == "extra"


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(0.0, 60.0), min_size=3, max_size=3, unique=True).map(sorted),
    st.lists(st.integers(0, 20), min_size=3, max_size=3).map(sorted),
    st.lists(st.floats(0.0, 60.0), min_size=3, max_size=3, unique=True).map(sorted),
    st.lists(st.integers(1, 20), min_size=3, max_size=3).map(sorted),
    st.floats(0.0, 60.0),
    st.lists(st.floats(0.0, 70.0), min_size=2, max_size=20).map(sorted),
)
def test_frame_count_never_drops_as_blur_grows_within_a_source(
    ring_limits: list[float],
    ring_counts: list[int],
    extra_limits: list[float],
    extra_counts: list[int],
    threshold: float,
    scores: list[float],
) -> None:
    s = DecisionSettings(
        second_blur_threshold=threshold,
        ring_frames=[
            RingStep(max_blur=b, frames=n) for b, n in zip(ring_limits, ring_counts, strict=True)
        ],
        extra_exposures=[
            ExposureStep(max_blur=b, exposure_us=10000 * (i + 1), frames=n)
            for i, (b, n) in enumerate(zip(extra_limits, extra_counts, strict=True))
        ],
    )
    decisions = [decide(x, s) for x in scores]
    for source in ("ring", "extra"):
        counts = [d.frames for d in decisions if d.source == source]
        assert counts == sorted(counts)
    for x, d in zip(scores, decisions, strict=True):
        assert d.source == ("ring" if x < threshold else "extra")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("field", "rows", "message"),
    [
        ("ring_frames", [], "at least one row"),
        ("ring_frames", [{"max_blur": 5.0, "frames": 2}, {"max_blur": 4.0, "frames": 3}], "sorted"),
        ("ring_frames", [{"max_blur": 5.0, "frames": 2}, {"max_blur": 5.0, "frames": 3}], "sorted"),
        (
            "ring_frames",
            [{"max_blur": 4.0, "frames": 3}, {"max_blur": 5.0, "frames": 2}],
            "must not decrease",
        ),
        (
            "extra_exposures",
            [
                {"max_blur": 4.0, "exposure_us": 20000, "frames": 3},
                {"max_blur": 5.0, "exposure_us": 20000, "frames": 2},
            ],
            "must not decrease",
        ),
        (
            "extra_exposures",
            [
                {"max_blur": 4.0, "exposure_us": 30000, "frames": 3},
                {"max_blur": 5.0, "exposure_us": 20000, "frames": 3},
            ],
            "exposure_us",
        ),
    ],
)
def test_invalid_tables_are_rejected(
    field: str, rows: list[dict[str, float]], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        DecisionSettings.model_validate({field: rows})


# --------------------------------------------------------------------------- exposure gain


def test_exposure_gain_keeps_exposure_times_gain() -> None:
    assert exposure_gain(8000, 4.0, 16000) == pytest.approx(2.0)
    assert exposure_gain(10000, 8.0, 20000) * 20000 == pytest.approx(10000 * 8.0)
    assert exposure_gain(8000, 4.0, 8000) == pytest.approx(4.0)


def test_exposure_gain_is_clipped() -> None:
    assert exposure_gain(8000, 4.0, 50000) == 1.0  # would be 0.64: a sensor cannot go under 1
    assert exposure_gain(20000, 8.0, 5000) == 16.0  # would be 32: capped at the default
    assert exposure_gain(20000, 8.0, 5000, max_gain=22.0) == 22.0
    assert exposure_gain(8000, 4.0, 16000, max_gain=DEFAULTS.max_analogue_gain) == 2.0


@pytest.mark.parametrize(
    "args",
    [
        (0, 4.0, 16000, 16.0),
        (8000, -1.0, 16000, 16.0),
        (8000, 4.0, 0, 16.0),
        (8000, 4.0, 16000, 0.5),
        (8000, math.nan, 16000, 16.0),
        (math.inf, 4.0, 16000, 16.0),
    ],
)
def test_exposure_gain_rejects_bad_input(args: tuple[float, float, float, float]) -> None:
    with pytest.raises(ValueError):
        exposure_gain(*args)
