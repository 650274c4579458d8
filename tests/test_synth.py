"""The synthetic site: determinism, truth, documented error rates, practices on hospital records,
people in no other extract, the reference-date cut."""

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
    HOSPITAL,
    ID_COLUMN,
    NHS_COLUMN,
    PRACTICE_COLUMN,
    hospital_practices,
    idealised_linkage,
    measure_error_rates,
    measure_practices,
    measure_visitors,
    oracle_auroc,
    recorded_identifiers,
)
from linkcare.synth.extracts import SOURCE_NAMES
from linkcare.synth.population import valid_nhs_numbers
from linkcare.synth.visitors import REPEAT_SHARE

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
                      "gp_events.parquet", "areas.csv", "site.toml", "synth.json", "truth/persons.parquet",
                      "truth/records.parquet", "plans/emergency_admissions.csv"}
    assert a == b
    assert a["apc.csv"] != c["apc.csv"]
    # synth.json records every rate, the new ones too, and how many visitors there are.
    meta = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert meta["error_rates"] == {f: getattr(ErrorRates(), f) for f in ErrorRates.__dataclass_fields__}
    assert meta["error_rates"]["visitors_ae"] == 0.04 and meta["error_rates"]["practice_stale_hospital"] == 0.2
    persons = pl.read_parquet(tmp_path / "a" / "truth" / "persons.parquet")
    assert meta["visitors"] == persons.filter(~pl.col("resident")).height > 0


def test_practices_and_visitors_draw_apart_from_the_rest() -> None:
    # Practices and visitors have random streams of their own: switching them off leaves every other
    # column as it was, and switching visitors off leaves the practice changes as they were. (12,000
    # people: two practices, so that people can change practice.)
    off = {"practice_change_on_move": 0.0, "practice_change_other": 0.0, "practice_stale_hospital": 0.0,
           "practice_missing_hospital": 0.0, "visitors_apc": 0.0, "visitors_outpatients": 0.0,
           "visitors_ae": 0.0}
    bare = make_site(SynthOptions(people=12_000, seed=3, reference_date=REF, errors=ErrorRates(**off)))
    no_visitors = make_site(SynthOptions(people=12_000, seed=3, reference_date=REF, errors=ErrorRates(
        visitors_apc=0.0, visitors_outpatients=0.0, visitors_ae=0.0)))
    practice_columns = set(PRACTICE_COLUMN.values())
    unregistered = 0
    for name, frame in bare.extracts.items():
        other = no_visitors.extracts[name]
        kept = [c for c in frame.columns if c not in practice_columns]
        assert frame.select(kept).equals(other.select(kept)), name
        if name in HOSPITAL:
            # With the rates at 0 every record carries the practice of its day: none only for the
            # few not yet registered anywhere (newborns).
            j = hospital_practices(bare, name)
            assert j["recorded"].eq_missing(j["expected"]).all()
            assert j["recorded"].null_count() < 0.01 * j.height
            unregistered += j["recorded"].null_count()
            assert not frame[PRACTICE_COLUMN[name]].equals(other[PRACTICE_COLUMN[name]])
    assert unregistered > 0
    assert bare.truth_persons["resident"].all() and no_visitors.truth_persons["resident"].all()
    assert bare.truth_persons["practice_change_date"].null_count() == bare.truth_persons.height
    with_visitors = make_site(SynthOptions(people=12_000, seed=3, reference_date=REF))
    changes = ["person", "practice", "previous_practice", "practice_change_date"]
    residents = with_visitors.truth_persons.filter(pl.col("resident")).select(changes)
    assert residents.equals(no_visitors.truth_persons.select(changes))
    assert residents["practice_change_date"].null_count() < residents.height


def test_truth_names_the_person_of_every_record_once(site) -> None:
    truth = site.truth_records
    for name, frame in site.extracts.items():
        ids = frame[ID_COLUMN[name]].cast(pl.String)
        assert ids.n_unique() == frame.height, f"{name}: record ids are not unique"
        of_source = truth.filter(pl.col("source") == SOURCE_NAMES[name])
        assert of_source.height == frame.height
        assert set(of_source["record_id"].to_list()) == set(ids.to_list())
    persons = site.truth_persons
    assert persons["person"].n_unique() == persons.height
    residents = persons.filter(pl.col("resident"))
    assert residents.height == 20_000 and residents["person"].to_list() == list(range(20_000))
    assert truth["person"].is_in(persons["person"].implode()).all()
    alive = persons.filter(pl.col("alive_at_reference"))
    dead = persons.filter(~pl.col("alive_at_reference"))
    assert alive["resident"].all() and dead["resident"].all()
    assert alive["risk"].is_between(0, 1).all() and alive["outcome"].is_not_null().all()
    assert dead["risk"].is_null().all() and dead["outcome"].is_null().all()
    assert dead.height > 0 and dead["death_date"].max() <= REF
    # Every resident is on the GP spine once, with the practice they are registered with now.
    spine = truth.filter(pl.col("source") == "gp")
    assert spine["person"].n_unique() == spine.height == residents.height
    registered = site.extracts["gp_registrations"].join(
        spine.rename({"record_id": "Patient_ID"}), on="Patient_ID").join(persons, on="person")
    assert (registered["Practice_Code"] == registered["practice"]).all()
    # People in no other extract: numbered on from the residents, in the hospital extracts only,
    # with no risk, outcome or life status (they are not followed up).
    visitors = persons.filter(~pl.col("resident"))
    assert visitors.height > 0 and visitors["person"].min() == 20_000
    assert visitors.select("risk", "outcome", "alive_at_reference").null_count().row(0) == (visitors.height,) * 3
    of_visitors = truth.join(visitors.select("person"), on="person", how="semi")
    assert set(of_visitors["source"].unique().to_list()) == {"apc", "ae", "outpatients"}
    assert visitors.join(of_visitors, on="person", how="anti").height == 0  # each has a record


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
    # NHS tokens missing and wrong are shares of the records of people who have an NHS number.
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
        # Visitors from overseas have no NHS number: a few more hospital records without a token.
        assert 0 < measured["no_nhs_number"] < 0.01
    else:
        assert measured["no_nhs_number"] == 0
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
    persons = site.truth_persons.filter(pl.col("resident"))
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
    persons = site.truth_persons.filter(pl.col("resident"))
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


def test_practice_changes_are_as_documented(site) -> None:
    rates = ErrorRates()
    people = measure_practices(site)["people"]
    # Exact shares of the movers registered before their move, and of the others registered before
    # the last day.
    assert people["movers"] > 1_000 and people["others"] > 15_000
    assert abs(people["change_on_move"] - rates.practice_change_on_move) <= 1 / people["movers"]
    assert abs(people["change_other"] - rates.practice_change_other) <= 1 / people["others"]
    persons = site.truth_persons.filter(pl.col("resident"))
    changed = persons.filter(pl.col("practice_change_date").is_not_null())
    assert (changed["previous_practice"] != changed["practice"]).all()
    assert changed["practice_change_date"].is_between(date(2023, 3, 31), REF).all()
    # A mover who changed did so on the move or within four weeks of it.
    after_move = changed.filter(pl.col("move_date").is_not_null())
    gap = (after_move["practice_change_date"] - after_move["move_date"]).dt.total_days()
    assert gap.is_between(0, 28).all() and gap.n_unique() > 20


@pytest.mark.parametrize("name", HOSPITAL)
def test_hospital_records_carry_the_practice_of_the_day_or_an_old_one_or_none(site, name: str) -> None:
    rates = ErrorRates()
    measured = measure_practices(site)[name]
    j = hospital_practices(site, name)
    due = j.filter(pl.col("expected").is_not_null()).height
    after = measured["records_after_change"]
    assert after > 500
    # Blank for exactly the documented share of the records whose person had a practice that day,
    # and out of date for exactly the documented share of those after a change that carry one.
    assert abs(measured["practice_missing"] - rates.practice_missing_hospital) <= 1 / due
    assert abs(measured["practice_stale"] - rates.practice_stale_hospital) <= 1 / after
    assert measured["recorded_as_on_the_day"] == 1.0  # every other record has the practice of its day
    # Most hospital records carry a practice; the rest are blanks, visitors with none, newborns.
    assert 0.97 <= measured["with_practice"] < 1 - rates.practice_missing_hospital
    # Out-of-date codes come soon after the change rather than long after.
    since = (pl.col("date") - pl.col("practice_change_date")).dt.total_days()
    changed = j.filter(pl.col("practice_change_date").is_not_null() & (pl.col("date") >= pl.col("practice_change_date"))
                       & pl.col("recorded").is_not_null())
    stale = changed.filter(pl.col("recorded") == pl.col("previous_practice")).select(since.median()).item()
    fresh = changed.filter(pl.col("recorded") != pl.col("previous_practice")).select(since.median()).item()
    assert stale < fresh
    # People who moved into the site show their old practice, from outside the site, until they register.
    before = j.filter(pl.col("expected").is_not_null() & (pl.col("expected") != pl.col("recorded"))
                      & pl.col("recorded").is_not_null() & (pl.col("recorded") != pl.col("previous_practice")))
    assert before.height == 0
    site_practices = site.extracts["gp_registrations"]["Practice_Code"].unique().implode()
    residents_away = j.filter(pl.col("resident") & pl.col("recorded").is_not_null()
                              & ~pl.col("recorded").is_in(site_practices))
    assert residents_away.height > 0


@pytest.mark.parametrize("name", HOSPITAL)
def test_visitors_are_the_documented_share_of_each_hospital_extract(site, name: str) -> None:
    rates = ErrorRates()
    measured = measure_visitors(site)[name]
    share = {"apc": rates.visitors_apc, "ae": rates.visitors_ae, "outpatients": rates.visitors_outpatients}[name]
    assert abs(measured["visitor_share"] - share) <= 1 / measured["records"]
    # Most visitors come once; some come back (1 + a geometric count of further records).
    assert measured["visitors"] > 150
    assert 0.5 * REPEAT_SHARE <= measured["visitors_with_repeats"] <= 1.6 * REPEAT_SHARE
    # Most of their records are from outside the site's areas; no resident's record is.
    assert measured["visitor_records_out_of_area"] >= 0.7
    assert 0 < measured["visitor_records_in_site_areas"] < 0.2
    assert measured["resident_records_out_of_area"] == 0.0
    # They resemble the site's own patients of the extract: similar ages, both sexes.
    j = recorded_identifiers(site, name).with_columns((2026 - pl.col("birth_year")).alias("age"))
    ages = j.group_by("resident").agg(pl.col("age").mean(), (pl.col("sex_true") == 2).mean().alias("female"))
    by = {r["resident"]: r for r in ages.to_dicts()}
    assert abs(by[False]["age"] - by[True]["age"]) < 8 and 0.35 < by[False]["female"] < 0.65


def test_visitors_have_their_own_identities(site) -> None:
    rates = ErrorRates()
    people = measure_visitors(site)["people"]
    n = people["visitors"]
    assert people["first_visitor"] == people["last_resident"] + 1
    # Origins, exact shares of the visitors: overseas (no NHS number, LSOA or practice), living
    # locally but registered with none of the site's practices, and the rest from other areas.
    for key, rate in (("overseas", rates.visitor_overseas), ("local_unregistered", rates.visitor_local)):
        assert abs(people[key] - rate) <= 1 / n, key
    assert people["with_nhs_token"] == pytest.approx(1 - people["overseas"])
    assert people["token_of_a_resident"] == 0.0
    assert people["with_practice"] == pytest.approx(1 - people["overseas"] - people["local_unregistered"])
    visitors = site.truth_persons.filter(~pl.col("resident"))
    site_areas = site.areas["LSOA11CD"].implode()
    away = visitors.filter(pl.col("lsoa").is_not_null() & ~pl.col("lsoa").is_in(site_areas))
    assert away["lsoa"].str.contains(r"^E01[0-9]{6}$").all() and away["lsoa"].n_unique() > 20
    site_practices = site.extracts["gp_registrations"]["Practice_Code"].unique().implode()
    assert not visitors["practice"].drop_nulls().is_in(site_practices).any()
    assert visitors["birth_year"].is_between(1900, 2026).all() and visitors["sex"].is_in([1, 2]).all()
    # A visitor admitted from A&E has the admission in the APC extract, on the day, as the same person.
    truth = site.truth_records
    ae = site.extracts["ae"].join(truth.filter(pl.col("source") == "ae").rename({"record_id": "EC_Ident"}),
                                  on="EC_Ident").join(visitors.select("person"), on="person", how="semi")
    apc = site.extracts["apc"].join(truth.filter(pl.col("source") == "apc").rename({"record_id": "EPIKEY"}),
                                    on="EPIKEY").select("person", pl.col("ADMIDATE").alias("Arrival_Date"))
    admitted = ae.filter(pl.col("Discharge_Destination") == "Admitted")
    assert admitted.height > 20
    assert admitted.join(apc, on=["person", "Arrival_Date"], how="semi").height == admitted.height


def test_idealised_linkers_bound_what_demographics_can_do(site) -> None:
    ideal = idealised_linkage(site)
    shares = [ideal[f"share_with_{k}"] for k in ("no_candidate", "one_candidate", "several_candidates")]
    assert sum(shares) == pytest.approx(1.0)
    assert ideal["loose_records"] > 0 and min(shares) > 0
    # "busiest" places every record "unique" places, and more: it gains recall and loses precision.
    assert ideal["busiest_recall"] > ideal["unique_recall"]
    assert ideal["busiest_precision"] < ideal["unique_precision"]
    assert 0.9 < ideal["unique_f1"] < 1.0 and 0.9 < ideal["busiest_f1"] < 1.0


def test_idealised_linkers_are_perfect_when_every_record_has_a_token() -> None:
    site = make_site(SynthOptions(people=3_000, seed=7, reference_date=REF,
                                  errors=ErrorRates(nhs_missing_hospital=0.0, nhs_missing_social_care=0.0,
                                                    visitor_overseas=0.0)))
    ideal = idealised_linkage(site)
    assert ideal["loose_records"] == 0
    assert ideal["busiest_f1"] == 1.0 and ideal["unique_f1"] == 1.0


def test_idealised_linkers_without_the_council_id_leave_more_records_loose(site) -> None:
    # With the council's ID, a social-care record without a token is anchored by its client's other
    # records that have one; without it, only demographics place it.
    with_id, without = idealised_linkage(site), idealised_linkage(site, council_id=False)
    assert without["loose_records"] > with_id["loose_records"]
    assert without["unique_recall"] < with_id["unique_recall"]


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
                                      "--key-file", str(key_file), "--birth-month-wrong", "0.05",
                                      "--visitors-ae", "0.1", "--practice-missing-hospital", "0.3"])
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
    meta = json.loads((out / "synth.json").read_text())
    assert meta["error_rates"]["visitors_ae"] == 0.1 and meta["error_rates"]["practice_missing_hospital"] == 0.3
    ae = pl.read_csv(out / "ae.csv", infer_schema=False).join(
        pl.read_parquet(out / "truth" / "records.parquet").rename({"record_id": "EC_Ident"}), on="EC_Ident").join(
        truth, on="person")
    assert abs((~ae["resident"]).mean() - 0.1) <= 1 / ae.height
    help_text = CliRunner().invoke(cli, ["synth", "--help"]).output
    for option in ("--visitors-apc", "--visitors-outpatients", "--visitors-ae", "--visitor-overseas",
                   "--visitor-local", "--practice-change-on-move", "--practice-change-other",
                   "--practice-stale-hospital", "--practice-missing-hospital"):
        assert option in help_text


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


def test_generated_config_compares_the_practice_given_the_area(tmp_path: Path) -> None:
    from linkcare.config import load_config

    write_site(tmp_path / "site", SynthOptions(people=500, seed=1, reference_date=REF))
    config = load_config(tmp_path / "site" / "site.toml")
    columns = {s.name: s.fields["practice"].column for s in config.sources if "practice" in s.fields}
    assert columns == {"gp": "Practice_Code", "apc": "GPPRAC", "ae": "GP_Practice_Code", "outpatients": "GPPRAC",
                       "gp_events": "Practice_Code"}
    # Compared as if independent of area it counts an area's shared practice twice (precision 0.9996 ->
    # 0.8985 on a 100,000-person site); its levels are split by whether the area agrees instead.
    compared = {c.field: c for c in config.linkage.comparisons}
    assert list(compared) == ["nhs", "la_id", "birth_year", "birth_month", "sex", "area", "practice"]
    assert compared["practice"].given == "area" and not compared["practice"].term_frequency
    assert [list(b) for b in config.linkage.blocking] == [["nhs"], ["la_id"], ["birth_year", "birth_month", "area"]]


def test_committed_sample_site_is_what_the_generator_writes(tmp_path: Path) -> None:
    """sample_data/ must be regenerated (`make sample-data`) whenever the generator changes."""
    root = Path(__file__).resolve().parents[1]
    meta = json.loads((root / "sample_data" / "synth.json").read_text())
    options = SynthOptions(people=meta["people"], seed=meta["seed"],
                           reference_date=date.fromisoformat(meta["reference_date"]))
    write_site(tmp_path / "sample", options)
    for name in ("gp_registrations.csv", "apc.csv", "ae.csv", "outpatients.csv", "social_care.csv", "areas.csv",
                 "site.toml", "plans/emergency_admissions.csv"):
        assert (tmp_path / "sample" / name).read_bytes() == (root / "sample_data" / name).read_bytes(), name
    for name in ("truth/records.parquet", "truth/persons.parquet", "gp_events.parquet"):
        assert pl.read_parquet(tmp_path / "sample" / name).equals(pl.read_parquet(root / "sample_data" / name)), name
    expected_config = site_config(meta["reference_date"], "../sample_data/")
    assert (root / "configs" / "sample.toml").read_text() == expected_config
