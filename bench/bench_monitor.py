"""Benchmark `linkcare monitor` beside `linkcare link` on the same synthetic sites (100,000 and 1,000,000
people by default), with three cohorts (two rules frozen at the plan year's start and an MDT caseload
file of spine keys) besides the population, over the site's 36 months.

How the figures are got:
- each command runs as a child process (bench/measure.py): seconds = wall clock from start to exit,
  peak MiB = the tool's maximum resident set size as GNU time reports it;
- `link` runs first on the site (its own fresh output), then `monitor` on that output;
- counting is checked against the truth: the population's emergency admissions and A&E attendances per
  month, counted straight from the raw extracts for the true residents while registered and alive
  (truth/records.parquet gives each record's true person), against monitor.parquet; the gap is what
  linkage costs the counts (a hospital record not linked to its spine person is not counted). Each
  month's relative error is quoted: mean of |monitor - truth| / truth, and the largest.

Targets (issue 16): monitor takes less time than link on the same site, and peaks under 4 GB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from measure import HOW_MEASURED, run_child
from site_cases import synth_site

SITE_SEED = 11
EMERGENCY = ("21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28")
COHORTS = """
[monitor]
[[monitor.cohorts]]
name = "over_75"
where = {{ age_min = 75 }}
enrolled = "{start}"
[[monitor.cohorts]]
name = "over_65_with_care"
where = {{ age_min = 65, social_care = "long_term_support" }}
enrolled = "{start}"
[[monitor.cohorts]]
name = "mdt_caseload"
members = "{caseload}"
key = "Patient_ID"
date = "Enrolment_Date"
"""


def monitor_config(site: Path, work: Path, people: int, seed: int) -> tuple[Path, int]:
    """Write the bench's config (the site's, its [monitor] replaced by three cohorts) and a caseload of 2% of
    the registered people, each enrolled on a day of the plan year; return it and the caseload's size."""
    text = (site / "site.toml").read_text(encoding="utf-8")
    text = text.split("[monitor]")[0]
    text = text.replace('path = "', f'path = "{site.resolve().as_posix()}/')
    gp = pl.read_csv(site / "gp_registrations.csv", columns=["Patient_ID"], infer_schema=False)
    rng = np.random.default_rng(seed)
    chosen = gp.sample(n=max(people // 50, 10), seed=seed).sort("Patient_ID")
    start = dt.date(2025, 4, 1)
    days = rng.integers(0, 365, chosen.height)
    caseload = work / "mdt_caseload.csv"
    work.mkdir(parents=True, exist_ok=True)
    dates = [(start + dt.timedelta(days=int(d))).isoformat() for d in days]
    pl.DataFrame({"Patient_ID": chosen["Patient_ID"], "Enrolment_Date": dates}).write_csv(caseload)
    config = work / "monitor.toml"
    config.write_text(text + COHORTS.format(start=start.isoformat(), caseload=caseload.as_posix()), encoding="utf-8")
    return config, chosen.height


def truth_counts(site: Path, months: list[dt.date]) -> pl.DataFrame:
    """Return month, measure and the true count: residents' emergency admissions and A&E attendances
    while registered and alive."""
    truth = pl.read_parquet(site / "truth" / "records.parquet").with_columns(pl.col("person").cast(pl.Int64))
    persons = pl.read_parquet(site / "truth" / "persons.parquet", columns=["person", "resident"])
    gp = (pl.read_csv(site / "gp_registrations.csv", columns=["Patient_ID", "Registration_Date", "Date_Of_Death"],
                      infer_schema=False)
          .join(truth.filter(pl.col("source").is_in(["gp", "gp_registrations"])), left_on="Patient_ID",
                right_on="record_id")
          .group_by("person").agg(pl.col("Registration_Date").str.to_date().min().alias("entry"),
                                  pl.col("Date_Of_Death").str.to_date(strict=False).min().alias("exit")))
    residents = persons.filter(pl.col("resident")).join(gp, on="person").drop("resident")

    def count(file: str, key: str, date_col: str, keep: pl.Expr, measure: str) -> pl.DataFrame:
        rows = pl.read_csv(site / file, infer_schema=False).filter(keep).select(
            pl.col(key).alias("record_id"), pl.col(date_col).str.to_date().alias("day"))
        source = file.removesuffix(".csv")
        rows = rows.join(truth.filter(pl.col("source") == source), on="record_id").join(residents, on="person")
        alive = pl.col("exit").is_null() | (pl.col("day") <= pl.col("exit"))
        rows = rows.filter((pl.col("day") >= pl.col("entry")) & alive)
        return (rows.with_columns(pl.col("day").dt.truncate("1mo").alias("month"))
                .filter(pl.col("month").is_in(months)).group_by("month").len()
                .select("month", pl.lit(measure).alias("measure"), pl.col("len").alias("truth")))

    return pl.concat([
        count("apc.csv", "EPIKEY", "ADMIDATE", pl.col("ADMIMETH").is_in(EMERGENCY), "emergency_admissions"),
        count("ae.csv", "EC_Ident", "Arrival_Date", pl.lit(True), "ae_attendances"),
    ])


def bench_site(people: int, out: Path, timeout: float | None) -> dict[str, Any]:
    site = out / "data" / f"site_{people}_s{SITE_SEED}"
    config, _ = synth_site(site, people, SITE_SEED, timeout)
    work = out / "monitor" / f"site_{people}"
    monitor_toml, caseload = monitor_config(site, work, people, SITE_SEED)
    cohort, result = work / "cohort", work / "monitor"
    for folder in (cohort, result):
        shutil.rmtree(folder, ignore_errors=True)
    linkcare = [sys.executable, "-m", "linkcare", "-q"]
    print(f"  linkcare link on {people:,} people", flush=True)
    link = run_child([*linkcare, "link", str(config), "--out", str(cohort)], timeout=timeout, log=work / "link.log")
    if not link.ok:
        raise SystemExit(f"link failed:\n{link.tail()}")
    print(f"    {link.seconds:.1f} s, peak {link.peak_mib:,.0f} MiB; linkcare monitor (3 cohorts and the population)",
          flush=True)
    mon = run_child([*linkcare, "monitor", str(monitor_toml), "--cohort", str(cohort), "--out", str(result)],
                    timeout=timeout, log=work / "monitor.log")
    if not mon.ok:
        raise SystemExit(f"monitor failed:\n{mon.tail()}")
    print(f"    {mon.seconds:.1f} s, peak {mon.peak_mib:,.0f} MiB", flush=True)
    table = pl.read_parquet(result / "monitor.parquet")
    months = sorted(table["month"].unique().to_list())
    counted = table.filter((pl.col("cohort") == "population")
                           & pl.col("measure").is_in(["emergency_admissions", "ae_attendances"])).select(
        "month", "measure", pl.col("events").alias("monitor"))
    check = counted.join(truth_counts(site, months), on=["month", "measure"], how="left").with_columns(
        ((pl.col("monitor") - pl.col("truth")).abs() / pl.col("truth")).alias("error"))
    errors = {m: {"mean_relative_error": round(float(g["error"].mean()), 5),
                  "max_relative_error": round(float(g["error"].max()), 5),
                  "monitor_total": int(g["monitor"].sum()), "truth_total": int(g["truth"].sum())}
              for (m,), g in check.group_by("measure")}
    manifest = json.loads((result / "manifest.json").read_text())
    figures = {
        "people": people, "months": len(months), "first": str(months[0]), "last": str(months[-1]),
        "cohorts": manifest["cohorts"], "caseload_rows": caseload,
        "link": {"seconds": round(link.seconds, 1), "peak_mib": round(link.peak_mib)},
        "monitor": {"seconds": round(mon.seconds, 1), "peak_mib": round(mon.peak_mib)},
        "monitor_over_link": round(mon.seconds / link.seconds, 3),
        "counts_against_truth": errors,
        "targets": {"monitor faster than link": mon.seconds < link.seconds,
                    "monitor peak < 4096 MiB": mon.peak_mib < 4096},
    }
    for name, ok in figures["targets"].items():
        print(f"    target {name}: {'met' if ok else 'MISSED'}", flush=True)
    for measure, e in errors.items():
        print(f"    {measure}: monitor {e['monitor_total']:,} vs truth {e['truth_total']:,}; monthly relative error "
              f"mean {e['mean_relative_error']:.4f}, max {e['max_relative_error']:.4f}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--people", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    print(f"bench_monitor: {HOW_MEASURED}", flush=True)
    results = [bench_site(n, args.out, args.timeout) for n in args.people]
    (args.out / "monitor.json").write_text(json.dumps({"how_measured": HOW_MEASURED, "sites": results}, indent=2,
                                                      default=str) + "\n")
    print(f"wrote {args.out / 'monitor.json'}")


if __name__ == "__main__":
    main()
