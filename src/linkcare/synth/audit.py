"""Measure a synthetic site against its truth: identifier error rates, registered practices on
hospital records, the people in no other extract, and the oracle AUROC; and measure the monthly
snapshots of `synth --months` against each other: late records, corrections, registrations,
deaths and moves.

Used by the tests and by `make bench`, so that the rates quoted are measured, not assumed.
"""

from __future__ import annotations

import json
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
    "social_care": "Der_Unique_Record_ID", "gp_events": "Event_ID",
}


AREA_COLUMN = {
    "gp_registrations": "LSOA", "apc": "LSOA11", "ae": "LSOA", "outpatients": "LSOA11", "social_care": "LSOA",
}
HOSPITAL = ("apc", "ae", "outpatients")
PRACTICE_COLUMN = {"gp_registrations": "Practice_Code", "apc": "GPPRAC", "ae": "GP_Practice_Code",
                   "outpatients": "GPPRAC"}
DATE_COLUMN = {"apc": "ADMIDATE", "ae": "Arrival_Date", "outpatients": "APPTDATE"}


def load_site(folder: Path) -> Site:
    """Return a written synthetic site read back from its folder."""
    folder = Path(folder)
    extracts = {name: pl.read_csv(folder / f"{name}.csv", infer_schema_length=0, try_parse_dates=False)
                for name in SOURCES}
    return Site(extracts, pl.read_parquet(folder / "truth" / "records.parquet"),
                pl.read_parquet(folder / "truth" / "persons.parquet"), pl.read_csv(folder / AREAS_FILE))


def recorded_identifiers(site: Site, name: str) -> pl.DataFrame:
    """Return each record's recorded identifiers beside its person's true ones.

    Columns: record_id, person, year, month, sex (1 male, 2 female), area, token, recorded_practice
    (null in social care), and the truth columns of `truth/persons.parquet` (true sex as `sex_true`).
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
        (pl.col(PRACTICE_COLUMN[name]).cast(pl.String) if name in PRACTICE_COLUMN else pl.lit(None, pl.String))
        .alias("recorded_practice"),
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
        # NHS tokens missing or wrong are shares of the records of people who have an NHS number.
        numbered = j.filter(pl.col("nhs_token").is_not_null())
        out[name] = {
            "records": float(j.height),
            "nhs_missing": _share(numbered["token"].is_null()),
            "nhs_wrong": _share(numbered["token"].is_not_null() & (numbered["token"] != numbered["nhs_token"])),
            "no_nhs_number": _share(j["nhs_token"].is_null()),
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


def _registration_dates(site: Site) -> pl.DataFrame:
    """Return each spine person's registration date: person, registration_date."""
    spine = site.extracts["gp_registrations"].select(
        pl.col("Patient_ID").cast(pl.String).alias("record_id"),
        pl.col("Registration_Date").cast(pl.String).str.to_date().alias("registration_date"))
    return site.truth_records.filter(pl.col("source") == "gp").join(spine, on="record_id").select(
        "person", "registration_date")


def hospital_practices(site: Site, name: str) -> pl.DataFrame:
    """Return each record of a hospital extract with its recorded practice beside the truth.

    Columns: record_id, person, resident, date, recorded, expected (the practice the person was
    registered with on the day: before registering with the site's, before or after a change),
    previous_practice and practice_change_date."""
    frame = site.extracts[name].select(
        pl.col(ID_COLUMN[name]).cast(pl.String).alias("record_id"),
        pl.col(DATE_COLUMN[name]).cast(pl.String).str.to_date().alias("date"),
        pl.col(PRACTICE_COLUMN[name]).cast(pl.String).alias("recorded"))
    truth = site.truth_records.filter(pl.col("source") == SOURCE_NAMES[name]).select("record_id", "person")
    persons = site.truth_persons.select("person", "resident", "practice", "previous_practice",
                                        "practice_change_date", "practice_before_registration")
    joined = frame.join(truth, on="record_id").join(persons, on="person").join(
        _registration_dates(site), on="person", how="left")
    before_change = pl.col("practice_change_date").is_not_null() & (pl.col("date") < pl.col("practice_change_date"))
    expected = (pl.when(pl.col("date") < pl.col("registration_date")).then(pl.col("practice_before_registration"))
                .when(before_change).then(pl.col("previous_practice")).otherwise(pl.col("practice")))
    return joined.with_columns(expected.alias("expected")).select(
        "record_id", "person", "resident", "date", "recorded", "expected", "previous_practice",
        "practice_change_date")


def measure_practices(site: Site) -> dict[str, dict[str, float]]:
    """Return the measured changes of practice (under "people") and, per hospital extract, the
    share of records with a practice, blank among those whose person had one on the day, and out
    of date among those made after a change that have one."""
    persons = site.truth_persons.filter(pl.col("resident")).join(_registration_dates(site), on="person")
    ref = site.extracts["gp_registrations"]["Registration_Date"].cast(pl.String).str.to_date().max()
    changed = pl.col("practice_change_date").is_not_null()
    movers = persons.filter(pl.col("move_date").is_not_null() & (pl.col("move_date") > pl.col("registration_date")))
    stayers = persons.filter(pl.col("move_date").is_null()
                             & (pl.col("registration_date") <= pl.lit(ref).dt.offset_by("-2d")))
    out: dict[str, dict[str, float]] = {"people": {
        "movers": float(movers.height), "change_on_move": _share(movers.select(changed).to_series()),
        "others": float(stayers.height), "change_other": _share(stayers.select(changed).to_series()),
        "changed": _share(persons.select(changed).to_series()),
    }}
    for name in HOSPITAL:
        j = hospital_practices(site, name)
        due = j.filter(pl.col("expected").is_not_null())
        after = j.filter(pl.col("practice_change_date").is_not_null() & pl.col("recorded").is_not_null()
                         & (pl.col("date") >= pl.col("practice_change_date")))
        stale = after["recorded"] == after["previous_practice"]
        fresh = j.filter(pl.col("recorded").is_not_null()).join(
            after.filter(stale).select("record_id"), on="record_id", how="anti")
        out[name] = {
            "records": float(j.height),
            "with_practice": _share(j["recorded"].is_not_null()),
            "practice_missing": _share(due["recorded"].is_null()),
            "records_after_change": float(after.height),
            "practice_stale": _share(stale),
            "recorded_as_on_the_day": _share(fresh["recorded"] == fresh["expected"]),
        }
    return out


def measure_visitors(site: Site) -> dict[str, dict[str, float]]:
    """Return, per hospital extract, the share of records of people in no other extract (visitors),
    how many visitors and the share of them with more than one record there, and where their
    records say they live; and, under "people", the visitors' origins as the truth shows them."""
    site_areas = site.areas["LSOA11CD"].cast(pl.String).implode()
    residents = site.truth_persons.filter(pl.col("resident"))
    visitors = site.truth_persons.filter(~pl.col("resident"))
    out: dict[str, dict[str, float]] = {"people": {
        "visitors": float(visitors.height),
        "first_visitor": float(visitors.select(pl.col("person").min().fill_null(0)).item()),
        "last_resident": float(residents.select(pl.col("person").max().fill_null(0)).item()),
        "overseas": _share(visitors["lsoa"].is_null()),
        "local_unregistered": _share(visitors["lsoa"].is_in(site_areas)),
        "with_nhs_token": _share(visitors["nhs_token"].is_not_null()),
        "token_of_a_resident": _share(visitors["nhs_token"].is_in(residents["nhs_token"].implode())),
        "with_practice": _share(visitors["practice"].is_not_null()),
    }}
    for name in HOSPITAL:
        j = recorded_identifiers(site, name)
        guests = j.filter(~pl.col("resident"))
        per_visitor = guests.group_by("person").len().select(pl.col("len").cast(pl.Float64))["len"]
        out[name] = {
            "records": float(j.height),
            "visitor_share": _share(~j["resident"]),
            "visitors": float(per_visitor.len()),
            "visitors_with_repeats": _share(per_visitor > 1),
            "records_per_visitor": float(per_visitor.to_frame().select(pl.col("len").mean().fill_null(0.0)).item()),
            "visitor_records_out_of_area": _share(guests["area"].is_not_null() & ~guests["area"].is_in(site_areas)),
            "visitor_records_in_site_areas": _share(guests["area"].is_in(site_areas)),
            "resident_records_out_of_area": _share(j.filter(pl.col("resident"))["area"].is_not_null()
                                                   & ~j.filter(pl.col("resident"))["area"].is_in(site_areas)),
        }
    return out


def oracle_auroc(site: Site) -> tuple[float, float, int]:
    """Return the AUROC of the true risk against the outcome, the outcome rate, and the people scored."""
    from sklearn.metrics import roc_auc_score

    alive = site.truth_persons.filter(pl.col("alive_at_reference"))
    outcome = alive["outcome"].cast(pl.Int8).to_numpy()
    return float(roc_auc_score(outcome, alive["risk"].to_numpy())), float(outcome.mean()), alive.height


def idealised_linkage(site: Site, council_id: bool = True) -> dict[str, float]:
    """Return the pairwise scores of idealised linkers that only records without an anchor test.

    Each gives every GP record, every record with an NHS token, and (with `council_id`) every
    social-care record whose council ID is shared by a social-care record with a token, its true
    person: better than any real linker. The rest ("loose": hospital records without a token, and
    social-care clients none of whose records has one) carry only birth year, birth month, sex,
    LSOA and, in hospital, the registered practice; their candidates are the people whose GP record
    shows the same birth year, month, sex and LSOA. "busiest" puts a loose record with the candidate
    who has the most hospital records (the likeliest owner when nothing else tells them apart), or
    alone when there is none (a social-care client's records together, by their council ID);
    "practice" does the same among the candidates whose GP record shows the record's practice, if
    any does; "unique" puts it with its candidate only when there is exactly one. Their F1 bounds
    what demographics (and the practice) can do for these records.

    Without `council_id` (a config that drops it), every social-care record without a token is loose.
    """
    from linkcare.linkage.evaluate import pairwise_score

    keys = ["year", "month", "sex", "area"]
    parts = {name: recorded_identifiers(site, name).select(
        pl.lit(name).alias("source"), "record_id", "person", pl.col("token").is_not_null().alias("has_token"), *keys,
        pl.col("recorded_practice").alias("practice")) for name in SOURCES}
    la_ids = site.extracts["social_care"].select(pl.col("Der_Unique_Record_ID").cast(pl.String).alias("record_id"),
                                                 pl.col("Der_LA_Person_Unique_Identifier_Pseudo").alias("la_id"))
    parts["social_care"] = parts["social_care"].join(la_ids, on="record_id", how="left")
    anchored = parts["social_care"].filter(pl.col("has_token"))["la_id"].unique().implode()
    social = parts["social_care"].with_columns(
        (~pl.col("has_token") & ~(pl.col("la_id").is_in(anchored) & pl.lit(council_id))).alias("loose"))
    records = pl.concat([*(parts[n].with_columns(pl.lit(None, pl.String).alias("la_id"),
                                                 (~pl.col("has_token") & pl.lit(n in HOSPITAL)).alias("loose"))
                           for n in SOURCES if n != "social_care"), social])
    hospital = records.filter(pl.col("source").is_in(HOSPITAL))
    activity = hospital.group_by("person").agg(pl.len().alias("activity"))
    spine = (parts["gp_registrations"].select("person", *keys, pl.col("practice").alias("spine_practice")).unique()
             .join(activity, on="person", how="left").with_columns(pl.col("activity").fill_null(0))
             .rename({"person": "candidate"}))
    loose = records.filter(pl.col("loose"))
    agrees = (pl.col("practice") == pl.col("spine_practice")).fill_null(False)
    ranked = (loose.join(spine, on=keys, how="inner").with_columns(agrees.alias("agrees"))
              .sort(["activity", "candidate"], descending=[True, False])
              .group_by("source", "record_id")
              .agg(pl.col("candidate").first().alias("busiest"), pl.col("candidate").n_unique().alias("candidates"),
                   pl.col("candidate").sort_by("agrees", descending=True, maintain_order=True).first()
                   .alias("by_practice")))
    alone = pl.when(pl.col("la_id").is_not_null()).then(pl.format("alone la {}", pl.col("la_id"))).otherwise(
        pl.format("alone {} {}", pl.col("source"), pl.col("record_id")))
    frame = records.join(ranked, on=["source", "record_id"], how="left").with_columns(
        pl.col("candidates").fill_null(0))
    placed = ~pl.col("loose")
    busiest = frame.with_columns(pl.when(placed).then(pl.col("person").cast(pl.String))
                                 .when(pl.col("candidates") > 0).then(pl.col("busiest").cast(pl.String))
                                 .otherwise(alone).alias("person_id"))
    by_practice = frame.with_columns(pl.when(placed).then(pl.col("person").cast(pl.String))
                                     .when(pl.col("candidates") > 0).then(pl.col("by_practice").cast(pl.String))
                                     .otherwise(alone).alias("person_id"))
    unique = frame.with_columns(pl.when(placed).then(pl.col("person").cast(pl.String))
                                .when(pl.col("candidates") == 1).then(pl.col("busiest").cast(pl.String))
                                .otherwise(alone).alias("person_id"))
    n = loose.height
    counts = frame.filter(~placed)["candidates"]
    out: dict[str, float] = {
        "loose_records": float(n),
        "share_with_no_candidate": _share(counts == 0),
        "share_with_one_candidate": _share(counts == 1),
        "share_with_several_candidates": _share(counts > 1),
    }
    for name, assigned in (("busiest", busiest), ("practice", by_practice), ("unique", unique)):
        score = pairwise_score(assigned)
        out[f"{name}_precision"], out[f"{name}_recall"], out[f"{name}_f1"] = score.precision, score.recall, score.f1
    return out


# Each extract's birth month column, and where the month sits in it (start, length).
BIRTH_MONTH = {"gp_registrations": ("Birth_Month", 0, 2), "apc": ("MYDOB", 0, 2), "ae": ("Birth_Month_Year", 5, 2),
               "outpatients": ("MYDOB", 0, 2), "social_care": ("Der_Birth_Month", 0, 2)}
EVENT_DATE = {**DATE_COLUMN, "social_care": "Event_Start_Date"}


def measure_months(folders: list[Path]) -> dict[str, float]:
    """Return what changed between consecutive month-end folders of `synth --months`, read from
    the extracts alone, summed over every pair of consecutive months.

    - late_share: of the event records (APC, A&E, outpatients, social care) new in a month, the
      share dated on or before the previous month end;
    - birth_month_corrected_share: birth months changed in records of both months, per record new
      in the later month (every extract);
    - nhs_filled_share: NHS tokens blank in the earlier month and filled in the later, per event
      record new in the later month;
    - new_registrations, deaths (a Date_Of_Death newly filled) and moves (a GP record's LSOA
      changed), per month."""
    totals = dict.fromkeys(["new_records", "new_event_records", "late", "birth_month_corrected", "nhs_filled",
                            "new_registrations", "deaths", "moves"], 0)
    for before, after in zip(folders, folders[1:], strict=False):
        previous_end = json.loads((Path(before) / "synth.json").read_text(encoding="utf-8"))["reference_date"]
        for name in SOURCES:
            old, new = (pl.read_csv(Path(f) / f"{name}.csv", infer_schema=False) for f in (before, after))
            key, nhs = ID_COLUMN[name], NHS_COLUMN[name]
            added = new.join(old.select(key), on=key, how="anti")
            both = new.join(old, on=key, how="inner", suffix="_before")
            totals["new_records"] += added.height
            column, start, length = BIRTH_MONTH[name]
            month_now, month_before = (pl.col(c).str.slice(start, length).cast(pl.Int64)
                                       for c in (column, f"{column}_before"))
            totals["birth_month_corrected"] += both.filter(month_now != month_before).height
            if name == "gp_registrations":
                totals["new_registrations"] += added.height
                totals["deaths"] += both.filter(pl.col("Date_Of_Death_before").is_null()
                                                & pl.col("Date_Of_Death").is_not_null()).height
                totals["moves"] += both.filter(pl.col("LSOA") != pl.col("LSOA_before")).height
                continue
            totals["new_event_records"] += added.height
            totals["late"] += added.filter(pl.col(EVENT_DATE[name]) <= previous_end).height
            totals["nhs_filled"] += both.filter(pl.col(f"{nhs}_before").is_null() & pl.col(nhs).is_not_null()).height
    pairs = max(len(folders) - 1, 1)
    return {
        "months_compared": float(len(folders) - 1),
        "new_event_records": float(totals["new_event_records"]),
        "late_share": totals["late"] / max(totals["new_event_records"], 1),
        "new_records": float(totals["new_records"]),
        "birth_month_corrected_share": totals["birth_month_corrected"] / max(totals["new_records"], 1),
        "nhs_filled_share": totals["nhs_filled"] / max(totals["new_event_records"], 1),
        "new_registrations_per_month": totals["new_registrations"] / pairs,
        "deaths_per_month": totals["deaths"] / pairs,
        "moves_per_month": totals["moves"] / pairs,
    }
