"""`linkcare profile` and `linkcare validate --rows` on the bundled sample site: counts that agree
with polars counting the CSVs itself, the blocking estimate that equals the pairs `link` reports,
no record value in any output, the JSON layout, and the exact error lines for doctored extracts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import record_values, write_config
from linkcare.cli import cli
from linkcare.config import load_config
from linkcare.linkage.local import LocalEngine
from linkcare.linkage.profile import profile_site

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
CONFIG = SAMPLE / "site.toml"


def _csv(name: str) -> pl.DataFrame:
    return pl.read_csv(SAMPLE / name, infer_schema=False)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """The sample profiled once with --json: (output folder, the printed document, the log)."""
    out = tmp_path_factory.mktemp("profile") / "profile"
    result = CliRunner().invoke(cli, ["profile", str(CONFIG), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout), result.stderr


def _source(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in doc["sources"] if s["source"] == name)


def _field(doc: dict[str, Any], source: str, field: str) -> dict[str, Any]:
    return next(f for f in _source(doc, source)["fields"] if f["field"] == field)


@pytest.mark.parametrize(("source", "file", "field", "column"), [
    ("gp", "gp_registrations.csv", "area", "LSOA"),
    ("apc", "apc.csv", "nhs", "Pseudo_NHS_Number"),
    ("ae", "ae.csv", "practice", "GP_Practice_Code"),
    ("social_care", "social_care.csv", "nhs", "Der_NHS_Number_Traced_Pseudo"),
    ("outpatients", "outpatients.csv", "birth_year", "MYDOB"),
])
def test_counts_agree_with_polars_on_the_csvs(profiled: tuple[Path, dict[str, Any], str], source: str, file: str,
                                              field: str, column: str) -> None:
    doc = profiled[1]
    frame = _csv(file)
    values = frame[column].str.strip_chars()
    present = values.is_not_null() & (values != "")
    got = _field(doc, source, field)
    assert _source(doc, source)["rows"] == frame.height
    assert got["column"] == column
    assert got["present"] == int(present.sum())
    assert got["completeness"] == pytest.approx(int(present.sum()) / frame.height, abs=1e-6)
    assert got["distinct_in_extract"] == values.filter(present).n_unique()


def test_distinct_counts_standardised_values_of_kept_rows(profiled: tuple[Path, dict[str, Any], str]) -> None:
    doc = profiled[1]
    # SEX is coded 1/2 and recoded to M/F: two values either way.
    assert _field(doc, "apc", "sex")["distinct"] == _csv("apc.csv")["SEX"].n_unique() == 2
    # MYDOB ("031948") is one column read as two fields: its month-years are many, its months twelve.
    month, year = _field(doc, "apc", "birth_month"), _field(doc, "apc", "birth_year")
    assert month["distinct"] == 12 and month["distinct_in_extract"] == _csv("apc.csv")["MYDOB"].n_unique()
    years = _csv("apc.csv")["MYDOB"].str.slice(2, 4).cast(pl.Int64)
    assert year["distinct"] == years.n_unique()
    assert year["birth_years"] == {"first": years.min(), "last": years.max()}
    assert month["birth_years"] is None  # the year range is given once, for the field that holds the year
    # ae has one row the row checks reject; its token is the only one of that value, so one distinct token fewer.
    nhs = _field(doc, "ae", "nhs")
    assert _source(doc, "ae")["rejected"] == 1 and nhs["distinct"] == nhs["distinct_in_extract"] - 1


def test_row_checks_and_event_dates(profiled: tuple[Path, dict[str, Any], str]) -> None:
    doc = profiled[1]
    ae = _source(doc, "ae")
    failing = [c for c in ae["row_checks"] if c["failed"]]
    assert [(c["column"], c["check"], c["failed"], c["first_failed_row"]) for c in failing] == [
        ("Birth_Month_Year", "a date after the reference date 2026-03-31", 1, 10796),
        ("Birth_Month_Year", "birth year before 1900 or after 2026", 1, 10796)]
    assert all(c["passed"] + c["failed"] == ae["rows"] for c in ae["row_checks"])
    assert {(c["column"], c["check"]) for c in _source(doc, "gp")["row_checks"]} >= {
        ("Pseudo_NHS_Number", "not a well-formed pseudonymised token"),
        ("Registration_Date", "not a date (YYYY-MM-DD, YYYYMMDD, or YYYY-MM-DD with a time)")}
    admitted = _csv("apc.csv")["ADMIDATE"].str.to_date("%Y-%m-%d")
    start = next(d for d in _source(doc, "apc")["dates"] if d["event"] == "start_date")
    assert (start["column"], start["present"], start["dates"]) == ("ADMIDATE", admitted.len(), admitted.len())
    assert (start["first"], start["last"]) == (str(admitted.min()), str(admitted.max()))
    assert all(not s["stops_link"] for s in doc["sources"]) and doc["stops_link"] is False


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("linked") / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(CONFIG), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


def test_blocking_estimate_equals_the_pairs_link_reports(profiled: tuple[Path, dict[str, Any], str],
                                                         linked: dict[str, Any]) -> None:
    estimate = [(p["pass"], p["pairs"]) for p in profiled[1]["blocking"]]
    assert estimate == [(p["blocking"], p["pairs"]) for p in linked["blocking"]]
    assert [p["config_key"] for p in profiled[1]["blocking"]] == [f"linkage.blocking[{i}]" for i in range(3)]
    assert all(p > 0 for _, p in estimate)
    # The rows it reports read are the rows link read.
    assert {s["source"]: s["rows"] for s in profiled[1]["sources"]} == {i["source"]: i["rows"]
                                                                       for i in linked["inputs"]}


@pytest.mark.parametrize("link_type", ["link_only", "dedupe_only"])
def test_blocking_estimate_follows_the_link_type(tmp_path: Path, link_type: str) -> None:
    config = load_config(write_config(CONFIG, tmp_path / "site.toml",
                                      replace={'link_type = "link_and_dedupe"': f'link_type = "{link_type}"'},
                                      linkage='sorted_neighbourhood = [{ field = "birth_year", window = 3, '
                                              'block = ["area"] }]'))
    engine = LocalEngine(config)
    plans = engine.plan(engine.deterministic(engine.reduce(engine.read(False)))).plans
    passes = profile_site(config).passes
    assert [(p.label, p.pairs) for p in passes] == [(p.label, p.pairs) for p in plans]
    assert passes[-1].config_key == "linkage.sorted_neighbourhood[0]"
    # Each link type counts a part of the pairs link_and_dedupe counts (la_id is social care's alone).
    full = profile_site(load_config(CONFIG)).passes
    assert all(p.pairs <= f.pairs for p, f in zip(passes, full, strict=False))
    assert sum(p.pairs for p in passes[:3]) < sum(f.pairs for f in full)


def test_outputs_hold_no_record_value_and_open_offline(profiled: tuple[Path, dict[str, Any], str]) -> None:
    out, doc, log = profiled
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "profile.html", "profile.json"]
    html = (out / "profile.html").read_text(encoding="utf-8")
    written = (out / "profile.json").read_text(encoding="utf-8")
    values = record_values(SAMPLE)
    assert len(values) > 10_000 and any(v.startswith("E0") for v in values)  # LSOA codes and tokens among them
    for text in (html, written, json.dumps(doc), log):
        assert not [v for v in values if v in text]
    assert "http://" not in html and "https://" not in html and "<script" not in html
    for section in ("sources", "fields", "checks", "dates", "blocking"):
        assert f'<section id="{section}">' in html
    # Counts of rows pass through the [disclosure] rule: ae's one rejected row is shown as "<8".
    ae_row = html[html.index("<td>ae</td>"):]
    assert "<td>&lt;8</td>" in ae_row[:ae_row.index("</tr>")]
    assert "202,874" in html  # pair counts are shown as they are, and so are counts of distinct values
    assert "<td>gp</td><td>birth_month</td><td>Birth_Month</td><td>10,000</td><td>100.0%</td><td>12</td>" in html


def test_profile_json_layout(profiled: tuple[Path, dict[str, Any], str]) -> None:
    out, doc, _ = profiled
    written = json.loads((out / "profile.json").read_text())
    assert {k: v for k, v in doc.items() if k not in ("command", "out", "seconds", "peak_mib")} == written
    assert doc["command"] == "profile" and doc["out"] == str(out)
    assert list(written) == ["schema", "config", "reference_date", "link_type", "max_reject_share", "max_pairs",
                             "stops_link", "stop_reasons", "sources", "blocking"]
    assert written["schema"] == 1 and written["config"] == "site.toml" and written["link_type"] == "link_and_dedupe"
    assert [s["source"] for s in written["sources"]] == ["gp", "apc", "ae", "outpatients", "social_care",
                                                         "gp_events"]
    for source in written["sources"]:
        assert list(source) == ["source", "kind", "file", "rows", "rejected", "rejected_share", "identifier_tuples",
                                "stops_link", "fields", "row_checks", "dates"]
        for f in source["fields"]:
            assert list(f) == ["field", "column", "present", "completeness", "distinct", "distinct_in_extract",
                               "birth_years"]
            assert isinstance(f["present"], int) and 0 <= f["completeness"] <= 1
        for c in source["row_checks"]:
            assert list(c) == ["column", "key", "check", "action", "passed", "failed", "first_failed_row"]
            assert c["action"] in ("reject", "keep as missing")
        for d in source["dates"]:
            assert list(d) == ["event", "column", "present", "dates", "first", "last"]
    for p in written["blocking"]:
        assert list(p) == ["pass", "config_key", "fields", "pairs", "above_max_pairs"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "profile" and set(manifest["outputs"]) == {"profile.json", "profile.html"}


def test_profile_prints_tables_and_is_repeatable(profiled: tuple[Path, dict[str, Any], str], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-q", "profile", str(CONFIG), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["source", "rows", "rejected", "identifier", "tuples", "link"]
    assert any(line.split()[:3] == ["nhs", "linkage.blocking[0]", "70,023"] for line in lines)
    assert lines[-1] == f"Profile written to {tmp_path / 'again'} (profile.json, profile.html)"
    assert (tmp_path / "again" / "profile.json").read_bytes() == (profiled[0] / "profile.json").read_bytes()


def test_profile_of_a_wrong_config_writes_nothing(tmp_path: Path) -> None:
    config = write_config(CONFIG, tmp_path / "site.toml", replace={'area = "LSOA11"': 'area = "LSOA_11"'})
    result = CliRunner().invoke(cli, ["profile", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(
        "Error: source 'apc': fields.area: column 'LSOA_11' not found in ")
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_profile_says_when_link_would_stop(tmp_path: Path) -> None:
    config = write_config(CONFIG, tmp_path / "site.toml", linkage="max_pairs = 100000",
                          extra="\n[validation]\nmax_reject_share = 0.00001\n")
    result = CliRunner().invoke(cli, ["profile", str(config), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["stops_link"] is True
    assert [s["source"] for s in doc["sources"] if s["stops_link"]] == ["ae", "outpatients"]
    assert "1 of 11,051 row(s) (0.0%) fail the row checks" in _source(doc, "ae")["stops_link"]
    assert [p["above_max_pairs"] for p in doc["blocking"]] == [False, False, True]
    assert [r.split(":")[0] for r in doc["stop_reasons"]] == [
        "source ae", "source outpatients",
        "linkage.blocking[2] (birth_year+birth_month+area) would yield 202,874 candidate pairs, above "
        "linkage.max_pairs = 100,000"]
    assert f"link would stop: source ae: {SAMPLE / 'ae.csv'}: 1 of 11,051 row(s)" in result.stderr
    assert "link would stop: linkage.blocking[2] (birth_year+birth_month+area) would yield 202,874" in result.stderr


def _errors(stderr: str) -> list[str]:
    """Return the `Error:` lines of a run's standard error (the log's start and end lines are there too)."""
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def _doctored(tmp_path: Path) -> Path:
    """A copy of the sample with 2% of apc's admission dates unreadable (above the 1% that stops link),
    one gp birth year out of range (set aside) and a social care record id repeated."""
    site = tmp_path / "site"
    shutil.copytree(SAMPLE, site, ignore=shutil.ignore_patterns("truth"))
    apc = pl.read_csv(site / "apc.csv", infer_schema=False)
    bad = pl.int_range(pl.len()) % 50 == 3
    apc.with_columns(pl.when(bad).then(pl.lit("2024-13-45")).otherwise(pl.col("ADMIDATE")).alias("ADMIDATE")
                     ).write_csv(site / "apc.csv")
    gp = pl.read_csv(site / "gp_registrations.csv", infer_schema=False)
    gp.with_columns(pl.when(pl.int_range(pl.len()) == 9).then(pl.lit("1850")).otherwise(pl.col("Birth_Year"))
                    .alias("Birth_Year")).write_csv(site / "gp_registrations.csv")
    care = pl.read_csv(site / "social_care.csv", infer_schema=False)
    ids = care["Der_Unique_Record_ID"]
    care.with_columns(ids.scatter(1, ids[0])).write_csv(site / "social_care.csv")
    return site


def test_validate_rows_lists_every_problem_at_once(tmp_path: Path) -> None:
    site = _doctored(tmp_path)
    result = CliRunner().invoke(cli, ["-q", "validate", str(site / "site.toml"), "--rows"])
    assert result.exit_code == 1
    assert _errors(result.stderr) == [
        f"Error: {site / 'apc.csv'}: 148 of 7,398 row(s) (2.0%) fail the row checks, above [validation] "
        "max_reject_share = 0.01: column ADMIDATE (events.start_date): 148 row(s) not a date (YYYY-MM-DD, "
        "YYYYMMDD, or YYYY-MM-DD with a time), the first at row 4; fix the extract, or raise max_reject_share if "
        "so many bad rows are expected",
        f"Error: {site / 'social_care.csv'}: column Der_Unique_Record_ID: 1 row(s) repeat a record id already used "
        "in this file; record ids must be unique"]
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:5]] == ["gp", "apc", "ae", "outpatients"]
    assert lines[2].split()[-1] == "stops" and lines[1].split()[-3:] == ["1", "row(s)", "aside"]
    assert "gp_registrations.csv: column Birth_Year (fields.birth_year): 1 row(s) birth year before 1900 or after "\
           "2026, the first at row 10; rejected" in lines
    assert "apc.csv: column ADMIDATE (events.start_date): 148 row(s) not a date (YYYY-MM-DD, YYYYMMDD, or "\
           "YYYY-MM-DD with a time), the first at row 4; rejected" in lines
    assert "Traceback" not in result.output


def test_validate_rows_passes_a_clean_site_and_strict_fails_it(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["-q", "validate", str(CONFIG), "--rows", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["valid"] is True and doc["problems"] == []
    ae = next(s for s in doc["sources"] if s["source"] == "ae")
    assert (ae["rows"], ae["rejected"], [c["first_failed_row"] for c in ae["checks"]]) == (11_051, 1, [10796, 10796])
    result = CliRunner().invoke(cli, ["-q", "validate", str(CONFIG), "--rows"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "OK: every row of the 6 source(s) checked; link would stop on none"
    result = CliRunner().invoke(cli, ["-q", "validate", str(CONFIG), "--rows", "--strict"])
    assert result.exit_code == 1
    errors = _errors(result.stderr)
    assert [e.split(": 1 of ")[0] for e in errors] == [f"Error: {SAMPLE / 'ae.csv'}",
                                                      f"Error: {SAMPLE / 'outpatients.csv'}"]
    assert all("and --strict makes any reject fatal" in e for e in errors)
    result = CliRunner().invoke(cli, ["validate", str(CONFIG), "--strict"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: --strict applies to the row checks: give --rows too"
