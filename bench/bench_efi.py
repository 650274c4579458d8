"""Benchmark the realism of the synthetic GP extract's frailty deficits: the hazard ratios of an emergency
admission within a year for the electronic Frailty Index bands, against Clegg et al. 2016 (Age and Ageing
45:353, table 4, internal validation cohort, adjusted for age and sex): mild 1.93, moderate 3.04, severe 4.73
against fit, and the bands' shares at ages 65-95 (about 50%, 35%, 12% and 3%).

How: `linkcare synth` writes a site; the index date is a year before its reference date. The people are the
site's residents registered before the index date, alive on it and aged 65 to 95 on it (true birth year and
month, truth/persons.parquet). Their eFI is the distinct deficits (Record_Type "Frailty deficit") dated before
the index date in gp_events.parquet, over 36; the bands are fit (eFI <= 0.12), mild (<= 0.24), moderate
(<= 0.36) and severe. Their outcome is the first emergency admission (ADMIMETH 21-28, 2A-2D) in apc.csv from
the index date to the reference date, every one of which the simulation made, with its true person from
truth/records.parquet; time is censored at death (truth) or at the end of the year. A Cox model (statsmodels
PHReg, Breslow ties) of time to admission on the bands, age and sex gives the hazard ratios.

Exits with status 1 if a hazard ratio is more than 25% from Clegg's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from statsmodels.duration.hazard_regression import PHReg

CLEGG_HR = {"mild": 1.93, "moderate": 3.04, "severe": 4.73}
CLEGG_SHARES = {"fit": 0.50, "mild": 0.35, "moderate": 0.12, "severe": 0.03}
TOLERANCE = 0.25
BANDS = ("fit", "mild", "moderate", "severe")
EMERGENCY = ["21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28"]
N_DEFICITS = 36


def efi_band(efi: pl.Expr) -> pl.Expr:
    """Return the eFI band (0 fit, 1 mild, 2 moderate, 3 severe) of Clegg 2016's cut-offs."""
    return (pl.when(efi <= 0.12).then(0).when(efi <= 0.24).then(1).when(efi <= 0.36).then(2).otherwise(3)
            .cast(pl.Int8))


def measure(site: Path) -> dict[str, object]:
    """Return the hazard ratios and shares of the eFI bands of a synthetic site, and how many people."""
    meta = json.loads((site / "synth.json").read_text(encoding="utf-8"))
    ref = date.fromisoformat(meta["reference_date"])
    index = ref - timedelta(days=365)
    truth = pl.read_parquet(site / "truth" / "records.parquet")
    persons = pl.read_parquet(site / "truth" / "persons.parquet").filter(pl.col("resident"))
    gp = pl.read_csv(site / "gp_registrations.csv", columns=["Patient_ID", "Registration_Date"],
                     schema_overrides={"Registration_Date": pl.Date})
    registered = (gp.join(truth.filter(pl.col("source") == "gp"), left_on="Patient_ID", right_on="record_id")
                  .filter(pl.col("Registration_Date") < index).select("person").unique())
    index_years = index.year + (index.month - 0.5) / 12 + (index.day - 15) / 365.25
    people = (persons.join(registered, on="person", how="semi")
              .filter(pl.col("death_date").is_null() | (pl.col("death_date") >= index))
              .with_columns((index_years - pl.col("birth_year") - (pl.col("birth_month") - 0.5) / 12).alias("age"),
                            (pl.col("sex") == 2).cast(pl.Float64).alias("female"))
              .filter((pl.col("age") >= 65) & (pl.col("age") < 96))
              .select("person", "age", "female", "death_date"))
    deficits = (pl.read_parquet(site / "gp_events.parquet", columns=["Event_ID", "Record_Type", "Code", "Event_Date"])
                .filter((pl.col("Record_Type") == "Frailty deficit") & (pl.col("Event_Date") < index))
                .join(truth.filter(pl.col("source") == "gp_events"), left_on="Event_ID", right_on="record_id")
                .group_by("person").agg(pl.col("Code").n_unique().alias("deficits")))
    apc = pl.read_csv(site / "apc.csv", columns=["EPIKEY", "ADMIDATE", "ADMIMETH"],
                      schema_overrides={"EPIKEY": pl.String, "ADMIMETH": pl.String, "ADMIDATE": pl.Date})
    first = (apc.filter(pl.col("ADMIMETH").is_in(EMERGENCY) & (pl.col("ADMIDATE") >= index)
                        & (pl.col("ADMIDATE") < ref))
             .join(truth.filter(pl.col("source") == "apc"), left_on="EPIKEY", right_on="record_id")
             .group_by("person").agg(pl.col("ADMIDATE").min().alias("admitted")))
    frame = (people.join(deficits, on="person", how="left").join(first, on="person", how="left")
             .with_columns(pl.col("deficits").fill_null(0))
             .with_columns(efi_band(pl.col("deficits") / N_DEFICITS).alias("band"),
                           (pl.col("admitted") - pl.lit(index)).dt.total_days().alias("t_event"),
                           (pl.col("death_date") - pl.lit(index)).dt.total_days().alias("t_death")))
    frame = frame.with_columns(
        pl.min_horizontal(pl.col("t_event").fill_null(365), pl.col("t_death").fill_null(365), pl.lit(365))
        .clip(0.5, None).cast(pl.Float64).alias("time"),
        pl.col("t_event").is_not_null().cast(pl.Float64).alias("event"))
    bands = frame["band"].to_numpy()
    exog = np.column_stack([(bands == k).astype(float) for k in (1, 2, 3)]
                           + [(frame["age"].to_numpy() - 80.0) / 10.0, frame["female"].to_numpy()])
    fit = PHReg(frame["time"].to_numpy(), exog, status=frame["event"].to_numpy(), ties="breslow").fit()
    params, ci = np.asarray(fit.params), np.asarray(fit.conf_int())
    counts = np.bincount(bands, minlength=4)
    return {
        "people": frame.height, "admitted": int(frame["event"].sum()), "index_date": index.isoformat(),
        "mean_deficits": float(frame["deficits"].mean()),  # type: ignore[arg-type]
        "hazard_ratios": {b: float(np.exp(params[i])) for i, b in enumerate(BANDS[1:])},
        "ci95": {b: [float(np.exp(ci[i, 0])), float(np.exp(ci[i, 1]))] for i, b in enumerate(BANDS[1:])},
        "age_hr_per_decade": float(np.exp(params[3])), "female_hr": float(np.exp(params[4])),
        "shares": {b: float(counts[i] / counts.sum()) for i, b in enumerate(BANDS)},
        "admitted_share_by_band": {b: float(frame.filter(pl.col("band") == i)["event"].mean() or 0.0)
                                   for i, b in enumerate(BANDS)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep", action="store_true", help="keep the generated site")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    site = args.out / f"efi_{args.people}_{args.seed}"
    if site.exists():
        shutil.rmtree(site)
    subprocess.run([sys.executable, "-m", "linkcare", "-q", "synth", str(site), "--people", str(args.people),
                    "--seed", str(args.seed), "--reference-date", "2026-03-31"], check=True)
    result = measure(site)
    if not args.keep:
        shutil.rmtree(site)
    print(f"eFI bands of {result['people']:,} people aged 65-95 at {result['index_date']} "
          f"(site of {args.people:,}, seed {args.seed}); {result['admitted']:,} had an emergency admission "
          "in the year after; Cox model (PHReg) on the bands, age and sex:")
    hrs, ci, shares = result["hazard_ratios"], result["ci95"], result["shares"]
    assert isinstance(hrs, dict) and isinstance(ci, dict) and isinstance(shares, dict)
    failed = []
    print(f"  {'band':<9} {'share':>6} {'Clegg':>6} {'HR':>6} {'95% CI':>13} {'Clegg':>6} {'ratio':>6}")
    for band in BANDS:
        if band == "fit":
            print(f"  {band:<9} {shares[band]:6.1%} {CLEGG_SHARES[band]:6.0%} {1.0:6.2f}")
            continue
        ratio = hrs[band] / CLEGG_HR[band]
        if not abs(ratio - 1.0) <= TOLERANCE:  # NaN fails too
            failed.append(band)
        lo, hi = ci[band]
        print(f"  {band:<9} {shares[band]:6.1%} {CLEGG_SHARES[band]:6.0%} {hrs[band]:6.2f} "
              f"{lo:6.2f}-{hi:<6.2f} {CLEGG_HR[band]:6.2f} {ratio:6.2f}")
    print(f"  mean deficits {result['mean_deficits']:.2f}; HR per decade of age {result['age_hr_per_decade']:.2f}, "
          f"female {result['female_hr']:.2f}")
    result.update({"people_site": args.people, "seed": args.seed, "clegg_hazard_ratios": CLEGG_HR,
                   "clegg_shares": CLEGG_SHARES, "tolerance": TOLERANCE, "outside_tolerance": failed})
    out = args.out / "bench_efi.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    if failed:
        print(f"hazard ratios more than {TOLERANCE:.0%} from Clegg 2016: {', '.join(failed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
