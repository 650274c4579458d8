"""`linkcare monitor CONFIG --cohort DIR [--risk DIR] --out DIR`: each cohort's use and cost of care per
month, as SPC charts against the site's plan."""

from __future__ import annotations

from pathlib import Path

import click

from linkcare.cli.options import as_of_option, parse_date, snapshot_options
from linkcare.cli.output import json_option, print_json, print_table


@click.command()
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--cohort", "cohort", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The output folder of `linkcare link` (the cohort dataset).")
@click.option("--risk", "risk_dir", type=click.Path(path_type=Path, file_okay=False),
              help="The output folder of `linkcare stratify`, for cohorts defined by `tier` or `percentile_min`.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for monitor.parquet, monitor.csv, spc.parquet, cohorts/, unit_costs.csv, "
                   "monitor_report.html and manifest.json; replaced whole only when the run succeeds.")
@as_of_option
@snapshot_options
@json_option
def monitor(config: Path, cohort: Path, risk_dir: Path | None, out: Path, as_of: str | None, snapshot: bool,
            keep: int | None, as_json: bool) -> None:
    """Count what each cohort of [monitor] uses and costs, month by month, against the site's plans.

    The cohorts are the whole population plus each [[monitor.cohorts]] table: a rule over people as of
    its enrolment date, a risk tier from --risk, or an MDT caseload file; membership is frozen at
    enrolment. For every cohort, month and measure (emergency admissions and bed days, A&E, elective,
    outpatients, social care, deaths, costs) it writes the people and person-months at risk, the
    events, the rate per 1,000 person-months and the cost (monitor.parquet and monitor.csv), and an
    SPC chart of each measure by Making Data Count's rules with the plan line (spc.parquet,
    monitor_report.html). Counts go through the disclosure rule. Exits 2 if the config or the command
    line is wrong, 1 if an input cannot be used.
    """
    from linkcare.commands.monitor import monitor as run_monitor
    from linkcare.commands.snapshots import Snapshots
    from linkcare.config import load_config

    settings = load_config(config, parse_date(as_of, "--as-of"))
    summary = run_monitor(settings, cohort, Snapshots(out, snapshot, keep), risk_dir)
    if as_json:
        print_json("monitor", summary)
        return
    click.echo(f"counted {summary.first_month:%Y-%m} to {summary.last_month:%Y-%m} as of {summary.as_of} "
               f"({settings.as_of_facts['why']})")
    rows: list[tuple[str, ...]] = [("cohort", "members", "enrolled")]
    rows += [(c["name"], "suppressed" if c["members"] is None else f"{c['members']:,}", c["enrolled"] or "–")
             for c in summary.cohorts]
    print_table(rows)
    click.echo(f"{summary.charts:,} SPC charts of {summary.measures} measures; {summary.special_cause:,} points "
               f"show special cause")
    click.echo(f"{summary.seconds:.1f} s, peak {summary.peak_mib:.0f} MiB")
    click.echo(f"Tables in {summary.out / 'monitor.parquet'} and monitor.csv; charts in spc.parquet; report in "
               f"{summary.out / 'monitor_report.html'}")
