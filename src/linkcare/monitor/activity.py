"""Who is at risk when, and what each person used and cost in each month.

A person is at risk from their registration date on the spine (the population register) to the day
they die or leave it (deregistration, which is how a move away shows in GP data), both days included.
Only people on the spine are counted: hospital records of visitors and out-of-area patients have no
denominator. An event counts in a month only while its person is at risk, so the activity before a
late registration is left out with the months it happened in.

How each measure is counted (docs/monitor.md gives the same in words for analysts):
- admissions, attendances, assessments, reviews and reablement episodes in the month they start;
  a day case is an elective admission discharged the day it began; outpatient attendances are those
  attended (ATTENDED 5 or 6, or not recorded), first (FIRSTATT 1 or 3) or follow-up (2 or 4);
- emergency bed days are the nights of emergency spells that fall in the month (a spell still open at
  the end of the window runs to it);
- long-term support (CLD service events whose Service_Type begins "Long Term Support") by setting:
  the people receiving it on any day of the month, the planned hours of community support
  (Planned_units_per_week x days / 7), the weeks in residential and in nursing care (days / 7);
- costs: an extract's own cost where it has one (a tariff column on a hospital row; CLD's unit cost
  and cost frequency), else the unit-cost table (linkcare.monitor.costs); a non-elective spell is
  short stay below 2 days' length of stay, long stay from 2.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from linkcare.cohort.dataset import Cohort
from linkcare.cohort.events import ELECTIVE_ADMISSION as ELECTIVE
from linkcare.cohort.events import EMERGENCY_ADMISSION as EMERGENCY
from linkcare.cohort.events import long_term_support, reablement, service_kind
from linkcare.errors import DataError
from linkcare.monitor.costs import UnitCosts
from linkcare.monitor.window import Window, month_end

ATTENDED = ("5", "6")
FIRST = ("1", "3")
FOLLOW_UP = ("2", "4")
SETTINGS = ("community", "residential", "nursing")
#: The activity measures whose costs add up to health and to social care.
HEALTH_COSTED = ("emergency_admissions", "elective_admissions", "ae_attendances", "outpatient_attendances")
CARE_COSTED = ("home_care_hours", "residential_weeks", "nursing_weeks", "reablement_episodes")
#: Weeks in one unit of CLD's cost frequency (an hourly cost is per planned unit of the week).
_WEEKS_PER = {"week": 1.0, "day": 1 / 7, "month": 12 / 52, "year": 1 / 52, "annum": 1 / 52, "annual": 1 / 52}
ACTIVITY_SCHEMA = {"person_id": pl.String(), "month": pl.Date(), "measure": pl.String(), "amount": pl.Float64(),
                   "cost": pl.Float64()}


@dataclass(frozen=True)
class AtRisk:
    """Everyone on the spine: person_id, entry (registration; null: before any date), exit (the day they
    died or left; null: still registered), died (exit is a death)."""

    frame: pl.DataFrame


def at_risk(cohort: Cohort, spine: str) -> AtRisk:
    """Return each spine person's time at risk, from their registration records."""
    regs = (cohort.events.filter((pl.col("source") == spine) & (pl.col("event_type") == "registration"))
            .select("person_id", "start_date", "end_date", "deregistration_date").collect())
    if regs.height == 0:
        raise DataError(f"{cohort.folder / 'events.parquet'}: no registrations of source {spine!r}; "
                        "is the spine source in the config linked into this cohort?")
    people = regs.group_by("person_id").agg(
        pl.when(pl.col("start_date").is_null().any()).then(None).otherwise(pl.col("start_date").min()).alias("entry"),
        pl.col("end_date").min().alias("death"),
        # A person is off the register only when every one of their registrations has ended.
        pl.when(pl.col("deregistration_date").is_null().any()).then(None)
        .otherwise(pl.col("deregistration_date").max()).alias("left"))
    exit_ = pl.min_horizontal("death", "left")
    frame = people.with_columns(exit_.alias("exit"),
                                (pl.col("death").is_not_null() & (pl.col("death") <= exit_)).alias("died"))
    return AtRisk(frame.select("person_id", "entry", "exit", "died").sort("person_id"))


def _days(column: pl.Series, fill: int) -> np.ndarray:
    return column.cast(pl.Int32).fill_null(fill).to_numpy().astype(np.int64)


def person_months(members: pl.DataFrame, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Return, for each month of the window, the people at risk on at least one of its days and the
    person-months at risk (days at risk / days in the month, summed); `members` has entry and exit."""
    entry = _days(members["entry"], -(10**7))
    exit_ = _days(members["exit"], 10**7)
    people = np.zeros(len(window.months), dtype=np.int64)
    months = np.zeros(len(window.months), dtype=np.float64)
    for i, month in enumerate(window.months):
        first = (month - dt.date(1970, 1, 1)).days
        last = (month_end(month) - dt.date(1970, 1, 1)).days
        days = np.clip(np.minimum(exit_, last) - np.maximum(entry, first) + 1, 0, None)
        people[i] = int(np.count_nonzero(days))
        months[i] = float(days.sum()) / (last - first + 1)
    return people, months


def _in_window(window: Window) -> pl.Expr:
    return pl.col("start_date").is_between(window.first, month_end(window.last))


def _while_at_risk(day: pl.Expr) -> pl.Expr:
    return (pl.col("entry").is_null() | (day >= pl.col("entry"))) & (pl.col("exit").is_null() | (day <= pl.col("exit")))


def _point_events(events: pl.LazyFrame, risk: pl.LazyFrame, window: Window, costs: UnitCosts) -> pl.LazyFrame:
    """Return the measures counted in the month an event starts: person_id, month, measure, amount, cost."""
    last_day = month_end(window.last)
    stay = (pl.col("end_date").fill_null(last_day) - pl.col("start_date")).dt.total_days()
    own = pl.col("cost")
    base = (events.filter(_in_window(window)).join(risk, on="person_id", how="inner")
            .filter(_while_at_risk(pl.col("start_date")))
            .select("person_id", "event_type", "start_date", "end_date", "attended", "first_attendance",
                    "service_type", "service_component", "cost",
                    pl.col("start_date").dt.truncate("1mo").alias("month")))
    etype = pl.col("event_type")
    attended = pl.col("attended").is_in(ATTENDED) | pl.col("attended").is_null()
    first = pl.col("first_attendance").is_in(FIRST)
    follow = pl.col("first_attendance").is_in(FOLLOW_UP)
    day_case = (etype == ELECTIVE) & (pl.col("end_date") == pl.col("start_date"))
    reablement_service = (etype == "social_care_service") & reablement()
    c = costs.costs
    rules: list[tuple[str, pl.Expr, pl.Expr | None]] = [
        ("emergency_admissions", etype == EMERGENCY,
         own.fill_null(pl.when(stay < 2).then(c["nel_short_stay"]).otherwise(c["nel_long_stay"]))),
        ("elective_admissions", etype == ELECTIVE,
         own.fill_null(pl.when(day_case).then(c["day_case"]).otherwise(c["elective_inpatient"]))),
        ("day_cases", day_case, own.fill_null(c["day_case"])),
        ("ae_attendances", etype == "ae_attendance", own.fill_null(c["ae_attendance"])),
        ("outpatient_attendances", (etype == "outpatient_appointment") & attended,
         own.fill_null(pl.when(first).then(c["outpatient_first"]).otherwise(c["outpatient_follow_up"]))),
        ("outpatient_first", (etype == "outpatient_appointment") & attended & first, None),
        ("outpatient_follow_up", (etype == "outpatient_appointment") & attended & follow, None),
        ("reablement_episodes", reablement_service, pl.lit(c["reablement_episode"])),
        ("social_care_assessments", etype == "social_care_assessment", None),
        ("social_care_reviews", etype == "social_care_review", None),
    ]
    parts = [base.filter(when).select("person_id", "month", pl.lit(name).alias("measure"),
                                      pl.lit(1.0).alias("amount"),
                                      (cost if cost is not None else pl.lit(None, pl.Float64)).alias("cost"))
             for name, when, cost in rules]
    return pl.concat(parts)


def _by_month(intervals: pl.LazyFrame, window: Window, nights: bool) -> pl.LazyFrame:
    """Return one row per interval and month it touches, with `days` in that month: the nights of a
    stay (from its first day up to, not including, its last), or the days of a service (both ends in)."""
    first, last = window.first, month_end(window.last)
    lo = pl.max_horizontal("start_date", pl.lit(first), pl.col("entry").fill_null(first))
    if nights:
        # The last night of a stay is the one before its discharge day; a death ends it that night.
        day = dt.timedelta(days=1)
        hi = pl.min_horizontal(pl.col("end_date").fill_null(last + day) - day, pl.lit(last),
                               pl.col("exit").fill_null(last))
    else:
        hi = pl.min_horizontal(pl.col("end_date").fill_null(last), pl.lit(last), pl.col("exit").fill_null(last))
    clipped = intervals.with_columns(lo.alias("lo"), hi.alias("hi")).filter(pl.col("hi") >= pl.col("lo"))
    months = clipped.with_columns(pl.date_ranges(pl.col("lo").dt.truncate("1mo"), pl.col("hi").dt.truncate("1mo"),
                                                 "1mo").alias("month")).explode("month")
    month_last = pl.col("month").dt.month_end()
    days = (pl.min_horizontal("hi", month_last) - pl.max_horizontal("lo", "month")).dt.total_days() + 1
    return months.with_columns(days.cast(pl.Float64).alias("days"))


def _spanning_events(events: pl.LazyFrame, risk: pl.LazyFrame, window: Window, costs: UnitCosts) -> pl.LazyFrame:
    """Return bed days and long-term support by month: person_id, month, measure, amount, cost."""
    started = pl.col("start_date").is_not_null() & (pl.col("start_date") <= month_end(window.last))
    stays = (events.filter((pl.col("event_type") == EMERGENCY) & started)
             .join(risk, on="person_id", how="inner").filter(_while_at_risk(pl.col("start_date")))
             .select("person_id", "start_date", "end_date", "entry", "exit"))
    beds = _by_month(stays, window, nights=True).select(
        "person_id", "month", pl.lit("emergency_bed_days").alias("measure"), pl.col("days").alias("amount"),
        pl.lit(None, pl.Float64).alias("cost"))
    kind = service_kind()
    setting = (pl.when(kind.str.contains("nursing")).then(pl.lit("nursing"))
               .when(kind.str.contains("residential")).then(pl.lit("residential"))
               .otherwise(pl.lit("community")))
    services = (events.filter((pl.col("event_type") == "social_care_service") & started
                              & long_term_support())
                .join(risk, on="person_id", how="inner")
                .select("person_id", "start_date", "end_date", "entry", "exit", "planned_units", "unit_cost",
                        "cost_frequency", setting.alias("setting")))
    spans = _by_month(services, window, nights=False).filter(pl.col("days") > 0)
    weeks = pl.col("days") / 7.0
    frequency = pl.col("cost_frequency").str.to_lowercase().fill_null("")
    weekly_own = pl.lit(None, pl.Float64)
    for word, per in _WEEKS_PER.items():
        weekly_own = pl.when(frequency.str.contains(word)).then(pl.col("unit_cost") / per).otherwise(weekly_own)
    weekly_own = pl.when(frequency.str.contains("hour")).then(pl.col("unit_cost") * pl.col("planned_units")
                                                             ).otherwise(weekly_own)
    c = costs.costs
    hours = pl.col("planned_units").fill_null(0.0) * weeks
    amounts = {
        "community": ("home_care_hours", hours, (weekly_own * weeks).fill_null(hours * c["home_care_hour"])),
        "residential": ("residential_weeks", weeks, (weekly_own * weeks).fill_null(weeks * c["residential_week"])),
        "nursing": ("nursing_weeks", weeks, (weekly_own * weeks).fill_null(weeks * c["nursing_week"])),
    }
    parts = [beds]
    for setting_name, (measure, amount, cost) in amounts.items():
        rows = spans.filter(pl.col("setting") == setting_name)
        parts.append(rows.select("person_id", "month", pl.lit(measure).alias("measure"), amount.alias("amount"),
                                 cost.alias("cost")))
        parts.append(rows.select("person_id", "month").unique().select(
            "person_id", "month", pl.lit(f"social_care_people_{setting_name}").alias("measure"),
            pl.lit(1.0).alias("amount"), pl.lit(None, pl.Float64).alias("cost")))
    parts.append(spans.select("person_id", "month").unique().select(
        "person_id", "month", pl.lit("social_care_people").alias("measure"), pl.lit(1.0).alias("amount"),
        pl.lit(None, pl.Float64).alias("cost")))
    return pl.concat(parts)


def _deaths(risk: pl.LazyFrame, window: Window) -> pl.LazyFrame:
    return (risk.filter(pl.col("died") & pl.col("exit").is_between(window.first, month_end(window.last)))
            .select("person_id", pl.col("exit").dt.truncate("1mo").alias("month"), pl.lit("deaths").alias("measure"),
                    pl.lit(1.0).alias("amount"), pl.lit(None, pl.Float64).alias("cost")))


def person_activity(cohort: Cohort, risk: AtRisk, window: Window, costs: UnitCosts) -> pl.DataFrame:
    """Return what each person used in each month of the window while at risk, one row per person, month
    and measure with any: person_id, month, measure, amount (events, bed days, hours, weeks, or 1 for a
    person receiving support) and cost (£ at the price year; null where the measure has none)."""
    people = risk.frame.lazy()
    events = cohort.events
    parts = [_point_events(events, people, window, costs), _spanning_events(events, people, window, costs),
             _deaths(people, window)]
    frame = pl.concat([p.select(list(ACTIVITY_SCHEMA)).cast(ACTIVITY_SCHEMA) for p in parts])  # type: ignore[arg-type]
    # A measure without a cost sums to 0 here; the tables null its cost by the measure's definition.
    return frame.group_by("person_id", "month", "measure").agg(pl.col("amount").sum(), pl.col("cost").sum()).collect()


__all__ = ["ACTIVITY_SCHEMA", "CARE_COSTED", "HEALTH_COSTED", "AtRisk", "at_risk", "person_activity", "person_months"]
