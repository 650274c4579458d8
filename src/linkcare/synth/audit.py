"""Measure a synthetic site against its truth: identifier error rates and the oracle AUROC.

Used by the tests and by `make bench`, so that the rates quoted are measured, not assumed.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from linkcare.synth.extracts import SOURCE_NAMES, SOURCES, Site
from linkcare.synth.site import AREAS_FILE

NHS_COLUMN = {
    "gp_registrations": "Pseudo_NHS_Number", "apc": "Pseudo_NHS_Number", "ae": "Pseudo_NHS_Number",
    "outpatients": "Pseudo_NHS_Number", "social_care": "Der_NHS_Number_Traced_Pseudo",
}
ID_COLUMN = {
    "gp_registrations": "Patient_ID", "apc": "EPIKEY", "ae": "EC_Ident", "outpatients": "ATTENDKEY",
    "social_care": "Der_Unique_Record_ID",
}


AREA_COLUMN = {
    "gp_registrations": "LSOA", "apc": "LSOA11", "ae": "LSOA", "outpatients": "LSOA11", "social_care": "LSOA",
}
HOSPITAL = ("apc", "ae", "outpatients")


def load_site(folder: Path) -> Site:
    """Return a written synthetic site read back from its folder."""
    folder = Path(folder)
    extracts = {name: pl.read_csv(folder / f"{name}.csv", infer_schema_length=0, try_parse_dates=False)
                for name in SOURCES}
    return Site(extracts, pl.read_parquet(folder / "truth" / "records.parquet"),
                pl.read_parquet(folder / "truth" / "persons.parquet"), pl.read_csv(folder / AREAS_FILE))


def recorded_identifiers(site: Site, name: str) -> pl.DataFrame:
    """Return each record's recorded identifiers beside its person's true ones.

    Columns: record_id, person, year, month, sex (1 male, 2 female), area, token, and the truth
    columns of `truth/persons.parquet` (true sex as `sex_true`).
    """
    frame = site.extracts[name]
    if name in ("apc", "outpatients"):
        year, month, sex = (pl.col("MYDOB").str.slice(2, 4), pl.col("MYDOB").str.slice(0, 2),
                            pl.col("SEX"))
    elif name == "ae":
        year, month, sex = (pl.col("Birth_Month_Year").str.slice(0, 4),
                            pl.col("Birth_Month_Year").str.slice(5, 2), pl.col("Sex"))
    elif name == "gp_registrations":
        year, month = pl.col("Birth_Year"), pl.col("Birth_Month")
        sex = pl.col("Sex").replace_strict({"M": "1", "F": "2"}, default=None)
    else:
        year, month = pl.col("Der_Birth_Year"), pl.col("Der_Birth_Month")
        sex = pl.col("Gender").replace_strict({"Male": "1", "Female": "2"}, default=None)
    recorded = frame.select(
        pl.col(ID_COLUMN[name]).cast(pl.String).alias("record_id"),
        year.cast(pl.String).cast(pl.Int64).alias("year"),
        month.cast(pl.String).cast(pl.Int64).alias("month"),
        sex.cast(pl.String).cast(pl.Int64).alias("sex"),
        pl.col(AREA_COLUMN[name]).cast(pl.String).alias("area"),
        pl.col(NHS_COLUMN[name]).cast(pl.String).alias("token"),
    )
    truth = site.truth_records.filter(pl.col("source") == SOURCE_NAMES[name]).select("record_id", "person")
    persons = site.truth_persons.rename({"sex": "sex_true"})
    return recorded.join(truth, on="record_id").join(persons, on="person")


def _share(mask: pl.Series) -> float:
    """Return the share of true values in a boolean series (0 for an empty one)."""
    return float(mask.fill_null(False).sum()) / len(mask) if len(mask) else 0.0


def measure_error_rates(site: Site) -> dict[str, dict[str, float]]:
    """Return, per extract, the measured share of records with each kind of identifier error."""
    out: dict[str, dict[str, float]] = {}
    for name in SOURCES:
        j = recorded_identifiers(site, name)
        out[name] = {
            "records": float(j.height),
            "nhs_missing": _share(j["token"].is_null()),
            "nhs_wrong": _share(j["token"].is_not_null() & (j["token"] != j["nhs_token"])),
            "birth_month_wrong": _share(j["month"] != j["birth_month"]),
            "birth_year_wrong": _share(j["year"] != j["birth_year"]),
            "sex_wrong": _share(j["sex"] != j["sex_true"]),
        }
    sc = recorded_identifiers(site, "social_care").join(
        site.extracts["social_care"].select(
            pl.col("Der_Unique_Record_ID").cast(pl.String).alias("record_id"),
            pl.col("LSOA").alias("recorded_lsoa"),
            pl.col("Event_Start_Date").cast(pl.String).str.to_date().alias("event_date"),
            pl.col("Der_LA_Person_Unique_Identifier_Pseudo").alias("la_id")),
        on="record_id")
    stale = ((pl.col("event_date") >= pl.col("move_date")) & (pl.col("recorded_lsoa") == pl.col("previous_lsoa"))
             & (pl.col("recorded_lsoa") != pl.col("lsoa")))
    out["social_care"]["stale_area"] = float(sc.select(stale.fill_null(False).mean()).item() or 0.0)
    per_client = sc.group_by("person").agg(pl.col("la_id").n_unique().alias("ids"))
    out["social_care"]["clients"] = float(per_client.height)
    out["social_care"]["second_council_id"] = _share(per_client["ids"] >= 2)
    return out


def oracle_auroc(site: Site) -> tuple[float, float, int]:
    """Return the AUROC of the true risk against the outcome, the outcome rate, and the people scored."""
    from sklearn.metrics import roc_auc_score

    alive = site.truth_persons.filter(pl.col("alive_at_reference"))
    outcome = alive["outcome"].cast(pl.Int8).to_numpy()
    return float(roc_auc_score(outcome, alive["risk"].to_numpy())), float(outcome.mean()), alive.height


def idealised_linkage(site: Site) -> dict[str, float]:
    """Return the pairwise scores of two idealised linkers that only token-less hospital records test.

    Both give every GP and social-care record, and every hospital record with an NHS token, its true
    person: better than any real linker. A hospital record without a token carries only birth year,
    birth month, sex and LSOA; its candidates are the people whose GP record shows the same four.
    "busiest" puts it with the candidate who has the most hospital records (the likeliest owner when
    nothing else tells them apart), or alone when there is none; "unique" puts it with its candidate
    only when there is exactly one. Their F1 bounds what demographics can do for these records.
    """
    from linkcare.linkage.evaluate import pairwise_score

    keys = ["year", "month", "sex", "area"]
    parts = {name: recorded_identifiers(site, name).select(
        pl.lit(name).alias("source"), "record_id", "person", pl.col("token").is_not_null().alias("has_token"), *keys)
        for name in SOURCES}
    records = pl.concat(parts.values())
    hospital = records.filter(pl.col("source").is_in(HOSPITAL))
    activity = hospital.group_by("person").agg(pl.len().alias("activity"))
    spine = (parts["gp_registrations"].select("person", *keys).unique()
             .join(activity, on="person", how="left").with_columns(pl.col("activity").fill_null(0))
             .rename({"person": "candidate"}))
    loose = hospital.filter(~pl.col("has_token"))
    ranked = (loose.join(spine, on=keys, how="inner").sort(["activity", "candidate"], descending=[True, False])
              .group_by("source", "record_id")
              .agg(pl.col("candidate").first().alias("busiest"), pl.col("candidate").n_unique().alias("candidates")))
    alone = pl.format("alone {} {}", pl.col("source"), pl.col("record_id"))
    frame = records.join(ranked, on=["source", "record_id"], how="left").with_columns(
        pl.col("candidates").fill_null(0))
    placed = pl.col("has_token") | ~pl.col("source").is_in(HOSPITAL)
    busiest = frame.with_columns(pl.when(placed).then(pl.col("person").cast(pl.String))
                                 .when(pl.col("candidates") > 0).then(pl.col("busiest").cast(pl.String))
                                 .otherwise(alone).alias("person_id"))
    unique = frame.with_columns(pl.when(placed).then(pl.col("person").cast(pl.String))
                                .when(pl.col("candidates") == 1).then(pl.col("busiest").cast(pl.String))
                                .otherwise(alone).alias("person_id"))
    n = loose.height
    counts = frame.filter(~placed)["candidates"]
    out: dict[str, float] = {
        "hospital_records_without_token": float(n),
        "share_with_no_candidate": _share(counts == 0),
        "share_with_one_candidate": _share(counts == 1),
        "share_with_several_candidates": _share(counts > 1),
    }
    for name, assigned in (("busiest", busiest), ("unique", unique)):
        score = pairwise_score(assigned)
        out[f"{name}_precision"], out[f"{name}_recall"], out[f"{name}_f1"] = score.precision, score.recall, score.f1
    return out
