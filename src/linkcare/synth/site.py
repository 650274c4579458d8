"""Generate a synthetic site and write it: extracts, a ready config, and the truth kept apart."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from linkcare import __version__
from linkcare.errors import ConfigError
from linkcare.io.atomic import atomic_dir
from linkcare.io.parquet import write_parquet
from linkcare.log import get_logger
from linkcare.synth import gp_events
from linkcare.synth.extracts import SOURCES, Site, build_site
from linkcare.synth.health import make_health, simulate
from linkcare.synth.months import is_month_end, month_index, monthly_plan, snapshot, snapshot_months
from linkcare.synth.options import MonthlyRates, SynthOptions
from linkcare.synth.plans import PLAN_FILE, monitor_section, plan_trajectory
from linkcare.synth.population import make_population
from linkcare.synth.programme import CASELOAD_FILE, PROGRAMME_TRUTH, ProgrammeRun, caseload, programme_truth
from linkcare.synth.visitors import make_visitors

log = get_logger("synth")
AREAS_FILE = "areas.csv"
MAX_MONTHS = 12
"""Most month ends `--months` writes: the site has three years of history, so the first snapshot
still holds at least two years."""


@dataclass(frozen=True)
class SynthSummary:
    """What was written: rows per extract, people, and how long it took."""

    out: Path
    rows: dict[str, int]
    people: int
    alive_at_reference: int
    seconds: float


def extract_file(name: str) -> str:
    """Return the file name of a synthetic extract: CSV, but Parquet for the GP clinical extract."""
    return gp_events.FILE if name == gp_events.SOURCE else f"{name}.csv"


def synth_key(seed: int) -> bytes:
    """Return the pseudonymisation key a synthetic site uses when none is given: fixed by the seed."""
    return hashlib.sha256(f"linkcare-synthetic-site/{seed}".encode()).digest()


def make_site(options: SynthOptions) -> Site:
    """Return the extracts and truth of a synthetic site, the same for the same options."""
    # Streams 4 and 5 (visitors; practice changes and what hospitals record of them) came later:
    # the first four draw what they drew before, so a site with the later features switched off
    # holds the same records as before.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(options.seed).spawn(6)]
    pop = make_population(streams[0], options.people, options.history_days, options.errors.twins)
    health = make_health(streams[1], pop)
    run = None
    if options.programme is not None:
        run = ProgrammeRun(options.programme, options.seed, pop.practice, len(pop.practice_codes),
                           (options.programme.start - options.reference_date).days)
    sim = simulate(streams[2], pop, health, options.history_days, run)
    visitors = make_visitors(streams[4], pop, health, sim, options.errors, options.history_days)
    key = options.key if options.key is not None else synth_key(options.seed)
    site = build_site(streams[3], pop, health, sim, options.errors, key, options.reference_date,
                      options.history_days, visitors, streams[5])
    if options.gp_events:
        # Its own stream, drawn after everything else: the other extracts are the same without it.
        gp_seed = np.random.SeedSequence(options.seed).spawn(gp_events.STREAM + 1)[gp_events.STREAM]
        gp_rng = np.random.default_rng(gp_seed)
        records = gp_events.gp_records(gp_rng, pop, health, sim, options.history_days)
        extract, truth = gp_events.gp_extract(gp_rng, records, site.extracts["gp_registrations"],
                                              site.truth_records, options.reference_date)
        site.extracts[gp_events.SOURCE] = extract
        site.truth_records = pl.concat([site.truth_records, truth]).sort(["source", "record_id"])
    if run is not None:
        site.caseload = caseload(run, site.extracts["gp_registrations"], site.truth_records, options.reference_date)
        site.programme_truth = programme_truth(run, site.caseload, pop.practice_codes)
    return site


_MYDOB = {"birth_year": '{ column = "MYDOB", format = "%m%Y", part = "year" }',
          "birth_month": '{ column = "MYDOB", format = "%m%Y", part = "month" }'}
_SEX_CODES = '{ column = "%s", values = { "1" = "M", "2" = "F" } }'
# name, file, record key, kind, fields (TOML values) of each synthetic extract.
_SITE_SOURCES: tuple[tuple[str, str, str, str, dict[str, str]], ...] = (
    ("gp", "gp_registrations", "Patient_ID", "gp_registrations", {
        "nhs": '"Pseudo_NHS_Number"', "birth_year": '"Birth_Year"', "birth_month": '"Birth_Month"',
        "sex": '"Sex"', "area": '"LSOA"', "practice": '"Practice_Code"'}),
    ("apc", "apc", "EPIKEY", "apc", {
        "nhs": '"Pseudo_NHS_Number"', **_MYDOB, "sex": _SEX_CODES % "SEX", "area": '"LSOA11"',
        "practice": '"GPPRAC"'}),
    ("ae", "ae", "EC_Ident", "ae", {
        "nhs": '"Pseudo_NHS_Number"',
        "birth_year": '{ column = "Birth_Month_Year", format = "%Y-%m", part = "year" }',
        "birth_month": '{ column = "Birth_Month_Year", format = "%Y-%m", part = "month" }',
        "sex": _SEX_CODES % "Sex", "area": '"LSOA"', "practice": '"GP_Practice_Code"'}),
    ("outpatients", "outpatients", "ATTENDKEY", "outpatients", {
        "nhs": '"Pseudo_NHS_Number"', **_MYDOB, "sex": _SEX_CODES % "SEX", "area": '"LSOA11"',
        "practice": '"GPPRAC"'}),
    ("social_care", "social_care", "Der_Unique_Record_ID", "social_care", {
        "nhs": '"Der_NHS_Number_Traced_Pseudo"', "la_id": '"Der_LA_Person_Unique_Identifier_Pseudo"',
        "birth_year": '"Der_Birth_Year"', "birth_month": '"Der_Birth_Month"',
        "sex": '{ column = "Gender", values = { "Male" = "M", "Female" = "F" } }', "area": '"LSOA"'}),
)
# The GP clinical extract comes from the same system as the registrations, with the same identifiers.
_GP_EVENTS_SOURCE: tuple[tuple[str, str, str, str, dict[str, str]], ...] = (
    (gp_events.SOURCE, gp_events.FILE, "Event_ID", "gp_events", _SITE_SOURCES[0][4]),)
# field, method and extra lines of each comparison. The registered practice is compared given the
# area: most of an area's people register with its practice, so where the areas agree, agreeing on the
# practice is weak evidence (u about 0.7 on a 100,000-person site), and where they differ (a move, an
# out-of-date address) it is strong. Compared as if independent of the area, it counted the area's
# evidence twice: precision fell from 0.9996 to 0.8985 on that site.
_SITE_COMPARISONS = (("nhs", "exact", ""), ("la_id", "exact", ""), ("birth_year", "numeric", "levels = [0, 1]\n"),
                     ("birth_month", "exact", ""), ("sex", "exact", ""), ("area", "exact", "term_frequency = true\n"),
                     ("practice", "exact", 'given = "area"\n'))


def site_config(reference_date: str, prefix: str = "", site_reference: str | None = None,
                caseload: bool = False, gp_extract: bool = True) -> str:
    """Return a linkcare config (TOML) for the synthetic extracts (the GP clinical extract with
    `gp_extract`), paths prefixed by `prefix`; its [monitor] plan year is the twelve months to
    `site_reference` (default `reference_date`), the site's own reference date, so every monthly snapshot
    of a site has the same plan."""
    parts = ["# A linkcare config for a synthetic site written by `linkcare synth`.\n"
             "# Paths are relative to this file. See docs/config.md for every key.\n"
             f'version = 1\nreference_date = "{reference_date}"\n']
    sources = _SITE_SOURCES + (_GP_EVENTS_SOURCE if gp_extract else ())
    for name, file, key, kind, fields in sources:
        lines = "".join(f"{field} = {value}\n" for field, value in fields.items())
        path = file if "." in file else f"{file}.csv"
        parts.append(f'[[sources]]\nname = "{name}"\npath = "{prefix}{path}"\nid = "{key}"\nkind = "{kind}"\n'
                     f"[sources.fields]\n{lines}")
    parts.append('[linkage]\nlink_type = "link_and_dedupe"\nthreshold = 0.95\n'
                 'deterministic = [["nhs", "birth_year", "sex"]]\n'
                 'blocking = [["nhs"], ["la_id"], ["birth_year", "birth_month", "area"]]\n')
    for field, method, extra in _SITE_COMPARISONS:
        parts.append(f'[[linkage.comparisons]]\nfield = "{field}"\nmethod = "{method}"\n{extra}')
    parts.append("[risk]\n# The deprivation decile of each LSOA (1 = most deprived), a public lookup.\n"
                 f'deprivation = {{ path = "{prefix}{AREAS_FILE}", area = "LSOA11CD", decile = "IMD_Decile" }}\n')
    parts.append(monitor_section(date.fromisoformat(site_reference or reference_date), prefix, caseload))
    return "\n".join(parts)


def write_site(out: Path, options: SynthOptions, *, overwrite: bool = False) -> SynthSummary:
    """Generate a site and write it into `out`, whole or not at all."""
    out = Path(out)
    _check_out(out, overwrite)
    started = time.perf_counter()
    log.info("generating a synthetic site of %d people (seed %d)", options.people, options.seed)
    site = make_site(options)
    log.info("generated in %.1f s; writing the extracts", time.perf_counter() - started)
    with atomic_dir(out) as tmp:
        rows = _write_files(tmp, site, options, options.reference_date, {})
    alive = int(site.truth_persons["alive_at_reference"].sum())
    seconds = time.perf_counter() - started
    log.info("wrote %s in %.1f s", out, seconds)
    return SynthSummary(out, rows, options.people, alive, seconds)


@dataclass(frozen=True)
class MonthsSummary:
    """What `synth --months` wrote: per month end, the rows per extract and the month's changes."""

    out: Path
    months: list[date]
    rows: dict[date, dict[str, int]]
    changes: dict[date, dict[str, int]]
    people: int
    seconds: float


def write_months(out: Path, options: SynthOptions, months: int, rates: MonthlyRates | None = None, *,
                 overwrite: bool = False) -> MonthsSummary:
    """Generate a site once and write it into `out` as it would arrive at each of the `months` month
    ends that end at its reference date, one folder `YYYY-MM-DD/` per month end, whole or not at all.

    A month end's folder is the same whatever `months` is: it depends on the options, `rates` and
    the month only."""
    out, rates = Path(out), rates or MonthlyRates()
    if not is_month_end(options.reference_date):
        raise ConfigError(f"--reference-date {options.reference_date.isoformat()} is not the last day of a month; "
                          "with --months the snapshots are month ends ending at the reference date")
    if not 1 <= months <= MAX_MONTHS:
        raise ConfigError(f"--months must be between 1 and {MAX_MONTHS}, got {months}")
    _check_out(out, overwrite)
    started = time.perf_counter()
    log.info("generating a synthetic site of %d people (seed %d) for %d month ends", options.people,
             options.seed, months)
    site = make_site(options)
    # The seventh child of the seed: the six before it are make_site's streams, which it leaves unchanged.
    plan = monthly_plan(site, rates, np.random.default_rng(np.random.SeedSequence(options.seed).spawn(7)[6]))
    reference_month = month_index(options.reference_date)
    rows: dict[date, dict[str, int]] = {}
    changes: dict[date, dict[str, int]] = {}
    with atomic_dir(out) as tmp:
        for month in snapshot_months(options.reference_date, months):
            snap = snapshot(site, plan, month, reference_month)
            folder = tmp / snap.month_end.isoformat()
            folder.mkdir()
            extra: dict[str, object] = {"site_reference_date": options.reference_date.isoformat(),
                                        "monthly_rates": asdict(rates), "changes": snap.changes}
            rows[snap.month_end] = _write_files(folder, snap.site, options, snap.month_end, extra)
            write_parquet(snap.revisions, folder / "truth" / "revisions.parquet")
            changes[snap.month_end] = snap.changes
        index = {"linkcare_version": __version__, "people": options.people, "seed": options.seed,
                 "reference_date": options.reference_date.isoformat(), "monthly_rates": asdict(rates),
                 "months": {d.isoformat(): {"rows": rows[d], **changes[d]} for d in rows}}
        (tmp / "months.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - started
    log.info("wrote %d month ends to %s in %.1f s", months, out, seconds)
    return MonthsSummary(out, list(rows), rows, changes, options.people, seconds)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty; choose a new folder or add --overwrite")


def _write_files(folder: Path, site: Site, options: SynthOptions, reference_date: date,
                 extra: dict[str, object]) -> dict[str, int]:
    """Write a site's extracts, areas, truth, site.toml and synth.json into `folder`; return the rows
    per extract. `extra` adds keys to synth.json (a snapshot's)."""
    for name in SOURCES:
        site.extracts[name].write_csv(folder / f"{name}.csv")
    gp = site.extracts.get(gp_events.SOURCE)
    if gp is not None:
        # Parquet: as CSV it would be most of a site's bytes (every row repeats its person's identifiers).
        write_parquet(gp, folder / gp_events.FILE)
    site.areas.write_csv(folder / AREAS_FILE)
    (folder / "truth").mkdir()
    write_parquet(site.truth_records, folder / "truth" / "records.parquet")
    write_parquet(site.truth_persons, folder / "truth" / "persons.parquet")
    (folder / "site.toml").write_text(site_config(reference_date.isoformat(), "", options.reference_date.isoformat(),
                                                  site.caseload is not None, gp is not None), encoding="utf-8")
    if site.caseload is not None:
        # A monthly snapshot's caseload is the list as it stood at that month end.
        site.caseload.filter(pl.col("Enrolment_Date") <= reference_date.isoformat()).write_csv(folder / CASELOAD_FILE)
        (folder / PROGRAMME_TRUTH).write_text(json.dumps(site.programme_truth, indent=2) + "\n", encoding="utf-8")
    (folder / PLAN_FILE).parent.mkdir()
    plan_trajectory(site.extracts["gp_registrations"], site.extracts["apc"], options.reference_date).write_csv(
        folder / PLAN_FILE)
    rows = {name: site.extracts[name].height for name in SOURCES}
    if gp is not None:
        rows[gp_events.SOURCE] = gp.height
    meta = {
        "linkcare_version": __version__,
        "people": options.people,
        "seed": options.seed,
        "reference_date": reference_date.isoformat(),
        "history_days": options.history_days,
        "error_rates": asdict(options.errors),
        "rows": rows,
        "visitors": int((~site.truth_persons["resident"]).sum()),
        "key": "given" if options.key is not None else "derived from the seed",
        **({} if options.programme is None else {"programme": {**asdict(options.programme),
                                                               "start": options.programme.start.isoformat()}}),
        **extra,
    }
    (folder / "synth.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return rows
