"""Worklists: the tiers they list, each person's top factors in words with their own values, the
index date, and who is new to the list since the previous run."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import write_config
from linkcare.cli import cli
from linkcare.risk.features import feature_list
from linkcare.risk.stratify import PreviousLists, mark_listed
from linkcare.risk.wording import PHRASES, describe, period, reported_window

WINDOWS = (90, 365, 730)
#: Every phrase of the table with the person's values it reads and what it says; one case at least per template.
PHRASE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("age", {"age": 84.9}, "aged 84"),
    ("sex", {"female": 1.0}, "female"),
    ("sex", {"female": 0.0}, "male"),
    ("sex", {"female": None}, "sex not recorded"),
    ("deprivation", {"deprivation_decile": 2.0}, "lives in deprivation decile 2 (1 is the most deprived)"),
    ("deprivation", {"deprivation_decile": None}, "deprivation not recorded"),
    ("ethnicity", {"ethnic_group": "Asian", "ethnic_unknown": 0.0}, "ethnic group Asian"),
    ("ethnicity", {"ethnic_group": "Unknown", "ethnic_unknown": 1.0}, "ethnic group not recorded"),
    ("emergency admissions", {"emergency_admissions_365d": 3.0}, "3 emergency admissions in the last 12 months"),
    ("emergency admissions", {"emergency_admissions_365d": 1.0}, "1 emergency admission in the last 12 months"),
    ("emergency admissions", {"emergency_admissions_365d": 0.0}, "no emergency admissions in the last 12 months"),
    ("planned admissions", {"elective_admissions_365d": 2.0}, "2 planned admissions in the last 12 months"),
    ("planned admissions", {"elective_admissions_365d": 0.0}, "no planned admissions in the last 12 months"),
    ("bed days", {"bed_days_365d": 12.0}, "12 days in hospital in the last 12 months"),
    ("bed days", {"bed_days_365d": 0.0}, "no days in hospital in the last 12 months"),
    ("A&E attendances", {"ae_attendances_365d": 1.0}, "1 A&E attendance in the last 12 months"),
    ("A&E attendances", {"ae_attendances_365d": 0.0}, "no A&E attendances in the last 12 months"),
    ("outpatient appointments", {"outpatient_appointments_365d": 5.0},
     "5 outpatient appointments attended in the last 12 months"),
    ("outpatient appointments", {"outpatient_appointments_365d": 0.0},
     "no outpatient appointments attended in the last 12 months"),
    ("missed outpatient appointments", {"missed_outpatient_365d": 2.0},
     "2 outpatient appointments missed in the last 12 months"),
    ("missed outpatient appointments", {"missed_outpatient_365d": 0.0},
     "no outpatient appointments missed in the last 12 months"),
    ("time since last emergency admission", {"days_since_emergency": 8.0}, "last emergency admission 8 days ago"),
    ("time since last emergency admission", {"days_since_emergency": 1.0}, "last emergency admission 1 day ago"),
    ("time since last emergency admission", {"days_since_emergency": 730.0},
     "no emergency admission in the last 24 months"),
    ("Charlson comorbidity index", {"charlson": 4.0}, "Charlson index 4"),
    ("Elixhauser comorbidity score", {"elixhauser": 7.0}, "Elixhauser score 7"),
    ("Hospital Frailty Risk Score", {"hfrs": 12.34}, "Hospital Frailty Risk Score 12.3"),
    ("long-term social care", {"long_term_support": 1.0, "long_term_community": 1.0, "planned_hours_week": 14.0},
     "receives home care, 14 hours a week"),
    ("long-term social care", {"long_term_support": 1.0, "long_term_community": 1.0, "planned_hours_week": 0.0},
     "receives home care"),
    ("long-term social care", {"long_term_support": 1.0, "long_term_nursing": 1.0}, "lives in a nursing home"),
    ("long-term social care", {"long_term_support": 1.0, "long_term_residential": 1.0},
     "lives in a residential care home"),
    ("long-term social care", {"long_term_support": 1.0, "planned_hours_week": 7.5},
     "receives long-term social care, 7.5 hours a week"),
    ("long-term social care", {"long_term_support": 0.0}, "no long-term social care"),
    ("social care hours a week", {"planned_hours_week": 14.0}, "14 hours of social care a week planned"),
    ("social care hours a week", {"planned_hours_week": 0.0}, "no social care hours planned"),
    ("social care assessments and reviews", {"assessments_and_reviews_365d": 2.0},
     "2 social care assessments or reviews in the last 12 months"),
    ("social care assessments and reviews", {"assessments_and_reviews_365d": 0.0},
     "no social care assessments or reviews in the last 12 months"),
    ("social care requests", {"requests_365d": 1.0}, "1 request for social care in the last 12 months"),
    ("social care requests", {"requests_365d": 0.0}, "no requests for social care in the last 12 months"),
    ("reablement", {"reablement_now": 1.0, "reablement_365d": 1.0}, "receiving reablement now"),
    ("reablement", {"reablement_now": 0.0, "reablement_365d": 1.0}, "had reablement in the last 12 months"),
    ("reablement", {"reablement_now": 0.0, "reablement_365d": 0.0}, "no reablement in the last 12 months"),
    ("long-term conditions (GP)", {"gp_conditions": 3.0}, "3 long-term conditions on the GP record"),
    ("long-term conditions (GP)", {"gp_conditions": 0.0}, "no long-term conditions on the GP record"),
    ("frailty (eFI)", {"efi": 0.3, "efi_band": 2.0},
     "electronic Frailty Index band 2 (1 mild, 2 moderate, 3 severe)"),
    ("frailty (eFI)", {"efi": 0.1, "efi_band": 0.0}, "fit on the electronic Frailty Index"),
    ("repeat medicines", {"repeat_medications": 1.0}, "1 repeat medicine"),
    ("repeat medicines", {"repeat_medications": 0.0}, "no repeat medicines"),
    ("GP consultations", {"gp_consultations_365d": 9.0}, "9 GP consultations in the last 12 months"),
    ("GP consultations", {"gp_consultations_365d": 0.0}, "no GP consultations in the last 12 months"),
]


@pytest.mark.parametrize(("factor", "values", "words"), PHRASE_CASES, ids=[w for _, _, w in PHRASE_CASES])
def test_each_phrase_says_the_persons_own_values(factor: str, values: dict[str, Any], words: str) -> None:
    assert describe(factor, values, WINDOWS) == words


def test_every_phrase_template_has_a_case_and_every_factor_a_phrase() -> None:
    tested = {(f, w) for f, _, w in PHRASE_CASES}
    for phrase in PHRASES:
        templates = [phrase.template, *([phrase.none] if phrase.none else []), *(t for _, t in phrase.cases)]
        for template in templates:
            stem = template.split("{")[0]
            assert any(f == phrase.factor and w.startswith(stem) for f, w in tested), (phrase.factor, template)
    factors = {f.factor for f in feature_list(WINDOWS, with_deprivation=True, with_primary_care=True)}
    assert factors == {p.factor for p in PHRASES}


def test_counts_are_over_a_year_or_else_the_longest_window() -> None:
    assert reported_window((90, 365, 730)) == 365 and reported_window((90, 180)) == 180
    assert period(365) == "12 months" and period(730) == "24 months" and period(90) == "90 days"
    assert describe("emergency admissions", {"emergency_admissions_180d": 2.0}, (90, 180)) == \
        "2 emergency admissions in the last 180 days"
    assert describe("emergency admissions", {}, WINDOWS) == "emergency admissions not recorded"
    assert describe("a factor from a newer model", {}, WINDOWS) == "a factor from a newer model"


def _scored() -> pl.DataFrame:
    return pl.DataFrame({"person_id": ["P1", "P2", "P3", "P4"], "practice": ["A1", "A1", "B2", None],
                         "tier": ["case management", "high risk", "low risk", "high risk"]})


def test_without_a_previous_run_everyone_listed_is_new() -> None:
    marked = mark_listed(_scored(), ("case management", "high risk"), None)
    assert marked["listed"].to_list() == [True, True, False, True]
    assert marked["new_to_list"].to_list() == [True, True, None, True]


def test_new_means_not_on_the_same_practices_list_last_time() -> None:
    before = PreviousLists(Path("previous"), pl.DataFrame({"person_id": ["P1", "P2", "P4"],
                                                           "practice": ["A1", "B2", "unknown"]}))
    marked = mark_listed(_scored(), ("case management", "high risk"), before)
    # P1 stays on A1's list; P2 moved to A1 from B2's list, so A1's team sees them first; P4 has no practice.
    assert marked["new_to_list"].to_list() == [False, True, None, False]


# --- end to end on the small synthetic site ---------------------------------------------------------


def _stratify(runner: CliRunner, config: Path, cohort: Path, model: Path, out: Path, *extra: str) -> Any:
    result = runner.invoke(cli, ["stratify", str(config), "--cohort", str(cohort), "--model", str(model),
                                 "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return result


def test_worklists_list_the_worklist_tiers_with_words_date_and_new_flag(trained: tuple[Path, Path, Path],
                                                                        tmp_path: Path, runner: CliRunner) -> None:
    config, cohort, model = trained
    out = tmp_path / "risk"
    result = _stratify(runner, config, cohort, model, out)
    assert "no --previous, so everyone listed is marked new" in result.output
    risk = pl.read_parquet(out / "risk.parquet")
    listed = risk.filter(pl.col("listed"))
    assert set(listed["tier"]) == {"case management", "high risk", "moderate risk"}
    assert listed.height == risk.filter(pl.col("tier") != "low risk").height < risk.height
    lists = pl.concat([pl.read_csv(p, infer_schema=False) for p in sorted((out / "worklists").glob("*.csv"))])
    assert lists.columns == ["rank", "Patient_ID", "index_date", "tier", "risk", "percentile", "new_to_list",
                             "reason_1", "reason_2", "reason_3"]
    assert lists.height == listed.height
    assert set(lists["index_date"]) == {"2026-03-31"} and set(lists["new_to_list"]) == {"true"}
    # The words are risk.parquet's reasons, one per top factor, and say values, not log-odds.
    words = listed.select(pl.col("record_id").alias("Patient_ID"), "reason_1", "reason_2", "reason_3")
    assert lists.select(words.columns).sort("Patient_ID").equals(words.sort("Patient_ID"))
    for column in ("reason_1", "reason_2", "reason_3"):
        assert not lists[column].str.contains(r"^-?\d+\.\d+$").any() and lists[column].null_count() == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["worklists"]["tiers"] == ["case management", "high risk", "moderate risk"]
    assert manifest["worklists"]["previous"] is None


def test_the_previous_run_marks_only_people_new_to_the_list(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                            runner: CliRunner) -> None:
    config, cohort, model = trained
    narrow = write_config(config, tmp_path / "narrow.toml",
                          replace={"[risk]\n": '[risk]\nworklist_tiers = ["case management"]\n'})
    first = tmp_path / "first"
    _stratify(runner, narrow, cohort, model, first)
    first_risk = pl.read_parquet(first / "risk.parquet")
    assert set(first_risk.filter(pl.col("listed"))["tier"]) == {"case management"}
    second = tmp_path / "second"
    result = _stratify(runner, config, cohort, model, second, "--previous", str(first))
    risk = pl.read_parquet(second / "risk.parquet").filter(pl.col("listed"))
    # The same people and scores: those listed last time are not new; the rest of the wider list are.
    assert risk.filter(~pl.col("new_to_list"))["tier"].unique().to_list() == ["case management"]
    assert risk.filter(pl.col("new_to_list")).height == risk.filter(pl.col("tier") != "case management").height
    assert f"new since {first}" in result.output
    again = tmp_path / "again"
    _stratify(runner, config, cohort, model, again, "--previous", str(second))
    assert not pl.read_parquet(again / "risk.parquet")["new_to_list"].any()


def _listed(folder: Path) -> set[tuple[str, str]]:
    risk = pl.read_parquet(folder / "risk.parquet").filter(pl.col("listed"))
    return set(risk.select("person_id", pl.col("practice").fill_null("unknown")).iter_rows())


def test_previous_latest_with_snapshots_marks_who_is_new_since_the_last_snapshot(
        trained: tuple[Path, Path, Path], tmp_path: Path, runner: CliRunner) -> None:
    config, cohort, model = trained
    narrow = write_config(config, tmp_path / "narrow.toml",
                          replace={"[risk]\n": '[risk]\nworklist_tiers = ["case management"]\n'})
    out = tmp_path / "risk"
    # The first run: no earlier snapshot, so it says so plainly, carries on, and everyone listed is new.
    first = _stratify(runner, narrow, cohort, model, out, "--snapshot", "--previous", "latest",
                      "--as-of", "2026-02-28")
    assert "holds no earlier output yet" in first.stderr and "everyone on the worklists is marked new" in first.stderr
    assert "found no earlier output, so everyone listed is marked new" in first.stdout
    assert (out / "latest").resolve() == (out / "2026-02-28").resolve()
    earlier = pl.read_parquet(out / "2026-02-28" / "risk.parquet")
    assert earlier.filter(pl.col("listed"))["new_to_list"].all()
    assert json.loads((out / "2026-02-28" / "manifest.json").read_text())["worklists"]["previous"] is None
    # The second run, a month on with the wider lists: new means not on that practice's list last month.
    second = _stratify(runner, config, cohort, model, out, "--snapshot", "--previous", "latest")
    assert (out / "latest").resolve() == (out / "2026-03-31").resolve()
    assert f"new since {out / '2026-02-28'}" in second.stdout
    before = _listed(out / "2026-02-28")
    risk = pl.read_parquet(out / "2026-03-31" / "risk.parquet").filter(pl.col("listed"))
    assert len(before) > 0 and risk.height > len(before)
    expected = [(p, pr if pr is not None else "unknown") not in before
                for p, pr in risk.select("person_id", "practice").iter_rows()]
    assert risk["new_to_list"].to_list() == expected
    assert 0 < sum(expected) < risk.height  # some kept from last month's lists, some new to them
    manifest = json.loads((out / "2026-03-31" / "manifest.json").read_text())
    assert manifest["worklists"]["previous"] == "2026-02-28"


def test_previous_latest_without_snapshots_is_the_output_folder_itself(
        trained: tuple[Path, Path, Path], tmp_path: Path, runner: CliRunner) -> None:
    config, cohort, model = trained
    out = tmp_path / "risk"
    _stratify(runner, config, cohort, model, out)
    again = _stratify(runner, config, cohort, model, out, "--previous", "latest")
    assert f"new since {out}" in again.stdout and "holds no earlier output yet" not in again.output
    assert not pl.read_parquet(out / "risk.parquet")["new_to_list"].any()  # the same lists as the run it replaced


def test_a_missing_or_changed_previous_run_is_refused(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                      runner: CliRunner) -> None:
    config, cohort, model = trained
    args = ["stratify", str(config), "--cohort", str(cohort), "--model", str(model), "--out", str(tmp_path / "o")]
    result = runner.invoke(cli, [*args, "--previous", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "--previous names no folder" in result.output
    first = tmp_path / "first"
    _stratify(runner, config, cohort, model, first)
    changed = tmp_path / "changed"
    shutil.copytree(first, changed)
    risk = pl.read_parquet(changed / "risk.parquet")
    risk.head(10).write_parquet(changed / "risk.parquet")
    result = runner.invoke(cli, [*args, "--previous", str(changed)])
    assert result.exit_code == 2 and "its checksum does not match manifest.json" in result.output


def test_no_persons_values_from_the_worklists_reach_the_log(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                            runner: CliRunner) -> None:
    config, cohort, model = trained
    out = tmp_path / "risk"
    result = runner.invoke(cli, ["-v", "stratify", str(config), "--cohort", str(cohort), "--model", str(model),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    lists = pl.concat([pl.read_csv(p, infer_schema=False) for p in (out / "worklists").glob("*.csv")])
    reasons = set(lists["reason_1"]) | set(lists["reason_2"]) | set(lists["reason_3"])
    log = result.output + (result.stderr if result.stderr_bytes is not None else "")
    for value in set(lists["Patient_ID"]) | {r for r in reasons if any(ch.isdigit() for ch in r)}:
        assert value not in log


def test_write_features_gives_every_feature_the_model_used(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                           runner: CliRunner) -> None:
    from linkcare.cohort.dataset import open_cohort
    from linkcare.config import load_config
    from linkcare.risk.features import build_features
    from linkcare.risk.store import load_model

    config, cohort, model_dir = trained
    out = tmp_path / "risk"
    _stratify(runner, config, cohort, model_dir, out, "--write-features")
    features = pl.read_parquet(out / "features.parquet")
    risk = pl.read_parquet(out / "risk.parquet")
    settings = load_config(config)
    model = load_model(model_dir, settings.risk.model)
    assert features.columns == ["person_id", *model.names]
    assert features["person_id"].to_list() == sorted(risk["person_id"].to_list())
    built = build_features(settings, open_cohort(cohort), date(2026, 3, 31), model.windows).frame
    expected = built.select("person_id", *[pl.col(n).cast(pl.Float64) for n in model.names]).sort("person_id")
    assert features.equals(expected)
    assert "features.parquet" in json.loads((out / "manifest.json").read_text())["outputs"]
    _stratify(runner, config, cohort, model_dir, tmp_path / "plain")
    assert not (tmp_path / "plain" / "features.parquet").exists()
