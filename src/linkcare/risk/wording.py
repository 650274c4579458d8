"""A person's top factors in words, with their own values, as the worklists give them: "3 emergency
admissions in the last 12 months", "Charlson index 4", "receives home care, 14 hours a week".

One table, PHRASES, holds the phrase of every factor a model explains (linkcare.risk.features'
`Feature.factor`). A phrase is a template over the person's feature values:

- `{n}` is the value of the phrase's `value` column (whole numbers without decimals, others to one
  decimal place), `{s}` is "" when that value is 1 and "s" otherwise;
- a `value` with `{w}` reads the count over the look-back window the worklist reports: 365 days
  when the model counts over a year, else its longest window; `{period}` says that window in words
  ("12 months", "90 days"), `{longest}` the longest window;
- `cases` are (flag column, template) pairs, the first flag that is set giving the phrase (a
  person in a nursing home is described as such before the general "receives long-term care");
- `none` is the phrase when the value is 0 (or, for `none_at_longest`, when it is at least the
  longest window: no emergency admission in all the history counted);
- `{weekly}` is ", 14 hours a week" from planned_hours_week, or nothing when no hours are planned;
- a value that is missing gives "<factor> not recorded".

These values are a person's own; they belong in the worklists (files for the data controller,
keyed by pseudonymised ids) and risk.parquet, never in a log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl


@dataclass(frozen=True)
class Phrase:
    """How one factor is said in words, from the person's values (see the module's docstring)."""

    factor: str
    template: str
    value: str | None = None
    none: str | None = None
    cases: tuple[tuple[str, str], ...] = ()
    none_at_longest: bool = False
    whole: bool = False  # {n} rounded down to a whole number (age in years)


PHRASES: tuple[Phrase, ...] = (
    Phrase("age", "aged {n}", "age", whole=True),
    Phrase("sex", "male", "female", cases=(("female", "female"),)),
    Phrase("deprivation", "lives in deprivation decile {n} (1 is the most deprived)", "deprivation_decile"),
    Phrase("ethnicity", "ethnic group {group}", "ethnic_unknown",
           cases=(("ethnic_unknown", "ethnic group not recorded"),)),
    Phrase("emergency admissions", "{n} emergency admission{s} in the last {period}", "emergency_admissions_{w}d",
           none="no emergency admissions in the last {period}"),
    Phrase("planned admissions", "{n} planned admission{s} in the last {period}", "elective_admissions_{w}d",
           none="no planned admissions in the last {period}"),
    Phrase("bed days", "{n} day{s} in hospital in the last {period}", "bed_days_{w}d",
           none="no days in hospital in the last {period}"),
    Phrase("A&E attendances", "{n} A&E attendance{s} in the last {period}", "ae_attendances_{w}d",
           none="no A&E attendances in the last {period}"),
    Phrase("outpatient appointments", "{n} outpatient appointment{s} attended in the last {period}",
           "outpatient_appointments_{w}d", none="no outpatient appointments attended in the last {period}"),
    Phrase("missed outpatient appointments", "{n} outpatient appointment{s} missed in the last {period}",
           "missed_outpatient_{w}d", none="no outpatient appointments missed in the last {period}"),
    Phrase("time since last emergency admission", "last emergency admission {n} day{s} ago", "days_since_emergency",
           none="no emergency admission in the last {longest}", none_at_longest=True),
    Phrase("Charlson comorbidity index", "Charlson index {n}", "charlson"),
    Phrase("Elixhauser comorbidity score", "Elixhauser score {n}", "elixhauser"),
    Phrase("Hospital Frailty Risk Score", "Hospital Frailty Risk Score {n}", "hfrs"),
    Phrase("long-term social care", "no long-term social care", cases=(
        ("long_term_nursing", "lives in a nursing home"),
        ("long_term_residential", "lives in a residential care home"),
        ("long_term_community", "receives home care{weekly}"),
        ("long_term_support", "receives long-term social care{weekly}"))),
    Phrase("social care hours a week", "{n} hour{s} of social care a week planned", "planned_hours_week",
           none="no social care hours planned"),
    Phrase("social care assessments and reviews", "{n} social care assessment{s} or review{s} in the last 12 months",
           "assessments_and_reviews_365d", none="no social care assessments or reviews in the last 12 months"),
    Phrase("social care requests", "{n} request{s} for social care in the last 12 months", "requests_365d",
           none="no requests for social care in the last 12 months"),
    Phrase("reablement", "no reablement in the last 12 months", cases=(
        ("reablement_now", "receiving reablement now"),
        ("reablement_365d", "had reablement in the last 12 months"))),
    Phrase("long-term conditions (GP)", "{n} long-term condition{s} on the GP record", "gp_conditions",
           none="no long-term conditions on the GP record"),
    Phrase("frailty (eFI)", "electronic Frailty Index band {n} (1 mild, 2 moderate, 3 severe)", "efi_band",
           none="fit on the electronic Frailty Index"),
    Phrase("repeat medicines", "{n} repeat medicine{s}", "repeat_medications", none="no repeat medicines"),
    # The consultation windows are fixed (linkcare.risk.features.CONSULTATION_WINDOWS), not the model's.
    Phrase("GP consultations", "{n} GP consultation{s} in the last 12 months", "gp_consultations_365d",
           none="no GP consultations in the last 12 months"),
)
PHRASE_OF: Mapping[str, Phrase] = {p.factor: p for p in PHRASES}
#: Columns a phrase reads that are not model features (a person's ethnic group; assessments and reviews together).
DERIVED = {"assessments_and_reviews_365d": ("assessments_365d", "reviews_365d")}


def period(days: int) -> str:
    """Return a look-back window in words: whole years as months ("12 months"), else days ("90 days")."""
    return f"{days // 365 * 12} months" if days % 365 == 0 else f"{days} days"


def reported_window(windows: Sequence[int]) -> int:
    """Return the look-back window the phrases count over: a year if the model has it, else its longest."""
    return 365 if 365 in windows else max(windows)


def _number(value: float, whole: bool) -> str:
    if whole:
        return str(math.floor(value))
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _is_set(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value > 0


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def describe(factor: str, values: Mapping[str, Any], windows: Sequence[int]) -> str:
    """Return one factor of one person in words, from the person's values (feature columns and
    `ethnic_group`); a factor without a phrase is given by its name."""
    phrase = PHRASE_OF.get(factor)
    if phrase is None:
        return factor
    w = reported_window(windows)
    hours = float(values.get("planned_hours_week") or 0.0)
    fill = {"period": period(w), "longest": period(max(windows)), "group": values.get("ethnic_group") or "",
            "weekly": f", {_number(hours, False)} hour{'' if hours == 1 else 's'} a week" if _is_set(hours) else ""}
    value = None
    if phrase.value is not None:
        value = values.get(phrase.value.replace("{w}", str(w)))
        if _missing(value):
            return f"{factor} not recorded"
    for column, template in phrase.cases:
        if _is_set(values.get(column)):
            return template.format(**fill)
    if value is not None and phrase.none is not None and (
            value >= max(windows) if phrase.none_at_longest else value == 0):
        return phrase.none.format(**fill)
    if value is not None:
        fill |= {"n": _number(value, phrase.whole), "s": "" if value == 1 else "s"}
    return phrase.template.format(**fill)


def phrase_columns(frame: pl.DataFrame, windows: Sequence[int]) -> pl.DataFrame:
    """Return person_id and the columns of the feature frame that phrases read, with those that are
    not features themselves (DERIVED)."""
    w = str(reported_window(windows))
    wanted = {"ethnic_group", "planned_hours_week"}
    for phrase in PHRASES:
        if phrase.value is not None:
            wanted.add(phrase.value.replace("{w}", w))
        wanted.update(column for column, _ in phrase.cases)
    frame = frame.with_columns([pl.sum_horizontal(parts).alias(name) for name, parts in DERIVED.items()
                                if all(p in frame.columns for p in parts)])
    return frame.select("person_id", *sorted(c for c in wanted if c in frame.columns))


def factor_words(scored: pl.DataFrame, frame: pl.DataFrame, windows: Sequence[int]) -> pl.DataFrame:
    """Return person_id and reason_1..k: each of a scored person's top factors (factor_1..k) in words,
    from their values in the feature `frame` (one row per person_id)."""
    factor_columns = sorted(c for c in scored.columns if c.startswith("factor_"))
    values = phrase_columns(frame, windows)
    joined = scored.select("person_id", *factor_columns).join(values, on="person_id", how="left",
                                                               maintain_order="left")
    out: dict[str, list[str]] = {f"reason_{c.removeprefix('factor_')}": [] for c in factor_columns}
    for row in joined.iter_rows(named=True):
        for c in factor_columns:
            out[f"reason_{c.removeprefix('factor_')}"].append(describe(row[c], row, windows))
    return pl.DataFrame({"person_id": scored["person_id"], **out}, schema_overrides=dict.fromkeys(out, pl.String))


__all__ = ["DERIVED", "PHRASES", "PHRASE_OF", "Phrase", "describe", "factor_words", "period", "phrase_columns",
           "reported_window"]
