"""Benchmark `linkcare monitor`'s matched comparison against a programme whose effect is known.

For each seed and each true effect (0.85, and 1.0: no effect), `linkcare synth --programme-effect E`
writes a site (100,000 people by default) whose MDT programme enrols, at half of the practices, the
adults with two or more emergency admissions in the past year and multiplies their emergency admission
and A&E hazards by E from the month after enrolment (truth/programme.json). `linkcare link` and
`linkcare monitor` run on it; impact.parquet gives the rate ratio of emergency admissions with its 95%
interval, the naive before-and-after change of the enrolled and the largest standardised mean
difference after matching. The bench reports, per effect, how often the interval covers the true
effect (coverage), the mean estimate, how often the naive change is a fall of 15% or more, and the
largest SMD; then one run on 1,000,000 people for time and memory.

Each command runs as a child process (bench/measure.py): seconds = wall clock, peak MiB = the child's
maximum resident set size as GNU time reports it. The monitor run's time includes all of monitor (the
counting, SPC and report as well as the matching and estimation).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import polars as pl
from measure import HOW_MEASURED, run_child

LINKCARE = [sys.executable, "-m", "linkcare", "-q"]


def one_run(out: Path, people: int, seed: int, effect: float, timeout: float) -> dict[str, Any]:
    """Write, link and monitor one programme site; return its figures."""
    site = out / f"site_{people}_s{seed}_e{effect:g}"
    shutil.rmtree(site, ignore_errors=True)
    steps = {}
    for name, cmd in (
            ("synth", [*LINKCARE, "synth", str(site / "data"), "--people", str(people), "--seed", str(seed),
                       "--programme-effect", str(effect)]),
            ("link", [*LINKCARE, "link", str(site / "data" / "site.toml"), "--out", str(site / "cohort")]),
            ("monitor", [*LINKCARE, "monitor", str(site / "data" / "site.toml"), "--cohort", str(site / "cohort"),
                         "--out", str(site / "monitor")])):
        run = run_child(cmd, timeout=timeout, log=site.parent / f"{site.name}.{name}.log")
        if not run.ok:
            raise SystemExit(f"{name} failed for seed {seed}, effect {effect}:\n{run.tail()}")
        steps[name] = {"seconds": round(run.seconds, 1), "peak_mib": round(run.peak_mib)}
    impact = pl.read_parquet(site / "monitor" / "impact.parquet")
    truth = json.loads((site / "data" / "truth" / "programme.json").read_text())
    rows = {r["measure"]: r for r in impact.to_dicts()}
    em = rows["emergency_admissions"]
    figures = {"seed": seed, "true_effect": truth["true_effect"]["emergency_admissions"], "enrolled": truth["enrolled"],
               "matched": em["enrolled_people"], "unmatched": em["unmatched_people"],
               "rate_ratio": em["rate_ratio"], "ci": [em["ci_low"], em["ci_high"]],
               "covers": em["ci_low"] <= effect <= em["ci_high"], "naive_change": em["naive_change"],
               "comparison_change": em["comparison_change"], "max_abs_smd": em["max_abs_smd"],
               "ae": {k: rows["ae_attendances"][k] for k in ("rate_ratio", "ci_low", "ci_high")},
               "steps": steps}
    print(f"    seed {seed}, effect {effect:g}: rate ratio {em['rate_ratio']:.3f} ({em['ci_low']:.3f}-"
          f"{em['ci_high']:.3f}) {'covers' if figures['covers'] else 'MISSES'} the truth; naive change "
          f"{em['naive_change'] - 1:+.1%}, matched group {em['comparison_change'] - 1:+.1%}; max |SMD| "
          f"{em['max_abs_smd']:.3f}; {em['enrolled_people']} matched, {em['unmatched_people']} unmatched; "
          f"monitor {steps['monitor']['seconds']} s", flush=True)
    if people >= 1_000_000:
        shutil.rmtree(site / "cohort", ignore_errors=True)  # 1M outputs are large; the figures are kept
    return figures


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    covered = sum(r["covers"] for r in runs)
    falls = sum(r["naive_change"] <= 0.85 for r in runs)
    return {"runs": len(runs), "covered": covered, "coverage": covered / len(runs),
            "mean_rate_ratio": sum(r["rate_ratio"] for r in runs) / len(runs),
            "naive_fall_of_15pc_or_more": falls, "max_abs_smd": max(r["max_abs_smd"] for r in runs),
            "all_smd_below_0_1": all(r["max_abs_smd"] < 0.1 for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--big", type=int, default=1_000_000, help="People of the one timing run (0: none).")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    out = args.out / "impact"
    out.mkdir(parents=True, exist_ok=True)
    print(f"bench_impact: {HOW_MEASURED}", flush=True)
    results: dict[str, Any] = {"how_measured": HOW_MEASURED, "people": args.people, "effects": {}}
    for effect in (0.85, 1.0):
        print(f"  true effect {effect:g}, {args.people:,} people, seeds {args.seeds}", flush=True)
        runs = [one_run(out, args.people, seed, effect, args.timeout) for seed in args.seeds]
        results["effects"][str(effect)] = {"summary": summary(runs), "runs": runs}
        s = summary(runs)
        print(f"  effect {effect:g}: the 95% interval covers the truth in {s['covered']} of {s['runs']} runs; mean "
              f"rate ratio {s['mean_rate_ratio']:.3f}; naive fall of 15% or more in {s['naive_fall_of_15pc_or_more']}"
              f" of {s['runs']}; largest |SMD| after matching {s['max_abs_smd']:.3f}", flush=True)
        for f in (out / "x").parent.glob(f"site_{args.people}_s*_e{effect:g}"):
            shutil.rmtree(f / "cohort", ignore_errors=True)
    if args.big:
        print(f"  one run of {args.big:,} people (effect 0.85) for time and memory", flush=True)
        big = one_run(out, args.big, args.seeds[0], 0.85, args.timeout)
        results["big"] = big
        m = big["steps"]["monitor"]
        print(f"  {args.big:,} people: monitor (counting, SPC, report, matching and estimation) {m['seconds']} s, "
              f"peak {m['peak_mib']:,} MiB (targets: a few minutes, under 4,096 MiB: "
              f"{'met' if m['seconds'] < 300 and m['peak_mib'] < 4096 else 'MISSED'})", flush=True)
    (args.out / "impact.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out / 'impact.json'}")


if __name__ == "__main__":
    main()
