"""The matched comparison: matching on a hand-built pool, the rate ratio and its interval on simulated
Poisson data with a known ratio, the wording of the conclusion, the synthetic programme, and monitor's
impact outputs end to end on a small programme site."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli
from linkcare.monitor.impact import IMPACT_SCHEMA, Estimate, conclusion, did, ratio_text
from linkcare.monitor.matching import COVARIATES, balance, match
from linkcare.synth.options import SynthOptions
from linkcare.synth.programme import Programme
from linkcare.synth.site import write_site

MONTH = dt.date(2025, 1, 1)


def _row(person: str, treated: bool, **values: float) -> dict[str, object]:
    row: dict[str, object] = {"person_id": person, "month": MONTH, "treated": treated,
                              "enrolled": MONTH + dt.timedelta(days=3) if treated else None}
    defaults = {"age": 70.0, "female": 1.0, "deprivation_decile": 5.0, "conditions": 1.0,
                "emergency_admissions": 2.0, "recent_admissions": 1.0, "ae_attendances": 2.0, "bed_days": 6.0,
                "long_term_support": 0.0}
    row.update({c: float(values.get(c, defaults[c])) for c in COVARIATES})
    return row


def test_matching_finds_the_exact_twin_and_reports_who_has_none() -> None:
    rows = [
        _row("T1", True, age=82, emergency_admissions=3, bed_days=20),
        _row("T2", True, age=55, female=0, emergency_admissions=2, bed_days=2),
        _row("T3", True, age=90, emergency_admissions=6, long_term_support=1),  # no one in its stratum
        _row("C1", False, age=82, emergency_admissions=3, bed_days=20),  # T1's twin
        _row("C2", False, age=60, emergency_admissions=3, bed_days=9),
        _row("C3", False, age=55, female=0, emergency_admissions=2, bed_days=2),  # T2's twin
        _row("C4", False, age=75, female=0, emergency_admissions=2, bed_days=12),
        *[_row(f"P{i}", False, age=40 + i, emergency_admissions=2 + i % 2, female=i % 2, bed_days=i)
          for i in range(30)],
    ]
    frame = pl.DataFrame(rows, schema={"person_id": pl.String, "month": pl.Date, "treated": pl.Boolean,
                                       "enrolled": pl.Date, **dict.fromkeys(COVARIATES, pl.Float64)})
    matched = match(frame)
    pairs = dict(zip(matched.pairs["person_id"], matched.pairs["control_id"], strict=True))
    assert pairs == {"T1": "C1", "T2": "C3"}
    assert matched.unmatched["person_id"].to_list() == ["T3"]
    table = balance(matched)
    assert table.filter(pl.col("covariate") == "age")["smd_after"].item() == pytest.approx(0.0)


def _poisson_periods(ratio: float, seed: int, units: int = 3000) -> pl.DataFrame:
    """Units of each group over a before and an after year, with person-level frailty, a secular fall of
    10% for both groups and the programme's `ratio` for the enrolled after."""
    rng = np.random.default_rng(seed)
    rows = []
    for treated in (True, False):
        frailty = rng.gamma(2.0, 0.5, units)
        base = 0.15 * (1.3 if treated else 1.0) * frailty  # a month's rate
        for after in (False, True):
            rate = base * (0.9 if after else 1.0) * (ratio if treated and after else 1.0)
            exposure = rng.uniform(6, 12, units)
            y = rng.poisson(rate * exposure)
            rows.append(pl.DataFrame({"unit": np.arange(units) + (0 if treated else units),
                                      "person_id": [f"{'t' if treated else 'c'}{i}" for i in range(units)],
                                      "treated": treated, "after": after, "measure": "emergency_admissions",
                                      "y": y.astype(float), "exposure": exposure}))
    return pl.concat(rows)


@pytest.mark.parametrize("ratio", [0.8, 1.0])
def test_the_rate_ratio_and_its_interval_recover_a_known_ratio(ratio: float) -> None:
    covered = 0
    for seed in range(5):
        e = did(_poisson_periods(ratio, seed), "emergency_admissions")
        assert e.rate_ratio is not None and e.ci_low is not None and e.ci_high is not None
        assert e.ci_low < e.rate_ratio < e.ci_high
        assert abs(np.log(e.rate_ratio / ratio)) < 0.12
        covered += e.ci_low <= ratio <= e.ci_high
        # The naive change of the enrolled carries the secular fall as well as the effect.
        assert e.naive_change == pytest.approx(0.9 * ratio, rel=0.08)
        assert e.comparison_change == pytest.approx(0.9, rel=0.08)
    assert covered >= 4  # a 95% interval: missing more than one in five would be a broken interval


def test_an_effect_of_0_8_is_told_from_none() -> None:
    e = did(_poisson_periods(0.8, 11, units=6000), "emergency_admissions")
    assert e.ci_high is not None and e.ci_high < 1


def test_the_conclusion_in_words() -> None:
    none = Estimate("emergency_admissions", 0.97, 0.88, 1.07, 0.62, 0.64)
    assert conclusion("emergency admissions", none) == (
        "The caseload's emergency admissions fell 38% after enrolment, and a matched group of similar people not "
        "enrolled fell 36% over the same months: most of the fall is regression to the mean, which is not evidence "
        "of an effect; the programme's estimated effect is a rate ratio of 0.97 (0.88–1.07), which does not show a "
        "reduction or an increase: the interval includes 1 (no effect).")
    down = Estimate("emergency_admissions", 0.80, 0.70, 0.91, 0.50, 0.62)
    text = conclusion("emergency admissions", down)
    assert text.startswith("The caseload's emergency admissions fell 50% after enrolment, and a matched group of "
                           "similar people not enrolled fell 38% over the same months: most of the fall")
    assert "a rate ratio of 0.80 (0.70–0.91), a reduction: the interval lies below 1" in text
    up = Estimate("ae_attendances", 1.25, 1.08, 1.45, 1.10, 0.88)
    text = conclusion("A&E attendances", up)
    assert text.startswith("The caseload's A&E attendances rose 10% after enrolment, and a matched group of similar "
                           "people not enrolled fell 12% over the same months;")
    assert "regression to the mean" not in text
    assert "a rate ratio of 1.25 (1.08–1.45), an increase: the interval lies above 1" in text
    assert "too few" in conclusion("emergency bed days", Estimate("emergency_bed_days", None, None, None, None, None))
    # An interval that ends just below 1 is not written as ending at 1.00.
    edge = conclusion("costs of care", Estimate("cost_total", 0.84, 0.70, 0.9998, 0.70, 0.84))
    assert "0.84 (0.70–0.9998), a reduction" in edge
    assert [ratio_text(v) for v in (0.8, 0.996, 1.004, 1.0)] == ["0.80", "0.996", "1.004", "1.00"]


def _digest(folder: Path, names: list[str]) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


EXTRACTS = ["gp_registrations.csv", "apc.csv", "ae.csv", "outpatients.csv", "social_care.csv"]


@pytest.fixture(scope="module")
def programme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("programme") / "site"
    write_site(out, SynthOptions(people=12_000, seed=8, reference_date=dt.date(2026, 3, 31),
                                 programme=Programme(dt.date(2024, 10, 1), enrolment_months=6)))
    return out


def test_a_programme_of_no_effect_changes_no_extract(tmp_path: Path) -> None:
    ref = dt.date(2026, 3, 31)
    write_site(tmp_path / "none", SynthOptions(people=3_000, seed=4, reference_date=ref))
    write_site(tmp_path / "null", SynthOptions(people=3_000, seed=4, reference_date=ref,
                                               programme=Programme(dt.date(2024, 10, 1), effect=1.0)))
    write_site(tmp_path / "real", SynthOptions(people=3_000, seed=4, reference_date=ref,
                                               programme=Programme(dt.date(2024, 10, 1), effect=0.5)))
    assert _digest(tmp_path / "none", EXTRACTS) == _digest(tmp_path / "null", EXTRACTS)
    assert _digest(tmp_path / "none", ["apc.csv"]) != _digest(tmp_path / "real", ["apc.csv"])
    assert not (tmp_path / "none" / "mdt_caseload.csv").exists()
    assert (tmp_path / "null" / "mdt_caseload.csv").is_file()


def test_the_caseload_is_kept_as_an_mdt_keeps_it(programme_site: Path) -> None:
    load = pl.read_csv(programme_site / "mdt_caseload.csv", infer_schema=False)
    truth = json.loads((programme_site / "truth" / "programme.json").read_text())
    assert load.columns == ["Patient_ID", "Practice_Code", "Enrolment_Date"]
    assert load.height == truth["enrolled"] > 20
    assert set(load["Practice_Code"]) <= set(truth["practices_in_programme"])
    dates = load["Enrolment_Date"].str.to_date()
    assert dates.min() >= dt.date(2024, 10, 1) and dates.max() < dt.date(2025, 4, 1)
    gp = pl.read_csv(programme_site / "gp_registrations.csv", infer_schema=False)
    assert load.join(gp, on="Patient_ID", how="anti").height == 0
    assert truth["true_effect"]["emergency_admissions"] == 0.85
    config = (programme_site / "site.toml").read_text()
    assert 'name = "mdt_caseload"' in config and 'compare = "matched"' in config


def test_monitor_writes_the_impact_of_a_matched_cohort(programme_site: Path, tmp_path: Path) -> None:
    config = programme_site / "site.toml"
    runner = CliRunner()
    result = runner.invoke(cli, ["-q", "link", str(config), "--out", str(tmp_path / "cohort")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["-q", "monitor", str(config), "--cohort", str(tmp_path / "cohort"), "--out",
                                 str(tmp_path / "monitor")])
    assert result.exit_code == 0, result.output
    impact = pl.read_parquet(tmp_path / "monitor" / "impact.parquet")
    assert dict(impact.schema) == IMPACT_SCHEMA
    assert impact["measure"].to_list() == ["emergency_admissions", "ae_attendances", "emergency_bed_days",
                                           "cost_total"]
    row = impact.row(0, named=True)
    assert row["enrolled_people"] % 5 == 0 and row["enrolled_people"] >= 10 and row["comparison_people"] >= 10
    assert row["ci_low"] < row["rate_ratio"] < row["ci_high"]
    assert row["naive_change"] < 0.85  # regression to the mean: the enrolled were chosen for high use
    assert "regression to the mean" in row["conclusion"]
    balance_table = pl.read_parquet(tmp_path / "monitor" / "balance.parquet")
    assert set(balance_table["covariate"]) == set(COVARIATES)
    assert row["max_abs_smd"] == pytest.approx(balance_table["smd_after"].abs().max())
    pairs = pl.read_parquet(tmp_path / "monitor" / "matched" / "mdt_caseload.parquet")
    assert pairs.filter(pl.col("person_id") == pl.col("control_id")).height == 0
    members = pl.read_parquet(tmp_path / "monitor" / "cohorts" / "mdt_caseload.parquet")
    assert pairs.join(members, left_on="control_id", right_on="person_id", how="semi").height == 0
    report = (tmp_path / "monitor" / "monitor_report.html").read_text()
    assert 'id="impact-mdt_caseload"' in report and "Balance" in report and 'data-plot="impact-mdt_caseload"' in report


def test_eligible_without_a_matched_comparison_is_a_config_error(small_site: Path, tmp_path: Path) -> None:
    from conftest import write_config

    config = write_config(small_site / "site.toml", tmp_path / "site.toml", own_monitor=True, extra=(
        '\n[monitor]\n[[monitor.cohorts]]\nname = "x"\nwhere = { age_min = 75 }\neligible = { age_min = 75 }\n'))
    result = CliRunner().invoke(cli, ["validate", str(config)])
    assert result.exit_code == 2
    assert 'monitor.cohorts[0].eligible: belongs to a matched comparison; add compare = "matched"' in result.output


def test_synth_takes_the_programme_from_the_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["-q", "synth", str(tmp_path / "site"), "--people", "2000", "--seed", "3",
                                 "--programme-effect", "0.9", "--programme-practices", "1.0"])
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "site" / "truth" / "programme.json").read_text())
    assert (truth["effect"], truth["practices"], truth["start"]) == (0.9, 1.0, "2024-10-01")
    assert json.loads((tmp_path / "site" / "synth.json").read_text())["programme"]["effect"] == 0.9
    result = runner.invoke(cli, ["-q", "synth", str(tmp_path / "bad"), "--people", "2000",
                                 "--programme-start", "2027-01-01"])
    assert result.exit_code == 2
    assert "--programme-start must start inside the history, before the reference date" in result.output


def test_a_refined_covariate_is_matched_on_its_thirds_and_kept_only_when_needed() -> None:
    from linkcare.monitor.matching import match_balanced

    rng = np.random.default_rng(3)
    rows = [_row(f"T{i}", True, conditions=float(rng.integers(0, 6)), age=float(rng.integers(60, 90)),
                 bed_days=float(rng.integers(0, 30))) for i in range(150)]
    rows += [_row(f"C{i}", False, conditions=float(rng.integers(0, 6)), age=float(rng.integers(60, 90)),
                  bed_days=float(rng.integers(0, 30))) for i in range(3000)]
    frame = pl.DataFrame(rows, schema={"person_id": pl.String, "month": pl.Date, "treated": pl.Boolean,
                                       "enrolled": pl.Date, **dict.fromkeys(COVARIATES, pl.Float64)})
    refined = match(frame, ("conditions",))
    treated = frame.filter(pl.col("treated"))["conditions"].to_numpy()
    cuts = np.unique(np.quantile(treated, [1 / 3, 2 / 3]))
    third = {r["person_id"]: int(np.searchsorted(cuts, r["conditions"], side="right")) for r in frame.to_dicts()}
    assert refined.pairs.height > 100
    assert all(third[t] == third[c] for t, c in zip(refined.pairs["person_id"], refined.pairs["control_id"],
                                                     strict=True))
    # Balanced already (the pool is drawn like the enrolled): nothing is refined.
    matched, table, kept = match_balanced(frame)
    assert kept == () and table["smd_after"].abs().max() < 0.1
    assert matched.pairs.equals(match(frame).pairs)
