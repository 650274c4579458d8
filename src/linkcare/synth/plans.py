"""What a synthetic site's config asks `linkcare monitor` to follow: two cohorts frozen at the start of
the site's last year, and a plan for the population's emergency admissions (plans/emergency_admissions.csv).

The plan is a site's target, not a fact of the data: a 5% fall on the population's rate of emergency
admissions in the year before the plan year, held for the twelve months of the plan year, as a site
might write one.
"""

from __future__ import annotations

from datetime import date

import polars as pl

PLAN_FILE = "plans/emergency_admissions.csv"
#: The planned fall on the year before (a site's choice; 5% is a common ambition in local plans).
PLANNED_FALL = 0.05
_EMERGENCY = ("21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28")


def plan_year_start(reference_date: date) -> date:
    """Return the first day of the twelve months that end with the reference date's month."""
    k = reference_date.year * 12 + reference_date.month - 12
    return date(k // 12, k % 12 + 1, 1)


def monitor_section(reference_date: date, prefix: str = "", caseload: bool = False) -> str:
    """Return the [monitor] tables of a synthetic site's config; with `caseload`, a cohort of the MDT
    programme's caseload compared with a matched group of the eligible people not enrolled."""
    start = plan_year_start(reference_date).isoformat()
    mdt = ("[[monitor.cohorts]]\n"
           f'name = "mdt_caseload"\nmembers = "{prefix}mdt_caseload.csv"\nkey = "Patient_ID"\n'
           'date = "Enrolment_Date"\ncompare = "matched"\n'
           "# The programme's case-finding rule: the comparison pool is the people who met it and were not enrolled.\n"
           "eligible = { age_min = 18, emergency_admissions_min = 2 }\n\n") if caseload else ""
    return (
        "[monitor]\n# What `linkcare monitor` follows; see docs/monitor.md for every key.\n"
        "[[monitor.cohorts]]\n"
        'name = "over_75"\nwhere = { age_min = 75 }\n'
        f'enrolled = "{start}"\n\n'
        "[[monitor.cohorts]]\n"
        'name = "over_65_with_care"\nwhere = { age_min = 65, social_care = "long_term_support" }\n'
        f'enrolled = "{start}"\n\n'
        f"{mdt}"
        "[[monitor.plans]]\n"
        'cohort = "population"\nmeasure = "emergency_admissions"\ndirection = "lower"\n'
        f'trajectory = "{prefix}{PLAN_FILE}"\n'
        f'rebase = [{{ month = "{start[:7]}", reason = "the plan year began" }}]\n')


def plan_trajectory(gp: pl.DataFrame, apc: pl.DataFrame, reference_date: date) -> pl.DataFrame:
    """Return the plan (month, value per 1,000 person-months) for the twelve months of the plan year."""
    start = plan_year_start(reference_date)
    before = date(start.year - 1, start.month, 1)
    admitted = (pl.col("ADMIDATE") if apc.schema["ADMIDATE"] == pl.Date
                else pl.col("ADMIDATE").cast(pl.String).str.to_date("%Y-%m-%d", strict=False))
    # Residents' admissions only (a visitor's NHS token is on no registration), as monitor counts them.
    registered = gp["Pseudo_NHS_Number"].drop_nulls().unique().implode()
    admissions = apc.filter(pl.col("ADMIMETH").cast(pl.String).is_in(_EMERGENCY)
                            & admitted.is_between(before, start, closed="left")
                            & pl.col("Pseudo_NHS_Number").is_in(registered)).height
    # Person-months registered and alive in that year, as monitor counts its denominator.
    def day(column: str) -> pl.Expr:
        return (pl.col(column) if gp.schema[column] == pl.Date
                else pl.col(column).cast(pl.String).str.to_date("%Y-%m-%d", strict=False))

    first = pl.max_horizontal(day("Registration_Date"), pl.lit(before))
    last = pl.min_horizontal(day("Date_Of_Death").fill_null(start), pl.lit(start))
    months = gp.select(((last - first).dt.total_days().clip(0, None)).sum()).item() / 365.25 * 12
    rate = admissions / max(months, 1.0) * 1000 * (1 - PLANNED_FALL)
    year = [date((start.year * 12 + start.month - 1 + i) // 12, (start.month - 1 + i) % 12 + 1, 1)
            for i in range(12)]
    return pl.DataFrame({"month": [m.strftime("%Y-%m") for m in year], "value": [round(rate, 2)] * 12})


__all__ = ["PLAN_FILE", "monitor_section", "plan_trajectory", "plan_year_start"]
