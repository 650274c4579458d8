"""Benchmark `linkcare synth`: wall time and peak memory at 100,000 and 1,000,000 people, the
measured identifier error rates, changes of practice and the practice on hospital records, the
people in no other extract, and the oracle AUROC of the generated sites.

Each size runs `linkcare synth` as a child process; its peak resident memory comes from the
kernel's accounting of that child (os.wait4), its time from a monotonic clock around it. The
sites are then read back and measured against their truth with linkcare.synth.audit.
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

from linkcare.synth.audit import (
    HOSPITAL,
    load_site,
    measure_error_rates,
    measure_practices,
    measure_visitors,
    oracle_auroc,
)

TARGET_SECONDS_1M = 180.0


def run_synth(out: Path, people: int, seed: int) -> tuple[float, float]:
    """Run `linkcare synth` in a child process; return (seconds, peak resident MiB)."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "linkcare", "-q", "synth", str(out), "--people", str(people),
           "--seed", str(seed), "--reference-date", "2026-03-31"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"linkcare synth failed for {people} people")
    return seconds, usage.ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep", action="store_true", help="keep the generated sites")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for people in args.sizes:
        site_dir = args.out / f"synth_{people}"
        seconds, peak_mib = run_synth(site_dir, people, args.seed)
        site = load_site(site_dir)
        rates = measure_error_rates(site)
        auroc, outcome_rate, scored = oracle_auroc(site)
        size_mib = sum(p.stat().st_size for p in site_dir.rglob("*") if p.is_file()) / 2**20
        results.append({"people": people, "seconds": round(seconds, 2), "peak_mib": round(peak_mib, 1),
                         "size_mib": round(size_mib, 1), "oracle_auroc": round(auroc, 4),
                         "outcome_rate": round(outcome_rate, 4), "people_scored": scored,
                         "error_rates": rates, "practices": measure_practices(site),
                         "visitors": measure_visitors(site)})
        if not args.keep:
            shutil.rmtree(site_dir)

    print("\nlinkcare synth (one child process per size; time = wall clock, memory = peak RSS)")
    header = ("people", "seconds", "peak MiB", "on disk MiB", "oracle AUROC", "outcome rate")
    print(f"{header[0]:>10} {header[1]:>9} {header[2]:>9} {header[3]:>12} {header[4]:>13} {header[5]:>13}")
    for r in results:
        print(f"{r['people']:>10,} {r['seconds']:>9.1f} {r['peak_mib']:>9.0f} {r['size_mib']:>12.0f} "
              f"{r['oracle_auroc']:>13.3f} {r['outcome_rate']:>13.3f}")
    largest = results[-1]
    print("\nMeasured identifier error rates (share of records, largest site, against truth/):")
    print(f"{'extract':<18} {'records':>10} {'nhs miss':>9} {'nhs wrong':>10} {'month':>7} {'year':>7} {'sex':>7}")
    for name, r in largest["error_rates"].items():
        print(f"{name:<18} {int(r['records']):>10,} {r['nhs_missing']:>9.4f} {r['nhs_wrong']:>10.4f} "
              f"{r['birth_month_wrong']:>7.4f} {r['birth_year_wrong']:>7.4f} {r['sex_wrong']:>7.4f}")
    sc = largest["error_rates"]["social_care"]
    print(f"social care: stale LSOA after a move {sc['stale_area']:.4f} of records; "
          f"two council IDs {sc['second_council_id']:.4f} of {int(sc['clients']):,} clients")
    people = largest["practices"]["people"]
    print(f"changes of practice: {people['change_on_move']:.4f} of {int(people['movers']):,} movers, "
          f"{people['change_other']:.4f} of {int(people['others']):,} others")
    origin = largest["visitors"]["people"]
    print(f"people in no other extract: {int(origin['visitors']):,}; from overseas {origin['overseas']:.4f}, "
          f"living locally but registered with no site practice {origin['local_unregistered']:.4f}")
    print(f"{'extract':<12} {'records':>9} {'practice':>9} {'blank':>7} {'stale':>7} {'visitors':>9} "
          f"{'repeat':>7} {'away':>6}")
    for name in HOSPITAL:
        p, v = largest["practices"][name], largest["visitors"][name]
        print(f"{name:<12} {int(p['records']):>9,} {p['with_practice']:>9.4f} {p['practice_missing']:>7.4f} "
              f"{p['practice_stale']:>7.4f} {v['visitor_share']:>9.4f} {v['visitors_with_repeats']:>7.4f} "
              f"{v['visitor_records_out_of_area']:>6.4f}")
    print("  practice: share of records with one; blank: of those whose person had one that day; stale: old practice "
          "among records after a change; visitors: share of records; repeat: visitors with several records; "
          "away: visitors' records with an LSOA outside the site")
    if largest["people"] >= 1_000_000:
        verdict = "meets" if largest["seconds"] <= TARGET_SECONDS_1M else "MISSES"
        print(f"\n1,000,000 people in {largest['seconds']:.0f} s: {verdict} the {TARGET_SECONDS_1M:.0f} s target")
    (args.out / "synth.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.out / 'synth.json'}")


if __name__ == "__main__":
    main()
