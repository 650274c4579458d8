"""The SPC engine (linkcare.monitor.spc) rule by rule on hand-made series, against numbers from
NHSRplotthedots' own tests and vignettes, and against a slow per-point reference; and the MDC icons.

Most series start with the baseline B = 11, 9, 11, 9, ... (12 points): mean 10, every moving range 2, so the
limits are 10 ± 2.66 x 2 = [4.68, 15.32] and "close to a limit" is beyond 10 ± (2/3) x 5.32, that is below
6.4533 or above 13.5467. Points appended after B do not move the limits (they are fixed after 12 points), so
each test appends the few points that should, or should not, break a rule, and asserts every flagged point.
B itself breaks no rule: it alternates sides of the mean and direction, and never comes close to a limit.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkcare.monitor.spc import (
    ASSURANCES,
    VARIATION_ICONS,
    SpcRules,
    SpcSummary,
    assurance,
    spc_chart,
    spc_summary,
)
from linkcare.report.spc_icons import ASSURANCE_WORDS, VARIATION_WORDS, assurance_icon, variation_icon

B = [11.0, 9.0] * 6
UPPER = 10 + 2.66 * 2
LOWER = 10 - 2.66 * 2
ALL = SpcRules(baseline_points=1000)  # NHSRplotthedots' default: limits from every point (no fix_after_n_points)


def _months(n: int, start: dt.date = dt.date(2022, 4, 1)) -> list[dt.date]:
    k = start.year * 12 + start.month - 1
    return [dt.date((k + i) // 12, (k + i) % 12 + 1, 1) for i in range(n)]


def _chart(values: Sequence[float | None], **kwargs: Any) -> pl.DataFrame:
    return spc_chart(_months(len(values)), values, **kwargs)


def _labels(chart: pl.DataFrame) -> dict[int, str]:
    """The flagged points of a chart: {row: special_cause}."""
    return {i: s for i, s in enumerate(chart["special_cause"].to_list()) if s is not None}


def _span(first: int, last: int, label: str) -> dict[int, str]:
    return dict.fromkeys(range(first, last + 1), label)


# --- limits ---------------------------------------------------------------------------------------------


def test_baseline_limits_by_hand() -> None:
    chart = _chart(B)
    assert chart["mean"].to_list() == [10.0] * 12
    assert chart["lower"].to_list() == pytest.approx([LOWER] * 12)
    assert chart["upper"].to_list() == pytest.approx([UPPER] * 12)
    assert _labels(chart) == {}
    assert chart["variation"].to_list() == ["common_cause"] * 12
    assert chart["trial_limits"].to_list() == [False] * 12
    assert chart["rebase_group"].to_list() == [0] * 12


def test_columns_types_and_order() -> None:
    chart = _chart([*B, None], plan=[1.0] * 13)
    assert chart.schema == pl.Schema({
        "month": pl.Date, "value": pl.Float64, "mean": pl.Float64, "lower": pl.Float64, "upper": pl.Float64,
        "special_cause": pl.String, "variation": pl.String, "plan": pl.Float64, "rebase_group": pl.Int32,
        "trial_limits": pl.Boolean, "missing": pl.Boolean,
    })
    assert chart["month"].to_list() == _months(13)
    assert chart["plan"].to_list() == [1.0] * 13
    assert _chart(B)["plan"].null_count() == 12


def test_numpy_values_with_nan_are_missing_months() -> None:
    values = np.array([*B, np.nan, 16.0])
    chart = spc_chart(_months(14), values, "higher")
    assert chart["missing"].to_list() == [False] * 12 + [True, False]
    assert chart["value"][12] is None
    assert _labels(chart) == {13: "outside_limits"}


def test_baseline_fixing_points_after_the_baseline_do_not_move_the_limits() -> None:
    chart = _chart([*B, 30.0, 30.0, 30.0])
    assert chart["mean"].to_list() == [10.0] * 15
    assert chart["upper"].to_list() == pytest.approx([UPPER] * 15)
    assert _labels(chart) == _span(12, 14, "outside_limits")
    # With a baseline of 15 the 30s are in it: mean (120 + 90) / 15 = 14; moving ranges 11 x 2, 21, 0, 0, mean
    # 43 / 14 = 3.07, so 21 > 3.267 x 3.07 = 10.03 is screened out, leaving 13 ranges summing to 22.
    wide = _chart([*B, 30.0, 30.0, 30.0], rules=SpcRules(baseline_points=15))
    assert wide["mean"][0] == pytest.approx(14.0)
    assert wide["upper"][0] == pytest.approx(14 + 2.66 * 22 / 13)
    assert wide["lower"][0] == pytest.approx(14 - 2.66 * 22 / 13)


def test_outlier_screening_on_and_off_by_hand() -> None:
    # 24 points alternating 11, 9, with the 9 at row 9 replaced by 25: mean (240 - 9 + 25) / 24; the moving
    # ranges are 21 x 2 and 2 x 14 (into and out of the 25), mean 70 / 23 = 3.04, so both 14s exceed
    # 3.267 x 3.04 = 9.94 and screening leaves 21 ranges of 2.
    values = [11.0, 9.0] * 12
    values[9] = 25.0
    mean = 256 / 24
    screened = _chart(values, rules=SpcRules(baseline_points=24))
    unscreened = _chart(values, rules=SpcRules(baseline_points=24, screen_outliers=False))
    assert screened["mean"][0] == pytest.approx(mean)
    assert unscreened["mean"][0] == pytest.approx(mean)  # screening changes the ranges, never the mean
    assert screened["upper"][0] == pytest.approx(mean + 2.66 * 42 / 21)
    assert screened["lower"][0] == pytest.approx(mean - 2.66 * 42 / 21)
    assert unscreened["upper"][0] == pytest.approx(mean + 2.66 * 70 / 23)
    assert unscreened["lower"][0] == pytest.approx(mean - 2.66 * 70 / 23)
    assert _labels(screened) == _labels(unscreened) == {9: "outside_limits"}


def test_flat_series_has_zero_width_limits_not_none() -> None:
    # Departs from NHSRplotthedots, which screens a range equal to 3.267 x the mean (0 = 0 here) and is left
    # with no ranges and NaN limits; a range is screened only when above the bound.
    chart = _chart([5.0] * 12)
    assert chart["lower"].to_list() == [5.0] * 12
    assert chart["upper"].to_list() == [5.0] * 12
    assert _labels(chart) == {}  # every point is on the mean: no run, no trend, nothing outside


# --- outside the limits -----------------------------------------------------------------------------------


def test_outside_limits_both_sides() -> None:
    chart = _chart([*B, 16.0, 10.0, 4.0], direction="higher")
    assert _labels(chart) == {12: "outside_limits", 14: "outside_limits"}
    assert chart["variation"].to_list()[12:] == ["improvement", "common_cause", "concern"]


def test_a_point_exactly_on_a_limit_is_not_outside() -> None:
    on_limit = 10.0 + 2.66 * 2.0
    assert _chart([*B, on_limit])["upper"][0] == on_limit
    assert _labels(_chart([*B, on_limit])) == {}
    assert _labels(_chart([*B, on_limit + 1e-9])) == {12: "outside_limits"}


# --- shifts -----------------------------------------------------------------------------------------------


def test_shift_of_seven_flags_every_point_of_the_run() -> None:
    assert _labels(_chart([*B, *[10.5] * 7])) == _span(12, 18, "shift")
    assert _labels(_chart([*B, *[10.5] * 6])) == {}
    assert _labels(_chart([*B, *[10.5] * 9])) == _span(12, 20, "shift")


def test_shift_includes_earlier_points_of_the_run() -> None:
    # B ends with a 9, below the mean: six more points below make a run of seven from row 11.
    assert _labels(_chart([*B, *[9.5] * 6])) == _span(11, 17, "shift")


def test_a_point_on_the_mean_breaks_a_run() -> None:
    assert _labels(_chart([*B, *[10.5] * 6, 10.0, *[10.5] * 6])) == {}
    assert _labels(_chart([*B, *[10.5] * 13])) == _span(12, 24, "shift")


def test_shift_length_is_a_rule() -> None:
    assert _labels(_chart([*B, *[10.5] * 6], rules=SpcRules(shift_points=6))) == _span(12, 17, "shift")


# --- trends -----------------------------------------------------------------------------------------------


RISING = [7.0, 7.5, 8.0, 8.5, 9.5, 10.5, 11.5]  # after B's last 9 the first step falls, so the trend starts at 7


def test_rising_trend_of_seven() -> None:
    chart = _chart([*B, *RISING], direction="higher")
    assert _labels(chart) == _span(12, 18, "trend")
    assert chart["variation"].to_list()[12:] == ["improvement"] * 7
    assert _chart([*B, *RISING], direction="lower")["variation"].to_list()[12:] == ["concern"] * 7


def test_six_rising_points_are_not_a_trend() -> None:
    assert _labels(_chart([*B, *RISING[1:]])) == {}


def test_a_tie_breaks_a_trend() -> None:
    assert _labels(_chart([*B, 7.0, 7.5, 8.0, 8.0, 10.5, 11.0, 11.5, 12.0])) == {}
    assert _labels(_chart([*B, 7.0, 7.5, 8.0, 8.2, 10.5, 11.0, 11.5, 12.0])) == _span(12, 19, "trend")


def test_a_trend_point_is_improvement_or_concern_by_the_trend_not_the_side_of_the_mean() -> None:
    # Falling from 13 to 11.8: all above the mean (a shift too, which the trend outranks), yet falling.
    chart = _chart([*B, 13.0, 12.8, 12.6, 12.4, 12.2, 12.0, 11.8], direction="higher")
    assert _labels(chart) == _span(12, 18, "trend")
    assert chart["variation"].to_list()[12:] == ["concern"] * 7
    neutral = _chart([*B, 13.0, 12.8, 12.6, 12.4, 12.2, 12.0, 11.8], direction="neutral")
    assert neutral["variation"].to_list()[12:] == ["neutral_low"] * 7


def test_turning_point_of_two_trends_takes_the_later_trend() -> None:
    # Rising rows 12-18, falling rows 18-24: row 18 (11.5) is in both and, as NHSRplotthedots' "use right
    # side", takes the falling trend's direction.
    chart = _chart([*B, *RISING, 10.8, 10.6, 10.4, 10.2, 10.1, 9.9], direction="higher")
    assert _labels(chart) == _span(12, 24, "trend")
    assert chart["variation"].to_list()[12:] == ["improvement"] * 6 + ["concern"] * 7


def test_two_rising_trends_apart_keep_their_own_direction() -> None:
    # Departs from NHSRplotthedots, which gives row 18 (the end of the first rise) the direction of its step
    # to row 19, a fall, because row 19 starts another trend: "Decreasing", so concern. Here it is rising.
    chart = _chart([*B, *RISING, 7.2, 7.4, 7.6, 7.8, 8.0, 8.2, 8.4], direction="higher")
    assert _labels(chart) == _span(12, 25, "trend")
    assert chart["variation"].to_list()[12:] == ["improvement"] * 14


# --- two in three -----------------------------------------------------------------------------------------


def test_two_in_three_flags_only_the_close_points() -> None:
    assert _labels(_chart([*B, 14.0, 10.5, 14.0])) == {12: "two_in_three", 14: "two_in_three"}
    assert _labels(_chart([*B, 14.0, 14.0, 10.5])) == {12: "two_in_three", 13: "two_in_three"}
    assert _labels(_chart([*B, 14.0, 10.5, 10.5, 14.0])) == {}  # two close points, but never two in three


def test_two_in_three_low_side() -> None:
    chart = _chart([*B, 6.0, 9.5, 6.0], direction="lower")
    assert _labels(chart) == {12: "two_in_three", 14: "two_in_three"}
    assert chart["variation"].to_list()[12:] == ["improvement", "common_cause", "improvement"]


def test_two_in_three_on_opposite_sides_does_not_fire() -> None:
    assert _labels(_chart([*B, 14.0, 9.5, 14.0])) == {}  # the middle point is below the mean
    assert _labels(_chart([*B, 6.0, 14.0, 6.0])) == {}  # close to both limits


def test_two_in_three_with_a_point_on_the_mean_does_not_fire() -> None:
    assert _labels(_chart([*B, 14.0, 10.0, 14.0])) == {}


def test_points_outside_the_limits_are_not_close() -> None:
    # As NHSRplotthedots: close_to_limits excludes outside_limits, so an outside point does not count
    # towards the two (and is labelled outside, not two-in-three).
    assert _labels(_chart([*B, 14.0, 16.0, 10.5])) == {13: "outside_limits"}
    assert _labels(_chart([*B, 16.0, 14.0, 16.0])) == {12: "outside_limits", 14: "outside_limits"}
    assert _labels(_chart([*B, 14.0, 16.0, 14.0])) == {
        12: "two_in_three", 13: "outside_limits", 14: "two_in_three"}


# --- priority ---------------------------------------------------------------------------------------------


def test_outside_outranks_trend() -> None:
    chart = _chart([*B, 7.0, 7.5, 8.0, 8.5, 9.5, 10.5, 16.0])
    assert _labels(chart) == {**_span(12, 17, "trend"), 18: "outside_limits"}


def test_trend_outranks_two_in_three() -> None:
    # Rows 17 and 18 (13.8, 14) are close and, with row 19 (12), two in three above the mean; they end a trend.
    assert _labels(_chart([*B, 7.0, 7.5, 8.0, 8.5, 9.5, 13.8, 14.0, 12.0])) == _span(12, 18, "trend")
    assert _labels(_chart([*B, 13.8, 14.0, 12.0])) == {12: "two_in_three", 13: "two_in_three"}


def test_two_in_three_outranks_shift() -> None:
    chart = _chart([*B, 10.5, 10.5, 10.5, 10.5, 14.0, 10.5, 14.0])
    assert _labels(chart) == {**_span(12, 15, "shift"), 16: "two_in_three", 17: "shift", 18: "two_in_three"}


def test_outside_outranks_shift() -> None:
    chart = _chart([*B, 10.5, 10.5, 10.5, 16.0, 10.5, 10.5, 10.5])
    assert _labels(chart) == {**_span(12, 14, "shift"), 15: "outside_limits", **_span(16, 18, "shift")}


# --- direction --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("direction", "high", "low"), [
    ("higher", "improvement", "concern"),
    ("lower", "concern", "improvement"),
    ("neutral", "neutral_high", "neutral_low"),
])
def test_variation_by_direction(direction: str, high: str, low: str) -> None:
    chart = _chart([*B, 16.0, 10.0, 4.0, *[10.5] * 7], direction=direction)
    assert chart["variation"].to_list() == ["common_cause"] * 12 + [high, "common_cause", low] + [high] * 7
    assert _labels(chart) == {12: "outside_limits", 14: "outside_limits", **_span(15, 21, "shift")}


# --- trial limits and rebasing ----------------------------------------------------------------------------


def test_fewer_than_twelve_points_have_trial_limits() -> None:
    assert _chart(B[:11])["trial_limits"].to_list() == [True] * 11
    assert _chart(B)["trial_limits"].to_list() == [False] * 12
    assert _chart(B[:11], rules=SpcRules(minimum_points=11))["trial_limits"].to_list() == [False] * 11


def test_rebase_recomputes_the_limits_and_numbers_the_groups() -> None:
    values = [*B, *[21.0, 19.0] * 6, *[31.0, 29.0] * 3]
    months = _months(len(values))
    chart = spc_chart(months, values, rebase=[months[12], months[24]])
    assert chart["rebase_group"].to_list() == [0] * 12 + [1] * 12 + [2] * 6
    assert chart["mean"].to_list() == [10.0] * 12 + [20.0] * 12 + [30.0] * 6
    assert chart["upper"].to_list() == pytest.approx([UPPER] * 12 + [UPPER + 10] * 12 + [UPPER + 20] * 6)
    assert chart["trial_limits"].to_list() == [False] * 24 + [True] * 6
    assert _labels(chart) == {}
    # Without the rebase the later points are all above the first limits.
    assert _labels(spc_chart(months, values)) == _span(12, 29, "outside_limits")


def test_rebase_at_the_first_month_changes_nothing() -> None:
    months = _months(12)
    assert spc_chart(months, B, rebase=[months[0]])["rebase_group"].to_list() == [0] * 12


def test_runs_do_not_cross_a_rebase() -> None:
    # Rows 12-14 (10.5) are above group 0's mean 10 and rows 15-18 (14) above group 1's mean 136 / 12:
    # seven in a row above their own means, but in two groups.
    values = [*B, 10.5, 10.5, 10.5, *[14.0] * 4, *[6.0, 14.0] * 4]
    months = _months(len(values))
    chart = spc_chart(months, values, rebase=[months[15]])
    assert chart["mean"][15] == pytest.approx(136 / 12)
    assert _labels(chart) == {}


def test_trends_do_not_cross_a_rebase() -> None:
    values = [*B, *RISING, 9.0, 11.0, 9.0, 11.0]
    months = _months(len(values))
    assert _labels(spc_chart(months, values)) == _span(12, 18, "trend")
    assert _labels(spc_chart(months, values, rebase=[months[15]])) == {}


def test_two_in_three_does_not_cross_a_rebase() -> None:
    # Rows 13 and 14 (15, 15) are both close to their own group's upper limit and above its mean, with
    # row 12 (10.5) above group 0's mean: two in three, but only across the rebase at row 14.
    values = [*B, 10.5, 15.0, 15.0, *[9.0, 11.0] * 5, 9.0]
    months = _months(len(values))
    assert _labels(spc_chart(months, values)) == {13: "two_in_three", 14: "two_in_three"}
    rebased = spc_chart(months, values, rebase=[months[14]])
    # Group 1: mean 124 / 12, moving ranges 6 and 10 x 2, so 15 is beyond two thirds of the way to the limit.
    amr = 26 / 11
    assert rebased["mean"][14] == pytest.approx(124 / 12)
    assert 124 / 12 + 2 * 2.66 / 3 * amr < 15.0 < 124 / 12 + 2.66 * amr
    assert _labels(rebased) == {}


def test_a_group_of_one_point_has_a_mean_but_no_limits() -> None:
    months = _months(13)
    chart = spc_chart(months, [*B, 20.0], rebase=[months[12]])
    assert chart.row(12, named=True) | {"month": None} == {
        "month": None, "value": 20.0, "mean": 20.0, "lower": None, "upper": None, "special_cause": None,
        "variation": "common_cause", "plan": None, "rebase_group": 1, "trial_limits": True, "missing": False}


def test_a_group_of_missing_months_has_no_mean() -> None:
    months = _months(14)
    chart = spc_chart(months, [*B, None, None], rebase=[months[12]])
    assert chart["mean"].to_list()[12:] == [None, None]
    assert chart["upper"].to_list()[12:] == [None, None]
    assert chart["variation"].to_list()[12:] == [None, None]
    assert chart["trial_limits"].to_list()[12:] == [True, True]


# --- missing months ---------------------------------------------------------------------------------------


def test_a_missing_month_has_no_value_and_no_moving_range() -> None:
    chart = _chart([10.0, 12.0, None, 15.0, 17.0])
    assert chart["value"].to_list() == [10.0, 12.0, None, 15.0, 17.0]
    assert chart["missing"].to_list() == [False, False, True, False, False]
    assert chart["variation"].to_list() == ["common_cause"] * 2 + [None] + ["common_cause"] * 2
    assert chart["special_cause"].to_list() == [None] * 5
    # Mean (10 + 12 + 15 + 17) / 4 = 13.5, the missing month left out (not 54 / 5); the moving ranges are
    # 2 and 2, none across the gap (which would add |15 - 12| = 3).
    assert chart["mean"].to_list() == [13.5] * 5
    assert chart["upper"].to_list() == pytest.approx([13.5 + 2.66 * 2] * 5)
    assert chart["lower"].to_list() == pytest.approx([13.5 - 2.66 * 2] * 5)
    assert chart["trial_limits"].to_list() == [True] * 5


def test_a_missing_month_breaks_a_run() -> None:
    assert _labels(_chart([*B, 10.5, 10.5, 10.5, None, 10.5, 10.5, 10.5, 10.5])) == {}
    assert _labels(_chart([*B, *[10.5] * 8])) == _span(12, 19, "shift")


def test_a_missing_month_breaks_a_trend() -> None:
    assert _labels(_chart([*B, 7.0, 7.5, 8.0, None, 8.5, 9.5, 10.5, 11.5])) == {}


def test_a_missing_month_breaks_two_in_three() -> None:
    assert _labels(_chart([*B, 14.0, None, 14.0])) == {}


def test_missing_months_do_not_count_towards_the_baseline() -> None:
    # Twelve values before the 30, one month missing among them: the baseline is those twelve, mean 10.
    # (NHSRplotthedots counts rows, so its baseline would stop one value short, at mean 111 / 11.)
    values: list[float | None] = [11.0, 9.0, 11.0, None, 9.0, 11.0, 9.0, 11.0, 9.0, 11.0, 9.0, 11.0, 9.0, 30.0]
    chart = _chart(values)
    assert chart["mean"].to_list() == [10.0] * 14
    assert chart["upper"][0] == pytest.approx(UPPER)
    assert _labels(chart) == {13: "outside_limits"}
    assert chart["trial_limits"].to_list() == [False] * 14


# --- assurance and summary --------------------------------------------------------------------------------


def test_assurance_both_directions() -> None:
    assert assurance(20.0, 5.0, 15.0, "higher") == "fail"
    assert assurance(2.0, 5.0, 15.0, "higher") == "pass"
    assert assurance(10.0, 5.0, 15.0, "higher") == "hit_and_miss"
    assert assurance(20.0, 5.0, 15.0, "lower") == "pass"
    assert assurance(2.0, 5.0, 15.0, "lower") == "fail"
    assert assurance(10.0, 5.0, 15.0, "lower") == "hit_and_miss"
    # On a limit is inside (NHSRplotthedots compares strictly).
    assert assurance(15.0, 5.0, 15.0, "higher") == "hit_and_miss"
    assert assurance(5.0, 5.0, 15.0, "lower") == "hit_and_miss"


def test_no_assurance_without_a_plan_limits_or_direction() -> None:
    assert assurance(20.0, 5.0, 15.0, "neutral") is None
    assert assurance(None, 5.0, 15.0, "higher") is None
    assert assurance(math.nan, 5.0, 15.0, "higher") is None
    assert assurance(20.0, None, None, "lower") is None
    with pytest.raises(ValueError, match="direction"):
        assurance(20.0, 5.0, 15.0, "up")  # type: ignore[arg-type]


@pytest.mark.parametrize(("tail", "direction", "icon"), [
    (16.0, "higher", "improvement_high"),
    (16.0, "lower", "concern_high"),
    (16.0, "neutral", "neutral_high"),
    (4.0, "higher", "concern_low"),
    (4.0, "lower", "improvement_low"),
    (4.0, "neutral", "neutral_low"),
    (10.5, "higher", "common_cause"),
])
def test_summary_variation_icon(tail: float, direction: str, icon: str) -> None:
    chart = _chart([*B, tail], direction=direction)
    assert spc_summary(chart, direction).variation == icon  # type: ignore[arg-type]


def test_summary_uses_the_last_month_with_a_value() -> None:
    chart = _chart([*B, 16.0, None, None], direction="higher", plan=[20.0] * 14 + [None])
    assert spc_summary(chart, "higher") == SpcSummary(
        variation="improvement_high", assurance="fail", trial_limits=False, missing_months=2)
    assert spc_summary(_chart([*B, 16.0], direction="higher", plan=[2.0] * 13), "higher").assurance == "pass"
    assert spc_summary(_chart([*B, 16.0], direction="lower", plan=[2.0] * 13), "lower").assurance == "fail"
    assert spc_summary(_chart([*B, 16.0], direction="lower", plan=[12.0] * 13), "lower").assurance == "hit_and_miss"
    # No plan at the last point: no assurance, even with a plan earlier.
    no_plan = _chart([*B, 16.0], direction="higher", plan=[20.0] * 12 + [None])
    assert spc_summary(no_plan, "higher").assurance is None
    assert spc_summary(_chart(B, plan=[20.0] * 12), "neutral").assurance is None


def test_summary_of_a_short_and_of_an_empty_chart() -> None:
    assert spc_summary(_chart(B[:5]), "neutral") == SpcSummary("common_cause", None, True, 0)
    assert spc_summary(_chart([None, None]), "higher") == SpcSummary(None, None, True, 2)
    assert spc_summary(spc_chart([], []), "higher") == SpcSummary(None, None, True, 0)


def test_summary_rejects_a_direction_the_chart_was_not_made_with() -> None:
    with pytest.raises(ValueError, match="neutral"):
        spc_summary(_chart([*B, 16.0], direction="higher"), "neutral")
    with pytest.raises(ValueError, match="neutral"):
        spc_summary(_chart([*B, 16.0], direction="neutral"), "higher")


# --- validation -------------------------------------------------------------------------------------------


def test_months_must_be_consecutive_first_of_month_dates() -> None:
    gap = [dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 4, 1)]
    with pytest.raises(ValueError, match="consecutive"):
        spc_chart(gap, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="consecutive"):
        spc_chart(list(reversed(_months(3))), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="consecutive"):
        spc_chart([dt.date(2024, 1, 1)] * 2, [1.0, 2.0])
    with pytest.raises(ValueError, match="first-of-month"):
        spc_chart([dt.date(2024, 1, 1), dt.date(2024, 2, 15)], [1.0, 2.0])
    with pytest.raises(ValueError, match="first-of-month"):
        spc_chart([dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1)], [1.0, 2.0])
    with pytest.raises(ValueError, match="consecutive"):  # December to January is consecutive; this is not
        spc_chart([dt.date(2023, 12, 1), dt.date(2024, 2, 1)], [1.0, 2.0])
    assert spc_chart([dt.date(2023, 12, 1), dt.date(2024, 1, 1)], [1.0, 2.0]).height == 2


def test_a_rebase_month_must_be_one_of_the_months() -> None:
    with pytest.raises(ValueError, match="rebase month 2030-01-01"):
        spc_chart(_months(12), B, rebase=[dt.date(2030, 1, 1)])


def test_other_bad_arguments() -> None:
    with pytest.raises(ValueError, match="values has 11 entries for 12 months"):
        spc_chart(_months(12), B[:11])
    with pytest.raises(ValueError, match="plan has 3 entries"):
        spc_chart(_months(12), B, plan=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="direction"):
        spc_chart(_months(12), B, direction="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        spc_chart(_months(12), [*B[:11], math.inf])
    with pytest.raises(ValueError, match="baseline_points"):
        spc_chart(_months(12), B, rules=SpcRules(baseline_points=1))


# --- NHSRplotthedots' own examples ------------------------------------------------------------------------

# R's rnorm(20) after set.seed(123), the series of NHSRplotthedots tests/testthat/test-ptd_spc_standard.R
# lines 4-10 and test-ptd_spc.R lines 4-8. Its snapshot (tests/testthat/_snaps/ptd_spc_standard.md line 8)
# prints the first five values; all twenty reproduce the snapshot's mean and limits to the printed digits.
RNORM = [-0.56047565, -0.23017749, 1.55870831, 0.07050839, 0.12928774, 1.71506499, 0.46091621, -1.26506123,
         -0.68685285, -0.44566197, 1.22408180, 0.35981383, 0.40077145, 0.11068272, -0.55584113, 1.78691314,
         0.49785048, -1.96661716, 0.70135590, -0.47279143]


def test_nhsrplotthedots_rnorm_limits() -> None:
    # _snaps/ptd_spc_standard.md lines 14-18: mean_col 0.1416238, lpl -3.01138, upl 3.294627, and
    # relative_to_mean of the first 15 points; _snaps/ptd_spc.md line 18: all 20 points common cause.
    chart = _chart(RNORM, direction="higher", rules=ALL)
    assert chart["mean"][0] == pytest.approx(0.1416238, abs=5e-8)
    assert chart["lower"][0] == pytest.approx(-3.01138, abs=5e-6)
    assert chart["upper"][0] == pytest.approx(3.294627, abs=5e-7)
    side = np.sign(np.array(RNORM) - chart["mean"][0]).astype(int).tolist()
    assert side[:15] == [-1, -1, 1, -1, -1, 1, 1, -1, -1, -1, 1, 1, 1, -1, -1]
    assert chart["variation"].to_list() == ["common_cause"] * 20


def test_nhsrplotthedots_outlier_screening() -> None:
    # test-ptd_spc_standard.R lines 24-32 set y[15] <- 10 (row 14 here); _snaps/ptd_spc_standard.md
    # lines 34-36 (screened) and 54-56 (screen_outliers = FALSE).
    values = list(RNORM)
    values[14] = 10.0
    screened = _chart(values, rules=ALL)
    unscreened = _chart(values, rules=SpcRules(baseline_points=1000, screen_outliers=False))
    assert screened["mean"][0] == pytest.approx(0.6694159, abs=5e-8)
    assert screened["lower"][0] == pytest.approx(-2.383666, abs=5e-7)
    assert screened["upper"][0] == pytest.approx(3.722497, abs=5e-7)
    assert unscreened["lower"][0] == pytest.approx(-4.596625, abs=5e-7)
    assert unscreened["upper"][0] == pytest.approx(5.935457, abs=5e-7)
    side = np.sign(np.array(values) - screened["mean"][0]).astype(int).tolist()
    assert side[:14] == [-1, -1, 1, -1, -1, 1, -1, -1, -1, -1, 1, -1, -1, -1]  # line 38


def test_nhsrplotthedots_two_groups_of_ten() -> None:
    # test-ptd_spc.R lines 347-362 split the series into two facets of 10; _snaps/ptd_spc.md lines 58-59:
    # mean 0.0746, lpl -2.60, upl 2.75 and mean 0.209, lpl -3.28, upl 3.70. Limits per group are the same
    # computation whether the groups are facets or rebase groups; both groups are short (trial limits).
    months = _months(20)
    chart = spc_chart(months, RNORM, rebase=[months[10]], rules=ALL)
    first, second = chart.row(0, named=True), chart.row(10, named=True)
    assert (round(first["mean"], 4), round(first["lower"], 2), round(first["upper"], 2)) == (0.0746, -2.60, 2.75)
    assert (round(second["mean"], 3), round(second["lower"], 2), round(second["upper"], 2)) == (0.209, -3.28, 3.70)
    assert chart["trial_limits"].to_list() == [True] * 20
    assert _labels(chart) == {}


def test_nhsrplotthedots_deviations_vignette() -> None:
    # vignettes/deviations.Rmd line 58: the data; the captions at lines 57 and 77: screened UPL 4.6,
    # mean 1.94, LPL -0.72, and (screen_outliers = FALSE, as the MDC Excel tools) UPL 6.95, LPL -3.06;
    # one special cause improvement point (the 10), every other point common cause.
    data = [1.0, 2.0, 1.0, 2.0, 10.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0]
    expected = ["common_cause"] * 4 + ["improvement"] + ["common_cause"] * 13
    for screen, limits in ((True, (-0.72, 1.94, 4.6)), (False, (-3.06, 1.94, 6.95))):
        chart = _chart(data, direction="higher", rules=SpcRules(baseline_points=1000, screen_outliers=screen))
        row = chart.row(0, named=True)
        assert (round(row["lower"], 2), round(row["mean"], 2), round(row["upper"], 2)) == limits
        assert chart["variation"].to_list() == expected


def test_nhsrplotthedots_opposite_sides_two_in_three() -> None:
    # test-ptd_spc_standard.R lines 97-114: 1, -1 alternating for 16 points, the last two set to 5.5 and -5.5:
    # both close to a limit, on opposite sides, so the last two are common cause.
    data = [1.0, -1.0] * 8
    data[14], data[15] = 5.5, -5.5
    chart = _chart(data, direction="higher", rules=ALL)
    assert chart["variation"].to_list()[-2:] == ["common_cause", "common_cause"]
    # And they are close: the screened limits are ±2.66 x 32.5 / 14 = ±6.18, two thirds of that 4.12.
    assert chart["upper"][0] == pytest.approx(2.66 * 32.5 / 14)


@pytest.mark.parametrize(("values", "direction"), [
    ([2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 3.0], "improvement"),  # ptd_seven_point_trend(c(2, 1:7, 3))
    ([2.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 3.0], "concern"),  # ptd_seven_point_trend(c(2, 7:1, 3))
])
def test_nhsrplotthedots_trend_examples(values: list[float], direction: str) -> None:
    # tests/testthat/test-ptd_calculate_point_type.R lines 142-149: the trend ends at the 8th point, so
    # (ptd_part_of_seven_trend, lines 112-115) points 2-8 are its points; here rows 1-7.
    chart = _chart(values, direction="higher")
    assert _labels(chart) == _span(1, 7, "trend")
    assert chart["variation"].to_list()[1:8] == [direction] * 7


@pytest.mark.parametrize(("direction", "expected"), [
    ("higher", ["fail", "pass", "hit_and_miss"]),  # "consistent_fail", "consistent_pass", "inconsistent"
    ("lower", ["pass", "fail", "hit_and_miss"]),
])
def test_nhsrplotthedots_assurance(direction: str, expected: list[str]) -> None:
    # tests/testthat/test-ptd_calculate_assurance_type.R lines 16-50: lpl 1, 5, 1; upl 3, 7, 5; target 4.
    got = [assurance(4.0, lo, hi, direction) for lo, hi in ((1.0, 3.0), (5.0, 7.0), (1.0, 5.0))]  # type: ignore[arg-type]
    assert got == expected


def test_nhsrplotthedots_short_group() -> None:
    # tests/testthat/test-ptd_add_short_group_warnings.R lines 61-81 (with warning_threshold 12): 11 points
    # warn, 12 do not. (The package's own default threshold is 13; linkcare follows the documented 12.)
    assert _chart([1.0, 2.0] * 5 + [1.0])["trial_limits"].to_list() == [True] * 11
    assert _chart([1.0, 2.0] * 6)["trial_limits"].to_list() == [False] * 12


# --- against a slow per-point reference -------------------------------------------------------------------


def _reference(values: list[float]) -> list[str | None]:
    """The labels of a complete series, limits from every point, rule by rule per point in NHSRplotthedots'
    own terms: a point is in a shift (trend) when some window of 7 consecutive points containing it is all on
    one side of the mean (strictly monotone); in a two-in-three when it is close and some window of 3 holding
    it is all on one side with 2 close. With linkcare's screening bound (<=)."""
    n = len(values)
    mean = sum(values) / n
    ranges = [abs(values[i] - values[i - 1]) for i in range(1, n)]
    if not ranges:
        return [None] * n
    amr = sum(ranges) / len(ranges)
    kept = [r for r in ranges if r <= 3.267 * amr]
    amr = sum(kept) / len(kept)
    lpl, upl = mean - 2.66 * amr, mean + 2.66 * amr
    nlpl, nupl = mean - 2 * (2.66 / 3) * amr, mean + 2 * (2.66 / 3) * amr
    side = [(v > mean) - (v < mean) for v in values]
    outside = [v > upl or v < lpl for v in values]
    close = [not o and (v < nlpl or v > nupl) for v, o in zip(values, outside, strict=True)]

    def windows(i: int, width: int) -> list[range]:
        return [range(j, j + width) for j in range(max(0, i - width + 1), min(i, n - width) + 1)]

    out: list[str | None] = []
    for i in range(n):
        shift = any(all(side[k] == side[w[0]] != 0 for k in w) for w in windows(i, 7))
        trend = any(all(values[k] > values[k - 1] for k in w[1:]) or all(values[k] < values[k - 1] for k in w[1:])
                    for w in windows(i, 7))
        two = close[i] and any(abs(sum(side[k] for k in w)) == 3 and sum(close[k] for k in w) >= 2
                               for w in windows(i, 3))
        out.append("outside_limits" if outside[i] else "trend" if trend else "two_in_three" if two
                   else "shift" if shift else None)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40), st.integers(0, 20))
def test_matches_the_per_point_reference(steps: list[int], start: int) -> None:
    # A random walk of small whole steps: ties, points on the mean, long runs and trends are all common.
    values = [float(v) for v in np.cumsum([start, *steps])]
    chart = _chart(values, rules=ALL)
    assert chart["special_cause"].to_list() == _reference(values)


# --- icons ------------------------------------------------------------------------------------------------


def test_words_cover_every_kind_the_engine_returns() -> None:
    assert set(VARIATION_WORDS) == set(VARIATION_ICONS)
    assert set(ASSURANCE_WORDS) == set(ASSURANCES)
    assert ASSURANCE_WORDS["hit_and_miss"] == "the plan lies inside the limits: hitting it will be hit and miss"


@pytest.mark.parametrize(("kind", "colour"), [
    ("common_cause", "#7F7F7F"), ("improvement_high", "#0072C6"), ("improvement_low", "#0072C6"),
    ("concern_high", "#FF6600"), ("concern_low", "#FF6600"), ("neutral_high", "#8000C0"),
    ("neutral_low", "#8000C0"),
])
def test_variation_icons(kind: str, colour: str) -> None:
    svg = variation_icon(kind)
    assert svg.startswith('<svg width="28" height="28"') and svg.endswith("</svg>")
    assert "<title>" in svg and 'role="img"' in svg
    assert colour in svg
    assert "xmlns" not in svg and "http" not in svg
    letter = {"high": ">H<", "low": ">L<"}.get(kind.rsplit("_", 1)[-1])
    assert (letter in svg) if letter else (">H<" not in svg and ">L<" not in svg)


@pytest.mark.parametrize(("kind", "colour", "letter"), [
    ("pass", "#0072C6", ">P<"), ("fail", "#FF6600", ">F<"), ("hit_and_miss", "#7F7F7F", ">?<"),
])
def test_assurance_icons(kind: str, colour: str, letter: str) -> None:
    svg = assurance_icon(kind)
    assert colour in svg and letter in svg and "<title>Assurance: " in svg


def test_icons_are_distinct_and_unknown_kinds_rejected() -> None:
    icons = [variation_icon(k) for k in VARIATION_WORDS] + [assurance_icon(k) for k in (*ASSURANCE_WORDS, None)]
    assert len(set(icons)) == len(icons)
    assert "<text" not in assurance_icon(None) and "<title>No assurance" in assurance_icon(None)
    with pytest.raises(ValueError, match="unknown variation icon"):
        variation_icon("improvement")
    with pytest.raises(ValueError, match="unknown assurance icon"):
        assurance_icon("consistent_pass")
