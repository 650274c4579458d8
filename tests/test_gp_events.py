"""The GP clinical extract: synth writes it from its own random stream (the other extracts unchanged),
the gp_events kind reads it into events, and risk features count it as of an index date."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import polars as pl
import pytest

from linkcare.cohort.dataset import open_cohort
from linkcare.cohort.events import EVENT_COLUMNS, GP_EVENT_TYPES, event_exprs, shape_events
from linkcare.config import load_config
from linkcare.risk.features import build_features, feature_list
from linkcare.synth import SynthOptions, make_site, write_site
from linkcare.synth.gp_events import DEFICITS, FILE, RECORD_TYPES

REF = dt.date(2026, 3, 31)
INDEX = dt.date(2025, 3, 31)
DAY = dt.timedelta(days=1)
BASE = """version = 1
reference_date = "2026-03-31"
[[sources]]
name = "gp"
path = "gp.csv"
id = "Patient_ID"
kind = "gp_registrations"
fields = { nhs = "NHS", birth_year = "YOB", sex = "Sex" }
"""
GP_EVENTS = """[[sources]]
name = "gp_events"
path = "gp_events.csv"
id = "Event_ID"
kind = "gp_events"
fields = { nhs = "NHS", birth_year = "YOB", sex = "Sex" }
"""


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_gp_extract_is_deterministic_and_leaves_every_other_extract_unchanged(tmp_path: Path) -> None:
    options = SynthOptions(people=1_500, seed=3, reference_date=REF)
    write_site(tmp_path / "a", options)
    write_site(tmp_path / "b", options)
    write_site(tmp_path / "off", SynthOptions(people=1_500, seed=3, reference_date=REF, gp_events=False))
    a, b, off = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "off")
    assert a == b
    assert FILE in a and FILE not in off
    # Everything but the GP extract, its truth records, its source in site.toml and its row count in
    # synth.json is byte-identical without it.
    changed = {FILE, "truth/records.parquet", "site.toml", "synth.json"}
    assert {k: v for k, v in a.items() if k not in changed} == {k: v for k, v in off.items() if k not in changed}
    assert set(off) == set(a) - {FILE}
    records = pl.read_parquet(tmp_path / "a" / "truth" / "records.parquet")
    assert records.filter(pl.col("source") != "gp_events").equals(
        pl.read_parquet(tmp_path / "off" / "truth" / "records.parquet"))
    assert "gp_events" not in (tmp_path / "off" / "site.toml").read_text()


@pytest.fixture(scope="module")
def site():
    return make_site(SynthOptions(people=5_000, seed=5, reference_date=REF))


def test_gp_extract_carries_the_registration_identifiers_and_its_truth(site) -> None:
    gp = site.extracts["gp_events"]
    assert set(gp["Record_Type"].unique()) == set(RECORD_TYPES)
    assert gp["Event_ID"].n_unique() == gp.height
    assert gp["Event_Date"].max() <= REF
    truth = site.truth_records.filter(pl.col("source") == "gp_events")
    assert truth.height == gp.height and truth["record_id"].sort().equals(gp["Event_ID"].sort().alias("record_id"))
    # Each row's identifiers are those of its person's GP registration, and the person is the truth's.
    regs = site.extracts["gp_registrations"]
    joined = gp.join(regs, on="Patient_ID", suffix="_reg")
    assert joined.height == gp.height
    for column in ("Pseudo_NHS_Number", "Birth_Year", "Birth_Month", "Sex", "LSOA", "Practice_Code"):
        assert (joined[column] == joined[f"{column}_reg"]).all(), column
    spine = site.truth_records.filter(pl.col("source") == "gp").rename({"record_id": "Patient_ID"})
    people = gp.join(spine, on="Patient_ID").join(truth.rename({"record_id": "Event_ID", "person": "p"}),
                                                  on="Event_ID")
    assert (people["person"] == people["p"]).all()
    # Deficits are the eFI's 36 names; only medicines have an issue type; repeat ones may have ended.
    deficits = set(gp.filter(pl.col("Record_Type") == "Frailty deficit")["Code"].unique())
    assert deficits <= {d.name for d in DEFICITS} and len(deficits) == 36
    medicine = pl.col("Record_Type") == "Medication"
    assert gp.filter(~medicine)["Issue_Type"].is_null().all()
    assert set(gp.filter(medicine)["Issue_Type"].unique()) == {"Repeat", "Acute"}
    assert gp.filter(pl.col("End_Date").is_not_null())["Issue_Type"].eq("Repeat").all()
    # No record after death.
    deaths = site.truth_persons.select("person", "death_date")
    dated = people.join(deaths, on="person").filter(pl.col("death_date").is_not_null())
    assert (dated["Event_Date"] <= dated["death_date"]).all()


def test_consultations_rise_with_age_and_average_about_five_a_year(site) -> None:
    gp = site.extracts["gp_events"].filter(pl.col("Record_Type") == "Consultation")
    persons = site.truth_persons.filter(pl.col("resident") & pl.col("alive_at_reference"))
    spine = site.truth_records.filter(pl.col("source") == "gp").rename({"record_id": "Patient_ID"})
    last_year = gp.filter(pl.col("Event_Date") > REF - 365 * DAY).join(spine, on="Patient_ID")
    counts = persons.join(last_year.group_by("person").len(), on="person", how="left").with_columns(
        pl.col("len").fill_null(0), (REF.year - pl.col("birth_year")).alias("age"))
    rate = counts["len"].mean()
    assert 4.0 < rate < 6.5  # type: ignore[operator]
    old = counts.filter(pl.col("age") >= 85)["len"].mean()
    young = counts.filter(pl.col("age").is_between(16, 44))["len"].mean()
    assert old > 2 * young  # type: ignore[operator]


def _write_gp_csv(path: Path) -> None:
    rows = [
        # Patient A: two conditions (one the day before the index, one on it), three deficits before the
        # index (one twice) and one after, medicines current, ended and acute, consultations in and out.
        ("E1", "A", "Condition", "diabetes", INDEX - 400 * DAY, None, None),
        ("E2", "A", "Condition", "copd", INDEX - DAY, None, None),
        ("E3", "A", "Condition", "heart_failure", INDEX, None, None),
        ("E4", "A", "Frailty deficit", "Falls", INDEX - 30 * DAY, None, None),
        ("E5", "A", "Frailty deficit", "Falls", INDEX - 20 * DAY, None, None),
        ("E6", "A", "Frailty deficit", "Diabetes", INDEX - 400 * DAY, None, None),
        ("E7", "A", "Frailty deficit", "Housebound", INDEX - 2000 * DAY, None, None),
        ("E8", "A", "Frailty deficit", "Dizziness", INDEX, None, None),
        ("E9", "A", "Medication", "Metformin", INDEX - 300 * DAY, None, "Repeat"),
        ("E10", "A", "Medication", "Statin", INDEX - 300 * DAY, INDEX, "Repeat"),  # ends on the index: current
        ("E11", "A", "Medication", "Laxative", INDEX - 300 * DAY, INDEX - DAY, "Repeat"),  # ended
        ("E12", "A", "Medication", "Antibiotic", INDEX - 10 * DAY, None, "Acute"),
        ("E13", "A", "Medication", "Insulin", INDEX + DAY, None, "Repeat"),  # after the index
        ("E14", "A", "Consultation", "Face to face", INDEX - DAY, None, None),
        ("E15", "A", "Consultation", "Telephone", INDEX - 90 * DAY, None, None),
        ("E16", "A", "Consultation", "Home visit", INDEX - 91 * DAY, None, None),
        ("E17", "A", "Consultation", "Face to face", INDEX - 366 * DAY, None, None),
        ("E18", "A", "Consultation", "Face to face", INDEX, None, None),
        # Patient B: thirteen deficits (severe), no consultations.
        *[(f"B{i}", "B", "Frailty deficit", d.name, INDEX - 50 * DAY, None, None) for i, d in enumerate(DEFICITS[:13])],
    ]
    pl.DataFrame(rows, schema=["Event_ID", "NHS", "Record_Type", "Code", "Event_Date", "End_Date", "Issue_Type"],
                 orient="row").with_columns(pl.lit("1950").alias("YOB"), pl.lit("F").alias("Sex")).write_csv(path)


def test_gp_events_kind_reads_each_record_type_as_an_event_type(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(BASE + GP_EVENTS)
    pl.DataFrame({"Patient_ID": ["P1"], "NHS": ["A"], "YOB": ["1950"], "Sex": ["F"],
                  "Registration_Date": ["2020-01-01"], "Practice_Code": ["X1"]}).write_csv(tmp_path / "gp.csv")
    _write_gp_csv(tmp_path / "gp_events.csv")
    source = load_config(tmp_path / "site.toml").sources[1]
    lf = pl.scan_csv(tmp_path / "gp_events.csv", infer_schema=False)
    frame = shape_events(source, lf.select(event_exprs(source, lf.collect_schema())).collect())
    types = dict(zip(frame["record_id"], frame["event_type"], strict=True))
    assert (types["E1"], types["E4"], types["E9"], types["E14"]) == GP_EVENT_TYPES
    e10 = frame.filter(pl.col("record_id") == "E10").row(0, named=True)
    assert (e10["code"], e10["issue_type"], e10["end_date"]) == ("Statin", "Repeat", INDEX)
    assert {"code", "issue_type"} <= set(EVENT_COLUMNS)


def _gp_cohort(tmp_path: Path, config: str) -> tuple[Path, Path]:
    """Write a cohort of people A, B and C from the hand-built GP rows (person = the NHS column)."""
    (tmp_path / "site.toml").write_text(config)
    _write_gp_csv(tmp_path / "gp_events.csv")
    source = load_config(tmp_path / "site.toml" if "gp_events" in config else _with_gp(tmp_path)).sources[-1]
    lf = pl.scan_csv(tmp_path / "gp_events.csv", infer_schema=False)
    gp = shape_events(source, lf.select(*event_exprs(source, lf.collect_schema()), pl.col("NHS").alias("person_id"))
                      .collect())
    regs = pl.DataFrame({"person_id": ["A", "B", "C"], "source": "gp", "record_id": ["P1", "P2", "P3"],
                         "event_type": "registration", "start_date": [dt.date(2020, 1, 1)] * 3, "practice": "X1"})
    events = pl.concat([pl.DataFrame(schema=EVENT_COLUMNS), regs, gp], how="diagonal_relaxed")
    events = events.select([pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items()])
    folder = tmp_path / "cohort"
    folder.mkdir()
    events.write_parquet(folder / "events.parquet")
    pl.DataFrame({"person_id": ["A", "B", "C"], "birth_year": ["1950"] * 3, "sex": ["f"] * 3}).write_parquet(
        folder / "persons.parquet")
    return tmp_path / "site.toml", folder


def _with_gp(tmp_path: Path) -> Path:
    path = tmp_path / "with_gp.toml"
    path.write_text(BASE + GP_EVENTS)
    return path


def test_primary_care_features_count_only_what_was_recorded_before_the_index_date(tmp_path: Path) -> None:
    config, cohort = _gp_cohort(tmp_path, BASE + GP_EVENTS)
    fs = build_features(load_config(config), open_cohort(cohort), INDEX, (90, 365))
    row = {r["person_id"]: r for r in fs.frame.to_dicts()}
    a, b, c = row["A"], row["B"], row["C"]
    assert a["gp_conditions"] == 2  # heart failure was coded on the index date
    assert a["efi"] == pytest.approx(3 / 36) and a["efi_band"] == 0  # Falls counted once; Dizziness too late
    assert a["repeat_medications"] == 2  # metformin, and the statin ending on the index date
    assert (a["gp_consultations_90d"], a["gp_consultations_365d"]) == (2, 3)
    assert b["efi"] == pytest.approx(13 / 36) and b["efi_band"] == 3
    assert (b["gp_conditions"], b["gp_consultations_365d"]) == (0, 0)
    assert (c["efi"], c["efi_band"], c["repeat_medications"]) == (0, 0, 0)  # no GP records: zero
    names = [f.name for f in fs.features]
    assert names[-6:] == ["gp_conditions", "efi", "efi_band", "repeat_medications", "gp_consultations_90d",
                          "gp_consultations_365d"]
    assert {f.group for f in fs.features[-6:]} == {"primary care"}
    assert {f.factor for f in fs.features[-6:]} == {"long-term conditions (GP)", "frailty (eFI)", "repeat medicines",
                                                    "GP consultations"}


def test_without_a_gp_source_the_feature_list_is_unchanged(tmp_path: Path) -> None:
    config, cohort = _gp_cohort(tmp_path, BASE)
    fs = build_features(load_config(config), open_cohort(cohort), INDEX, (90, 365))
    assert fs.features == feature_list((90, 365), with_deprivation=False)
    assert "efi" not in fs.frame.columns
    assert not any(f.group == "primary care" for f in feature_list((90, 365), with_deprivation=True))


@pytest.mark.parametrize("band,deficits", [(0, 4), (1, 5), (1, 8), (2, 9), (2, 12), (3, 13)])
def test_efi_bands_follow_clegg_cut_offs(band: int, deficits: int) -> None:
    from linkcare.risk.features import efi_band

    got = pl.select(efi_band(pl.lit(deficits / 36))).item()
    assert got == band


def test_monthly_snapshots_hold_the_gp_records_known_then_with_their_registration_identifiers(
        tmp_path: Path) -> None:
    from linkcare.synth import write_months

    options = SynthOptions(people=800, seed=2, reference_date=REF)
    write_site(tmp_path / "plain", options)
    summary = write_months(tmp_path / "months", options, 2)
    plain = pl.read_parquet(tmp_path / "plain" / FILE)
    identifiers = ["Pseudo_NHS_Number", "Birth_Year", "Birth_Month", "Sex", "LSOA", "Practice_Code"]
    for month_end in summary.months:
        folder = tmp_path / "months" / month_end.isoformat()
        gp = pl.read_parquet(folder / FILE)
        assert gp.columns == plain.columns and gp.height == summary.rows[month_end]["gp_events"]
        assert gp["Event_Date"].max() <= month_end and gp["End_Date"].drop_nulls().max() <= month_end
        regs = pl.read_csv(folder / "gp_registrations.csv", infer_schema=False)
        joined = gp.with_columns(pl.col(identifiers).cast(pl.String)).join(regs, on="Patient_ID", suffix="_reg")
        assert joined.height == gp.height
        for column in identifiers:
            assert (joined[column] == joined[f"{column}_reg"]).all(), column
        truth = pl.read_parquet(folder / "truth" / "records.parquet").filter(pl.col("source") == "gp_events")
        assert set(truth["record_id"]) == set(gp["Event_ID"])
    # At the reference date every record has come, and keeps its id.
    assert set(gp["Event_ID"]) == set(plain["Event_ID"])


def test_the_history_starts_at_the_first_consultation_not_at_an_old_diagnosis(tmp_path: Path) -> None:
    from linkcare.risk.features import history_start

    _, cohort = _gp_cohort(tmp_path, BASE + GP_EVENTS)
    # A's housebound deficit is dated 2,000 days before the index date; the first consultation 366 days.
    assert history_start(open_cohort(cohort)) == INDEX - 366 * DAY
