"""Benchmark `linkcare synth --months`: time and peak memory of writing the month ends, the monthly
rates measured from the extracts (linkcare.synth.audit.measure_months), and person-ID carry-over:
each month linked with `linkcare link --previous` the month before's output, and the share of the
earlier month's true people (truth/records.parquet) whose person ID the later month keeps, beside
the same month linked without --previous.

Each command runs as a child process; its peak resident memory comes from the kernel's
accounting of that child (os.wait4), its time from a monotonic clock around it. A true person's ID
in a month is the ID most of their records carry (ties: the smaller ID).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from linkcare.synth.audit import measure_months


def run(args: list[str]) -> tuple[float, float]:
    """Run `linkcare ARGS` in a child process; return (seconds, peak resident MiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "linkcare", "-q", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"linkcare {' '.join(args)} failed")
    return time.perf_counter() - started, usage.ru_maxrss / 1024.0


def kept_share(truth_path: Path, before: Path, after: Path) -> tuple[int, int]:
    """Return (people kept, people) of the true people of `before`'s month whose ID `after` keeps."""
    truth = pl.read_parquet(truth_path)
    index = [pl.read_parquet(c / "person_index.parquet", columns=["source", "record_id", "person_id"])
             for c in (before, after)]
    both = index[0].join(truth, on=["source", "record_id"]).join(index[1], on=["source", "record_id"],
                                                                 suffix="_after")

    def modal(column: str) -> pl.DataFrame:
        return (both.group_by("person", column).len().sort(["person", "len", column], descending=[False, True, False])
                .group_by("person", maintain_order=True).first().select("person", column))

    people = modal("person_id").join(modal("person_id_after"), on="person", how="left")
    return int((people["person_id"] == people["person_id_after"]).fill_null(False).sum()), people.height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--months", type=int, default=3)
    args = parser.parse_args()
    site = args.out / f"months_{args.people}"
    if site.exists():
        shutil.rmtree(site)
    seconds, mib = run(["synth", str(site), "--people", str(args.people), "--seed", str(args.seed),
                        "--months", str(args.months)])
    print(f"synth --months {args.months}, {args.people:,} people: {seconds:.1f} s, peak {mib:.0f} MiB")
    folders = sorted(p for p in site.iterdir() if p.is_dir())
    measured = measure_months(folders)
    rates = json.loads((site / "months.json").read_text())["monthly_rates"]
    print(f"documented rates: {rates}")
    for name, value in measured.items():
        print(f"  {name:30s} {value:,.4f}")
    carry_over: list[dict[str, object]] = []
    previous: Path | None = None
    for folder in folders:
        out = args.out / f"months_{args.people}_cohort" / folder.name
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--previous", str(previous)] if previous is not None else []
        link_seconds, link_mib = run(["link", str(folder / "site.toml"), "--out", str(out), *extra])
        if previous is not None:
            fresh = out.with_name(out.name + "_fresh")
            shutil.rmtree(fresh, ignore_errors=True)
            run(["link", str(folder / "site.toml"), "--out", str(fresh)])
            truth = site / previous.name / "truth" / "records.parquet"
            kept, people = kept_share(truth, previous, out)
            kept_fresh, _ = kept_share(truth, previous, fresh)
            print(f"{folder.name}: link {link_seconds:.1f} s, peak {link_mib:.0f} MiB; of {people:,} true people of "
                  f"{previous.name}, {kept:,} ({kept / people:.2%}) keep their ID with --previous, "
                  f"{kept_fresh:,} ({kept_fresh / people:.2%}) without")
            carry_over.append({"month": folder.name, "people": people, "kept": kept,
                               "kept_without_previous": kept_fresh})
        else:
            print(f"{folder.name}: link {link_seconds:.1f} s, peak {link_mib:.0f} MiB")
        previous = out
    result = {"people": args.people, "seed": args.seed, "months": args.months, "synth_seconds": seconds,
              "synth_peak_mib": mib, "measured": measured, "documented": rates, "carry_over": carry_over}
    (args.out / "bench_months.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
