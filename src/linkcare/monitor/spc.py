"""Statistical process control (SPC) of a monthly series: XmR limits, special-cause rules, and the
variation and assurance icons of NHS England's *Making Data Count* (MDC).

Sources, for every rule below:

- NHS England and NHS Improvement, *Making data count* (May 2018) and its sequel *Making data count:
  Strengthening your decisions*, https://www.england.nhs.uk/publication/making-data-count/ : the XmR chart,
  the four rules (a point outside the limits; a run of 7 on one side of the mean; a trend of 7 rising or
  falling; 2 of 3 points close to a limit), and the variation and assurance icons.
- NHSRplotthedots 0.2.2 (NHS-R Community, https://github.com/nhs-r-community/NHSRplotthedots, read at
  commit 050b07d7eacc011767532732f69b8fd7d6a28fd3), the R package that implements MDC: the exact
  constants and edge cases (R/ptd_spc_standard.R, R/ptd_calculate_point_type.R,
  R/ptd_calculate_assurance_type.R, R/ptd_add_short_group_warnings.R, R/geom_ptd_icon.R).

Where linkcare departs from NHSRplotthedots it says so in a comment marked "Departs from NHSRplotthedots".
Missing months are linkcare's own rule (MDC and NHSRplotthedots assume a complete series): a missing
month has no value, never enters a mean or a moving range, no moving range is taken across it, and it
breaks every run-type rule (shift, trend, two-in-three), which are counted over consecutive months.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import NDArray

Direction = Literal["lower", "higher", "neutral"]  # which way is better

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

# 3 / d2 with d2 = 1.128 (the mean moving range of two normal points, in sigmas), rounded to 2.66 as MDC and
# NHSRplotthedots (R/ptd_spc_standard.R, `limit`) both use it: the limits are mean ± 2.66 × mean moving range.
LIMIT_FACTOR = 2.66
# "Close to a limit" is beyond two thirds of the way from the mean to it; computed as NHSRplotthedots does
# (`limitclose <- 2 * (limit / 3)`) so that a point on the boundary falls on the same side as there.
CLOSE_FACTOR = 2 * (LIMIT_FACTOR / 3)
# D4 for ranges of two points (Nelson 1982): a moving range above 3.267 × the mean moving range is screened
# out of the limits (NHSRplotthedots `screen_outliers`, its default; the MDC Excel tools do not screen).
SCREEN_FACTOR = 3.267

SPECIAL_CAUSES = ("outside_limits", "trend", "two_in_three", "shift")  # highest priority first
VARIATIONS = ("common_cause", "improvement", "concern", "neutral_high", "neutral_low")
VARIATION_ICONS = ("common_cause", "improvement_high", "improvement_low", "concern_high", "concern_low",
                   "neutral_high", "neutral_low")
ASSURANCES = ("pass", "fail", "hit_and_miss")

_DIRECTIONS = ("lower", "higher", "neutral")
_SCHEMA: dict[str, pl.DataType] = {
    "month": pl.Date(), "value": pl.Float64(), "mean": pl.Float64(), "lower": pl.Float64(),
    "upper": pl.Float64(), "special_cause": pl.String(), "variation": pl.String(), "plan": pl.Float64(),
    "rebase_group": pl.Int32(), "trial_limits": pl.Boolean(), "missing": pl.Boolean(),
}


@dataclass(frozen=True)
class SpcRules:
    """The settings of the SPC rules; the defaults are MDC's."""

    baseline_points: int = 12  # limits fixed from the first N points of each rebase group (fix_after_n_points)
    screen_outliers: bool = True  # moving ranges above 3.267 x their mean left out of the limits
    shift_points: int = 7
    trend_points: int = 7
    minimum_points: int = 12  # fewer points in a group than this: "trial limits" (flag, not error)


@dataclass(frozen=True)
class SpcSummary:
    """The headline of one chart: its latest point's variation icon and the assurance against the plan."""

    variation: str | None  # icon of the last non-missing point: one of VARIATION_ICONS
    assurance: str | None  # "pass" | "fail" | "hit_and_miss" | None (no plan at the last point, or neutral)
    trial_limits: bool  # the last non-missing point's limits come from fewer than `minimum_points` points
    missing_months: int


def spc_chart(
    months: Sequence[dt.date],
    values: Sequence[float | None] | NDArray[np.floating],
    direction: Direction = "neutral",
    rebase: Sequence[dt.date] = (),
    plan: Sequence[float | None] | NDArray[np.floating] | None = None,
    rules: SpcRules = SpcRules(),  # noqa: B008 - frozen, so one shared default is safe
) -> pl.DataFrame:
    """Return the SPC chart of a monthly series: one row per month with its limits, special cause and variation.

    `months` are consecutive first-of-month dates; a None or NaN value is a missing month. `rebase` months
    each start a new limits period (rebase group). Columns: month, value, mean, lower, upper, special_cause
    (None or one of SPECIAL_CAUSES, the highest-priority rule the point breaks), variation (one of
    VARIATIONS; None for a missing month), plan, rebase_group, trial_limits, missing. See docs/spc.md.
    """
    month_list = _check_months(months)
    n = len(month_list)
    y = _floats(values, n, "values")
    if np.isinf(y).any():
        raise ValueError("values must be finite numbers or None (missing)")
    target = np.full(n, np.nan) if plan is None else _floats(plan, n, "plan")
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(_DIRECTIONS)}, not {direction!r}")
    _check_rules(rules)

    present = ~np.isnan(y)
    starts = _group_starts(month_list, rebase)
    group = np.zeros(n, dtype=np.int64)
    group[starts[1:]] = 1
    group = np.cumsum(group)

    mean, lower, upper, near_low, near_high, trial = _limits(y, present, starts, rules)

    with np.errstate(invalid="ignore"):
        # NaN limits (no moving range) compare False, so such a group has no outside or close points.
        outside = present & ((y > upper) | (y < lower))
        close = present & ~outside & ((y < near_low) | (y > near_high))
        # NHSRplotthedots' relative_to_mean: -1, 0 (on the mean) or +1; a missing month is 0 too, so it
        # breaks a shift and fails a two-in-three window just as a point on the mean does.
        side = np.where(present, np.sign(y - mean), 0.0)
    side_i = np.nan_to_num(side).astype(np.int64)

    shift = _shift(side_i, group, rules.shift_points)
    trend, trend_dir = _trend(y, present, group, rules.trend_points)
    two = _two_in_three(side_i, close, group)

    label, variation = _classify(outside, trend, two, shift, trend_dir, side_i, present, direction)

    return pl.DataFrame(
        [
            pl.Series("month", month_list, dtype=pl.Date),
            pl.Series("value", y, dtype=pl.Float64, nan_to_null=True),
            pl.Series("mean", mean, dtype=pl.Float64, nan_to_null=True),
            pl.Series("lower", lower, dtype=pl.Float64, nan_to_null=True),
            pl.Series("upper", upper, dtype=pl.Float64, nan_to_null=True),
            pl.Series("special_cause", label.tolist(), dtype=pl.String),
            pl.Series("variation", variation.tolist(), dtype=pl.String),
            pl.Series("plan", target, dtype=pl.Float64, nan_to_null=True),
            pl.Series("rebase_group", group.astype(np.int32), dtype=pl.Int32),
            pl.Series("trial_limits", trial, dtype=pl.Boolean),
            pl.Series("missing", ~present, dtype=pl.Boolean),
        ],
        schema=_SCHEMA,
    )


def _classify(outside: BoolArray, trend: BoolArray, two: BoolArray, shift: BoolArray, trend_dir: IntArray,
              side_i: IntArray, present: BoolArray, direction: Direction) -> tuple[np.ndarray, np.ndarray]:
    """Return each point's special-cause label and its variation (object arrays, None where none)."""
    n = len(present)
    # One label per point, by NHSRplotthedots' priority (ptd_special_cause_type): outside > trend >
    # two-in-three > shift. Assigned lowest priority first so that higher ones overwrite.
    label = np.full(n, None, dtype=object)
    label[shift] = "shift"
    label[two] = "two_in_three"
    label[trend] = "trend"
    label[outside] = "outside_limits"
    special = outside | trend | two | shift
    # A trend point is high or low by the trend's direction, every other special point by its side of
    # the mean (NHSRplotthedots ptd_point_type: "Above|Increasing" is +1, "Below|Decreasing" is -1).
    high_low = np.where(trend & ~outside, trend_dir, side_i)
    variation = np.full(n, None, dtype=object)
    variation[present] = "common_cause"
    if direction == "neutral":
        variation[special & (high_low > 0)] = "neutral_high"
        variation[special & (high_low < 0)] = "neutral_low"
    else:
        good = high_low * (1 if direction == "higher" else -1)
        variation[special & (good > 0)] = "improvement"
        variation[special & (good < 0)] = "concern"
    return label, variation


def spc_summary(chart: pl.DataFrame, direction: Direction) -> SpcSummary:
    """Return the summary of a chart from `spc_chart`: the variation icon and assurance of its last
    non-missing point, whether that point's limits are trial limits, and how many months are missing.

    `direction` must be the one the chart was made with: the icon of an improvement is "high" when higher is
    better and "low" when lower is (NHSRplotthedots R/geom_ptd_icon.R, ptd_get_icons). A chart with no value
    at all has neither icon, and trial limits.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(_DIRECTIONS)}, not {direction!r}")
    missing = int(chart["missing"].sum())
    present = chart.filter(~pl.col("missing"))
    if present.height == 0:
        return SpcSummary(variation=None, assurance=None, trial_limits=True, missing_months=missing)
    # Departs from NHSRplotthedots, which takes the last row whatever its value: a month not yet reported
    # would otherwise blank the headline, so the summary is of the latest month with a value.
    last = present.row(present.height - 1, named=True)
    return SpcSummary(
        variation=_variation_icon(last["variation"], direction),
        assurance=assurance(last["plan"], last["lower"], last["upper"], direction),
        trial_limits=bool(last["trial_limits"]),
        missing_months=missing,
    )


def assurance(plan: float | None, lower: float | None, upper: float | None, direction: Direction) -> str | None:
    """Return whether the process will meet the plan: "pass" (the plan lies beyond the limits on the bad
    side, so every point is expected to meet it), "fail" (beyond them on the good side), "hit_and_miss" (the
    plan lies within the limits, on them included), or None without a plan, limits or a better direction.

    As NHSRplotthedots R/ptd_calculate_assurance_type.R: the plan (its target) compared with the current
    limits, strictly (a plan exactly on a limit is hit and miss).
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(_DIRECTIONS)}, not {direction!r}")
    if direction == "neutral" or any(v is None or math.isnan(v) for v in (plan, lower, upper)):
        return None
    assert plan is not None and lower is not None and upper is not None  # for mypy: checked just above
    if plan > upper:
        return "fail" if direction == "higher" else "pass"
    if plan < lower:
        return "pass" if direction == "higher" else "fail"
    return "hit_and_miss"


def _variation_icon(variation: str | None, direction: Direction) -> str | None:
    """Return the icon kind of a point's variation, given which way is better."""
    if variation is None or variation in ("common_cause", "neutral_high", "neutral_low"):
        if variation is not None and variation != "common_cause" and direction != "neutral":
            raise ValueError(f"a neutral chart's variation {variation!r} with direction {direction!r}")
        return variation
    if direction == "neutral":
        raise ValueError(f"variation {variation!r} cannot come from a chart whose direction is neutral")
    if variation == "improvement":
        return "improvement_high" if direction == "higher" else "improvement_low"
    if variation == "concern":
        return "concern_low" if direction == "higher" else "concern_high"
    raise ValueError(f"unknown variation {variation!r}")


def _check_months(months: Sequence[dt.date]) -> list[dt.date]:
    """Return the months as a list, after checking they are consecutive first-of-month dates."""
    month_list = list(months)
    for m in month_list:
        if not isinstance(m, dt.date) or isinstance(m, dt.datetime) or m.day != 1:
            raise ValueError(f"months must be first-of-month dates, not {m!r}")
    for a, b in zip(month_list, month_list[1:], strict=False):
        if (b.year * 12 + b.month) - (a.year * 12 + a.month) != 1:
            raise ValueError(f"months must be consecutive calendar months: {a} is followed by {b}")
    return month_list


def _floats(values: Sequence[float | None] | NDArray[np.floating], n: int, what: str) -> FloatArray:
    """Return the values as a float array, None as NaN, after checking there is one per month."""
    if isinstance(values, np.ndarray):
        out = np.asarray(values, dtype=np.float64).ravel()
    else:
        out = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if out.shape[0] != n:
        raise ValueError(f"{what} has {out.shape[0]} entries for {n} months")
    return out


def _check_rules(rules: SpcRules) -> None:
    """Raise ValueError if a rule's setting cannot work."""
    if rules.baseline_points < 2:
        raise ValueError("baseline_points must be at least 2 (limits need a moving range)")
    if rules.shift_points < 2 or rules.trend_points < 2:
        raise ValueError("shift_points and trend_points must be at least 2")
    if rules.minimum_points < 1:
        raise ValueError("minimum_points must be at least 1")


def _group_starts(months: list[dt.date], rebase: Sequence[dt.date]) -> IntArray:
    """Return the index of the first month of each rebase group, 0 first, in increasing order."""
    where = {m: i for i, m in enumerate(months)}
    starts = {0}
    for r in rebase:
        if r not in where:
            raise ValueError(f"rebase month {r} is not one of the months")
        # A rebase at the first month starts the first group: a no-op here, so groups are always 0, 1, ...
        # (NHSRplotthedots' cumsum would number every point 1).
        starts.add(where[r])
    return np.array(sorted(starts), dtype=np.int64)


def _limits(
    y: FloatArray, present: BoolArray, starts: IntArray, rules: SpcRules
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, BoolArray]:
    """Return, per month, its group's mean, lower and upper limits, the two "close to a limit" bounds
    (NaN where undefined), and whether the group has trial limits."""
    n = y.shape[0]
    mean, lower, upper, near_low, near_high = (np.full(n, np.nan) for _ in range(5))
    trial = np.zeros(n, dtype=np.bool_)
    bounds = [*starts.tolist(), n]
    for s, e in zip(bounds[:-1], bounds[1:], strict=False):
        positions = np.flatnonzero(present[s:e])
        # Departs from NHSRplotthedots, which counts rows (`n()`) and flags groups of fewer than 13
        # (its default `ptd_spc.warning_threshold` is 13 though its message says "n < 12"): here a group
        # has trial limits when it has fewer than `minimum_points` months with a value.
        trial[s:e] = positions.size < rules.minimum_points
        if positions.size == 0:
            continue
        # The baseline is the first `baseline_points` months with a value (all of them if fewer).
        # Departs from NHSRplotthedots, whose fix_after_n_points counts rows, so missing rows would
        # shorten its baseline.
        base = y[s : s + positions[min(rules.baseline_points, positions.size) - 1] + 1]
        centre = float(np.mean(base[~np.isnan(base)]))
        mean[s:e] = centre
        # A moving range needs two consecutive months with values: a NaN neighbour gives NaN, dropped here.
        mr = np.abs(np.diff(base))
        mr = mr[~np.isnan(mr)]
        if mr.size == 0:
            continue
        amr = float(np.mean(mr))
        if rules.screen_outliers:
            # Departs from NHSRplotthedots, which keeps ranges strictly below 3.267 x the mean (so a flat
            # series loses every range and gets no limits): "above" the bound is screened, the bound kept.
            # At least the smallest range is always kept, since it is at most the mean.
            amr = float(np.mean(mr[mr <= SCREEN_FACTOR * amr]))
        lower[s:e] = centre - LIMIT_FACTOR * amr
        upper[s:e] = centre + LIMIT_FACTOR * amr
        near_low[s:e] = centre - CLOSE_FACTOR * amr
        near_high[s:e] = centre + CLOSE_FACTOR * amr
    return mean, lower, upper, near_low, near_high, trial


def _run_lengths(key: IntArray, group: IntArray) -> IntArray:
    """Return, per position, the length of the run of equal `key` it belongs to (runs end at a group's end)."""
    n = key.shape[0]
    starts = np.ones(n, dtype=np.bool_)
    starts[1:] = (key[1:] != key[:-1]) | (group[1:] != group[:-1])
    run = np.cumsum(starts) - 1
    return np.bincount(run)[run].astype(np.int64)


def _shift(side: IntArray, group: IntArray, length: int) -> BoolArray:
    """Return which points are part of a run of `length` or more on one side of the mean.

    A point on the mean (side 0) or a missing month belongs to no run and ends the one before it. As
    NHSRplotthedots (ptd_seven_point_one_side_mean with ptd_part_of_seven_trend), every point of a long
    enough run is flagged, within one rebase group.
    """
    if side.size == 0:
        return np.zeros(0, dtype=np.bool_)
    return (side != 0) & (_run_lengths(side, group) >= length)


def _trend(y: FloatArray, present: BoolArray, group: IntArray, length: int) -> tuple[BoolArray, IntArray]:
    """Return which points are part of a trend of `length` or more points each higher (or each lower) than
    the one before, and per point the direction (+1 rising, -1 falling, 0 none) of its trend.

    A tie (two equal points) or a missing month breaks a trend; so does a rebase (NHSRplotthedots evaluates
    its rules per rebase group). A point where a rising trend turns into a falling one (or back) belongs to
    both: it takes the later trend's direction, as NHSRplotthedots' "use right side" does.
    """
    n = y.shape[0]
    step = np.zeros(n, dtype=np.int64)  # step[i]: the sign of y[i] - y[i-1], 0 if they cannot be compared
    if n > 1:
        ok = present[1:] & present[:-1] & (group[1:] == group[:-1])
        with np.errstate(invalid="ignore"):
            step[1:] = np.where(ok, np.sign(np.nan_to_num(y[1:] - y[:-1])), 0).astype(np.int64)
    # A trend of `length` points is a run of `length - 1` steps of one sign.
    arrives = (step != 0) & (_run_lengths(step, np.zeros(n, dtype=np.int64)) >= length - 1)
    leaves = np.zeros(n, dtype=np.bool_)  # the step from this point to the next is part of a trend
    leaves[:-1] = arrives[1:]
    next_step = np.zeros(n, dtype=np.int64)
    next_step[:-1] = step[1:]
    # Departs from NHSRplotthedots, whose direction for a trend point is its step to the next point
    # whenever the next point is in any trend: the last point of a rising trend followed by a fall (or a
    # tie) into a second trend is there labelled "Decreasing". Here every point takes its own trend's
    # direction, the later trend's only when it is in two.
    direction = np.where(leaves, next_step, np.where(arrives, step, 0))
    return arrives | leaves, direction


def _two_in_three(side: IntArray, close: BoolArray, group: IntArray) -> BoolArray:
    """Return which points are flagged by "2 of 3 consecutive points close to a limit": the close points
    of every window of three consecutive months, in one rebase group, all on one side of the mean (none on
    it or missing), at least two of them close.

    As NHSRplotthedots (ptd_two_in_three and ptd_part_of_two_in_three): a point outside the limits is not
    "close" (close_to_limits excludes outside_limits), so it neither counts towards the two nor is flagged
    by this rule (it is flagged outside_limits); the third point of the window is not flagged.
    """
    n = side.shape[0]
    flagged = np.zeros(n, dtype=np.bool_)
    if n < 3:
        return flagged
    c = close.astype(np.int64)
    fires = (
        (np.abs(side[:-2] + side[1:-1] + side[2:]) == 3)
        & (c[:-2] + c[1:-1] + c[2:] >= 2)
        & (group[:-2] == group[2:])
    )
    flagged[:-2] |= fires
    flagged[1:-1] |= fires
    flagged[2:] |= fires
    return flagged & close
