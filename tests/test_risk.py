"""Risk: labels at the horizon boundary, no peeking past the index date, tiers, worklists,
explanation additivity, safe model loading, and train + stratify end to end."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli
from linkcare.cohort.dataset import open_cohort
from linkcare.cohort.events import EVENT_COLUMNS
from linkcare.config import DEFAULT_TIERS, Tier, load_config
from linkcare.disclosure import Disclosure
from linkcare.errors import ConfigError
from linkcare.risk.features import build_features, feature_list
from linkcare.risk.model import RiskModel, fit_model
from linkcare.risk.scoring import assign_tiers
from linkcare.risk.store import load_model
from linkcare.risk.training import publish_counts

INDEX = dt.date(2025, 3, 31)
CONFIG = """version = 1
reference_date = "2026-03-31"
[[sources]]
name = "gp"
path = "gp.csv"
id = "Patient_ID"
kind = "gp_registrations"
fields = { nhs = "NHS", birth_year = "YOB", sex = "Sex" }
[[sources]]
name = "apc"
path = "apc.csv"
id = "EPIKEY"
kind = "apc"
fields = { nhs = "NHS" }
"""


def _event(person: str, source: str, kind: str, start: dt.date | None, end: dt.date | None = None,
           **attrs: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(EVENT_COLUMNS)
    row.update(person_id=person, source=source, record_id=f"{source}-{person}-{start}-{kind}", event_type=kind,
               start_date=start, end_date=end, **attrs)
    return row


def _write_cohort(folder: Path, events: list[dict[str, object]], persons: pl.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(events, schema=EVENT_COLUMNS).write_parquet(folder / "events.parquet")
    persons.write_parquet(folder / "persons.parquet")
    return folder


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """Four registered people around one index date; returns (config path, cohort folder)."""
    (tmp_path / "site.toml").write_text(CONFIG)
    day = dt.timedelta(days=1)
    reg = dt.date(2020, 1, 1)
    events = [
        _event("A", "gp", "registration", reg, practice="P1", ethnicity="A"),
        _event("B", "gp", "registration", reg, practice="P1", ethnicity="M"),
        _event("C", "gp", "registration", reg, practice="P2", ethnicity="Z"),
        _event("D", "gp", "registration", reg, INDEX - 10 * day, practice="P2"),  # died before the index date
        _event("E", "gp", "registration", INDEX + day, practice="P2"),  # registered after it
        # A: admitted on the index date (an outcome, not a feature) and the day before (a feature).
        _event("A", "apc", "emergency_admission", INDEX, INDEX + 3 * day, diagnoses=["I500"]),
        _event("A", "apc", "emergency_admission", INDEX - day, INDEX + 2 * day, diagnoses=["F03X"]),
        # B: admitted on the last day of the horizon (an outcome), 100 days before (outside 90, inside 365).
        _event("B", "apc", "emergency_admission", INDEX + 364 * day, INDEX + 365 * day),
        _event("B", "apc", "elective_admission", INDEX - 100 * day, INDEX - 98 * day),
        # C: admitted the day after the horizon ends (no outcome).
        _event("C", "apc", "emergency_admission", INDEX + 365 * day, INDEX + 366 * day),
    ]
    persons = pl.DataFrame({"person_id": ["A", "B", "C", "D", "E"],
                            "birth_year": ["1940", "1980", "2000", "1930", "1990"], "sex": ["f", "m", None, "f", "m"]})
    return tmp_path / "site.toml", _write_cohort(tmp_path / "cohort", events, persons)


def test_outcome_counts_the_index_day_and_the_last_day_of_the_horizon_only(tiny: tuple[Path, Path]) -> None:
    config_path, cohort = tiny
    fs = build_features(load_config(config_path), open_cohort(cohort), INDEX, (90, 365), horizon=365)
    outcome = dict(zip(fs.frame["person_id"].to_list(), fs.frame["outcome"].to_list(), strict=True))
    assert outcome == {"A": True, "B": True, "C": False}


def test_population_is_living_people_registered_before_the_index_date(tiny: tuple[Path, Path]) -> None:
    config_path, cohort = tiny
    fs = build_features(load_config(config_path), open_cohort(cohort), INDEX, (90, 365))
    assert fs.frame["person_id"].to_list() == ["A", "B", "C"]
    assert "outcome" not in fs.frame.columns


def test_features_use_only_events_before_the_index_date(tiny: tuple[Path, Path]) -> None:
    config_path, cohort = tiny
    fs = build_features(load_config(config_path), open_cohort(cohort), INDEX, (90, 365))
    row = {r["person_id"]: r for r in fs.frame.to_dicts()}
    # A's admission on the index date is not a feature; the one the day before is, with its bed days
    # counted only up to the day before the index date, and its dementia code in the scores.
    assert row["A"]["emergency_admissions_90d"] == 1
    assert row["A"]["bed_days_90d"] == 0  # admitted the day before: no whole day yet
    assert row["A"]["days_since_emergency"] == 1
    assert row["A"]["hfrs"] == pytest.approx(2.1)  # F03 unspecified dementia, Gilbert 2018
    assert row["A"]["charlson"] == 1  # dementia; heart failure (I500) was coded on the index date
    # B's elective admission 100 days before is in the 365-day window only.
    assert (row["B"]["elective_admissions_90d"], row["B"]["elective_admissions_365d"]) == (0, 1)
    assert row["B"]["bed_days_365d"] == 2
    # No emergency admission in the longest window reads as the window's length.
    assert row["B"]["days_since_emergency"] == 365
    assert row["C"]["female"] is None and row["A"]["female"] == 1.0
    assert row["A"]["age"] == pytest.approx(2025.25 - 1940.5, abs=0.1)
    assert (row["A"]["ethnic_group"], row["B"]["ethnic_group"], row["C"]["ethnic_group"]) == (
        "White", "Black", "Unknown")


def test_feature_list_has_each_window_and_every_group() -> None:
    names = [f.name for f in feature_list((90, 365), with_deprivation=True)]
    assert "emergency_admissions_90d" in names and "emergency_admissions_365d" in names
    assert "emergency_admissions_730d" not in names and "deprivation_decile" in names
    groups = {f.group for f in feature_list((90,), with_deprivation=False)}
    assert groups == {"demographics", "hospital use", "comorbidity and frailty", "social care"}


@pytest.mark.parametrize("n", [1000, 1001, 7])
def test_tiers_follow_the_nhs_pyramid(n: int) -> None:
    rng = np.random.default_rng(n)
    risk = rng.random(n)
    percentile, tier = assign_tiers(risk, DEFAULT_TIERS)
    counts = np.bincount(tier, minlength=4)
    expected = np.diff(np.r_[0, np.round(np.cumsum([t.share for t in DEFAULT_TIERS]) * n)]).astype(int)
    expected[-1] = n - expected[:-1].sum()
    assert counts.tolist() == expected.tolist()
    # Higher risk never sits in a lower tier, and the riskiest person has the top percentile.
    order = np.argsort(-risk)
    assert np.all(np.diff(tier[order]) >= 0)
    assert percentile[order[0]] == pytest.approx(100.0 * (n - 1) / n)
    if n == 1000:
        assert counts.tolist() == [5, 45, 150, 800]


def test_tiers_from_config_shares() -> None:
    _, tier = assign_tiers(np.linspace(1, 0, 10), (Tier("top", 0.3), Tier("rest", 0.7)))
    assert tier.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]


def _simulated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = feature_list((90,), with_deprivation=True)
    x = rng.random((n, len(features))) * 3
    x[:, 0] = rng.uniform(0, 100, n)  # age
    x[rng.random(n) < 0.1, 2] = np.nan  # deprivation sometimes unknown
    logit = -3 + 0.03 * x[:, 0] + 0.8 * x[:, 8] + 0.5 * np.nan_to_num(x[:, 2])
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    return x, y


@pytest.mark.parametrize("kind", ["logistic", "gradient_boosting"])
def test_explanations_add_up_to_the_calibrated_log_odds(kind: str) -> None:
    features = feature_list((90,), with_deprivation=True)
    x, y = _simulated(4000, 1)
    model = fit_model(kind, features, x, y, (90,), 365, seed=0)
    base, parts = model.explain(x[:500])
    assert parts.shape == (500, len(model.factors))
    np.testing.assert_allclose(base + parts.sum(axis=1), model.log_odds(x[:500]), atol=1e-9)
    p = model.predict(x[:500])
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-model.log_odds(x[:500]))), atol=1e-12)
    # The model learnt the signal: emergency admissions raise risk. More admissions, everything else
    # the same, give a higher mean risk, and the factor's contribution is positive for the people
    # with the most admissions and negative for those with the fewest.
    admissions = next(j for j, f in enumerate(features) if f.name == "emergency_admissions_90d")
    more = x[:500].copy()
    more[:, admissions] += 1.0
    assert model.predict(more).mean() > p.mean() + 0.01
    factor = model.factors.index("emergency admissions")
    top, bottom = np.quantile(x[:500, admissions], [0.9, 0.1])
    assert parts[x[:500, admissions] >= top, factor].mean() > 0 > parts[x[:500, admissions] <= bottom, factor].mean()
    again = RiskModel.from_json(json.loads(json.dumps(model.to_json())))
    np.testing.assert_allclose(again.predict(x[:500]), p, atol=1e-12)


def test_publish_counts_suppresses_small_counts() -> None:
    metrics = {"people": 5, "outcomes": 123, "auroc": 0.8, "top": [{"share": 0.05, "people": 7,
                                                                     "flagged_with_outcome": 12}]}
    out = publish_counts(metrics, Disclosure())
    assert out == {"people": None, "outcomes": 125, "auroc": 0.8,
                   "top": [{"share": 0.05, "people": None, "flagged_with_outcome": 10}]}


# --- end to end on the small synthetic site ---------------------------------------------------------


# `trained` (the small site linked and trained once per session) is in conftest.py.


def test_train_writes_models_metrics_and_card(trained: tuple[Path, Path, Path]) -> None:
    _, _, model_dir = trained
    names = sorted(p.name for p in model_dir.iterdir())
    assert names == ["curves.json", "gradient_boosting.json", "logistic.json", "manifest.json", "metrics.json",
                     "model_card.md", "risk_report.html"]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["evaluation"]["index_date"] == "2025-03-31"
    assert metrics["fitting"]["index_date"] == "2024-03-31"
    for kind in ("gradient_boosting", "logistic"):
        m = metrics["models"][kind]
        assert 0.6 < m["auroc"] < 1.0
        assert m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1]
        assert {t["share"] for t in m["top"]} == {0.005, 0.05, 0.2}
    assert set(metrics["subgroups"]) == {"age band", "sex", "ethnicity", "deprivation quintile (1 = most deprived)"}
    # Counts are published through the disclosure rule: multiples of 5 or suppressed.
    assert metrics["evaluation"]["people"] % 5 == 0
    card = (model_dir / "model_card.md").read_text()
    assert "## Performance by group" in card and "AUROC" in card


def test_stratify_scores_tiers_explains_and_writes_worklists(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                             runner: CliRunner) -> None:
    config, cohort, model_dir = trained
    out = tmp_path / "risk"
    result = runner.invoke(cli, ["-q", "stratify", str(config), "--cohort", str(cohort), "--model", str(model_dir),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    risk = pl.read_parquet(out / "risk.parquet")
    assert risk["person_id"].n_unique() == risk.height
    assert risk["risk"].is_between(0, 1, closed="none").all()
    assert risk["risk"].to_list() == sorted(risk["risk"].to_list(), reverse=True)
    assert risk["tier"].unique().sort().to_list() == sorted(t.name for t in DEFAULT_TIERS)
    assert {"factor_1", "contribution_1", "factor_3", "contribution_3", "percentile"} <= set(risk.columns)
    assert (risk["contribution_1"] >= risk["contribution_2"]).all()
    # One worklist per practice, holding exactly that practice's people of every tier but the lowest,
    # riskiest first.
    lists = sorted((out / "worklists").glob("*.csv"))
    assert len(lists) == risk["practice"].n_unique()
    total = 0
    for path in lists:
        wl = pl.read_csv(path, infer_schema=False)
        assert wl.columns[:3] == ["rank", "Patient_ID", "index_date"]
        mine = risk.filter((pl.col("practice") == path.stem) & (pl.col("tier") != "low risk"))
        assert sorted(wl["Patient_ID"].to_list()) == sorted(mine["record_id"].to_list())
        values = wl["risk"].cast(pl.Float64).to_list()
        assert values == sorted(values, reverse=True)
        total += wl.height
    assert total == risk.filter(pl.col("tier") != "low risk").height == risk["listed"].sum()
    assert "Worklists" in result.output or "worklists" in result.output


def test_stratify_without_a_model_trains_first_and_says_so(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                            runner: CliRunner) -> None:
    config, cohort, _ = trained
    out = tmp_path / "risk"
    result = runner.invoke(cli, ["stratify", str(config), "--cohort", str(cohort), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "no --model given: trained on this cohort first" in result.output
    assert (out / "model" / "manifest.json").exists() and (out / "risk.parquet").exists()
    # Both reports: the model's own (train's) and the scores' one, which draws the model's curves.
    assert (out / "model" / "risk_report.html").exists()
    assert 'data-plot="roc"' in (out / "risk_report.html").read_text(encoding="utf-8")


def test_a_tampered_model_is_refused(trained: tuple[Path, Path, Path], tmp_path: Path, runner: CliRunner) -> None:
    config, cohort, model_dir = trained
    copy = tmp_path / "model"
    copy.mkdir()
    for p in model_dir.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    data = json.loads((copy / "gradient_boosting.json").read_text())
    data["calibration"]["intercept"] += 1.0
    (copy / "gradient_boosting.json").write_text(json.dumps(data))
    result = runner.invoke(cli, ["stratify", str(config), "--cohort", str(cohort), "--model", str(copy),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "checksum does not match" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    ('{"format": "something-else"}', "not a linkcare risk model"),
    ("not json at all", "not JSON"),
])
def test_a_foreign_model_file_is_refused(trained: tuple[Path, Path, Path], tmp_path: Path, content: str,
                                         message: str) -> None:
    _, _, model_dir = trained
    copy = tmp_path / "model"
    copy.mkdir()
    (copy / "gradient_boosting.json").write_text(content)
    import hashlib

    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["models"]["gradient_boosting"]["sha256"] = hashlib.sha256(content.encode()).hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=message):
        load_model(copy, "gradient_boosting")


def test_a_folder_without_a_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_model(tmp_path, "logistic")


def test_evaluate_risk_against_outcomes(trained: tuple[Path, Path, Path], small_site: Path, tmp_path: Path,
                                        runner: CliRunner) -> None:
    config, cohort, model_dir = trained
    out = tmp_path / "risk"
    assert runner.invoke(cli, ["-q", "stratify", str(config), "--cohort", str(cohort), "--model", str(model_dir),
                               "--out", str(out)]).exit_code == 0
    truth = pl.read_parquet(small_site / "truth" / "records.parquet").filter(pl.col("source") == "gp")
    persons = pl.read_parquet(small_site / "truth" / "persons.parquet").select("person", "outcome")
    outcomes = truth.join(persons, on="person").select("record_id", "outcome").drop_nulls()
    outcomes.write_parquet(tmp_path / "outcomes.parquet")
    result = runner.invoke(cli, ["evaluate", "risk", str(out), "--outcomes", str(tmp_path / "outcomes.parquet"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert 0.6 < data["overall"]["auroc"] < 1.0
    assert data["people_without_outcome"] is None or data["people_without_outcome"] % 5 == 0


def test_train_refuses_an_index_date_whose_outcomes_are_not_known(trained: tuple[Path, Path, Path],
                                                                  tmp_path: Path, runner: CliRunner) -> None:
    config, cohort, _ = trained
    result = runner.invoke(cli, ["train", str(config), "--cohort", str(cohort), "--out", str(tmp_path / "m"),
                                 "--as-of", "2025-06-30"])
    assert result.exit_code == 2
    assert "passes the config's reference_date" in result.output
