"""`linkcare monitor` end to end on the small synthetic site: every output with its contract columns,
frozen cohorts, a caseload file, plans, the disclosure rule, the same bytes on a rerun, and the errors an
analyst gets for a wrong config or a bad caseload (exit code, one line, nothing written)."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import write_config
from linkcare.cli import cli
from linkcare.config.monitor import MEASURE_NAMES

MONITOR = """
[monitor]
baseline_months = 12
[[monitor.cohorts]]
name = "over_75"
where = {{ age_min = 75 }}
enrolled = "2025-04-01"
[[monitor.cohorts]]
name = "caseload"
members = "{caseload}"
key = "Patient_ID"
date = "Enrolment_Date"
[[monitor.plans]]
cohort = "population"
measure = "emergency_admissions"
direction = "lower"
trajectory = "{plan}"
rebase = [{{ month = "2025-04", reason = "MDT started" }}]
"""
SPC_COLUMNS = ["cohort", "measure", "month", "value", "mean", "lower", "upper", "special_cause", "variation", "plan",
               "rebase_group"]
MONITOR_COLUMNS = ["cohort", "month", "measure", "people", "person_months", "events", "rate_per_1000", "cost"]


@pytest.fixture(scope="module")
def linked(small_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("monitor") / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _caseload(small_site: Path, path: Path, rows: int = 120) -> Path:
    gp = pl.read_csv(small_site / "gp_registrations.csv", infer_schema=False).head(rows)
    dates = [f"2025-{1 + i % 6:02d}-{1 + i % 27:02d}" for i in range(gp.height)]
    pl.DataFrame({"Patient_ID": gp["Patient_ID"], "Enrolment_Date": dates}).write_csv(path)
    return path


@pytest.fixture(scope="module")
def config(small_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("monitor_config")
    caseload = _caseload(small_site, work / "caseload.csv")
    plan = work / "plan.csv"
    plan.write_text("month,value\n" + "".join(f"2025-{m:02d},9.5\n" for m in range(4, 13))
                    + "".join(f"2026-{m:02d},9.0\n" for m in range(1, 4)))
    extra = MONITOR.format(caseload=caseload.as_posix(), plan=plan.as_posix())
    return write_config(small_site / "site.toml", work / "site.toml", extra=extra, own_monitor=True)


@pytest.fixture(scope="module")
def monitored(config: Path, linked: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("monitor_out") / "monitor"
    result = CliRunner().invoke(cli, ["monitor", str(config), "--cohort", str(linked), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_monitor_writes_every_output_with_its_columns(monitored: Path, small_site: Path) -> None:
    for name in ("monitor.parquet", "monitor.csv", "spc.parquet", "unit_costs.csv", "monitor_report.html",
                 "manifest.json", "cohorts/population.parquet", "cohorts/over_75.parquet", "cohorts/caseload.parquet"):
        assert (monitored / name).is_file(), name
    table = pl.read_parquet(monitored / "monitor.parquet")
    assert table.columns[:3] == ["cohort", "month", "measure"] and set(MONITOR_COLUMNS) <= set(table.columns)
    assert table.schema["month"] == pl.Date
    assert set(table["measure"].unique()) == set(MEASURE_NAMES)
    assert set(table["cohort"].unique()) == {"population", "over_75", "caseload"}
    months = table["month"].unique().sort().to_list()
    assert months[0].isoformat() <= "2023-05-01" and months[-1].isoformat() == "2026-03-01"
    csv = pl.read_csv(monitored / "monitor.csv", try_parse_dates=True)
    assert csv.height == table.height and csv.columns == table.columns
    spc = pl.read_parquet(monitored / "spc.parquet")
    assert spc.columns[:len(SPC_COLUMNS)] == SPC_COLUMNS
    assert spc.height == table.filter(pl.col("cohort").is_in(["population", "over_75", "caseload"])).height
    assert set(spc["special_cause"].drop_nulls().unique()) <= {"outside_limits", "trend", "two_in_three", "shift"}
    assert set(spc["variation"].drop_nulls().unique()) <= {"common_cause", "improvement", "concern", "neutral_high",
                                                            "neutral_low"}
    manifest = json.loads((monitored / "manifest.json").read_text())
    assert manifest["command"] == "monitor" and "monitor.parquet" in manifest["outputs"]
    assert manifest["months"]["last"] == "2026-03"


def test_population_person_months_and_cohorts_are_frozen(monitored: Path, small_site: Path, linked: Path) -> None:
    population = pl.read_parquet(monitored / "cohorts" / "population.parquet")
    spine = pl.read_parquet(linked / "person_index.parquet").filter(pl.col("source") == "gp")
    assert population.height == spine["person_id"].n_unique()
    over_75 = pl.read_parquet(monitored / "cohorts" / "over_75.parquet")
    assert over_75.height > 20 and over_75["enrolled"].unique().to_list() == [dt.date(2025, 4, 1)]
    caseload = pl.read_parquet(monitored / "cohorts" / "caseload.parquet")
    assert 100 <= caseload.height <= 120 and caseload["enrolled"].is_not_null().all()
    table = pl.read_parquet(monitored / "monitor.parquet").filter(pl.col("measure") == "ae_attendances")
    pop = table.filter(pl.col("cohort") == "population")
    # No more people at risk in a month than members, and person-months never above people.
    assert (pop["people"] <= population.height + 5).all()
    assert (pop["person_months"] <= pop["people"] + 5).all()
    sub = table.filter(pl.col("cohort") == "over_75")
    assert (sub["people"].drop_nulls() <= over_75.height + 5).all()


def test_rates_are_events_per_1000_person_months(monitored: Path) -> None:
    table = pl.read_parquet(monitored / "monitor.parquet").filter(
        (pl.col("cohort") == "population") & (pl.col("measure") == "emergency_admissions"))
    row = table.filter(pl.col("events") >= 10).row(0, named=True)
    # events are rounded to 5, the rate is from the exact count: they agree to within the rounding.
    assert abs(row["events"] / row["person_months"] * 1000 - row["rate_per_1000"]) <= 2.5 / row["person_months"] * 1000
    cost = pl.read_parquet(monitored / "monitor.parquet").filter(
        (pl.col("cohort") == "population") & pl.col("measure").is_in(["cost_health", "cost_social_care", "cost_total"])
    ).pivot("measure", index="month", values="cost").drop_nulls()
    assert cost.height >= 6  # months in which social care's cost is not suppressed
    assert (cost["cost_total"] - cost["cost_health"] - cost["cost_social_care"]).abs().max() <= 0.02


def test_no_small_count_is_published(monitored: Path) -> None:
    table = pl.read_parquet(monitored / "monitor.parquet")
    counts = table.filter(pl.col("measure").is_in(["emergency_admissions", "deaths", "ae_attendances"]))
    published = counts["events"].drop_nulls()
    assert ((published == 0) | (published >= 8)).all()
    assert ((published % 5) == 0).all()
    suppressed = table.filter(pl.col("suppressed"))
    assert suppressed.height > 0  # the small caseload has months with a few admissions
    assert suppressed.select(pl.col("events").is_null().all(), pl.col("rate_per_1000").is_null().all(),
                             pl.col("cost").is_null().all()).row(0) == (True, True, True)
    spc = pl.read_parquet(monitored / "spc.parquet").join(
        suppressed.select("cohort", "month", "measure"), on=["cohort", "month", "measure"], how="semi")
    assert spc["value"].is_null().all()


def test_the_plan_and_its_rebase_reach_the_chart(monitored: Path) -> None:
    spc = pl.read_parquet(monitored / "spc.parquet").filter(
        (pl.col("cohort") == "population") & (pl.col("measure") == "emergency_admissions")).sort("month")
    planned = spc.filter(pl.col("plan").is_not_null())
    assert planned.height == 12 and planned["plan"].to_list()[-1] == 9.0
    before = spc.filter(pl.col("month") < pl.date(2025, 4, 1))
    after = spc.filter(pl.col("month") >= pl.date(2025, 4, 1))
    assert set(before["rebase_group"]) == {0} and set(after["rebase_group"]) == {1}
    assert before["mean"].n_unique() == 1 and after["mean"].n_unique() == 1
    assert before["mean"][0] != after["mean"][0]
    met = planned.select((pl.col("value") <= pl.col("plan")).alias("expected"), "plan_met")
    assert met["expected"].to_list() == met["plan_met"].to_list()
    report = (monitored / "monitor_report.html").read_text()
    assert "MDT started" in report and "Last month against plan" in report
    plans = json.loads((monitored / "manifest.json").read_text())["plans"]
    assert [(p["cohort"], p["measure"], p["last_month"], p["planned_months"]) for p in plans] == [
        ("population", "emergency_admissions", "2026-03", 12)]
    assert plans[0]["assurance"] in {"pass", "fail", "hit_and_miss"} and plans[0]["cumulative_gap_pounds"] is not None


def test_a_rerun_writes_the_same_tables(config: Path, linked: Path, monitored: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-q", "monitor", str(config), "--cohort", str(linked), "--out",
                                      str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    for name in ("monitor.parquet", "spc.parquet", "monitor.csv", "cohorts/caseload.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == (monitored / name).read_bytes(), name


def test_no_record_value_reaches_the_outputs(monitored: Path, small_site: Path) -> None:
    gp = pl.read_csv(small_site / "gp_registrations.csv", infer_schema=False)
    tokens = gp["Pseudo_NHS_Number"].drop_nulls().head(200).to_list() + gp["Patient_ID"].head(200).to_list()
    for name in ("monitor.csv", "monitor_report.html", "manifest.json"):
        text = (monitored / name).read_text()
        assert not any(t in text for t in tokens), name


@pytest.mark.parametrize(("extra", "message"), [
    ('[monitor]\nbaseline = 12\n', r"monitor.baseline: unknown key; did you mean 'baseline_months'\?"),
    ('[monitor]\n[[monitor.cohorts]]\nname = "Over 75"\nwhere = { age_min = 75 }\n',
     r"monitor.cohorts\[0\].name: 'Over 75' must use only a-z"),
    ('[monitor]\n[[monitor.cohorts]]\nname = "x"\nwhere = { age = 75 }\n',
     r"monitor.cohorts\[0\].where.age: unknown key"),
    ('[monitor]\n[[monitor.plans]]\ncohort = "nobody"\nmeasure = "emergency_admissions"\ndirection = "lower"\n',
     r"monitor.plans\[0\].cohort: 'nobody' is not a cohort"),
    ('[monitor]\n[[monitor.plans]]\ncohort = "population"\nmeasure = "admissions"\ndirection = "lower"\n',
     r"monitor.plans\[0\].measure: 'admissions' is not a measure"),
    ('[monitor]\nstart = "April 2023"\n', r'monitor.start: .* is not a month; write it as "YYYY-MM"'),
    ('[monitor]\nprice_year = "2024"\n', r"monitor.price_year: .* is not a financial year"),
    ('[monitor]\nbaseline_months = 6\n', r"monitor.baseline_months: must be a whole number of 12 or more"),
])
def test_a_wrong_monitor_config_exits_2_naming_the_key(small_site: Path, linked: Path, tmp_path: Path,
                                                       extra: str, message: str) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "site.toml", extra="\n" + extra, own_monitor=True)
    result = CliRunner().invoke(cli, ["-q", "monitor", str(config), "--cohort", str(linked), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert len([line for line in result.output.splitlines() if line.startswith("Error")]) >= 1
    assert re.search(message, result.output), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_tier_cohort_without_risk_output_exits_2(small_site: Path, linked: Path, tmp_path: Path) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "site.toml",
                          extra='\n[monitor]\n[[monitor.cohorts]]\nname = "top"\ntier = "high risk"\n',
                          own_monitor=True)
    result = CliRunner().invoke(cli, ["-q", "monitor", str(config), "--cohort", str(linked), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "cohort 'top' is defined by `tier`, which needs a stratify output; give it with --risk DIR" in result.output


def test_a_bad_caseload_exits_1_with_counts_and_keeps_the_earlier_output(small_site: Path, linked: Path,
                                                                         monitored: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(monitored, out)
    before = (out / "monitor.parquet").read_bytes()
    bad = tmp_path / "caseload.csv"
    gp = pl.read_csv(small_site / "gp_registrations.csv", infer_schema=False).head(10)
    pl.DataFrame({"Patient_ID": gp["Patient_ID"],
                  "Enrolment_Date": ["2025-01-01"] * 7 + ["01/02/2025", "soon", ""]}).write_csv(bad)
    extra = (f'\n[monitor]\n[[monitor.cohorts]]\nname = "mdt"\nmembers = "{bad.as_posix()}"\nkey = "Patient_ID"\n'
             'date = "Enrolment_Date"\n')
    config = write_config(small_site / "site.toml", tmp_path / "site.toml", extra=extra, own_monitor=True)
    result = CliRunner().invoke(cli, ["-q", "monitor", str(config), "--cohort", str(linked), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "3 row(s) have no readable date in Enrolment_Date" in result.output and str(bad) in result.output
    assert (out / "monitor.parquet").read_bytes() == before
    # Keys that are not spine records: all of them is an error naming the column.
    pl.DataFrame({"Patient_ID": ["nobody1", "nobody2"], "Enrolment_Date": ["2025-01-01"] * 2}).write_csv(bad)
    result = CliRunner().invoke(cli, ["-q", "monitor", str(config), "--cohort", str(linked), "--out", str(out)])
    assert result.exit_code == 1 and "column Patient_ID: none of its 2 key(s) is a record of the spine" in result.output
