"""Monthly snapshots of one synthetic site (`linkcare synth --months N`): the site as it would
arrive at each month end.

The site is generated once, at its reference date, and each snapshot is cut from it by dates:
a record appears in the snapshot of the month end it arrives by, and a snapshot shows what was
known at its month end (discharge and service end dates up to it, deaths up to it, each person's
LSOA and GP practice on it; the GP clinical extract's records dated by then, with the identifiers of
their registration then). On top of that, drawn once for the whole site so that a snapshot is
the same whichever months are written, some event records arrive late (in a later month end's
snapshot than their date's), and some records arrive with a wrong birth month or a blank NHS token
that a later month corrects (MonthlyRates). A record keeps its id in every snapshot it is in, and
its person keeps their person number, so person-ID carry-over can be measured against the truth.

Months are counted as year × 12 + month - 1; a record dated in month m normally arrives by the
end of month m.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl

from linkcare.synth import gp_events
from linkcare.synth.extracts import SOURCE_NAMES, SOURCES, Site
from linkcare.synth.options import MonthlyRates

LATE_MONTHS = np.array([1, 2, 3])
LATE_MONTH_SHARES = np.array([0.7, 0.2, 0.1])
"""How many months late a late record arrives: mostly the month after, some two or three."""
CORRECTION_MONTHS = (1, 3)
"""A correction arrives 1 to 3 months (uniformly) after the record's first version."""
EVENT_SOURCES = ("apc", "ae", "outpatients", "social_care")
"""The extracts whose records can arrive late or with a blank NHS token filled later."""
LATE, BIRTH_MONTH, NHS_TOKEN = "late", "birth_month", "nhs_token"


@dataclass(frozen=True)
class _Columns:
    """Where an extract holds what a snapshot changes: the record key, the date that places the
    record in a month, the NHS token, and the birth month (and how it is written)."""

    key: str
    date: str
    nhs: str | None
    birth_month: str
    month_form: str  # "number" (an integer column), "mmyyyy" (MYDOB) or "yyyy-mm" (ECDS)


_COLUMNS = {
    "gp_registrations": _Columns("Patient_ID", "Registration_Date", None, "Birth_Month", "number"),
    "apc": _Columns("EPIKEY", "ADMIDATE", "Pseudo_NHS_Number", "MYDOB", "mmyyyy"),
    "ae": _Columns("EC_Ident", "Arrival_Date", "Pseudo_NHS_Number", "Birth_Month_Year", "yyyy-mm"),
    "outpatients": _Columns("ATTENDKEY", "APPTDATE", "Pseudo_NHS_Number", "MYDOB", "mmyyyy"),
    "social_care": _Columns("Der_Unique_Record_ID", "Event_Start_Date", "Der_NHS_Number_Traced_Pseudo",
                            "Der_Birth_Month", "number"),
}
# Dates known only once they have happened: set to null in a snapshot of an earlier month end.
_LATER_DATES = {"apc": (("DISDATE", ("DISDATE", "DISDEST")),),
                "social_care": (("Event_End_Date", ("Event_End_Date",)),),
                "gp_registrations": (("Date_Of_Death", ("Date_Of_Death",)),)}


def month_index(day: date) -> int:
    """Return the month of a date as year × 12 + month - 1."""
    return day.year * 12 + day.month - 1


def month_end(index: int) -> date:
    """Return the last day of a month given as year × 12 + month - 1."""
    year, month = divmod(index + 1, 12)
    return date(year, month + 1, 1) - timedelta(days=1)


def is_month_end(day: date) -> bool:
    """Return whether a date is the last day of its month."""
    return (day + timedelta(days=1)).day == 1


def snapshot_months(reference_date: date, months: int) -> list[int]:
    """Return the `months` month indexes ending with the reference date's month, oldest first."""
    last = month_index(reference_date)
    return list(range(last - months + 1, last + 1))


def _month_of(column: str) -> pl.Expr:
    return pl.col(column).dt.year().cast(pl.Int32) * 12 + pl.col(column).dt.month().cast(pl.Int32) - 1


def _month_end_expr(expr: pl.Expr) -> pl.Expr:
    return pl.date(expr // 12, expr % 12 + 1, 1).dt.month_end()


def _read_birth_month(c: _Columns) -> pl.Expr:
    col = pl.col(c.birth_month)
    if c.month_form == "mmyyyy":
        return col.str.slice(0, 2).cast(pl.Int64)
    if c.month_form == "yyyy-mm":
        return col.str.slice(5, 2).cast(pl.Int64)
    return col.cast(pl.Int64)


def _write_birth_month(c: _Columns, month: pl.Expr) -> pl.Expr:
    col, mm = pl.col(c.birth_month), month.cast(pl.String).str.zfill(2)
    if c.month_form == "mmyyyy":
        return mm + col.str.slice(2)
    if c.month_form == "yyyy-mm":
        return col.str.slice(0, 5) + mm
    return month


def _choose_exactly(rng: np.random.Generator, eligible: np.ndarray, k: int) -> np.ndarray:
    """Return a mask of exactly min(k, eligible.sum()) of the eligible items."""
    where = np.flatnonzero(eligible)
    mask = np.zeros(eligible.size, dtype=bool)
    mask[rng.permutation(where)[: min(k, where.size)]] = True
    return mask


@dataclass(frozen=True)
class MonthlyPlan:
    """When each record of a site arrives and what its first version got wrong: per extract, a
    frame in the extract's row order with the record's `month` (of its date), `arrival` (the month
    by whose end it first appears), `revision` (birth_month, nhs_token or null), `fixed` (the
    month its correction arrives, null if none) and `wrong_month` (the birth month it arrived with).
    The GP registrations' frame also has each person's moves and changes of practice."""

    rates: MonthlyRates
    records: dict[str, pl.DataFrame]


def monthly_plan(site: Site, rates: MonthlyRates, rng: np.random.Generator) -> MonthlyPlan:
    """Return when each record of `site` arrives and which records arrive with an error corrected
    later, each share exactly round(rate × records) (of the eligible records)."""
    people = site.truth_persons.select("person", "birth_month", "nhs_token", "previous_lsoa", "move_date",
                                       "previous_practice", "practice_change_date")
    records: dict[str, pl.DataFrame] = {}
    for name in SOURCES:
        c = _COLUMNS[name]
        truth = site.truth_records.filter(pl.col("source") == SOURCE_NAMES[name]).select("record_id", "person")
        frame = (site.extracts[name]
                 .select(pl.col(c.key).alias("record_id"), _month_of(c.date).alias("month"),
                         _read_birth_month(c).alias("recorded_month"),
                         (pl.col(c.nhs) if c.nhs else pl.lit(None, pl.String)).alias("recorded_nhs"))
                 .join(truth, on="record_id", how="left", maintain_order="left")
                 .join(people, on="person", how="left", maintain_order="left"))
        n = frame.height
        month = frame["month"].to_numpy()
        delay = np.zeros(n, dtype=np.int32)
        if name in EVENT_SOURCES:
            late = _choose_exactly(rng, np.ones(n, dtype=bool), int(round(rates.late_arrival * n)))
            delay = np.where(late, rng.choice(LATE_MONTHS, n, p=LATE_MONTH_SHARES), 0).astype(np.int32)
        arrival = month + delay
        true_month = frame["birth_month"].to_numpy()
        right_month = (frame["recorded_month"] == frame["birth_month"]).fill_null(False).to_numpy()
        month_fix = _choose_exactly(rng, right_month, int(round(rates.birth_month_corrected * n)))
        nhs_fix = np.zeros(n, dtype=bool)
        if name in EVENT_SOURCES:
            right_token = (frame["recorded_nhs"] == frame["nhs_token"]).fill_null(False).to_numpy()
            nhs_fix = _choose_exactly(rng, right_token & ~month_fix, int(round(rates.nhs_filled * n)))
        after = rng.integers(CORRECTION_MONTHS[0], CORRECTION_MONTHS[1] + 1, n).astype(np.int32)
        wrong = (true_month - 1 + rng.integers(1, 12, n)) % 12 + 1
        fixed = pl.Series(arrival + after, dtype=pl.Int32).zip_with(pl.Series(month_fix | nhs_fix),
                                                                    pl.Series([None], dtype=pl.Int32))
        plan = pl.DataFrame({
            "record_id": frame["record_id"],
            "person": frame["person"],
            "month": pl.Series(month, dtype=pl.Int32),
            "arrival": pl.Series(arrival, dtype=pl.Int32),
            "revision": pl.Series(np.where(month_fix, BIRTH_MONTH, np.where(nhs_fix, NHS_TOKEN, ""))).replace("", None),
            "fixed": fixed,
            "wrong_month": pl.Series(wrong, dtype=pl.Int64),
        })
        if name == "gp_registrations":
            plan = plan.hstack(frame.select(
                "previous_lsoa", _month_of("move_date").alias("move_month"), "previous_practice",
                _month_of("practice_change_date").alias("change_month")))
        records[name] = plan
    return MonthlyPlan(rates, records)


@dataclass(frozen=True)
class Snapshot:
    """One month end's site: the extracts and truth as they stand then, the records that arrived
    late or were corrected (`revisions`), and the month's changes."""

    month_end: date
    site: Site
    revisions: pl.DataFrame
    changes: dict[str, int]


def snapshot(site: Site, plan: MonthlyPlan, month: int, reference_month: int) -> Snapshot:
    """Return the site as it would arrive at the end of `month` (a month index no later than the
    site's reference month)."""
    extracts: dict[str, pl.DataFrame] = {}
    revisions: list[pl.DataFrame] = []
    kept: list[pl.DataFrame] = []
    changes = {"new_registrations": 0, "deaths": 0, "late_arrivals": 0, "corrections": 0}
    for name in SOURCES:
        c, p = _COLUMNS[name], plan.records[name]
        arrived = pl.col("_arrival") <= month
        pending = (pl.col("_fixed") > month).fill_null(False)
        exprs = [pl.when(pending & (pl.col("_revision") == BIRTH_MONTH))
                 .then(_write_birth_month(c, pl.col("_wrong_month"))).otherwise(pl.col(c.birth_month))
                 .alias(c.birth_month)]
        if c.nhs:
            exprs.append(pl.when(pending & (pl.col("_revision") == NHS_TOKEN)).then(None)
                         .otherwise(pl.col(c.nhs)).alias(c.nhs))
        for when, blanked in _LATER_DATES.get(name, ()):
            later = (_month_of(when) > month).fill_null(False)
            exprs += [pl.when(later).then(None).otherwise(pl.col(b)).alias(b) for b in blanked]
        if name == "gp_registrations":
            exprs += _gp_on(month)
        both = site.extracts[name].hstack(p.select(pl.all().name.prefix("_")))
        extracts[name] = both.filter(arrived).with_columns(exprs).select(site.extracts[name].columns)
        here = p.filter(pl.col("arrival") <= month)
        kept.append(here.select(pl.lit(SOURCE_NAMES[name]).alias("source"), "record_id"))
        revisions.append(_revisions(SOURCE_NAMES[name], here, month))
        changes["late_arrivals"] += here.filter((pl.col("arrival") == month) & (pl.col("month") < month)).height
        changes["corrections"] += here.filter(pl.col("fixed") == month).height
        if name == "gp_registrations":
            changes["new_registrations"] = here.filter(pl.col("arrival") == month).height
            changes["deaths"] = extracts[name].filter(_month_of("Date_Of_Death") == month).height
    gp = site.extracts.get(gp_events.SOURCE)
    if gp is not None:
        extracts[gp_events.SOURCE] = _gp_events_on(gp, extracts["gp_registrations"], month)
        kept.append(extracts[gp_events.SOURCE].select(pl.lit(gp_events.SOURCE).alias("source"),
                                                      pl.col("Event_ID").alias("record_id")))
    records = site.truth_records.join(pl.concat(kept), on=["source", "record_id"], how="semi", maintain_order="left")
    persons = _persons_on(site, records, month, reference_month)
    return Snapshot(month_end(month), Site(extracts, records, persons, site.areas),
                    pl.concat(revisions).sort(["source", "record_id", "revision"]), changes)


def _gp_events_on(gp: pl.DataFrame, registrations: pl.DataFrame, month: int) -> pl.DataFrame:
    """Return the GP clinical extract as it stood at the end of `month`: the records dated by then, of the
    people registered then, with an end date only if it has come, and the identifiers their registration
    has then (the two come from one clinical system, so they change together and arrive together)."""
    end = month_end(month)
    identifiers = [c for c in gp.columns if c in registrations.columns and c != "Patient_ID"]
    return (gp.filter(pl.col("Event_Date") <= end).drop(identifiers)
            .join(registrations.select("Patient_ID", *identifiers), on="Patient_ID", how="inner", maintain_order="left")
            .with_columns(pl.when(pl.col("End_Date") <= end).then(pl.col("End_Date")).alias("End_Date"))
            .select(gp.columns))


def _gp_on(month: int) -> list[pl.Expr]:
    """Return the GP registrations' LSOA and practice as they stood at the end of `month`."""
    moved_later = (pl.col("_move_month") > month).fill_null(False)
    changed_later = (pl.col("_change_month") > month).fill_null(False)
    return [pl.when(moved_later).then(pl.col("_previous_lsoa")).otherwise(pl.col("LSOA")).alias("LSOA"),
            pl.when(changed_later).then(pl.col("_previous_practice")).otherwise(pl.col("Practice_Code"))
            .alias("Practice_Code")]


def _revisions(source: str, here: pl.DataFrame, month: int) -> pl.DataFrame:
    """Return the late and corrected records of one extract's snapshot: when each is dated, when it
    arrived, and when it was corrected (null while the correction is still to come)."""
    late = here.filter(pl.col("arrival") > pl.col("month")).select(
        "record_id", pl.lit(LATE).alias("revision"), "month", "arrival", pl.lit(None, pl.Int32).alias("fixed"))
    fixed = here.filter(pl.col("revision").is_not_null()).select(
        "record_id", "revision", "month", "arrival",
        pl.when(pl.col("fixed") <= month).then(pl.col("fixed")).alias("fixed"))
    return pl.concat([late, fixed]).select(
        pl.lit(source).alias("source"), "record_id", "revision",
        _month_end_expr(pl.col("month")).alias("dated"), _month_end_expr(pl.col("arrival")).alias("arrived"),
        _month_end_expr(pl.col("fixed")).alias("corrected"))


def _persons_on(site: Site, records: pl.DataFrame, month: int, reference_month: int) -> pl.DataFrame:
    """Return truth/persons.parquet at the end of `month`: the people with a record in the snapshot,
    with their life status, LSOA (and its decile) and practice then.

    The true risk, the outcome in the following year and the social-care status are known only at
    the site's reference date: null in the snapshots before it."""
    persons = site.truth_persons.join(records.select("person").unique(), on="person", how="semi",
                                      maintain_order="left")
    if month == reference_month:
        return persons
    moved_later = (_month_of("move_date") > month).fill_null(False)
    changed_later = (_month_of("practice_change_date") > month).fill_null(False)
    died_later = (_month_of("death_date") > month).fill_null(False)
    deciles = site.areas.select(pl.col("LSOA11CD").alias("lsoa"), pl.col("IMD_Decile").cast(pl.Int8).alias("_decile"))
    return (persons.with_columns(
        pl.when(moved_later).then(pl.col("previous_lsoa")).otherwise(pl.col("lsoa")).alias("lsoa"),
        pl.when(moved_later).then(None).otherwise(pl.col("previous_lsoa")).alias("previous_lsoa"),
        pl.when(moved_later).then(None).otherwise(pl.col("move_date")).alias("move_date"),
        pl.when(changed_later).then(pl.col("previous_practice")).otherwise(pl.col("practice")).alias("practice"),
        pl.when(changed_later).then(None).otherwise(pl.col("previous_practice")).alias("previous_practice"),
        pl.when(changed_later).then(None).otherwise(pl.col("practice_change_date")).alias("practice_change_date"),
        pl.when(died_later).then(None).otherwise(pl.col("death_date")).alias("death_date"),
        pl.when(died_later).then(True).otherwise(pl.col("alive_at_reference")).alias("alive_at_reference"),
        pl.lit(None, pl.Float64).alias("risk"), pl.lit(None, pl.Boolean).alias("outcome"),
        pl.lit(None, pl.Int8).alias("care_status"))
        .join(deciles, on="lsoa", how="left", maintain_order="left")
        .with_columns(pl.when(pl.col("resident") & moved_later).then(pl.col("_decile"))
                      .otherwise(pl.col("deprivation_decile")).alias("deprivation_decile"))
        .select(site.truth_persons.columns))


__all__ = ["CORRECTION_MONTHS", "EVENT_SOURCES", "LATE_MONTHS", "LATE_MONTH_SHARES", "MonthlyPlan", "Snapshot",
           "is_month_end", "month_end", "month_index", "monthly_plan", "snapshot", "snapshot_months"]
