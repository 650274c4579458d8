"""The synthetic site: determinism, truth, documented error rates, the reference-date cut."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli
from linkcare.sources.pseudonymise import TOKEN_PATTERN, tokenise, valid_nhs_mask
from linkcare.synth import ErrorRates, SynthOptions, make_site, site_config, synth_key, write_site
from linkcare.synth.audit import (
    ID_COLUMN,
    NHS_COLUMN,
    idealised_linkage,
    measure_error_rates,
    oracle_auroc,
    recorded_identifiers,
)
from linkcare.synth.extracts import SOURCE_NAMES
from linkcare.synth.population import valid_nhs_numbers

REF = date(2026, 3, 31)


@pytest.fixture(scope="module")
def site():
    return make_site(SynthOptions(people=20_000, seed=7, reference_date=REF))


def test_same_seed_gives_same_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    options = SynthOptions(people=1_500, seed=3, reference_date=REF)
    write_site(tmp_path / "a", options)
    write_site(tmp_path / "b", options)
    write_site(tmp_path / "c", SynthOptions(people=1_500, seed=4, reference_date=REF))

    def digest(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert set(a) == {"ae.csv", "apc.csv", "gp_registrations.csv", "outpatients.csv", "social_care.csv",
                      "areas.csv", "site.toml", "synth.json", "truth/persons.parquet", "truth/records.parquet"}
    assert a == b
    assert a["apc.csv"] != c["apc.csv"]


def test_truth_names_the_person_of_every_record_once(site) -> None:
    truth = site.truth_records
    for name, frame in site.extracts.items():
        ids = frame[ID_COLUMN[name]].cast(pl.String)
        assert ids.n_unique() == frame.height, f"{name}: record ids are not unique"
        of_source = truth.filter(pl.col("source") == SOURCE_NAMES[name])
        assert of_source.height == frame.height
        assert set(of_source["record_id"].to_list()) == set(ids.to_list())
    persons = site.truth_persons
    assert persons["person"].n_unique() == persons.height == 20_000
    assert truth["person"].is_in(persons["person"].implode()).all()
    alive = persons.filter(pl.col("alive_at_reference"))
    dead = persons.filter(~pl.col("alive_at_reference"))
    assert alive["risk"].is_between(0, 1).all() and alive["outcome"].is_not_null().all()
    assert dead["risk"].is_null().all() and dead["outcome"].is_null().all()
    assert dead.height > 0 and dead["death_date"].max() <= REF
    # Every person is on the GP spine once.
    spine = truth.filter(pl.col("source") == "gp")
    assert spine["person"].n_unique() == spine.height == persons.height


def test_extracts_hold_nothing_after_the_reference_date(site) -> None:
    date_columns = {
        "gp_registrations": ["Registration_Date", "Date_Of_Death"], "apc": ["ADMIDATE", "DISDATE"],
        "ae": ["Arrival_Date"], "outpatients": ["APPTDATE"],
        "social_care": ["Event_Start_Date", "Event_End_Date"],
    }
    for name, columns in date_columns.items():
        for column in columns:
            values = site.extracts[name][column]
            assert values.dtype == pl.Date
            assert values.max() <= REF, f"{name}.{column} holds a date after the reference date"
    # Events run up to the reference date and back at least two years.
    apc = site.extracts["apc"]["ADMIDATE"]
    assert (REF - apc.max()).days <= 7
    assert (REF - apc.min()).days >= 730
    # Spells still open on the reference date have no discharge date yet.
    assert site.extracts["apc"]["DISDATE"].null_count() > 0


def test_reference_date_moves_every_date(tmp_path: Path) -> None:
    early = make_site(SynthOptions(people=2_000, seed=1, reference_date=date(2024, 6, 30)))
    assert early.extracts["ae"]["Arrival_Date"].max() <= date(2024, 6, 30)
    assert early.extracts["ae"]["Arrival_Date"].min() >= date(2021, 6, 30)


@pytest.mark.parametrize("name", list(NHS_COLUMN))
def test_identifier_error_rates_are_as_documented(site, name: str) -> None:
    rates = ErrorRates()
    measured = measure_error_rates(site)[name]
    n = measured["records"]
    tolerance = 1.0 / n + 1e-9  # each rate is applied to exactly round(rate × n) records
    hospital = name in ("apc", "ae", "outpatients")
    expected = {
        "nhs_missing": {"gp_registrations": 0.0, "social_care": rates.nhs_missing_social_care}.get(
            name, rates.nhs_missing_hospital),
        "nhs_wrong": {"gp_registrations": 0.0, "social_care": rates.nhs_wrong_social_care}.get(
            name, rates.nhs_wrong_hospital),
        "birth_month_wrong": rates.birth_month_wrong,
        "birth_year_wrong": rates.birth_year_wrong,
        "sex_wrong": rates.sex_wrong,
    }
    for what, value in expected.items():
        assert abs(measured[what] - value) <= tolerance, f"{name}: {what} {measured[what]:.4f}, expected {value}"
    # The floors the product promises hold too.
    if hospital:
        assert measured["nhs_missing"] >= 0.01
    if name == "social_care":
        assert measured["nhs_missing"] >= 0.10 and measured["nhs_wrong"] >= 0.005
        assert measured["stale_area"] >= 0.05
        assert abs(measured["stale_area"] - rates.stale_area_social_care) <= tolerance
        assert measured["second_council_id"] >= 0.02
        assert abs(measured["second_council_id"] - rates.second_council_id) <= 1.0 / measured["clients"]
    assert measured["birth_month_wrong"] >= 0.01 - tolerance
    assert measured["birth_year_wrong"] >= 0.003 - tolerance
    assert measured["sex_wrong"] >= 0.002 - tolerance


def test_wrong_nhs_numbers_belong_to_someone_else_or_to_no_one(site) -> None:
    joined = recorded_identifiers(site, "social_care")
    wrong = joined.filter(pl.col("token").is_not_null() & (pl.col("token") != pl.col("nhs_token")))
    belongs = wrong["token"].is_in(site.truth_persons["nhs_token"].implode())
    assert wrong.height > 0
    assert 0 < belongs.sum() < wrong.height  # some are another person's, some are no one's


def test_twins_share_birth_month_sex_and_area(site) -> None:
    rates = ErrorRates()
    persons = site.truth_persons
    twins = persons.filter(pl.col("twin_of").is_not_null())
    assert abs(twins.height / persons.height - rates.twins) <= 2.0 / persons.height
    pairs = twins.join(persons, left_on="twin_of", right_on="person", suffix="_twin")
    for column in ("birth_year", "birth_month", "sex", "lsoa"):
        assert (pairs[column] == pairs[f"{column}_twin"]).all()


def test_tokens_are_keyed_hmacs_of_valid_nhs_numbers(site) -> None:
    rng = np.random.default_rng(0)
    numbers = valid_nhs_numbers(rng, 5_000)
    assert valid_nhs_mask(pl.Series(numbers)).all()
    assert len(set(numbers.tolist())) == 5_000
    assert set(n[0] for n in numbers.tolist()) <= {"4", "6", "7"}
    for name, column in NHS_COLUMN.items():
        tokens = site.extracts[name][column].drop_nulls()
        assert tokens.str.contains(TOKEN_PATTERN).all(), name
    # The spine's tokens are the HMAC of the person's NHS number under the site's key.
    again = tokenise(pl.Series(numbers[:3]), synth_key(7))
    assert again.str.contains(TOKEN_PATTERN).all()
    assert tokenise(pl.Series(numbers[:3]), synth_key(8)).to_list() != again.to_list()


def test_population_looks_like_england(site) -> None:
    spine = site.extracts["gp_registrations"]
    age = REF.year - spine["Birth_Year"]
    assert 0.16 <= (age >= 65).mean() <= 0.23
    assert 0.17 <= (age < 16).mean() <= 0.23
    per_area = spine.group_by("LSOA").len()["len"]
    assert 1_200 <= per_area.mean() <= 2_000
    per_practice = spine.group_by("Practice_Code").len()["len"]
    assert 6_000 <= per_practice.mean() <= 10_000
    white_british = (spine["Ethnic_Category"] == "A").mean()
    assert 0.65 <= white_british <= 0.85
    persons = site.truth_persons
    assert set(persons["deprivation_decile"].unique().to_list()) <= set(range(1, 11))
    # People move, register late and die.
    assert persons["move_date"].is_not_null().mean() > 0.05
    assert 0.01 < (~persons["alive_at_reference"]).mean() < 0.08
    first_seen = site.truth_records.filter(pl.col("source") == "ae").join(
        site.extracts["ae"].select(pl.col("EC_Ident").alias("record_id"), "Arrival_Date"), on="record_id"
    ).group_by("person").agg(pl.col("Arrival_Date").min())
    registered = site.truth_records.filter(pl.col("source") == "gp").join(
        spine.select(pl.col("Patient_ID").alias("record_id"), "Registration_Date"), on="record_id")
    late = first_seen.join(registered, on="person").filter(pl.col("Arrival_Date") < pl.col("Registration_Date"))
    assert late.height > 0


def test_idealised_linkers_bound_what_demographics_can_do(site) -> None:
    ideal = idealised_linkage(site)
    shares = [ideal[f"share_with_{k}"] for k in ("no_candidate", "one_candidate", "several_candidates")]
    assert sum(shares) == pytest.approx(1.0)
    assert ideal["hospital_records_without_token"] > 0 and min(shares) > 0
    # "busiest" places every record "unique" places, and more: it gains recall and loses precision.
    assert ideal["busiest_recall"] > ideal["unique_recall"]
    assert ideal["busiest_precision"] < ideal["unique_precision"]
    assert 0.9 < ideal["unique_f1"] < 1.0 and 0.9 < ideal["busiest_f1"] < 1.0


def test_idealised_linkers_are_perfect_when_every_hospital_record_has_a_token() -> None:
    site = make_site(SynthOptions(people=3_000, seed=7, reference_date=REF,
                                  errors=ErrorRates(nhs_missing_hospital=0.0)))
    ideal = idealised_linkage(site)
    assert ideal["hospital_records_without_token"] == 0
    assert ideal["busiest_f1"] == 1.0 and ideal["unique_f1"] == 1.0


def test_true_risk_is_realistic_and_social_care_matters(site) -> None:
    oracle, _, _ = oracle_auroc(site)
    assert 0.78 <= oracle <= 0.88, f"oracle AUROC {oracle:.3f}"
    alive = site.truth_persons.filter(pl.col("alive_at_reference"))
    outcome = alive["outcome"].to_numpy().astype(int)
    risk = alive["risk"].to_numpy()
    # The true risk is calibrated against the drawn outcomes.
    assert abs(risk.mean() - outcome.mean()) < 0.01
    assert 0.04 <= outcome.mean() <= 0.12
    # People receiving long-term support are admitted far more often.
    by_care = alive.group_by(pl.col("care_status") > 0).agg(pl.col("outcome").mean()).sort("care_status")
    none, some = by_care["outcome"].to_list()
    assert some > 2 * none


def test_emergency_admissions_use_the_real_method_codes(site) -> None:
    apc = site.extracts["apc"]
    methods = set(apc["ADMIMETH"].unique().to_list())
    assert methods <= {"21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28", "11", "12", "13"}
    assert apc["DIAG_4_01"].null_count() == 0
    assert apc["DIAG_4_01"].str.contains(r"^[A-Z][0-9]{2}[0-9X]$").all()
    sc = site.extracts["social_care"]
    assert set(sc["Event_Type"].unique().to_list()) == {"Request", "Assessment", "Service", "Review"}
    services = set(sc["Service_Type"].drop_nulls().unique().to_list())
    assert "Short Term Support: ST-Max" in services and "Long Term Support: Nursing Care" in services


def test_synth_command_writes_a_site_and_never_prints_the_key(tmp_path: Path) -> None:
    key = "a-very-secret-synthetic-key-0123456789"
    key_file = tmp_path / "key.txt"
    key_file.write_text(key)
    out = tmp_path / "site"
    result = CliRunner().invoke(cli, ["-v", "synth", str(out), "--people", "500", "--seed", "2",
                                      "--key-file", str(key_file), "--birth-month-wrong", "0.05"])
    assert result.exit_code == 0, result.output
    assert "gp_registrations.csv" in result.output
    for path in out.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert key not in result.output
    spine = pl.read_csv(out / "gp_registrations.csv")
    truth = pl.read_parquet(out / "truth" / "persons.parquet")
    joined = spine.join(pl.read_parquet(out / "truth" / "records.parquet").rename({"record_id": "Patient_ID"}),
                        on="Patient_ID").join(truth, on="person")
    assert abs((joined["Birth_Month"] != joined["birth_month"]).mean() - 0.05) <= 1 / 500
    assert (joined["Pseudo_NHS_Number"] == joined["nhs_token"]).all()


def test_synth_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    out = tmp_path / "site"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["synth", str(out), "--people", "200"])
    assert result.exit_code == 2
    assert f"Error: {out} already exists and is not empty; choose a new folder or add --overwrite" in result.output
    assert (out / "precious.txt").read_text() == "keep me"
    result = CliRunner().invoke(cli, ["synth", str(out), "--people", "200", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (out / "precious.txt").exists() and (out / "site.toml").exists()


def test_committed_sample_site_is_what_the_generator_writes(tmp_path: Path) -> None:
    """sample_data/ must be regenerated (`make sample-data`) whenever the generator changes."""
    root = Path(__file__).resolve().parents[1]
    meta = json.loads((root / "sample_data" / "synth.json").read_text())
    options = SynthOptions(people=meta["people"], seed=meta["seed"],
                           reference_date=date.fromisoformat(meta["reference_date"]))
    write_site(tmp_path / "sample", options)
    for name in ("gp_registrations.csv", "apc.csv", "ae.csv", "outpatients.csv", "social_care.csv", "areas.csv",
                 "site.toml"):
        assert (tmp_path / "sample" / name).read_bytes() == (root / "sample_data" / name).read_bytes(), name
    for name in ("records.parquet", "persons.parquet"):
        assert pl.read_parquet(tmp_path / "sample" / "truth" / name).equals(
            pl.read_parquet(root / "sample_data" / "truth" / name)), name
    expected_config = site_config(meta["reference_date"], "../sample_data/")
    assert (root / "configs" / "sample.toml").read_text() == expected_config
