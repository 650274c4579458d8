"""Did it make a difference? The difference-in-differences of an enrolled cohort against its matched
comparison group, with the regression to the mean shown in its own number.

For each enrolled person and their matched comparison (linkcare.monitor.matching), the *before* period
is the 12 months before the enrolment month and the *after* period the months after it, up to 12 and
up to the last month counted; the enrolment month itself is left out (a programme takes effect over its
first weeks, and a month that is half before and half after would blur both). Each period holds the
person's events and their person-months at risk.

- **The estimate** is a Poisson regression (statsmodels GLM, log link) of the events on group, period
  and their interaction, with the log of person-months as the offset and errors clustered by person
  (a comparison person used for several enrolled people is one cluster): the interaction's exponent is
  the rate ratio, with its 95% interval. For bed days and cost, which are not counts, the same model
  is a quasi-Poisson estimate (the Poisson likelihood gives consistent estimates for any non-negative
  outcome and the clustered errors do not assume its variance).
- **Beside it**, the naive change of the enrolled alone (after ÷ before, rates per person-month), and
  the matched group's own change over the same months: the part of the naive change that would have
  happened without the programme, which is the regression to the mean.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl

from linkcare.cohort.dataset import Cohort
from linkcare.config import Config
from linkcare.config.monitor import CohortSpec
from linkcare.disclosure import Disclosure
from linkcare.log import get_logger
from linkcare.monitor.activity import CARE_COSTED, HEALTH_COSTED, AtRisk
from linkcare.monitor.matching import Matched, candidates, match_balanced
from linkcare.monitor.window import Window

log = get_logger("monitor")

#: The outcomes estimated, and the activity measure (and column) each is read from.
OUTCOMES = (("emergency_admissions", "emergency_admissions", "amount"),
            ("ae_attendances", "ae_attendances", "amount"),
            ("emergency_bed_days", "emergency_bed_days", "amount"),
            ("cost_total", None, "cost"))
BEFORE_MONTHS = 12
AFTER_MONTHS = 12


@dataclass(frozen=True)
class Estimate:
    """One outcome's estimate: the rate ratio and its 95% interval, the naive change of the enrolled and
    the matched group's change (after ÷ before); None where it cannot be estimated (no events)."""

    measure: str
    rate_ratio: float | None
    ci_low: float | None
    ci_high: float | None
    naive_change: float | None
    comparison_change: float | None


def unit_months(pairs: pl.DataFrame, risk: AtRisk, window: Window, offsets: list[int]) -> pl.DataFrame:
    """Return one row per unit (an enrolled person, or one use of a comparison person) and month at each of
    `offsets` from its enrolment month that the window holds: unit, person_id, treated, offset, at (the
    month) and exposure (person-months at risk in it)."""
    units = pl.concat([
        pairs.select("person_id", "month", pl.lit(True).alias("treated")),
        pairs.select(pl.col("control_id").alias("person_id"), "month", pl.lit(False).alias("treated"))]
    ).with_row_index("unit")
    grid = units.join(pl.DataFrame({"offset": offsets}), how="cross").with_columns(
        pl.col("month").dt.offset_by(pl.format("{}mo", pl.col("offset"))).alias("at"))
    grid = grid.filter(pl.col("at").is_between(window.first, window.last)).join(
        risk.frame.select("person_id", "entry", "exit"), on="person_id", how="left")
    first, last = pl.col("at"), pl.col("at").dt.month_end()
    days = ((pl.min_horizontal(last, pl.col("exit").fill_null(last))
             - pl.max_horizontal(first, pl.col("entry").fill_null(first))).dt.total_days() + 1).clip(0, None)
    return grid.with_columns((days / ((last - first).dt.total_days() + 1)).alias("exposure"))


def unit_periods(pairs: pl.DataFrame, risk: AtRisk, activity: pl.DataFrame, window: Window) -> pl.DataFrame:
    """Return one row per unit (an enrolled person or a use of a comparison person), period (before/after)
    and outcome: unit, person_id, treated, after, measure, y, exposure (person-months at risk)."""
    offsets = [*range(-BEFORE_MONTHS, 0), *range(1, AFTER_MONTHS + 1)]
    grid = unit_months(pairs, risk, window, offsets).with_columns((pl.col("offset") > 0).alias("after"))
    measures = [m for _, m, _ in OUTCOMES if m is not None]
    costed = list(HEALTH_COSTED + CARE_COSTED)  # the measures cost_total adds up, as monitor.parquet does
    used = activity.filter(pl.col("measure").is_in(measures + costed))
    frames = []
    for name, measure, column in OUTCOMES:
        rows = (used.filter(pl.col("measure") == measure) if measure is not None
                else used.filter(pl.col("measure").is_in(costed)).group_by("person_id", "month").agg(
                    pl.col("cost").sum()))
        rows = rows.select("person_id", pl.col("month").alias("at"), pl.col(column).alias("y"))
        joined = grid.join(rows, on=["person_id", "at"], how="left").with_columns(pl.col("y").fill_null(0.0))
        frames.append(joined.group_by("unit", "person_id", "treated", "after").agg(
            pl.col("y").sum(), pl.col("exposure").sum()).with_columns(pl.lit(name).alias("measure")))
    return pl.concat(frames).filter(pl.col("exposure") > 0).sort("measure", "unit", "after")


def did(periods: pl.DataFrame, measure: str) -> Estimate:
    """Return the difference-in-differences of one outcome (see the module docstring)."""
    import statsmodels.api as sm

    rows = periods.filter(pl.col("measure") == measure)
    rate = _rates(rows)
    naive = _ratio(rate.get((True, True)), rate.get((True, False)))
    comparison = _ratio(rate.get((False, True)), rate.get((False, False)))
    if rows.height == 0 or rows["y"].sum() == 0 or len(rate) < 4 or any(v is None or v == 0 for v in rate.values()):
        return Estimate(measure, None, None, None, naive, comparison)
    treated = rows["treated"].cast(pl.Float64).to_numpy()
    after = rows["after"].cast(pl.Float64).to_numpy()
    x = np.column_stack([np.ones(rows.height), treated, after, treated * after])
    groups = rows["person_id"].cast(pl.Categorical).to_physical().to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels warns about non-integer outcomes (bed days, cost)
        fit = sm.GLM(rows["y"].to_numpy(), x, family=sm.families.Poisson(),
                     offset=np.log(rows["exposure"].to_numpy())).fit(cov_type="cluster",
                                                                      cov_kwds={"groups": groups})
    coef, se = float(fit.params[3]), float(fit.bse[3])
    if not (math.isfinite(coef) and math.isfinite(se)):
        return Estimate(measure, None, None, None, naive, comparison)
    return Estimate(measure, math.exp(coef), math.exp(coef - 1.959964 * se), math.exp(coef + 1.959964 * se),
                    naive, comparison)


def _rates(rows: pl.DataFrame) -> dict[tuple[bool, bool], float]:
    totals = rows.group_by("treated", "after").agg(pl.col("y").sum(), pl.col("exposure").sum())
    return {(r["treated"], r["after"]): r["y"] / r["exposure"] for r in totals.to_dicts() if r["exposure"] > 0}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def event_time(pairs: pl.DataFrame, risk: AtRisk, activity: pl.DataFrame, window: Window,
               measure: str = "emergency_admissions") -> pl.DataFrame:
    """Return both groups' rate per 1,000 person-months by month relative to enrolment (-12 to 12, 0 the
    enrolment month), with the people contributing: offset, group, people, person_months, events, rate."""
    grid = unit_months(pairs, risk, window, list(range(-BEFORE_MONTHS, AFTER_MONTHS + 1))).with_columns(
        pl.when(pl.col("treated")).then(pl.lit("enrolled")).otherwise(pl.lit("matched comparison")).alias("group"))
    counts = activity.filter(pl.col("measure") == measure).select("person_id", pl.col("month").alias("at"),
                                                                    pl.col("amount").alias("y"))
    grid = grid.join(counts, on=["person_id", "at"], how="left").with_columns(pl.col("y").fill_null(0.0))
    return (grid.group_by("offset", "group").agg(
        (pl.col("exposure") > 0).sum().alias("people"), pl.col("exposure").sum().alias("person_months"),
        pl.col("y").sum().alias("events"))
        .with_columns((pl.col("events") / pl.col("person_months") * 1000).alias("rate"))
        .sort("group", "offset"))


def conclusion(measure_words: str, estimate: Estimate) -> str:
    """Return a plain sentence of what can and cannot be concluded for one outcome."""
    e = estimate
    if e.rate_ratio is None or e.ci_low is None or e.ci_high is None:
        return (f"There are too few {measure_words} in the matched groups to estimate the programme's effect on "
                "them; nothing can be concluded.")
    naive = _change_words(e.naive_change)
    comparison = _change_words(e.comparison_change)
    interval = f"a rate ratio of {ratio_text(e.rate_ratio)} ({ratio_text(e.ci_low)}–{ratio_text(e.ci_high)})"
    head = (f"The caseload's {measure_words} {naive} after enrolment, and a matched group of similar people not "
            f"enrolled {comparison} over the same months")
    rtm = ""
    if (e.naive_change is not None and e.comparison_change is not None and e.naive_change < 1
            and e.comparison_change < 1):
        share = (1 - e.comparison_change) / (1 - e.naive_change) if e.naive_change < 1 else 0
        rtm = (": most of the fall is regression to the mean, which is not evidence of an effect" if share >= 0.5
               else ": part of the fall is regression to the mean, which is not evidence of an effect")
    if e.ci_high < 1:
        verdict = (f"the programme's estimated effect is {interval}, a reduction: the interval lies below 1, so the "
                   "data are hard to explain without an effect of the programme (if the matching has balanced the "
                   "groups on what matters)")
    elif e.ci_low > 1:
        verdict = (f"the programme's estimated effect is {interval}, an increase: the interval lies above 1, so "
                   f"the caseload's {measure_words} rose against what the matched group shows would have happened")
    else:
        verdict = (f"the programme's estimated effect is {interval}, which does not show a reduction or an "
                   "increase: the interval includes 1 (no effect)")
    return f"{head}{rtm}; {verdict}."


def ratio_text(value: float | None) -> str:
    """Return a ratio to two decimals, or more (up to four) where two would put it on 1 or the other side."""
    if value is None:
        return "–"
    for places in (2, 3, 4):
        text = f"{value:.{places}f}"
        if not ((value < 1 <= float(text)) or (value > 1 >= float(text))):
            return text
    return text


def _change_words(change: float | None) -> str:
    if change is None:
        return "could not be compared"
    if abs(change - 1) < 0.005:
        return "did not change"
    return f"fell {1 - change:.0%}" if change < 1 else f"rose {change - 1:.0%}"


@dataclass(frozen=True)
class Impact:
    """A matched cohort's comparison: the matching, its balance, an estimate per outcome, both groups by
    month from enrolment, and the conclusion in words per outcome."""

    cohort: str
    matched: Matched
    balance: pl.DataFrame
    estimates: tuple[Estimate, ...]
    event_time: pl.DataFrame
    conclusions: dict[str, str]
    without_follow_up: int
    refined: tuple[str, ...] = ()  # covariates also matched exactly on their thirds, to balance them

    @property
    def max_abs_smd(self) -> float:
        values = [abs(v) for v in self.balance["smd_after"].to_list() if v is not None and math.isfinite(v)]
        return max(values) if values else float("nan")


WORDS = {"emergency_admissions": "emergency admissions", "ae_attendances": "A&E attendances",
         "emergency_bed_days": "emergency bed days", "cost_total": "costs of care"}


def assess(spec: CohortSpec, enrolled: pl.DataFrame, config: Config, cohort: Cohort, risk: AtRisk,
           activity: pl.DataFrame, window: Window) -> Impact:
    """Return the matched comparison of one cohort (`enrolled`: person_id, enrolled date)."""
    last_start = window.last  # an enrolment month needs at least one month after it in the window
    late = enrolled.filter(pl.col("enrolled").dt.truncate("1mo") >= last_start).height
    usable = enrolled.filter(pl.col("enrolled").dt.truncate("1mo") < last_start)
    if late:
        log.warning("cohort %s: %s enrolled in the last month counted have no month after enrolment yet; "
                    "left out of the comparison", spec.name, config.disclosure.show(late))
    practices = (cohort.events.filter(pl.col("event_type") == "registration")
                 .select("person_id", "practice", "start_date").collect()
                 .sort("person_id", "start_date", nulls_last=True).group_by("person_id").last()
                 .select("person_id", "practice"))
    rows = candidates(config, cohort, risk, usable, spec.eligible, spec.pool, practices)
    matched, table, refined = match_balanced(rows)
    periods = unit_periods(matched.pairs, risk, activity, window)
    estimates = tuple(did(periods, name) for name, _, _ in OUTCOMES)
    words = {e.measure: conclusion(WORDS[e.measure], e) for e in estimates}
    impact = Impact(spec.name, matched, table, estimates, event_time(matched.pairs, risk, activity, window), words,
                    late, refined)
    log.info("cohort %s: %s of %s enrolled matched (%s without a match in the calliper); largest |SMD| after "
             "matching %.3f%s", spec.name, config.disclosure.show(matched.pairs.height),
             config.disclosure.show(usable.height), config.disclosure.show(matched.unmatched.height),
             impact.max_abs_smd, f" (also matched on thirds of {', '.join(refined)})" if refined else "")
    if not impact.max_abs_smd < 0.1:
        log.warning("cohort %s: after matching, a standardised mean difference is %.2f (0.1 or more): the groups "
                    "differ on it, so read the estimates with care", spec.name, impact.max_abs_smd)
    return impact


IMPACT_SCHEMA = {"cohort": pl.String, "measure": pl.String, "enrolled_people": pl.Int64, "comparison_people": pl.Int64,
                 "rate_ratio": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "naive_change": pl.Float64,
                 "comparison_change": pl.Float64, "max_abs_smd": pl.Float64, "unmatched_people": pl.Int64,
                 "conclusion": pl.String}


def impact_table(impacts: list[Impact], disclosure: Disclosure) -> pl.DataFrame:
    """Return impact.parquet's rows: one per matched cohort and outcome, counts of people published."""
    rows = []
    for i in impacts:
        enrolled = i.matched.pairs.height
        comparison = i.matched.pairs["control_id"].n_unique()
        for e in i.estimates:
            rows.append({"cohort": i.cohort, "measure": e.measure, "enrolled_people": disclosure.value(enrolled),
                         "comparison_people": disclosure.value(comparison), "rate_ratio": e.rate_ratio,
                         "ci_low": e.ci_low, "ci_high": e.ci_high, "naive_change": e.naive_change,
                         "comparison_change": e.comparison_change, "max_abs_smd": i.max_abs_smd,
                         "unmatched_people": disclosure.value(i.matched.unmatched.height),
                         "conclusion": i.conclusions[e.measure]})
    return pl.DataFrame(rows, schema=IMPACT_SCHEMA)


def balance_table(impacts: list[Impact]) -> pl.DataFrame:
    """Return balance.parquet's rows: per matched cohort and covariate, the means and the standardised mean
    differences before and after matching."""
    schema = {"cohort": pl.String, "covariate": pl.String, "enrolled_mean": pl.Float64, "pool_mean": pl.Float64,
              "matched_mean": pl.Float64, "smd_before": pl.Float64, "smd_after": pl.Float64}
    frames = [i.balance.select(pl.lit(i.cohort).alias("cohort"), pl.all()) for i in impacts]
    return pl.concat(frames).select(list(schema)).cast(schema) if frames else pl.DataFrame(schema=schema)  # type: ignore[arg-type]


__all__ = ["AFTER_MONTHS", "BEFORE_MONTHS", "IMPACT_SCHEMA", "OUTCOMES", "WORDS", "Estimate", "Impact", "assess",
           "balance_table", "conclusion", "did", "ratio_text", "event_time", "impact_table", "unit_months",
           "unit_periods"]
