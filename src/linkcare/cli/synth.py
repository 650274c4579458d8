"""`linkcare synth`: the click command; the work is in linkcare.synth.site."""

from __future__ import annotations

from dataclasses import fields
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

from linkcare.cli.output import json_option, print_json, print_table
from linkcare.sources.pseudonymise import read_key
from linkcare.synth.options import ErrorRates, MonthlyRates, SynthOptions
from linkcare.synth.programme import Programme
from linkcare.synth.site import MAX_MONTHS, MonthsSummary, extract_file, write_months, write_site


def _rate_options(func: Any) -> Any:
    """Add one `--<rate>` option per identifier error rate, documented from ErrorRates."""
    for f in reversed(fields(ErrorRates)):
        default = f.default
        func = click.option(
            f"--{f.name.replace('_', '-')}", f.name, type=click.FloatRange(0.0, 1.0, max_open=True),
            default=default, show_default=True, help=_RATE_HELP[f.name],
        )(func)
    return func


def _monthly_options(func: Any) -> Any:
    """Add one `--<rate>` option per monthly rate (MonthlyRates), used only with --months."""
    for f in reversed(fields(MonthlyRates)):
        func = click.option(
            f"--{f.name.replace('_', '-')}", f.name, type=click.FloatRange(0.0, 0.5, max_open=True),
            default=None, help=f"{_MONTHLY_HELP[f.name]} With --months. [default: {f.default}]",
        )(func)
    return func


_MONTHLY_HELP = {
    "late_arrival": "Share of APC, A&E, outpatient and social-care records that arrive 1-3 months after the month "
                    "of their date.",
    "birth_month_corrected": "Share of records that arrive with a wrong birth month, corrected 1-3 months later.",
    "nhs_filled": "Share of APC, A&E, outpatient and social-care records that arrive with a blank NHS token, "
                  "filled 1-3 months later.",
}
_RATE_HELP = {
    "nhs_missing_hospital": "Share of APC, outpatient and A&E records with no NHS token.",
    "nhs_missing_social_care": "Share of social-care records with no NHS token.",
    "nhs_wrong_hospital": "Share of APC, outpatient and A&E records with another valid NHS number.",
    "nhs_wrong_social_care": "Share of social-care records with another valid NHS number.",
    "birth_month_wrong": "Share of records (every extract) with a wrong birth month.",
    "birth_year_wrong": "Share of records (every extract) with a wrong birth year.",
    "sex_wrong": "Share of records (every extract) with the other sex recorded.",
    "stale_area_social_care": "Share of social-care records with the LSOA from before a move.",
    "area_missing_hospital": "Share of APC, outpatient and A&E records with no LSOA.",
    "second_council_id": "Share of social-care clients known under two council person IDs.",
    "twins": "Share of people who are one of a pair of same-sex twins in the same area.",
    "practice_change_on_move": "Share of people who move within the site who change GP practice.",
    "practice_change_other": "Share of people who do not move who change GP practice during the history.",
    "practice_stale_hospital": "Share of hospital records after a change of practice with the old practice.",
    "practice_missing_hospital": "Share of APC, outpatient and A&E records with no GP practice.",
    "visitors_apc": "Share of APC records of people in no other extract (out of area, visitors).",
    "visitors_outpatients": "Share of outpatient records of people in no other extract.",
    "visitors_ae": "Share of A&E attendances of people in no other extract.",
    "visitor_overseas": "Share of those people from overseas: no NHS number, LSOA or practice.",
    "visitor_local": "Share of those people living in the site's areas but registered with none of its practices.",
}


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--people", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="People ever registered with the site's GP practices.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: same seed, same bytes.")
@click.option("--reference-date", type=click.DateTime(formats=["%Y-%m-%d"]), default="2026-03-31",
              show_default=True, help="The 'as of' date; the extracts hold nothing after it.")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Pseudonymisation key for the NHS tokens (default: a key derived from the seed).")
@click.option("--months", type=click.IntRange(1, MAX_MONTHS), default=None,
              help="Write OUT/YYYY-MM-DD/ for each of this many month ends ending at the reference date (a month "
                   "end): the same site as each month end would receive it, with its own site.toml and truth/.")
@click.option("--programme-start", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Start an MDT programme on this date (default with --programme-effect: the first day of the month "
                   "17 months before the reference date's): people meeting its rule are enrolled over six months.")
@click.option("--programme-practices", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.5,
              show_default=True, help="With a programme: the share of the site's practices in it.")
@click.option("--programme-effect", type=click.FloatRange(0.0, 3.0, min_open=True), default=None,
              help="With a programme: what the enrolled's hazard of emergency admission and of A&E attendance is "
                   "multiplied by from the month after enrolment (1.0: no effect). [default: 0.85]")
@click.option("--gp-events/--no-gp-events", default=True, show_default=True,
              help="Write the GP clinical extract (gp_events.parquet); the other extracts are the same either way.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists and is not empty.")
@json_option
@_rate_options
@_monthly_options
def synth(out: Path, people: int, seed: int, reference_date: datetime, key_file: Path | None, months: int | None,
          programme_start: datetime | None, programme_practices: float, programme_effect: float | None,
          gp_events: bool, overwrite: bool, as_json: bool, **rates: Any) -> None:
    """Write a realistic synthetic site into OUT.

    OUT gets six pseudonymised extracts (gp_registrations, apc, ae, outpatients, social_care as
    CSV, with real field names, and the GP clinical extract gp_events.parquet: coded conditions,
    frailty deficits, medication issues and consultations), site.toml (a config that links them),
    synth.json (the options used) and truth/ (the true person of every record, and each person's true risk of emergency
    admission in the year after the reference date), which is kept apart for evaluation. The
    hospital extracts also hold people in no other extract (resident = false in
    truth/persons.parquet), and the registered GP practice, sometimes out of date.

    With --months N, OUT gets one such site per month end, OUT/YYYY-MM-DD/, as the site would
    receive it then: events up to that month end, new registrations, deaths, records arriving late
    and records corrected in a later month; each with site.toml as of its month end and truth/
    (with truth/revisions.parquet: its late and corrected records). Record ids and person numbers
    are the same in every month; a month end's folder is the same whatever N is.

    With --programme-start or --programme-effect, an MDT programme at a share of the practices
    enrols the adults with two or more emergency admissions in the past year over six months, and
    multiplies their hazards by the effect from the month after; OUT gets mdt_caseload.csv (the
    spine record key, practice and enrolment date of each), truth/programme.json (the true effect)
    and a site.toml whose mdt_caseload cohort is compared with a matched group.
    """
    monthly = {name: rates.pop(name) for name in [f.name for f in fields(MonthlyRates)]}
    given = [name for name, value in monthly.items() if value is not None]
    if given and months is None:
        raise click.UsageError(f"--{given[0].replace('_', '-')} needs --months")
    key = read_key(key_file=key_file) if key_file is not None else None
    programme = None
    if programme_start is not None or programme_effect is not None:
        ref = reference_date.date()
        k = ref.year * 12 + ref.month - 1 - 17
        start = programme_start.date() if programme_start is not None else date(k // 12, k % 12 + 1, 1)
        programme = Programme(start, programme_practices, 0.85 if programme_effect is None else programme_effect,
                              enrolment_months=6)
    try:
        options = SynthOptions(people=people, seed=seed, reference_date=reference_date.date(),
                               errors=ErrorRates(**rates), key=key, programme=programme,
                               gp_events=gp_events)
    except ValueError as exc:
        raise click.UsageError(str(exc).replace("the programme must", "--programme-start must")) from None
    if months is not None:
        month_rates = MonthlyRates(**{k: v for k, v in monthly.items() if v is not None})
        _months_summary(write_months(out, options, months, month_rates, overwrite=overwrite), as_json)
        return
    summary = write_site(out, options, overwrite=overwrite)
    if as_json:
        print_json("synth", summary)
        return
    print_table([("extract", "rows"), *[(extract_file(name), f"{rows:,}") for name, rows in summary.rows.items()]])
    click.echo(f"Wrote a synthetic site of {summary.people:,} people to {summary.out} in {summary.seconds:.1f} s: "
               "the extracts, site.toml (config), synth.json (options), truth/ (keep apart: for evaluation only)")


def _months_summary(summary: MonthsSummary, as_json: bool) -> None:
    if as_json:
        print_json("synth", summary)
        return
    names = list(next(iter(summary.rows.values())))
    changes = list(next(iter(summary.changes.values())))
    print_table([("month end", *[extract_file(n) for n in names], *[c.replace("_", " ") for c in changes]),
                 *[(d.isoformat(), *[f"{summary.rows[d][n]:,}" for n in names],
                    *[f"{summary.changes[d][c]:,}" for c in changes]) for d in summary.months]])
    click.echo(f"Wrote {len(summary.months)} month ends of a synthetic site of {summary.people:,} people to "
               f"{summary.out} in {summary.seconds:.1f} s: one folder per month end, each with the extracts, "
               "site.toml (config), synth.json (options), truth/ (keep apart: for evaluation only)")
