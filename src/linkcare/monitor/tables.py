"""The monitor tables: each cohort's measures per month (monitor.parquet) and their SPC charts against
plan (spc.parquet), exact for the charts and then published through the disclosure rule.

A cell (cohort x month x measure) to which 1 to threshold - 1 people contributed is suppressed: its
events, rate and cost are left empty, and so is its point in spc.parquet (the limits, computed from the
exact series, are aggregates and stay). Counts of people and events are rounded as the rule says;
hours and weeks to one decimal. Rates and costs are computed from the exact counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from linkcare.config.monitor import MEASURES, Measure, Plan, measure_direction
from linkcare.disclosure import Disclosure
from linkcare.monitor.activity import CARE_COSTED, HEALTH_COSTED, AtRisk, person_months
from linkcare.monitor.cohorts import Members
from linkcare.monitor.spc import SpcRules, spc_chart, spc_summary
from linkcare.monitor.window import Window

COST_MEASURES = {"cost_health": HEALTH_COSTED, "cost_social_care": CARE_COSTED,
                 "cost_total": HEALTH_COSTED + CARE_COSTED}
#: Activity measures that carry a cost of their own (the others' cost column is null).
COSTED = {*HEALTH_COSTED, *CARE_COSTED, "day_cases"}
MONITOR_COLUMNS = ("cohort", "month", "measure", "unit", "people", "person_months", "events", "rate_per_1000",
                   "cost", "cost_per_person_month", "missing", "suppressed")


def measures_for(kinds: set[str]) -> tuple[Measure, ...]:
    """Return the measures the configured sources can give: a measure drawn from a kind of source the
    config has none of is left out (deaths come from the spine)."""
    return tuple(m for m in MEASURES if not m.kinds or any(k in kinds for k in m.kinds))


def exact_table(members: Sequence[Members], risk: AtRisk, activity: pl.DataFrame, window: Window,
                measures: Sequence[Measure], sources_of: Mapping[str, Sequence[str]]) -> pl.DataFrame:
    """Return every cohort x month x measure with exact counts: people and person_months at risk, events
    (the measure's amount), cost, contributors (people with any of it), missing (a source of the measure
    does not cover the month)."""
    membership = pl.concat([m.frame.select(pl.lit(m.name).alias("cohort"), "person_id") for m in members])
    joined = activity.lazy().join(membership.lazy(), on="person_id", how="inner")
    cells = joined.group_by("cohort", "month", "measure").agg(
        pl.col("amount").sum().alias("events"), pl.col("cost").sum().alias("cost"),
        pl.col("person_id").n_unique().alias("contributors"))
    money = [joined.filter(pl.col("measure").is_in(list(parts))).group_by("cohort", "month").agg(
        pl.lit(name).alias("measure"), pl.lit(None, pl.Float64).alias("events"), pl.col("cost").sum().alias("cost"),
        pl.col("person_id").n_unique().alias("contributors")) for name, parts in COST_MEASURES.items()]
    counted = pl.concat([cells, *[m.select(cells.collect_schema().names()) for m in money]]).collect()
    # Parallel sums of floats add in no fixed order; rounding far below any published digit makes the
    # same inputs give the same bytes.
    counted = counted.with_columns(pl.col("events").round(6), pl.col("cost").round(6))

    frames = []
    for m in members:
        people, months = person_months(m.frame.join(risk.frame, on="person_id", how="inner"), window)
        frames.append(pl.DataFrame({"cohort": m.name, "month": list(window.months), "people": people,
                                    "person_months": months}))
    denominators = pl.concat(frames)
    grid = denominators.join(pl.DataFrame({"measure": [x.name for x in measures],
                                           "unit": [x.unit for x in measures]}), how="cross")
    missing = _missing(window, measures, sources_of)
    out = (grid.join(counted, on=["cohort", "month", "measure"], how="left")
           .join(missing, on=["month", "measure"], how="left")
           .with_columns(pl.col("contributors").fill_null(0), pl.col("missing").fill_null(False)))
    is_money = pl.col("measure").is_in([x.name for x in measures if x.money])
    has_cost = is_money | pl.col("measure").is_in(sorted(COSTED))
    at_risk = pl.col("person_months") > 0
    out = out.with_columns(
        pl.when(is_money).then(None).otherwise(pl.col("events").fill_null(0.0)).alias("events"),
        pl.when(has_cost).then(pl.col("cost").fill_null(0.0)).otherwise(None).alias("cost"))
    out = out.with_columns(
        pl.when(at_risk & ~is_money).then(pl.col("events") / pl.col("person_months") * 1000).alias("rate_per_1000"),
        pl.when(at_risk & has_cost).then(pl.col("cost") / pl.col("person_months")).alias("cost_per_person_month"))
    order = {name: i for i, name in enumerate(x.name for x in measures)}
    cohort_order = {m.name: i for i, m in enumerate(members)}
    return out.sort(pl.col("cohort").replace_strict(cohort_order, return_dtype=pl.Int32),
                    pl.col("measure").replace_strict(order, return_dtype=pl.Int32), "month")


def _missing(window: Window, measures: Sequence[Measure], sources_of: Mapping[str, Sequence[str]]) -> pl.DataFrame:
    rows: list[tuple[dt.date, str]] = []
    for m in measures:
        gone = set().union(*[window.uncovered.get(s, frozenset()) for k in m.kinds for s in sources_of.get(k, ())])
        rows += [(month, m.name) for month in sorted(gone)]
    return pl.DataFrame(rows, schema={"month": pl.Date, "measure": pl.String}, orient="row").with_columns(
        pl.lit(True).alias("missing"))


def spc_value() -> pl.Expr:
    """Return the value an SPC chart plots: the rate per 1,000 person-months, or £ per person-month."""
    return pl.when(pl.col("measure").str.starts_with("cost_")).then(pl.col("cost_per_person_month")).otherwise(
        pl.col("rate_per_1000"))


@dataclass(frozen=True)
class ChartSummary:
    cohort: str
    measure: str
    direction: str
    variation: str | None
    assurance: str | None
    trial_limits: bool
    missing_months: int
    plan: bool
    rebases: tuple[tuple[dt.date, str], ...]


def spc_table(exact: pl.DataFrame, window: Window, plans: Sequence[Plan], trajectories: Mapping[tuple[str, str],
              Mapping[dt.date, float]], rules: SpcRules) -> tuple[pl.DataFrame, list[ChartSummary]]:
    """Return every cohort x measure's SPC chart (exact values) and a summary of each."""
    charts, summaries = [], []
    values = exact.with_columns(pl.when(pl.col("missing")).then(None).otherwise(spc_value()).alias("value"))
    months = list(window.months)
    for (cohort, measure), series in values.group_by("cohort", "measure", maintain_order=True):
        cohort, measure = str(cohort), str(measure)
        series = series.sort("month")
        direction = measure_direction(measure, plans, cohort)
        plan = next((p for p in plans if p.cohort == cohort and p.measure == measure), None)
        declared = plan.rebase if plan is not None else ()
        # A rebase outside the months counted (an old one, or one declared ahead) has no point to start at.
        rebase = tuple((r.month, r.reason) for r in declared if window.first < r.month <= window.last)
        path = trajectories.get((cohort, measure))
        planned = [path.get(m) for m in months] if path else None
        chart = spc_chart(months, series["value"].to_list(), direction,  # type: ignore[arg-type]
                          [r[0] for r in rebase], planned, rules)
        better = pl.col("value") <= pl.col("plan") if direction == "lower" else pl.col("value") >= pl.col("plan")
        chart = chart.with_columns(
            pl.when(pl.col("plan").is_not_null() & pl.col("value").is_not_null()).then(better).alias("plan_met"))
        charts.append(chart.with_columns(pl.lit(cohort).alias("cohort"), pl.lit(measure).alias("measure")))
        summary = spc_summary(chart, direction)  # type: ignore[arg-type]
        summaries.append(ChartSummary(cohort, measure, direction, summary.variation, summary.assurance,
                                      summary.trial_limits, summary.missing_months, planned is not None, rebase))
    table = pl.concat(charts, how="vertical_relaxed")
    first = ["cohort", "measure", "month"]
    return table.select(first + [c for c in table.columns if c not in first]), summaries


def publish(exact: pl.DataFrame, measures: Sequence[Measure], disclosure: Disclosure) -> pl.DataFrame:
    """Return monitor.parquet's rows: the exact table through the disclosure rule (see the module docstring)."""
    counts = [m.name for m in measures if m.count]
    c = pl.col("contributors")
    suppressed = (c > 0) & (c < disclosure.threshold)
    r = disclosure.rounding

    def rounded(x: pl.Expr) -> pl.Expr:
        x = x.round(0).cast(pl.Int64)
        return (x - x % r + pl.when(x % r >= (r + 1) // 2).then(r).otherwise(0)).cast(pl.Float64)

    people_small = (pl.col("people") > 0) & (pl.col("people") < disclosure.threshold)
    people = pl.col("people").cast(pl.Int64)
    out = exact.with_columns(suppressed.alias("suppressed")).with_columns(
        pl.when(people_small).then(None).otherwise(rounded(people).cast(pl.Int64)).alias("people"),
        pl.col("person_months").round(1),
        pl.when(pl.col("suppressed")).then(None)
        .when(pl.col("measure").is_in(counts)).then(rounded(pl.col("events")))
        .otherwise(pl.col("events").round(1)).alias("events"),
        *[pl.when(pl.col("suppressed")).then(None).otherwise(pl.col(k).round(d)).alias(k)
          for k, d in (("rate_per_1000", 3), ("cost", 2), ("cost_per_person_month", 2))])
    return out.select(MONITOR_COLUMNS)


def publish_spc(chart: pl.DataFrame, published: pl.DataFrame) -> pl.DataFrame:
    """Return spc.parquet's rows: a suppressed cell's point left empty."""
    hidden = published.select("cohort", "month", "measure", "suppressed")
    out = chart.join(hidden, on=["cohort", "month", "measure"], how="left")
    return out.with_columns(pl.when(pl.col("suppressed")).then(None).otherwise(pl.col("value")).alias("value")
                            ).drop("suppressed")


def last_against_plan(exact: pl.DataFrame, chart: pl.DataFrame, published: pl.DataFrame,
                      threshold: int) -> pl.DataFrame:
    """Return, per cohort and planned measure, the last month's value (as published: null when suppressed)
    and plan, and the cumulative gap to plan over the planned months so far, in activity (events) and in
    pounds; the gap is null when fewer than `threshold` people contributed over those months."""
    planned = chart.filter(pl.col("plan").is_not_null() & pl.col("value").is_not_null())
    if planned.height == 0:
        return pl.DataFrame()
    shown = published.select("cohort", "month", "measure", pl.col("suppressed"))
    joined = (planned.join(exact.select("cohort", "month", "measure", "person_months", "events", "cost",
                                        "contributors"), on=["cohort", "month", "measure"], how="left")
              .join(shown, on=["cohort", "month", "measure"], how="left"))
    is_money = pl.col("measure").str.starts_with("cost_")
    expected = pl.when(is_money).then(pl.col("plan") * pl.col("person_months")).otherwise(
        pl.col("plan") * pl.col("person_months") / 1000)
    actual = pl.when(is_money).then(pl.col("cost")).otherwise(pl.col("events"))
    # The cost of the gap in activity is priced at the cohort's own mean cost per event over those months.
    per_event = pl.when(pl.col("events").sum() > 0).then(pl.col("cost").sum() / pl.col("events").sum())
    joined = joined.with_columns((actual - expected).alias("gap"))
    enough = pl.col("contributors").sum() >= threshold
    return joined.sort("month").group_by("cohort", "measure", maintain_order=True).agg(
        pl.col("month").last().alias("last_month"),
        pl.when(pl.col("suppressed").last()).then(None).otherwise(pl.col("value").last()).alias("last_value"),
        pl.col("plan").last().alias("last_plan"),
        pl.when(enough).then(pl.col("gap").sum()).alias("gap_activity"),
        pl.when(enough & is_money.first()).then(pl.col("gap").sum())
        .when(enough).then(pl.col("gap").sum() * per_event).alias("gap_pounds"),
        pl.len().alias("planned_months"))


__all__ = ["COSTED", "COST_MEASURES", "MONITOR_COLUMNS", "ChartSummary", "exact_table", "last_against_plan",
           "measures_for", "publish", "publish_spc", "spc_table", "spc_value"]
