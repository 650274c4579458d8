"""`linkcare monitor`: what chosen cohorts use and cost across health and social care, month by month,
as SPC charts against the site's plan. Writes monitor.parquet and monitor.csv, spc.parquet,
cohorts/<name>.parquet, unit_costs.csv (the prices used), monitor_report.html and manifest.json into the
output folder, whole or not at all."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from linkcare.cohort.dataset import open_cohort
from linkcare.commands.snapshots import Snapshots, snapshot_run
from linkcare.config import Config
from linkcare.config.monitor import Measure, MonitorSettings, Plan
from linkcare.errors import ConfigError, DataError
from linkcare.io.atomic import atomic_dir, output_lock
from linkcare.io.checksum import file_sha256
from linkcare.io.manifest import checksums, write_manifest
from linkcare.io.modes import modes_for
from linkcare.io.parquet import write_parquet
from linkcare.log import get_logger, peak_mib
from linkcare.monitor.activity import at_risk, person_activity
from linkcare.monitor.cohorts import Members, build_members, population
from linkcare.monitor.costs import UnitCosts, load_unit_costs
from linkcare.monitor.impact import Impact, assess, balance_table, impact_table
from linkcare.monitor.spc import SpcRules
from linkcare.monitor.tables import (
    ChartSummary,
    exact_table,
    last_against_plan,
    measures_for,
    publish,
    publish_spc,
    spc_table,
)
from linkcare.monitor.window import Window, monitor_window
from linkcare.report.monitor_report import REPORT_NAME, MonitorReport, write_monitor_report
from linkcare.risk.features import spine_source
from linkcare.sources.dates import read_date

log = get_logger("monitor")
EVENT_KINDS = ("apc", "ae", "outpatients", "social_care")


@dataclass(frozen=True)
class MonitorSummary:
    """What `linkcare monitor` did; holds no record values, only published counts."""

    out: Path
    as_of: dt.date
    first_month: dt.date
    last_month: dt.date
    cohorts: list[dict[str, Any]]
    measures: int
    charts: int
    special_cause: int
    seconds: float
    peak_mib: float


@dataclass(frozen=True)
class Counted:
    """Everything a monitor run counted, before it is written."""

    window: Window
    members: list[Members]
    measures: tuple[Measure, ...]
    exact: pl.DataFrame
    chart: pl.DataFrame
    summaries: list[ChartSummary]
    published: pl.DataFrame
    spc: pl.DataFrame
    against_plan: pl.DataFrame
    costs: UnitCosts
    rules: SpcRules
    impacts: list[Impact]


def monitor(config: Config, cohort_dir: Path, out: Path | Snapshots, risk_dir: Path | None = None) -> MonitorSummary:
    """Count each cohort's use and cost per month up to the config's (resolved) as-of date and write the
    monitor outputs into `out` (a folder, or dated snapshots), whole or not at all."""
    started = time.perf_counter()
    as_of = config.reference_date
    log.info("as of %s: %s", as_of.isoformat(), config.as_of_facts["why"])
    counted = count_cohorts(config, cohort_dir, risk_dir)
    inputs: dict[str, Any] = {"cohort": {"folder": Path(cohort_dir).name,
                                         "events_sha256": file_sha256(Path(cohort_dir) / "events.parquet")}}
    if risk_dir is not None:
        inputs["risk"] = {"folder": Path(risk_dir).name, "risk_sha256": file_sha256(Path(risk_dir) / "risk.parquet")}
    snapshots = out if isinstance(out, Snapshots) else Snapshots(Path(out))
    with snapshot_run(snapshots, as_of) as target, output_lock(target), \
            atomic_dir(target, modes_for(config.output.mode)) as tmp:
        cohort_facts = _write(tmp, config, counted, inputs, started)
    window = counted.window
    special = int(counted.chart.filter(pl.col("special_cause").is_not_null()).height)
    facts = [{"name": f["name"], "members": f["members"], "enrolled": f["enrolled"]} for f in cohort_facts]
    return MonitorSummary(target, as_of, window.first, window.last, facts, len(counted.measures),
                          len(counted.summaries), special, time.perf_counter() - started, peak_mib())


def count_cohorts(config: Config, cohort_dir: Path, risk_dir: Path | None) -> Counted:
    """Return what each cohort used and cost per month, exact and as published, with its SPC charts."""
    settings = config.monitor or MonitorSettings()
    cohort = open_cohort(cohort_dir)
    spine = spine_source(config)
    costs = load_unit_costs(settings)
    trajectories = {(p.cohort, p.measure): read_trajectory(p) for p in settings.plans
                    if p.trajectory or p.trajectory_path}
    sources_of = {k: [s.name for s in config.sources if s.kind == k] for k in EVENT_KINDS}
    event_sources = [name for names in sources_of.values() for name in names]
    if not event_sources:
        raise ConfigError(f"{config.path}: sources: monitor needs at least one source of kind apc, ae, outpatients "
                          "or social_care to count")
    window = monitor_window(cohort.events, event_sources, config.reference_date, settings.start,
                            str(Path(cohort_dir) / "events.parquet"))
    log.info("counting %s months, %s to %s (first month: %s)", len(window.months), f"{window.first:%Y-%m}",
             f"{window.last:%Y-%m}", "[monitor] start" if window.start_source == "config"
             else f"the first month every source covers, set by {window.start_source}")
    for source, months in window.uncovered.items():
        if months:
            log.warning("source %s does not cover %s of the %s months (%s): its measures are flagged missing there",
                        source, len(months), len(window.months), ", ".join(f"{m:%Y-%m}" for m in sorted(months)))
    risk = at_risk(cohort, spine)
    members: list[Members] = [population(risk)]
    for spec in settings.cohorts:
        built = build_members(spec, config, cohort, risk, risk_dir, spine)
        log.info("cohort %s: %s member(s) (%s)", built.name, config.disclosure.show(built.frame.height),
                 built.definition)
        members.append(built)
    activity = person_activity(cohort, risk, window, costs)
    impacts = [assess(spec, m.frame, config, cohort, risk, activity, window)
               for spec, m in zip(settings.cohorts, members[1:], strict=True) if spec.compare == "matched"]
    measures = measures_for({s.kind for s in config.sources})
    exact = exact_table(members, risk, activity, window, measures, sources_of)
    rules = SpcRules(baseline_points=settings.baseline_months, screen_outliers=settings.screen_outliers)
    chart, summaries = spc_table(exact, window, settings.plans, trajectories, rules)
    published = publish(exact, measures, config.disclosure)
    return Counted(window, members, measures, exact, chart, summaries, published, publish_spc(chart, published),
                   last_against_plan(exact, chart, published, config.disclosure.threshold), costs, rules, impacts)


def _write(tmp: Path, config: Config, c: Counted, inputs: dict[str, Any], started: float) -> list[dict[str, Any]]:
    """Write the outputs into the run's temporary folder; return the cohorts' facts (published sizes)."""
    settings = config.monitor or MonitorSettings()
    write_parquet(c.published, tmp / "monitor.parquet")
    c.published.write_csv(tmp / "monitor.csv")
    write_parquet(c.spc, tmp / "spc.parquet")
    (tmp / "cohorts").mkdir()
    for m in c.members:
        write_parquet(m.frame, tmp / "cohorts" / f"{m.name}.parquet")
    c.costs.table.write_csv(tmp / "unit_costs.csv")
    write_parquet(impact_table(c.impacts, config.disclosure), tmp / "impact.parquet")
    write_parquet(balance_table(c.impacts), tmp / "balance.parquet")
    if c.impacts:
        (tmp / "matched").mkdir()
    for impact in c.impacts:
        write_parquet(impact.matched.pairs, tmp / "matched" / f"{impact.cohort}.parquet")
    log.info("writing %s…", REPORT_NAME)
    write_monitor_report(tmp / REPORT_NAME, MonitorReport(config, inputs, c.window, c.members, c.published, c.spc,
                                                          c.summaries, c.against_plan, c.costs, c.impacts))
    names = ["monitor.parquet", "monitor.csv", "spc.parquet", "unit_costs.csv", "impact.parquet", "balance.parquet",
             *[f"cohorts/{m.name}.parquet" for m in c.members], *[f"matched/{i.cohort}.parquet" for i in c.impacts]]
    cohort_facts = [{"name": m.name, "definition": m.definition, "members": config.disclosure.value(m.frame.height),
                     "enrolled": None if m.enrolled is None else m.enrolled.isoformat(), "notes": list(m.notes)}
                    for m in c.members]
    w = c.window
    write_manifest(tmp, "monitor", config, {
        "as_of": config.as_of_facts,
        "inputs": inputs,
        "months": {"first": f"{w.first:%Y-%m}", "last": f"{w.last:%Y-%m}", "count": len(w.months),
                   "first_set_by": w.start_source,
                   "uncovered": {s: [f"{m:%Y-%m}" for m in sorted(v)] for s, v in w.uncovered.items() if v}},
        "cohorts": cohort_facts,
        "measures": [m.name for m in c.measures],
        "unit_costs": {"version": c.costs.version, "price_year": c.costs.price_year,
                       "bundled_sha256": c.costs.bundled_sha256,
                       "site_table": None if settings.costs is None else settings.costs.name},
        "spc": {"baseline_months": c.rules.baseline_points, "screen_outliers": c.rules.screen_outliers},
        "plans": _plan_facts(c),
        "outputs": checksums(tmp, names),
        "seconds": round(time.perf_counter() - started, 1), "peak_mib": round(peak_mib()),
    })
    return cohort_facts


def _plan_facts(c: Counted) -> list[dict[str, Any]]:
    """Return each plan's latest month against it, its assurance and the cumulative gap (aggregates)."""
    assurance = {(s.cohort, s.measure): s.assurance for s in c.summaries}
    rows = c.against_plan.to_dicts() if c.against_plan.height else []
    return [{"cohort": r["cohort"], "measure": r["measure"], "last_month": f"{r['last_month']:%Y-%m}",
             "value": None if r["last_value"] is None else round(r["last_value"], 3), "plan": r["last_plan"],
             "planned_months": r["planned_months"], "assurance": assurance.get((r["cohort"], r["measure"])),
             "cumulative_gap": None if r["gap_activity"] is None else round(r["gap_activity"], 1),
             "cumulative_gap_pounds": None if r["gap_pounds"] is None else round(r["gap_pounds"])} for r in rows]


def read_trajectory(plan: Plan) -> dict[dt.date, float]:
    """Return a plan's trajectory: month (first day) to value; a CSV must have columns month and value."""
    if plan.trajectory is not None:
        return dict(plan.trajectory)
    path = plan.trajectory_path
    assert path is not None
    try:
        raw = pl.read_csv(path, infer_schema=False)
    except FileNotFoundError:
        raise DataError(f"{path}: plan trajectory not found (monitor.plans for {plan.cohort}, "
                        f"{plan.measure})") from None
    except (OSError, pl.exceptions.PolarsError):
        raise DataError(f"{path}: cannot be read as a CSV file of month,value") from None
    missing = [c for c in ("month", "value") if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: has no column {', '.join(missing)}; a trajectory has columns month (YYYY-MM) and "
                        "value (per 1,000 person-months; £ per person-month for a cost measure)")
    month = pl.concat_str([pl.col("month").str.strip_chars(), pl.lit("-01")])
    frame = raw.with_columns(month.alias("_m")).select(
        read_date("_m", None, None).alias("month"),
        pl.col("value").str.strip_chars().cast(pl.Float64, strict=False).alias("value"))
    bad_month = frame.filter(pl.col("month").is_null()).height
    if bad_month:
        raise DataError(f"{path}: column month: {bad_month} row(s) are not a month written YYYY-MM")
    bad_value = frame.filter(pl.col("value").is_null() | (pl.col("value") < 0)).height
    if bad_value:
        raise DataError(f"{path}: column value: {bad_value} row(s) are not a number of 0 or more")
    twice = frame.height - frame["month"].n_unique()
    if twice:
        raise DataError(f"{path}: column month: {twice} month(s) are given more than once; give each once")
    return dict(zip(frame["month"].to_list(), frame["value"].to_list(), strict=True))


__all__ = ["Counted", "MonitorSummary", "count_cohorts", "monitor", "read_trajectory"]
