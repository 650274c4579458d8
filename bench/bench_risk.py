"""Benchmark `linkcare train` and `linkcare stratify` against the truth of synthetic sites (issue 4).

For each size (100,000 and 1,000,000 people by default), with a site from `linkcare synth --seed 11`:

  1. `linkcare link`, then `linkcare train` (as of the reference date minus 365 days) and
     `linkcare stratify` at the reference date, each in its own child process.
  2. The scored people are matched to the truth through their spine record (truth/records.parquet)
     and scored against the outcome in truth/persons.parquet: whether each had an emergency
     admission in the 365 days after the reference date, simulated after the extracts end.
  3. The oracle AUROC is the AUROC of the true risk (truth/persons.parquet `risk`, the exact
     probability the simulation used) against the same outcomes of the same people.
  4. The same train and stratify run on a cohort built from the truth instead of from `link`
     (every record given its true person, events written by linkcare's own cohort builder):
     the difference in AUROC is what linkage errors cost.
  5. The gain from social care is train's own figure: the AUROC on its later period of the same
     model fitted with and without the social-care features.
  6. A ceiling check: how far the oracle is reachable from the records at all. The simulation's risk
     rests on a latent frailty (and a latent need for care) that no extract records. A logistic
     regression on stratify's log-odds, refitted by 5-fold cross-validation on the outcomes, is
     scored alone, with the true number of long-term conditions added, with the true latent frailty added,
     and with both: the AUROC those reach shows how much of the gap to the oracle is information
     the extracts do not hold, not the model.

  7. A tuned reference (issue 18): on the cohort built from the truth, the same features train builds
     (linkcare.risk.features at train's fitting and evaluation dates), a LightGBM model whose tree size
     (4 to 63 leaves, learning rate 0.1) and number of trees are chosen by 5-fold cross-validation on
     the fitting period (log loss, early stopping in each fold), refitted on the whole fitting
     period and evaluated on the later period. Its AUROC there is set beside the AUROC train's
     default model reached on the same people and outcomes (metrics.json of the truth cohort's train).
  8. Calibration per age band from 65 up, on stratify's scores against the truth, for each band with at
     least 100 outcomes.

Targets: AUROC within 0.03 of the oracle and within 0.005 of the tuned reference; calibration slope
0.9-1.1 and intercept within +-0.1, overall and per age band from 65 up; AUROC lost to linkage at most
0.005; at 1,000,000 people, stratify under 60 s and train under 120 s.

Time is wall clock around each child; peak memory is the child's maximum resident set size
(os.wait4). Results: a table on standard output and OUT/risk.json.
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
from measure import HOW_MEASURED, ChildRun, run_child
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from linkcare.cohort.dataset import open_cohort
from linkcare.cohort.events import write_events
from linkcare.config import load_config
from linkcare.risk.features import build_features
from linkcare.risk.metrics import auroc, calibration, risk_metrics

SEED = 11
TARGETS = {"auroc_gap": 0.03, "reference_gap": 0.005, "slope": (0.9, 1.1), "intercept": 0.1, "linkage_loss": 0.005,
           "stratify_1m": 60.0, "train_1m": 120.0, "band_outcomes": 100}
REFERENCE_LEAVES = (4, 8, 15, 31, 63)


def _run(cmd: list[str], log: Path, what: str) -> ChildRun:
    print(f"  {what}: {' '.join(cmd[3:])}", flush=True)
    run = run_child([sys.executable, "-m", "linkcare", *cmd], log=log)
    if not run.ok:
        raise SystemExit(f"{what} failed (exit {run.exit_code}); see {log}:\n{run.tail()}")
    print(f"    {run.seconds:.1f} s, peak {run.peak_mib:,.0f} MiB", flush=True)
    return run


def site(out: Path, people: int) -> Path:
    """Return a synthetic site of `people` (generated unless already there)."""
    folder = out / f"site_{people}_s{SEED}"
    if not (folder / "areas.csv").exists():
        if folder.exists():
            shutil.rmtree(folder)
        _run(["-q", "synth", str(folder), "--people", str(people), "--seed", str(SEED)], out / "synth.log", "synth")
    return folder


def truth_cohort(site_dir: Path, out: Path) -> Path:
    """Write a cohort dataset whose people are the true people: events and persons as `link` writes them."""
    config = load_config(site_dir / "site.toml")
    truth = pl.read_parquet(site_dir / "truth" / "records.parquet")
    index = truth.select("source", "record_id", pl.format("T{}", pl.col("person")).alias("person_id"))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_events(config, index, out / "events.parquet")
    persons = pl.read_parquet(site_dir / "truth" / "persons.parquet")
    persons.select(pl.format("T{}", pl.col("person")).alias("person_id"),
                   pl.col("birth_year").cast(pl.String), pl.col("birth_month").cast(pl.String),
                   pl.col("sex").cast(pl.String).str.to_lowercase(),
                   pl.col("lsoa").str.to_lowercase().alias("area")).write_parquet(out / "persons.parquet")
    return out


def score_against_truth(risk_dir: Path, site_dir: Path) -> dict[str, Any]:
    """Return metrics of risk.parquet against the true outcomes, and the oracle AUROC on the same people."""
    risk = pl.read_parquet(risk_dir / "risk.parquet").select("record_id", "risk", "age_band")
    spine = pl.read_parquet(site_dir / "truth" / "records.parquet").filter(pl.col("source") == "gp")
    persons = pl.read_parquet(site_dir / "truth" / "persons.parquet").select(
        "person", pl.col("risk").alias("true_risk"), "outcome", "alive_at_reference", "frailty", "conditions")
    joined = risk.join(spine, on="record_id").join(persons, on="person").filter(pl.col("alive_at_reference"))
    y = joined["outcome"].to_numpy().astype(bool)
    p = joined["risk"].to_numpy()
    metrics = risk_metrics(y, p, seed=SEED)
    oracle = auroc(y, joined["true_risk"].to_numpy())
    slope, intercept = calibration(y, joined["true_risk"].to_numpy())
    return {"people_scored": risk.height, "people_matched": joined.height, "metrics": metrics,
            "oracle_auroc": oracle, "oracle_calibration": [slope, intercept],
            "ceiling_check": ceiling_check(joined), "age_bands": band_calibration(joined),
            "people_alive_at_reference": int(persons["alive_at_reference"].sum())}


def band_calibration(joined: pl.DataFrame) -> list[dict[str, Any]]:
    """Return the calibration slope and intercept of each age band from 65 up (step 8)."""
    out = []
    bands = [b for b in joined["age_band"].unique().to_list() if b and b[:2].isdigit() and int(b[:2]) >= 65]
    for band in sorted(bands):
        part = joined.filter(pl.col("age_band") == band)
        y, p = part["outcome"].to_numpy().astype(bool), part["risk"].to_numpy()
        slope, intercept = calibration(y, p)
        out.append({"band": band, "people": part.height, "outcomes": int(y.sum()), "slope": slope,
                    "intercept": intercept, "auroc": auroc(y, p)})
    return out


def tuned_reference(site_dir: Path, cohort: Path, trained: dict[str, Any]) -> dict[str, Any]:
    """Return the tuned reference's choice and AUROC on train's later period (step 7)."""
    import lightgbm

    config = load_config(site_dir / "site.toml")
    opened = open_cohort(cohort)
    windows = tuple(trained["lookback_days"])
    horizon = int(trained["horizon_days"])
    fit_index = dt.date.fromisoformat(trained["fitting"]["index_date"])
    test_index = dt.date.fromisoformat(trained["evaluation"]["index_date"])
    fit_set = build_features(config, opened, fit_index, windows, horizon)
    test_set = build_features(config, opened, test_index, windows, horizon)
    names = [f.name for f in fit_set.features]
    x, y = fit_set.matrix(names), fit_set.frame["outcome"].to_numpy().astype(float)
    xt, yt = test_set.matrix(names), test_set.frame["outcome"].to_numpy().astype(bool)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    grid = []
    for leaves in REFERENCE_LEAVES:
        params = {"objective": "binary", "learning_rate": 0.1, "num_leaves": leaves, "min_data_in_leaf": 100,
                  "lambda_l2": 1.0, "num_threads": 2, "deterministic": True, "force_row_wise": True,
                  "seed": SEED, "verbose": -1}
        losses, rounds = [], []
        for train_rows, valid_rows in folds.split(x, y):
            dtrain = lightgbm.Dataset(x[train_rows], y[train_rows])
            dvalid = lightgbm.Dataset(x[valid_rows], y[valid_rows], reference=dtrain)
            booster = lightgbm.train(params, dtrain, 3000, valid_sets=[dvalid],
                                     callbacks=[lightgbm.early_stopping(50, verbose=False)])
            losses.append(booster.best_score["valid_0"]["binary_logloss"])
            rounds.append(booster.best_iteration)
        grid.append({"num_leaves": leaves, "cv_logloss": float(np.mean(losses)), "trees": int(np.mean(rounds)),
                     "params": params})
        print(f"    reference: {leaves} leaves, CV log loss {np.mean(losses):.5f}, {int(np.mean(rounds))} trees",
              flush=True)
    best = min(grid, key=lambda g: g["cv_logloss"])
    booster = lightgbm.train(best["params"], lightgbm.Dataset(x, y), best["trees"])
    ref = auroc(yt, booster.predict(xt, raw_score=True))
    default = trained["default_model"]
    return {"grid": [{k: v for k, v in g.items() if k != "params"} for g in grid], "chosen_leaves": best["num_leaves"],
            "chosen_trees": best["trees"], "reference_auroc": ref, "linkcare_model": default,
            "linkcare_auroc": trained["models"][default]["auroc"],
            "gap": ref - trained["models"][default]["auroc"], "people_fitted": int(y.size),
            "people_evaluated": int(yt.size)}


def ceiling_check(joined: pl.DataFrame) -> dict[str, float]:
    """Return the cross-validated AUROC of stratify's log-odds alone and with latent truth added (step 6)."""
    y = joined["outcome"].to_numpy().astype(bool)
    p = np.clip(joined["risk"].to_numpy(), 1e-9, 1 - 1e-9)
    score = np.log(p / (1 - p))[:, None]
    conditions = joined["conditions"].to_numpy()[:, None].astype(float)  # how many, recorded or not
    frailty = joined["frailty"].to_numpy()[:, None]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    out = {}
    for name, x in (("score", score), ("score_conditions", np.hstack([score, conditions])),
                    ("score_frailty", np.hstack([score, frailty])),
                    ("score_conditions_frailty", np.hstack([score, conditions, frailty]))):
        q = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=folds, method="predict_proba")[:, 1]
        out[name] = auroc(y, q)
    return out


def run_size(out: Path, people: int) -> dict[str, Any]:
    print(f"\n[{people:,} people]", flush=True)
    work = out / "risk" / f"p{people}"
    work.mkdir(parents=True, exist_ok=True)
    site_dir = site(out / "risk", people)
    config = str(site_dir / "site.toml")
    runs: dict[str, ChildRun] = {}
    runs["link"] = _run(["-q", "link", config, "--out", str(work / "cohort")], work / "link.log", "link")
    result: dict[str, Any] = {"people": people, "site": str(site_dir)}
    for variant, cohort in (("linked", work / "cohort"), ("truth", None)):
        if cohort is None:
            cohort = truth_cohort(site_dir, work / "truth_cohort")
        model, risk = work / f"model_{variant}", work / f"risk_{variant}"
        runs[f"train_{variant}"] = _run(["-q", "train", config, "--cohort", str(cohort), "--out", str(model)],
                                        work / f"train_{variant}.log", f"train ({variant})")
        runs[f"stratify_{variant}"] = _run(["-q", "stratify", config, "--cohort", str(cohort), "--model", str(model),
                                            "--out", str(risk)], work / f"stratify_{variant}.log",
                                           f"stratify ({variant})")
        scored = score_against_truth(risk, site_dir)
        trained = json.loads((model / "metrics.json").read_text())
        scored["train_metrics"] = {k: {m: v[m] for m in ("auroc", "auprc", "brier", "calibration_slope",
                                                           "calibration_intercept")}
                                   for k, v in trained["models"].items()}
        scored["social_care"] = trained["social_care"]
        scored["ablation"] = trained.get("ablation")
        scored["default_model"] = trained["default_model"]
        scored["default_model_rule"] = trained.get("default_model_rule")
        if variant == "truth":
            scored["reference"] = tuned_reference(site_dir, cohort, trained)
        scored["lookback_days"] = trained["lookback_days"]
        result[variant] = scored
    result["runs"] = {k: {"seconds": round(r.seconds, 2), "peak_mib": round(r.peak_mib, 1)} for k, r in runs.items()}
    return result


def targets(r: dict[str, Any]) -> list[tuple[str, float, str, bool]]:
    linked, truth = r["linked"], r["truth"]
    m = linked["metrics"]
    gap = linked["oracle_auroc"] - m["auroc"]
    loss = truth["metrics"]["auroc"] - m["auroc"]
    lo, hi = TARGETS["slope"]
    rows = [
        ("AUROC within 0.03 of the oracle", gap, f"<= {TARGETS['auroc_gap']}", gap <= TARGETS["auroc_gap"]),
        ("calibration slope 0.9-1.1", m["calibration_slope"], f"{lo}-{hi}", lo <= m["calibration_slope"] <= hi),
        ("calibration intercept within 0.1", m["calibration_intercept"], "+-0.1",
         abs(m["calibration_intercept"]) <= TARGETS["intercept"]),
        ("AUROC lost to linkage errors", loss, f"<= {TARGETS['linkage_loss']}", loss <= TARGETS["linkage_loss"]),
    ]
    ref = truth["reference"]
    rows.append(("AUROC within 0.005 of the tuned reference", ref["gap"], f"<= {TARGETS['reference_gap']}",
                 ref["gap"] <= TARGETS["reference_gap"]))
    for band in linked["age_bands"]:
        if band["outcomes"] >= TARGETS["band_outcomes"]:
            rows.append((f"calibration slope, ages {band['band']}", band["slope"], f"{lo}-{hi}",
                         lo <= band["slope"] <= hi))
            rows.append((f"calibration intercept, ages {band['band']}", band["intercept"], "+-0.1",
                         abs(band["intercept"]) <= TARGETS["intercept"]))
    if r["people"] >= 1_000_000:
        s = r["runs"]["stratify_linked"]["seconds"]
        rows.append(("stratify seconds at 1,000,000", s, f"< {TARGETS['stratify_1m']:.0f}", s < TARGETS["stratify_1m"]))
        t = r["runs"]["train_linked"]["seconds"]
        rows.append(("train seconds at 1,000,000", t, f"< {TARGETS['train_1m']:.0f}", t < TARGETS["train_1m"]))
    return rows


def report(results: list[dict[str, Any]]) -> None:
    print("\n" + "=" * 100 + "\nlinkcare train and stratify against the truth\n")
    for r in results:
        print(f"[{r['people']:,} people] site {r['site']}")
        print("  cohort  model scores  AUROC (95% CI)        oracle  AUPRC  Brier   slope  intercept  "
              "SC gain  look-back")
        for variant in ("linked", "truth"):
            v = r[variant]
            m = v["metrics"]
            print(f"  {variant:7s} {'default':12s}  {m['auroc']:.4f} ({m['auroc_ci'][0]:.4f}-{m['auroc_ci'][1]:.4f})"
                  f"  {v['oracle_auroc']:.4f}  {m['auprc']:.3f}  {m['brier']:.4f}  {m['calibration_slope']:.3f}  "
                  f"{m['calibration_intercept']:+.3f}     {v['social_care']['auroc_gain']:+.4f}  {v['lookback_days']}")
        print("  train's evaluation on its later period (linked cohort), each model:")
        for kind, t in r["linked"]["train_metrics"].items():
            print(f"    {kind:18s} AUROC {t['auroc']:.4f}  AUPRC {t['auprc']:.3f}  Brier {t['brier']:.4f}  "
                  f"slope {t['calibration_slope']:.3f}  intercept {t['calibration_intercept']:+.3f}")
        print(f"  default model: {r['linked']['default_model']} ({r['linked']['default_model_rule']})")
        for variant in ("linked", "truth"):
            steps = r[variant].get("ablation") or {"steps": []}
            print(f"  ablation ({variant} cohort, train's later period): " + ", ".join(
                f"{s['sources']} {s['auroc']:.4f}" for s in steps["steps"]))
        ref = r["truth"]["reference"]
        print(f"  tuned reference (truth cohort, train's later period): {ref['chosen_leaves']} leaves, "
              f"{ref['chosen_trees']} trees, AUROC {ref['reference_auroc']:.4f} against linkcare's "
              f"{ref['linkcare_model']} {ref['linkcare_auroc']:.4f} (gap {ref['gap']:+.4f})")
        for band in r["linked"]["age_bands"]:
            print(f"  ages {band['band']}: {band['people']:,} people, {band['outcomes']:,} outcomes, AUROC "
                  f"{band['auroc']:.4f}, slope {band['slope']:.3f}, intercept {band['intercept']:+.3f}")
        c = r["linked"]["ceiling_check"]
        print(f"  ceiling check (linked cohort, 5-fold CV logistic on stratify's log-odds): alone {c['score']:.4f}; "
              f"+ true number of conditions {c['score_conditions']:.4f}; + latent frailty {c['score_frailty']:.4f}; "
              f"+ both {c['score_conditions_frailty']:.4f}; oracle {r['linked']['oracle_auroc']:.4f}")
        runs = r["runs"].items()
        print("  runs:", ", ".join(f"{k} {v['seconds']:.1f} s / {v['peak_mib']:,.0f} MiB" for k, v in runs))
        for name, value, target, ok in targets(r):
            print(f"  target: {name:40s} {value:9.4f} vs {target:10s} {'met' if ok else 'MISSED'}")
        print()
    print("How the numbers were obtained:\n  - " + HOW_MEASURED)
    print("  - AUROC, calibration slope (b in logit P = a + b logit p) and intercept (a with the slope fixed at 1) "
          "are computed by linkcare.risk.metrics on the people stratify scored at the reference date who are alive "
          "then, matched to the truth through their GP record, against the simulated outcome of the next 365 days.")
    print("  - oracle AUROC: the true risk of the same people against the same outcomes.")
    print("  - ceiling check: the latent frailty and the true conditions are in truth/persons.parquet only; no "
          "extract records them. What a model reaches with them added is what the records cannot give.")
    print("  - AUROC lost to linkage: the same train + stratify on a cohort whose people are the truth's, minus the "
          "linked cohort's AUROC.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    results = [run_size(args.out, n) for n in args.sizes]
    report(results)
    path = args.out / "risk.json"
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"\nWrote {path}")


if __name__ == "__main__":
    main()
