"""The `[monitor]` table of a site config and its `[[monitor.cohorts]]` and `[[monitor.plans]]`: which
cohorts `linkcare monitor` follows, from which month, at what prices, against which plans. Checked with
the rest of the config, every problem collected (see linkcare.config.load); the keys are documented in
docs/config.md and docs/monitor.md.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linkcare.config.toml import (
    KeyProblems,
    expect_choice,
    expect_text,
    expect_whole,
    is_number,
    key_path,
    open_table,
    show_value,
    type_name,
)

MONITOR_KEYS = ("start", "baseline_months", "screen_outliers", "costs", "price_year", "price_index",
                "cohorts", "plans")
COHORT_KEYS = ("name", "where", "enrolled", "members", "key", "date", "date_format", "tier", "percentile_min",
               "compare", "eligible", "pool")
WHERE_KEYS = ("age_min", "age_max", "sex", "practice", "deprivation", "social_care", "ltc_min",
              "emergency_admissions_min")
#: Where a matched cohort's comparison pool comes from.
POOLS = ("other_practices", "all_practices")
PLAN_KEYS = ("cohort", "measure", "direction", "trajectory", "rebase")
#: The whole-population cohort, always there.
POPULATION = "population"
#: The kinds of long-term social care support a `where.social_care` rule may ask for.
SOCIAL_CARE_RULES = ("long_term_support", "community", "residential", "nursing")
DIRECTIONS = ("lower", "higher", "neutral")
COMPARE = ("none", "matched")
#: Price years are financial years, as the NHS and PSSRU state them.
PRICE_YEAR = re.compile(r"^(\d{4})/(\d{2})$")
_NAME = re.compile(r"^[a-z0-9_]+$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")


@dataclass(frozen=True)
class Measure:
    """One measure `monitor` counts: its name (the contract), what its amount is, the kinds of source
    it comes from (a month those sources do not cover is missing), whether it is a count of events
    or people (so published through the disclosure rule), whether it is money, and which way is better
    when no plan says."""

    name: str
    unit: str
    kinds: tuple[str, ...]
    count: bool = True
    money: bool = False
    direction: str = "neutral"


_HOSPITAL = ("apc", "ae", "outpatients")
_CARE = ("social_care",)
#: Every measure, in the order reports show them. The names are the contract of monitor.parquet.
MEASURES: tuple[Measure, ...] = (
    Measure("emergency_admissions", "admissions", ("apc",), direction="lower"),
    Measure("emergency_bed_days", "bed days", ("apc",), direction="lower"),
    Measure("ae_attendances", "attendances", ("ae",), direction="lower"),
    Measure("elective_admissions", "admissions", ("apc",)),
    Measure("day_cases", "day cases", ("apc",)),
    Measure("outpatient_attendances", "attendances", ("outpatients",)),
    Measure("outpatient_first", "attendances", ("outpatients",)),
    Measure("outpatient_follow_up", "attendances", ("outpatients",)),
    Measure("social_care_people", "people", _CARE),
    Measure("social_care_people_community", "people", _CARE),
    Measure("social_care_people_residential", "people", _CARE),
    Measure("social_care_people_nursing", "people", _CARE),
    Measure("home_care_hours", "hours", _CARE, count=False),
    Measure("residential_weeks", "weeks", _CARE, count=False),
    Measure("nursing_weeks", "weeks", _CARE, count=False),
    Measure("reablement_episodes", "episodes", _CARE),
    Measure("social_care_assessments", "assessments", _CARE),
    Measure("social_care_reviews", "reviews", _CARE),
    Measure("deaths", "deaths", (), direction="lower"),
    Measure("cost_health", "£", _HOSPITAL, count=False, money=True),
    Measure("cost_social_care", "£", _CARE, count=False, money=True),
    Measure("cost_total", "£", (*_HOSPITAL, *_CARE), count=False, money=True),
)
MEASURE_NAMES: tuple[str, ...] = tuple(m.name for m in MEASURES)
MEASURE_BY_NAME: Mapping[str, Measure] = {m.name: m for m in MEASURES}


@dataclass(frozen=True)
class CohortRule:
    """A rule over people as of the enrolment date; None: no condition on that attribute."""

    age_min: int | None = None
    age_max: int | None = None
    sex: str | None = None
    practices: tuple[str, ...] | None = None
    deprivation: tuple[int, ...] | None = None
    social_care: str | None = None
    ltc_min: int | None = None
    emergency_admissions_min: int | None = None  # in the 12 months before


@dataclass(frozen=True)
class MemberList:
    """A caseload file: spine record keys and their enrolment dates."""

    path: Path
    key: str
    date: str
    date_format: str | None = None


@dataclass(frozen=True)
class CohortSpec:
    """One `[[monitor.cohorts]]` table: by a rule (`where`, and/or a risk `tier` or `percentile_min`
    from a stratify output), or by a `members` list. `enrolled` None: the as-of date (rule cohorts) or
    the stratify output's index date (risk cohorts)."""

    name: str
    rule: CohortRule | None = None
    members: MemberList | None = None
    tier: str | None = None
    percentile_min: float | None = None
    enrolled: dt.date | None = None
    compare: str = "none"
    #: for compare = "matched": the rule the enrolled met (the pool is the people who met it and were not
    #: enrolled), and where the pool comes from (practices with no enrolled member, or any practice)
    eligible: CohortRule | None = None
    pool: str = "other_practices"

    @property
    def uses_risk(self) -> bool:
        return self.tier is not None or self.percentile_min is not None


@dataclass(frozen=True)
class Rebase:
    month: dt.date
    reason: str


@dataclass(frozen=True)
class Plan:
    """A trajectory for one cohort and measure: a value per month (per 1,000 person-months; £ per
    person-month for a cost measure), from the config or a CSV of month,value, and which way is better;
    `rebase` the months at which SPC limits are recalculated, with the site's reason."""

    cohort: str
    measure: str
    direction: str
    trajectory: Mapping[dt.date, float] | None = None
    trajectory_path: Path | None = None
    rebase: tuple[Rebase, ...] = ()


@dataclass(frozen=True)
class MonitorSettings:
    """The `[monitor]` settings, resolved."""

    start: dt.date | None = None
    baseline_months: int = 12
    screen_outliers: bool = True
    costs: Path | None = None
    price_year: str | None = None
    price_index: Mapping[str, float] = field(default_factory=dict)
    cohorts: tuple[CohortSpec, ...] = ()
    plans: tuple[Plan, ...] = ()


def check_monitor(value: Any, base: Path, p: KeyProblems) -> MonitorSettings | None:
    """Return the `[monitor]` settings (None when the table is absent), recording every problem in `p`."""
    value = open_table(value, "monitor", MONITOR_KEYS, p)
    if value is None:
        return None
    out: dict[str, Any] = {}
    if "start" in value:
        out["start"] = parse_month(value["start"], "monitor.start", p)
    if "baseline_months" in value:
        # Making Data Count: limits need a baseline of at least 12 points (NHSRplotthedots enforces it too).
        months = expect_whole(value["baseline_months"], "monitor.baseline_months", 12, "baseline_months = 12", p)
        out["baseline_months"] = months if months is not None else 12
    if "screen_outliers" in value:
        if isinstance(value["screen_outliers"], bool):
            out["screen_outliers"] = value["screen_outliers"]
        else:
            p.add("monitor.screen_outliers", f"must be true or false, not {type_name(value['screen_outliers'])}")
    if "costs" in value:
        text = expect_text(value["costs"], "monitor.costs", 'costs = "unit_costs.csv"', p)
        out["costs"] = None if text is None else (base / text).resolve()
    if "price_year" in value:
        out["price_year"] = _price_year(value["price_year"], "monitor.price_year", p)
    if "price_index" in value:
        out["price_index"] = _price_index(value["price_index"], p)
    cohorts = _cohorts(value.get("cohorts", []), base, p)
    out["cohorts"] = cohorts
    out["plans"] = _plans(value.get("plans", []), base, {c.name for c in cohorts}, p)
    return MonitorSettings(**{k: v for k, v in out.items() if v is not None or k in ("start", "costs")})


def parse_month(value: Any, key: str, p: KeyProblems) -> dt.date | None:
    """Return the first day of a month written "YYYY-MM" (or a TOML date, taken as its month)."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.replace(day=1)
    if isinstance(value, str) and _MONTH.match(value) and 1 <= int(value[5:]) <= 12:
        return dt.date(int(value[:4]), int(value[5:]), 1)
    p.add(key, f"{show_value(value)} is not a month; write it as \"YYYY-MM\", e.g. \"2023-04\"")
    return None


def _date(value: Any, key: str, p: KeyProblems) -> dt.date | None:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    p.add(key, f"{show_value(value)} is not a date; write it as \"YYYY-MM-DD\", e.g. \"2025-04-01\"")
    return None


def _price_year(value: Any, key: str, p: KeyProblems) -> str | None:
    match = PRICE_YEAR.match(value) if isinstance(value, str) else None
    if match and (int(match[1]) + 1) % 100 == int(match[2]):
        return str(value)
    p.add(key, f"{show_value(value)} is not a financial year; write it as \"YYYY/YY\", e.g. \"2024/25\"")
    return None


def _price_index(value: Any, p: KeyProblems) -> dict[str, float] | None:
    example = 'price_index = { "2023/24" = 100.0, "2024/25" = 103.1 }'
    if not isinstance(value, dict) or not value:
        p.add("monitor.price_index", f"must be a table of financial year = index, e.g. {example}")
        return None
    out: dict[str, float] = {}
    for year, index in value.items():
        key = key_path("monitor.price_index", year)
        if _price_year(year, key, p) is None:
            continue
        if not (is_number(index) and index > 0):
            p.add(key, f"must be a number above 0, e.g. {example}")
            continue
        out[year] = float(index)
    return out


def _array_of_tables(value: Any, key: str, example: str, p: KeyProblems) -> list[dict[str, Any]]:
    if isinstance(value, list) and all(isinstance(t, dict) for t in value):
        return value
    p.add(key, f"must be an array of tables: {example}")
    return []


def _cohorts(value: Any, base: Path, p: KeyProblems) -> tuple[CohortSpec, ...]:
    tables = _array_of_tables(value, "monitor.cohorts", '[[monitor.cohorts]] with name = "over_75"', p)
    out: list[CohortSpec] = []
    for i, t in enumerate(tables):
        where = f"monitor.cohorts[{i}]"
        p.unknown_keys(t, COHORT_KEYS, where)
        spec = _cohort(t, where, base, p)
        if spec is not None:
            out.append(spec)
    names = [c.name for c in out]
    for name in sorted({n for n in names if names.count(n) > 1}):
        p.add("monitor.cohorts", f"the cohort name {name!r} is used {names.count(name)} times; give each its own")
    if POPULATION in names:
        p.add("monitor.cohorts", f"{POPULATION!r} is the whole-population cohort monitor always adds; "
              "choose another name")
    return tuple(out)


def _cohort(t: dict[str, Any], where: str, base: Path, p: KeyProblems) -> CohortSpec | None:
    if "name" not in t:
        p.missing(where, "name", 'name = "over_75_with_care"')
        return None
    name = expect_text(t["name"], f"{where}.name", 'name = "over_75_with_care"', p)
    if name is None:
        return None
    if not _NAME.match(name):
        p.add(f"{where}.name", f"{name!r} must use only a-z, 0-9 and _ (it names a file), e.g. \"over_75\"")
        return None
    ways = [k for k in ("where", "members", "tier", "percentile_min") if k in t]
    if not ways:
        p.add(where, f"cohort {name!r} has no definition; give `where` (a rule), `members` (a caseload file), "
              "`tier` or `percentile_min` (from a stratify output)")
        return None
    if "members" in t and len(ways) > 1:
        others = ", ".join(w for w in ways if w != "members")
        p.add(where, f"cohort {name!r}: a `members` list cannot be combined with {others}")
        return None
    out: dict[str, Any] = {"name": name}
    if "where" in t:
        out["rule"] = _rule(t["where"], f"{where}.where", p)
    if "members" in t:
        out["members"] = _members(t, where, base, p)
        if "enrolled" in t:
            p.add(f"{where}.enrolled", "a `members` list gives each person's enrolment date in its `date` column; "
                  "leave out `enrolled`")
    elif "key" in t or "date" in t or "date_format" in t:
        p.add(where, "`key`, `date` and `date_format` belong to a `members` list; add members = \"caseload.csv\"")
    if "tier" in t:
        out["tier"] = expect_text(t["tier"], f"{where}.tier", 'tier = "case management"', p)
    if "percentile_min" in t:
        pct = t["percentile_min"]
        if is_number(pct) and 0 <= pct < 100:
            out["percentile_min"] = float(pct)
        else:
            p.add(f"{where}.percentile_min", "must be a number from 0 to below 100: people at or above this risk "
                  "percentile, e.g. percentile_min = 95")
    if "enrolled" in t and "members" not in t:
        out["enrolled"] = _date(t["enrolled"], f"{where}.enrolled", p)
    if "compare" in t:
        out["compare"] = expect_choice(t["compare"], f"{where}.compare", COMPARE, "comparison", p) or "none"
    for key in ("eligible", "pool"):
        if key in t and out.get("compare") != "matched":
            p.add(f"{where}.{key}", 'belongs to a matched comparison; add compare = "matched" or remove it')
    if "eligible" in t:
        out["eligible"] = _rule(t["eligible"], f"{where}.eligible", p)
    if "pool" in t:
        out["pool"] = expect_choice(t["pool"], f"{where}.pool", POOLS, "comparison pool", p) or "other_practices"
    return CohortSpec(**out)


def _rule(value: Any, where: str, p: KeyProblems) -> CohortRule | None:
    example = 'where = { age_min = 75, social_care = "long_term_support" }'
    if not isinstance(value, dict) or not value:
        p.add(where, f"must be a table of conditions, e.g. {example}; conditions are: {', '.join(WHERE_KEYS)}")
        return None
    p.unknown_keys(value, WHERE_KEYS, where)
    out: dict[str, Any] = {}
    for key in ("age_min", "age_max", "ltc_min", "emergency_admissions_min"):
        if key in value:
            out[key] = expect_whole(value[key], f"{where}.{key}", 0, f"{key} = 75" if key.startswith("age") else
                                    f"{key} = 2", p)
    if out.get("age_min") is not None and out.get("age_max") is not None and out["age_min"] > out["age_max"]:
        p.add(f"{where}.age_min", "is above age_max; nobody could be in the cohort")
    if "sex" in value:
        sex = value["sex"]
        if sex in ("F", "M"):
            out["sex"] = sex
        else:
            p.add(f"{where}.sex", f'{show_value(sex)} is not a sex; use "F" or "M"')
    if "practice" in value:
        practices = value["practice"]
        practices = [practices] if isinstance(practices, str) else practices
        if isinstance(practices, list) and practices and all(isinstance(x, str) and x.strip() for x in practices):
            out["practices"] = tuple(x.strip() for x in practices)
        else:
            p.add(f"{where}.practice", 'must be a practice code or an array of them (a primary care network), '
                  'e.g. practice = ["A83001", "A83002"]')
    if "deprivation" in value:
        deciles = value["deprivation"]
        if (isinstance(deciles, list) and deciles
                and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 10 for d in deciles)):
            out["deprivation"] = tuple(sorted(set(deciles)))
        else:
            p.add(f"{where}.deprivation", "must be an array of deprivation deciles from 1 (most deprived) to 10, "
                  "e.g. deprivation = [1, 2]")
    if "social_care" in value:
        out["social_care"] = expect_choice(value["social_care"], f"{where}.social_care", SOCIAL_CARE_RULES,
                                           "kind of long-term support", p)
    return CohortRule(**out)


def _members(t: dict[str, Any], where: str, base: Path, p: KeyProblems) -> MemberList | None:
    path = expect_text(t["members"], f"{where}.members", 'members = "mdt_caseload.csv"', p)
    got: dict[str, str] = {}
    for key, example in (("key", 'key = "Patient_ID"'), ("date", 'date = "Enrolment_Date"')):
        if key not in t:
            p.missing(where, key, f"{example} (the caseload file's column of spine record keys / enrolment dates)")
            continue
        text = expect_text(t[key], f"{where}.{key}", example, p)
        if text is not None:
            got[key] = text
    fmt = None
    if "date_format" in t:
        fmt = expect_text(t["date_format"], f"{where}.date_format", 'date_format = "%d/%m/%Y"', p)
    if path is None or len(got) < 2:
        return None
    return MemberList((base / path).resolve(), got["key"], got["date"], fmt)


def _plans(value: Any, base: Path, cohorts: set[str], p: KeyProblems) -> tuple[Plan, ...]:
    tables = _array_of_tables(value, "monitor.plans", '[[monitor.plans]] with cohort, measure, direction', p)
    out: list[Plan] = []
    seen: set[tuple[str, str]] = set()
    for i, t in enumerate(tables):
        where = f"monitor.plans[{i}]"
        p.unknown_keys(t, PLAN_KEYS, where)
        plan = _plan(t, where, base, cohorts, p)
        if plan is None:
            continue
        if (plan.cohort, plan.measure) in seen:
            p.add(where, f"a second plan for cohort {plan.cohort!r} and measure {plan.measure!r}; keep one")
            continue
        seen.add((plan.cohort, plan.measure))
        out.append(plan)
    return tuple(out)


def _plan(t: dict[str, Any], where: str, base: Path, cohorts: set[str], p: KeyProblems) -> Plan | None:
    got: dict[str, Any] = {}
    for key, example in (("cohort", 'cohort = "mdt_caseload"'), ("measure", 'measure = "emergency_admissions"'),
                         ("direction", 'direction = "lower"')):
        if key not in t:
            p.missing(where, key, example)
    if "cohort" in t:
        cohort = expect_text(t["cohort"], f"{where}.cohort", 'cohort = "mdt_caseload"', p)
        if cohort is not None and cohort not in cohorts | {POPULATION}:
            p.add(f"{where}.cohort", f"{cohort!r} is not a cohort of [[monitor.cohorts]]; cohorts are: "
                  f"{', '.join(sorted(cohorts | {POPULATION}))}")
        elif cohort is not None:
            got["cohort"] = cohort
    if "measure" in t:
        got["measure"] = expect_choice(t["measure"], f"{where}.measure", MEASURE_NAMES, "measure", p)
    if "direction" in t:
        got["direction"] = expect_choice(t["direction"], f"{where}.direction", DIRECTIONS[:2], "direction", p)
    trajectory, trajectory_path = None, None
    if "trajectory" in t:
        trajectory, trajectory_path = _trajectory(t["trajectory"], f"{where}.trajectory", base, p)
    rebase = _rebase(t.get("rebase", []), f"{where}.rebase", p)
    if any(got.get(k) is None for k in ("cohort", "measure", "direction")):
        return None
    return Plan(got["cohort"], got["measure"], got["direction"], trajectory, trajectory_path, rebase)


def _trajectory(value: Any, key: str, base: Path, p: KeyProblems
                ) -> tuple[dict[dt.date, float] | None, Path | None]:
    example = 'trajectory = "plans/emergency_admissions.csv" (columns month,value) or ' \
              'trajectory = [{ month = "2025-04", value = 31.5 }]'
    if isinstance(value, str) and value.strip():
        return None, (base / value).resolve()
    if not (isinstance(value, list) and value and all(isinstance(x, dict) for x in value)):
        p.add(key, f"must be a CSV file or an array of tables: {example}")
        return None, None
    out: dict[dt.date, float] = {}
    for i, row in enumerate(value):
        where = f"{key}[{i}]"
        p.unknown_keys(row, ("month", "value"), where)
        month = parse_month(row.get("month"), f"{where}.month", p)
        number = row.get("value")
        if not (is_number(number) and number >= 0):
            p.add(f"{where}.value", "must be a number of 0 or more (per 1,000 person-months; £ per person-month "
                  "for a cost measure)")
            continue
        if month is not None and month in out:
            p.add(f"{where}.month", f"{month:%Y-%m} is given twice; give each month once")
        elif month is not None:
            out[month] = float(number)
    return out, None


def _rebase(value: Any, key: str, p: KeyProblems) -> tuple[Rebase, ...]:
    example = 'rebase = [{ month = "2025-04", reason = "MDT started" }]'
    if not (isinstance(value, list) and all(isinstance(x, dict) for x in value)):
        p.add(key, f"must be an array of tables, e.g. {example}")
        return ()
    out: list[Rebase] = []
    for i, row in enumerate(value):
        where = f"{key}[{i}]"
        p.unknown_keys(row, ("month", "reason"), where)
        month = parse_month(row.get("month"), f"{where}.month", p)
        reason = expect_text(row.get("reason"), f"{where}.reason", 'reason = "MDT started"', p)
        if month is not None and reason is not None:
            out.append(Rebase(month, reason))
    months = [r.month for r in out]
    if months != sorted(set(months)):
        p.add(key, "months must be in order, each once")
        return ()
    return tuple(out)


def measure_direction(measure: str, plans: Sequence[Plan], cohort: str) -> str:
    """Return which way is better for a cohort's measure: its plan's direction, else the measure's own."""
    for plan in plans:
        if plan.cohort == cohort and plan.measure == measure:
            return plan.direction
    return MEASURE_BY_NAME[measure].direction


__all__ = ["COHORT_KEYS", "DIRECTIONS", "MEASURES", "MEASURE_BY_NAME", "MEASURE_NAMES", "MONITOR_KEYS", "PLAN_KEYS",
           "POOLS", "POPULATION", "SOCIAL_CARE_RULES", "CohortRule", "CohortSpec", "Measure", "MemberList",
           "MonitorSettings", "Plan", "Rebase", "WHERE_KEYS", "check_monitor", "measure_direction", "parse_month"]
