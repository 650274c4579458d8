"""Cohorts: who is in each, frozen at enrolment so that later months follow the same people.

- `population`: everyone on the spine, an open cohort (people join at registration and leave at death
  or deregistration); its members have no enrolment date.
- a rule (`where`): the people at risk on the enrolment date who meet every condition then: age (from
  birth year and month), sex, practice (of their latest registration), deprivation decile (of their
  area, by [risk] deprivation), long-term social care support and its setting, and the number of the 17
  Charlson long-term conditions in their hospital diagnoses of the two years before;
- a risk tier or percentile: the people of a `stratify` output (--risk) in that tier or at or above
  that percentile, enrolled on its index date;
- a caseload (`members`): the spine record keys of an MDT's list, each with its own enrolment date.

A frozen cohort is followed over every month of the window, before its enrolment as well as after,
while each member is at risk (before enrolment they cannot die: they were alive to be enrolled, so a
cohort's deaths are read only after it).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from linkcare.cohort.dataset import Cohort
from linkcare.config import Config
from linkcare.config.monitor import POPULATION, CohortRule, CohortSpec, MemberList
from linkcare.errors import ConfigError, DataError
from linkcare.log import get_logger
from linkcare.monitor.activity import AtRisk
from linkcare.risk.comorbidity import charlson_conditions
from linkcare.risk.features import build_features
from linkcare.sources.dates import read_date

log = get_logger("monitor")
#: The look-back for long-term conditions in hospital diagnoses.
LTC_LOOKBACK_DAYS = 730


@dataclass(frozen=True)
class Members:
    """One cohort's members: person_id and enrolled (null for the open population cohort); `notes`
    say, in counts only, what was left out and why."""

    name: str
    frame: pl.DataFrame
    enrolled: dt.date | None
    definition: str
    notes: tuple[str, ...] = ()


def population(risk: AtRisk) -> Members:
    frame = risk.frame.select("person_id", pl.lit(None, pl.Date).alias("enrolled"))
    return Members(POPULATION, frame, None, "everyone on the spine while registered (an open cohort)")


def at_risk_on(risk: AtRisk, day: dt.date) -> pl.DataFrame:
    """Return the person_id of everyone at risk on `day`."""
    f = risk.frame
    return f.filter((pl.col("entry").is_null() | (pl.col("entry") <= day))
                    & (pl.col("exit").is_null() | (pl.col("exit") >= day))).select("person_id")


def build_members(spec: CohortSpec, config: Config, cohort: Cohort, risk: AtRisk, risk_dir: Path | None,
                  spine: str) -> Members:
    """Return a cohort's frozen members as its spec defines them."""
    if spec.members is not None:
        return _caseload(spec.name, spec.members, cohort, risk, spine, config)
    enrolled = spec.enrolled
    chosen: pl.DataFrame | None = None
    words: list[str] = []
    if spec.uses_risk:
        scored, index_date = _risk_output(spec, risk_dir)
        enrolled = enrolled or index_date
        chosen = scored
        words.append(f"risk tier {spec.tier!r}" if spec.tier is not None else
                     f"risk percentile {spec.percentile_min:g} and above")
    enrolled = enrolled or config.reference_date
    people = at_risk_on(risk, enrolled)
    if chosen is not None:
        people = people.join(chosen, on="person_id", how="semi")
    if spec.rule is not None:
        people = _apply_rule(spec.rule, config, cohort, people, enrolled)
        words.append(describe_rule(spec.rule))
    frame = people.select("person_id", pl.lit(enrolled).alias("enrolled")).sort("person_id")
    return Members(spec.name, frame, enrolled, f"{'; '.join(words)}, as of {enrolled.isoformat()}")


def describe_rule(rule: CohortRule) -> str:
    """Return a rule in words (no record values: only what the config says)."""
    parts = []
    if rule.age_min is not None or rule.age_max is not None:
        if rule.age_max is None:
            parts.append(f"aged {rule.age_min} and over")
        elif rule.age_min is None:
            parts.append(f"aged {rule.age_max} and under")
        else:
            parts.append(f"aged {rule.age_min} to {rule.age_max}")
    if rule.sex is not None:
        parts.append({"F": "female", "M": "male"}[rule.sex])
    if rule.practices is not None:
        parts.append(f"registered at {len(rule.practices)} practice(s)")
    if rule.deprivation is not None:
        parts.append(f"living in deprivation decile(s) {', '.join(map(str, rule.deprivation))}")
    if rule.social_care is not None:
        parts.append("receiving long-term support" + ("" if rule.social_care == "long_term_support"
                                                      else f" ({rule.social_care})"))
    if rule.ltc_min is not None:
        parts.append(f"with {rule.ltc_min} or more long-term conditions")
    if rule.emergency_admissions_min is not None:
        parts.append(f"with {rule.emergency_admissions_min} or more emergency admissions in the 12 months before")
    return ", ".join(parts) or "everyone"


def _apply_rule(rule: CohortRule, config: Config, cohort: Cohort, people: pl.DataFrame,
                day: dt.date) -> pl.DataFrame:
    features = build_features(config, cohort, day, (365,)).frame.join(people, on="person_id", how="semi")
    conditions: list[pl.Expr] = []
    if rule.age_min is not None:
        conditions.append(pl.col("age").floor() >= rule.age_min)
    if rule.age_max is not None:
        conditions.append(pl.col("age").floor() <= rule.age_max)
    if rule.sex is not None:
        conditions.append(pl.col("sex") == {"F": "female", "M": "male"}[rule.sex])
    if rule.practices is not None:
        conditions.append(pl.col("practice").is_in(list(rule.practices)))
    if rule.deprivation is not None:
        if config.risk.deprivation is None:
            raise ConfigError(f"{config.path}: monitor.cohorts: a `where.deprivation` rule needs the deprivation "
                              "lookup; add [risk] deprivation = { path = ..., area = ..., decile = ... }")
        conditions.append(pl.col("deprivation_decile").is_in([float(d) for d in rule.deprivation]))
    if rule.social_care is not None:
        column = "long_term_support" if rule.social_care == "long_term_support" else f"long_term_{rule.social_care}"
        conditions.append(pl.col(column) > 0)
    if rule.ltc_min is not None:
        features = features.join(conditions_at(cohort, features.select("person_id"), day), on="person_id",
                                 how="left")
        conditions.append(pl.col("conditions").fill_null(0) >= rule.ltc_min)
    if rule.emergency_admissions_min is not None:
        conditions.append(pl.col("emergency_admissions_365d") >= rule.emergency_admissions_min)
    return features.filter(pl.all_horizontal(conditions) if conditions else pl.lit(True)).select("person_id")


def conditions_at(cohort: Cohort, people: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Return person_id and `conditions`, the Charlson long-term conditions in the hospital diagnoses of
    `people` in the LTC_LOOKBACK_DAYS before `day`, for those with any diagnosis then."""
    start = day - dt.timedelta(days=LTC_LOOKBACK_DAYS)
    codes = (cohort.events.filter(pl.col("start_date").is_between(start, day, closed="left")
                                  & pl.col("diagnoses").is_not_null())
             .join(people.lazy(), on="person_id", how="semi")
             .select("person_id", pl.col("diagnoses").alias("code")).explode("code")
             .filter(pl.col("code").is_not_null()).collect())
    return charlson_conditions(codes)


def _risk_output(spec: CohortSpec, risk_dir: Path | None) -> tuple[pl.DataFrame, dt.date]:
    """Return the person_id of a stratify output's people in the cohort's tier or percentile, and its index date."""
    key = "tier" if spec.tier is not None else "percentile_min"
    if risk_dir is None:
        raise ConfigError(f"monitor.cohorts: cohort {spec.name!r} is defined by `{key}`, which needs a stratify "
                          "output; give it with --risk DIR")
    table, manifest = Path(risk_dir) / "risk.parquet", Path(risk_dir) / "manifest.json"
    try:
        scored = pl.read_parquet(table, columns=["person_id", "tier", "percentile"])
        index_date = dt.date.fromisoformat(json.loads(manifest.read_text(encoding="utf-8"))["index_date"])
    except (OSError, KeyError, ValueError, pl.exceptions.PolarsError):
        raise DataError(f"{risk_dir}: risk.parquet or manifest.json is missing or unreadable; give --risk the "
                        "output folder of `linkcare stratify`") from None
    if spec.tier is not None:
        tiers = sorted(scored["tier"].drop_nulls().unique().to_list())
        if spec.tier not in tiers:
            raise ConfigError(f"monitor.cohorts: cohort {spec.name!r}: tier {spec.tier!r} is not a tier of "
                              f"{table}; its tiers are: {', '.join(map(repr, tiers))}")
        scored = scored.filter(pl.col("tier") == spec.tier)
    if spec.percentile_min is not None:
        scored = scored.filter(pl.col("percentile") >= spec.percentile_min)
    return scored.select("person_id"), index_date


def _caseload(name: str, spec: MemberList, cohort: Cohort, risk: AtRisk, spine: str, config: Config) -> Members:
    """Return a caseload file's people, each enrolled on their own date (the earliest, if listed twice)."""
    try:
        raw = pl.read_csv(spec.path, infer_schema=False)
    except FileNotFoundError:
        raise DataError(f"{spec.path}: caseload file not found (monitor.cohorts {name!r} members)") from None
    except (OSError, pl.exceptions.PolarsError):
        raise DataError(f"{spec.path}: cannot be read as a CSV file (monitor.cohorts {name!r} members)") from None
    missing = [c for c in (spec.key, spec.date) if c not in raw.columns]
    if missing:
        raise DataError(f"{spec.path}: has no column {', '.join(map(repr, missing))}; set `key` and `date` of cohort "
                        f"{name!r} to its columns of spine record keys and enrolment dates")
    frame = raw.select(pl.col(spec.key).str.strip_chars().alias("record_id"),
                       read_date(spec.date, spec.date_format, None).alias("enrolled"))
    blank = frame.filter(pl.col("record_id").is_null() | (pl.col("record_id") == "")).height
    unread = frame.filter(pl.col("enrolled").is_null()).height
    if blank or unread:
        what = [f"{blank} row(s) have no key in {spec.key}"] if blank else []
        if unread:
            what.append(f"{unread} row(s) have no readable date in {spec.date} (YYYY-MM-DD, or set date_format)")
        raise DataError(f"{spec.path}: {'; '.join(what)}; fix them or remove those rows")
    as_of = config.reference_date
    late = frame.filter(pl.col("enrolled") > as_of).height
    if late:
        raise DataError(f"{spec.path}: column {spec.date}: {late} row(s) are enrolled after the as-of date "
                        f"{as_of.isoformat()}; check the dates, or run with a later --as-of")
    index = (pl.scan_parquet(cohort.folder / "person_index.parquet")
             .filter(pl.col("source") == spine).select("record_id", "person_id").collect())
    found = frame.join(index, on="record_id", how="left")
    unmatched = found.filter(pl.col("person_id").is_null()).height
    notes = []
    if unmatched == found.height:
        raise DataError(f"{spec.path}: column {spec.key}: none of its {found.height} key(s) is a record of the spine "
                        f"source {spine!r} in this cohort dataset; `key` must name the spine's record keys")
    if unmatched:
        notes.append(f"{config.disclosure.show(unmatched)} caseload row(s) name no spine record and are left out")
        log.warning("cohort %s: %s of %s caseload rows name no record of %s in this cohort dataset; left out",
                    name, f"{unmatched:,}", f"{found.height:,}", spine)
    members = (found.drop_nulls("person_id").group_by("person_id").agg(pl.col("enrolled").min())
               .join(risk.frame.select("person_id", "entry", "exit"), on="person_id", how="inner"))
    off = members.filter((pl.col("entry").is_not_null() & (pl.col("entry") > pl.col("enrolled")))
                         | (pl.col("exit").is_not_null() & (pl.col("exit") < pl.col("enrolled")))).height
    if off:
        notes.append(f"{config.disclosure.show(off)} member(s) were not registered on their enrolment date (kept, "
                     "counted while registered)")
    frame_out = members.select("person_id", "enrolled").sort("person_id")
    return Members(name, frame_out, None, f"caseload {spec.path.name}, each enrolled on their own date", tuple(notes))


__all__ = ["LTC_LOOKBACK_DAYS", "Members", "at_risk_on", "build_members", "conditions_at", "describe_rule",
           "population"]
