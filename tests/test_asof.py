"""The as-of date (--as-of, reference_date = "auto", LINKCARE_TODAY), dated snapshots with a latest
pointer and retention, and the checks against the previous run (issue 15)."""

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
from linkcare.commands.snapshots import dated_folders, latest, publish
from linkcare.config import load_config, resolve_as_of
from linkcare.config.asof import TODAY_ENV, last_month_end
from linkcare.errors import ConfigError, ProblemList


@pytest.mark.parametrize(("today", "end"), [("2026-05-03", "2026-04-30"), ("2026-03-01", "2026-02-28"),
                                            ("2024-03-31", "2024-02-29"), ("2027-01-15", "2026-12-31")])
def test_auto_is_the_last_complete_month_end_before_the_run_date(today: str, end: str) -> None:
    assert last_month_end(dt.date.fromisoformat(today)) == dt.date.fromisoformat(end)
    as_of = resolve_as_of("auto", today=dt.date.fromisoformat(today))
    assert as_of.date == dt.date.fromisoformat(end) and as_of.source == "auto"
    assert f"run date {today}" in as_of.why


def test_as_of_option_wins_over_the_config() -> None:
    chosen = resolve_as_of(dt.date(2026, 3, 31), dt.date(2026, 1, 31))
    assert (chosen.date, chosen.source) == (dt.date(2026, 1, 31), "--as-of")
    assert resolve_as_of(dt.date(2026, 3, 31)).source == "config"


def test_reference_date_auto_loads_and_follows_linkcare_today(small_site: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "auto.toml",
                          replace={'reference_date = "2026-03-31"': 'reference_date = "auto"'})
    monkeypatch.setenv(TODAY_ENV, "2026-05-03")
    loaded = load_config(config)
    assert loaded.reference_date == dt.date(2026, 4, 30)
    assert loaded.as_of_facts["source"] == "auto"
    assert load_config(config, dt.date(2026, 2, 28)).reference_date == dt.date(2026, 2, 28)
    monkeypatch.setenv(TODAY_ENV, "3 May")
    with pytest.raises(ConfigError, match="LINKCARE_TODAY: not a date"):
        load_config(config)


def test_reference_date_that_is_neither_a_date_nor_auto_is_refused(small_site: Path, tmp_path: Path) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "bad.toml",
                          replace={'reference_date = "2026-03-31"': 'reference_date = "latest"'})
    with pytest.raises(ProblemList) as found:
        load_config(config)
    [problem] = found.value.problems
    assert str(problem).endswith('reference_date: must be a date; write it as "YYYY-MM-DD", e.g. reference_date = '
                                 '"2026-03-31", or "auto" (the last complete month\'s end)')


def test_validation_keys_for_the_previous_run_are_checked(small_site: Path, tmp_path: Path) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "bad.toml",
                          extra='\n[validation]\nunchanged_inputs = "ignore"\nrow_change = "fatal"\n'
                                'stale_after_days = 0\nmax_row_change = -1\n')
    with pytest.raises(ProblemList) as found:
        load_config(config)
    text = " ".join(str(p) for p in found.value.problems)
    for key in ("unchanged_inputs", "row_change", "stale_after_days", "max_row_change"):
        assert f"validation.{key}" in text


def _link(runner: CliRunner, config: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(cli, ["link", str(config), "--out", str(out), *extra])
    return result.exit_code, result.output


def test_snapshots_first_run_then_unchanged_inputs_then_a_new_month(small_site: Path, tmp_path: Path,
                                                                    runner: CliRunner) -> None:
    site = tmp_path / "site"
    shutil.copytree(small_site, site)
    config = site / "site.toml"
    out = tmp_path / "cohort"
    code, output = _link(runner, config, out, "--snapshot", "--previous", "latest", "--as-of", "2026-03-31")
    assert code == 0, output
    assert "holds no earlier output yet" in output  # the first run says so and carries on
    assert latest(out) == out / "2026-03-31"
    facts = json.loads((out / "latest" / "manifest.json").read_text())
    assert facts["as_of"] == {"date": "2026-03-31", "source": "--as-of",
                              "why": "--as-of 2026-03-31 on the command line"}

    # The same files again a month later: last month's extract delivered twice is an error.
    code, output = _link(runner, config, out, "--snapshot", "--previous", "latest", "--as-of", "2026-04-30")
    assert code == 1
    assert "byte-identical to the previous run's input" in output and "gp_registrations.csv" in output
    assert [p.name for p in dated_folders(out)] == ["2026-03-31"]  # nothing written, latest unchanged
    assert latest(out) == out / "2026-03-31"

    # New extracts (each with its last row gone): IDs carried over, lineage written, latest moves.
    for source in load_config(config).sources:
        if source.path.suffix == ".parquet":  # the GP clinical extract
            pl.read_parquet(source.path).head(-1).write_parquet(source.path)
            continue
        lines = source.path.read_text(encoding="utf-8").splitlines(keepends=True)
        source.path.write_text("".join(lines[:-1]), encoding="utf-8")
    code, output = _link(runner, config, out, "--snapshot", "--previous", "latest", "--as-of", "2026-04-30")
    assert code == 0, output
    assert latest(out) == out / "2026-04-30"
    assert (out / "2026-04-30" / "lineage.parquet").is_file()
    assert "person IDs carried over from --previous" in output
    # 30 days past the last events is within stale_after_days (45): no stale warning.
    assert "holds no events after" not in output


def test_stale_extract_and_row_change_warnings_name_the_file(small_site: Path, tmp_path: Path,
                                                             runner: CliRunner) -> None:
    out = tmp_path / "cohort"
    code, output = _link(runner, small_site / "site.toml", out)
    assert code == 0, output
    site = tmp_path / "site"
    shutil.copytree(small_site, site)
    apc = site / "apc.csv"
    lines = apc.read_text(encoding="utf-8").splitlines(keepends=True)
    apc.write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")  # half of last month's rows
    config = write_config(site / "site.toml", site / "site.toml",
                          extra='\n[validation]\nunchanged_inputs = "allow"\n')
    code, output = _link(runner, config, out, "--previous", "latest", "--as-of", "2026-06-30")
    assert code == 0, output
    assert "apc.csv has" in output and "more than max_row_change 25%" in output
    assert re.search(r"apc\.csv holds no events after \d{4}-\d{2}-\d{2}, \d+ days before the as-of date 2026-06-30 "
                     r"\(more than stale_after_days 45\)", output)
    facts = json.loads((out / "manifest.json").read_text())
    assert any(w.startswith("apc.csv holds no events after") for w in facts["warnings"])

    strict = write_config(site / "site.toml", site / "strict.toml", extra='row_change = "error"\n')
    before = (out / "manifest.json").read_bytes()
    shutil.copy(small_site / "apc.csv", apc)  # twice as many rows as the output now in place
    code, output = _link(runner, strict, out, "--previous", "latest", "--as-of", "2026-06-30")
    assert code == 1 and "apc.csv has" in output and "row_change" in output
    assert (out / "manifest.json").read_bytes() == before  # the previous output is untouched


def test_publish_keeps_the_newest_and_never_the_latest(tmp_path: Path) -> None:
    root = tmp_path / "risk"
    for day in ("2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"):
        (root / day).mkdir(parents=True)
        (root / day / "manifest.json").write_text("{}")
    (root / "notes").mkdir()  # not a snapshot: never touched
    removed = publish(root, root / "2026-04-30", keep=2)
    assert [p.name for p in removed] == ["2026-01-31", "2026-02-28"]
    assert [p.name for p in dated_folders(root)] == ["2026-03-31", "2026-04-30"]
    assert (root / "notes").is_dir() and latest(root) == root / "2026-04-30"
    # A rerun of an earlier month becomes latest and is not deleted by the count.
    publish(root, root / "2026-03-31", keep=1)
    assert latest(root) == root / "2026-03-31" and (root / "2026-03-31").is_dir()


def test_stratify_writes_a_dated_snapshot_as_of_the_given_date(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                               runner: CliRunner) -> None:
    config, cohort, model = trained
    out = tmp_path / "risk"
    result = runner.invoke(cli, ["-q", "stratify", str(config), "--cohort", str(cohort), "--model", str(model),
                                 "--out", str(out), "--snapshot", "--as-of", "2026-02-28"])
    assert result.exit_code == 0, result.output
    assert "as of 2026-02-28 (--as-of 2026-02-28 on the command line)" in result.output
    facts = json.loads((out / "latest" / "manifest.json").read_text())
    assert facts["index_date"] == "2026-02-28" and facts["as_of"]["source"] == "--as-of"
