"""`linkcare profile CONFIG`: what each extract holds before a first link, as tables, JSON and an
HTML page; and the row-check listing of `linkcare validate --rows`. Counts and dates, never a value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from linkcare.cli.output import json_option, print_json, print_table
from linkcare.config import Config
from linkcare.errors import ProblemList

DEFAULT_OUT = "profile"


@click.command()
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_OUT,
              show_default=True, help="Folder for profile.json, profile.html and manifest.json; replaced whole "
                                      "only when the run succeeds.")
@json_option
def profile(config: Path, out: Path, as_json: bool) -> None:
    """Profile every source in CONFIG before a first link; link nothing, print no value.

    Per source and mapped field: rows, completeness (the share of rows holding a value), distinct
    values (a count), the rows passing each row check that `link` runs, the first and last date of
    each event date column (of a birth field, only the years), and the candidate pairs each
    blocking pass would yield. Writes profile.json, profile.html and manifest.json to --out. Exits 2
    if the config is wrong, 1 if an extract cannot be read, 0 otherwise (even when `link` would stop:
    the profile says why).
    """
    from linkcare.commands.profile import run_profile

    summary = run_profile(config, out)
    if as_json:
        print_json("profile", {"out": summary.out, **summary.profile, "seconds": summary.seconds,
                               "peak_mib": summary.peak_mib})
        return
    doc = summary.profile
    _print_sources(doc)
    _print_fields(doc)
    _print_checks(doc)
    _print_dates(doc)
    rows: list[tuple[str, ...]] = [("candidate pass", "config key", "pairs", "")]
    rows += [(p["pass"], p["config_key"], f"{p['pairs']:,}", "above max_pairs" if p["above_max_pairs"] else "")
             for p in doc["blocking"]]
    print_table(rows)
    click.echo()
    verdict = "link would stop (see the warnings above)" if doc["stops_link"] else "link would read every source"
    click.echo(f"{verdict}; {summary.seconds:.1f} s, peak {summary.peak_mib:.0f} MiB")
    click.echo(f"Profile written to {summary.out} (profile.json, profile.html)")


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _print_sources(doc: dict[str, Any]) -> None:
    rows: list[tuple[str, ...]] = [("source", "rows", "rejected", "identifier tuples", "link")]
    rows += [(s["source"], f"{s['rows']:,}", f"{s['rejected']:,}", f"{s['identifier_tuples']:,}",
              "stops" if s["stops_link"] else "reads") for s in doc["sources"]]
    print_table(rows)
    click.echo()


def _print_fields(doc: dict[str, Any]) -> None:
    rows: list[tuple[str, ...]] = [("source", "field", "column", "present", "complete", "distinct",
                                    "in extract", "birth years")]
    for s in doc["sources"]:
        for f in s["fields"]:
            years = "" if f["birth_years"] is None else f"{f['birth_years']['first']}-{f['birth_years']['last']}"
            rows.append((s["source"], f["field"], f["column"], f"{f['present']:,}", _share(f["completeness"]),
                         f"{f['distinct']:,}", f"{f['distinct_in_extract']:,}", years))
    print_table(rows)
    click.echo()


def _print_checks(doc: dict[str, Any]) -> None:
    rows: list[tuple[str, ...]] = [("source", "column", "check", "failing row is", "passed", "failed", "first")]
    for s in doc["sources"]:
        rows += [(s["source"], c["column"], c["check"], c["action"], f"{c['passed']:,}", f"{c['failed']:,}",
                  "" if c["first_failed_row"] is None else f"{c['first_failed_row']:,}") for c in s["row_checks"]]
    print_table(rows)
    click.echo()


def _print_dates(doc: dict[str, Any]) -> None:
    rows: list[tuple[str, ...]] = [("source", "event", "column", "present", "dates", "first", "last")]
    for s in doc["sources"]:
        rows += [(s["source"], d["event"], d["column"], f"{d['present']:,}", f"{d['dates']:,}", d["first"] or "-",
                  d["last"] or "-") for d in s["dates"]]
    if len(rows) > 1:
        print_table(rows)
        click.echo()


def show_rows(config: Config, strict: bool, as_json: bool) -> None:
    """Run the row checks over every row (`validate --rows`), print what they found per source, file,
    column and check, and raise ProblemList (exit 1) if `link` would stop on any source."""
    from linkcare.commands.validate import check_rows

    report = check_rows(config, strict)
    lines = [f"{s.path.name}: column {c.column} ({c.key}): {n:,} row(s) {c.reason}, the first at row {first}; "
             + ("rejected" if c.reject else "kept as missing") for s in report.sources for c, n, first in s.counts]
    if as_json:
        print_json("validate", {"config": config.path.name, "rows_checked": True, "valid": not report.problems,
                                "sources": [{"source": s.name, "file": s.path.name, "rows": s.rows,
                                             "rejected": s.rejected, "stops_link": s.stops,
                                             "checks": [{"column": c.column, "key": c.key, "check": c.reason,
                                                         "action": "reject" if c.reject else "keep as missing",
                                                         "failed": n, "first_failed_row": first}
                                                        for c, n, first in s.counts]}
                                            for s in report.sources],
                                "problems": [str(p) for p in report.problems]})
    else:
        rows: list[tuple[str, ...]] = [("source", "rows", "rejected", "link")]
        rows += [(s.name, f"{s.rows:,}", f"{s.rejected:,}",
                  "stops" if s.stops else (f"sets {s.rejected:,} row(s) aside" if s.rejected else "reads"))
                 for s in report.sources]
        print_table(rows)
        for line in lines:
            click.echo(line)
    if report.problems:
        raise ProblemList(list(report.problems))
    if not as_json:
        click.echo(f"OK: every row of the {len(report.sources)} source(s) checked; link would stop on none")


__all__ = ["profile", "show_rows"]
