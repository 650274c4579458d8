"""Every run is framed (docs/operations.md): a start line and an end line in the log, also when it
fails; `<out>.run.json` beside the output, also when it fails; errors as one JSON object under
--json; the group's options accepted after the command name."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result

import linkcare
from conftest import error_lines, log_lines, record_values, write_config
from linkcare.cli import cli

V = linkcare.__version__
END = " in <s> s, peak memory <mib> MiB"
AS_OF_CONFIG = "; as of 2026-03-31 (reference_date in site.toml)"


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _record(out: Path) -> dict[str, Any]:
    return json.loads(out.with_name(out.name + ".run.json").read_text())


@pytest.fixture(scope="module")
def linked(small_site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """The small site linked once, with -q after the command name: (output folder, the CLI result)."""
    out = tmp_path_factory.mktemp("run") / "cohort"
    result = _run("link", str(small_site / "site.toml"), "--out", str(out), "-q")
    assert result.exit_code == 0, result.output
    return out, result


# --- start and end lines ----------------------------------------------------------------------------------

def test_a_run_logs_a_start_and_an_end_line(small_site: Path) -> None:
    config = str(small_site / "site.toml")
    result = _run("validate", config)
    assert result.exit_code == 0, result.output
    assert log_lines(result.stderr) == [f"INFO linkcare {V} validate started: {config}{AS_OF_CONFIG}",
                                        f"INFO linkcare validate ended: exit 0{END}"]


def test_link_with_q_after_the_command_logs_only_its_start_and_end(small_site: Path,
                                                                   linked: tuple[Path, Result]) -> None:
    out, result = linked
    config = str(small_site / "site.toml")
    assert log_lines(result.stderr) == [
        f"INFO linkcare {V} link started: {config} --out {out} -q{AS_OF_CONFIG}",
        f"INFO linkcare link ended: exit 0{END}"]


def test_the_as_of_date_given_is_in_the_start_line_and_a_failure_has_its_end_line(small_site: Path,
                                                                                   tmp_path: Path) -> None:
    config = str(small_site / "site.toml")
    cohort, out = tmp_path / "nowhere", tmp_path / "risk"
    result = _run("-q", "stratify", config, "--cohort", str(cohort), "--out", str(out), "--as-of", "2026-01-31")
    assert result.exit_code == 1
    lines = log_lines(result.stderr)
    assert lines[0] == (f"INFO linkcare {V} stratify started: {config} --cohort {cohort} --out {out} --as-of "
                        "2026-01-31; as of 2026-01-31 (--as-of)")
    assert lines[1] == f"INFO linkcare stratify ended: exit 1 (DataError){END}"
    assert lines[2:] == error_lines(result.stderr) and len(lines) == 3
    assert not out.exists()


def test_a_usage_error_has_its_start_and_end_lines_and_help_has_none(small_site: Path) -> None:
    config = str(small_site / "site.toml")
    result = _run("link", config)
    assert result.exit_code == 2
    lines = log_lines(result.stderr)
    assert lines[0] == f"INFO linkcare {V} link started: {config}{AS_OF_CONFIG}"
    assert lines[1] == f"INFO linkcare link ended: exit 2 (MissingParameter){END}"
    assert lines[-1] == "Error: Missing option '--out'."
    result = _run("link", "--help")
    assert result.exit_code == 0 and result.stderr == ""


def test_the_value_of_record_options_is_never_logged(small_site: Path, linked: tuple[Path, Result]) -> None:
    out, _ = linked
    record_id = pl.read_parquet(out / "person_index.parquet").filter(pl.col("source") == "apc")["record_id"][0]
    for args in (["--record", f"apc:{record_id}"], [f"--record=apc:{record_id}"],
                 ["--pair", f"apc:{record_id}", f"apc:{record_id}"]):
        result = _run("-q", "explain", str(out), *args)
        assert result.exit_code == 0, result.output
        start = log_lines(result.stderr)[0]
        assert str(record_id) not in start
        shown = {"--record": "--record '<given>'",
                 "--pair": "--pair '<given>' '<given>'"}.get(args[0], "'--record=<given>'")
        assert start == f"INFO linkcare {V} explain started: {out} {shown}"


# --- the run record ---------------------------------------------------------------------------------------

def test_the_run_record_is_written_beside_the_output(small_site: Path, linked: tuple[Path, Result]) -> None:
    out, _ = linked
    record = _record(out)
    assert set(record) == {"linkcare_version", "command", "arguments", "output", "as_of", "host", "pid", "started",
                           "ended", "seconds", "exit_code", "error", "peak_mib"}
    assert (record["linkcare_version"], record["command"], record["exit_code"], record["error"]) == (V, "link", 0,
                                                                                                     None)
    assert record["arguments"] == [str(small_site / "site.toml"), "--out", str(out), "-q"]
    assert record["as_of"] == {"date": "2026-03-31", "from": "reference_date in site.toml"}
    assert record["seconds"] > 0 and record["peak_mib"] > 50 and record["started"] <= record["ended"]
    assert "cohort.run.json" not in {p.name for p in out.iterdir()}  # beside the output, never in it


def test_a_failed_run_leaves_its_record_and_the_previous_output(small_site: Path, linked: tuple[Path, Result],
                                                                tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    shutil.copytree(linked[0], out)
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    config = write_config(small_site / "site.toml", tmp_path / "site.toml",
                          replace={'path = "apc.csv"': 'path = "missing_apc.csv"'})
    result = _run("-q", "link", str(config), "--out", str(out), "--json")
    assert result.exit_code == 1
    (error,) = error_lines(result.stderr)
    record = _record(out)
    assert (record["exit_code"], record["error"]) == (1, {"class": "DataError", "message": error[len("Error: "):]})
    assert record["ended"] is not None
    assert json.loads(result.stdout) == {"command": "link", "exit_code": 1, "error": "DataError",
                                         "message": error[len("Error: "):]}
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "cohort.run.json", "site.toml"]
    values = record_values(small_site)
    assert not [v for v in values if v in result.output or v in json.dumps(record)]


def test_a_usage_error_is_recorded_too(small_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "risk"
    result = _run("stratify", str(small_site / "site.toml"), "--cohort", str(tmp_path), "--out", str(out),
                  "--as-of", "31/01/2026")
    assert result.exit_code == 2
    record = _record(out)
    assert record["exit_code"] == 2 and record["error"]["class"] == "BadParameter"
    assert record["error"]["message"] == "Invalid value for --as-of: '31/01/2026' is not a date; write it as YYYY-MM-DD"
    assert not out.exists()


def test_a_run_record_that_cannot_be_written_is_a_warning(small_site: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("linkcare.cli.run.write_run_record", refuse)
    out = tmp_path / "site"
    result = _run("-q", "synth", str(out), "--people", "200")
    assert result.exit_code == 0, result.output
    record = str(tmp_path / "site.run.json")
    assert log_lines(result.stderr).count(f"WARNING could not write the run record {record}: Permission denied") == 2


# --- errors as JSON ---------------------------------------------------------------------------------------

def test_errors_are_one_json_object_under_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "nope.toml")
    result = _run("validate", missing, "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"command": "validate", "exit_code": 2, "error": "ConfigError",
                                         "message": f"{missing}: config file not found; check the path"}
    assert error_lines(result.stderr) == [f"Error: {missing}: config file not found; check the path"]

    result = _run("link", missing, "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"command": "link", "exit_code": 2, "error": "MissingParameter",
                                         "message": "Missing option '--out'."}

    result = _run("evaluate", "links", str(tmp_path), "--truth", str(tmp_path / "truth.parquet"), "--json")
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert (body["command"], body["exit_code"]) == ("evaluate links", 1)


def test_a_problem_list_and_an_internal_error_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from linkcare.errors import ConfigError, DataError, ProblemList

    def problems(_config: object) -> None:
        raise ProblemList([DataError("a.csv: file not found"), ConfigError("site.toml: version: missing")])

    monkeypatch.setattr("linkcare.commands.validate.validate_site", problems)
    result = _run("validate", "site.toml", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "command": "validate", "exit_code": 2, "error": "ProblemList", "message": "2 problem(s) found",
        "problems": [{"error": "DataError", "message": "a.csv: file not found"},
                     {"error": "ConfigError", "message": "site.toml: version: missing"}]}

    def bug(_config: object) -> None:
        raise ZeroDivisionError("a value from a record: 9434765919")

    monkeypatch.setattr("linkcare.commands.validate.validate_site", bug)
    result = _run("validate", "site.toml", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "command": "validate", "exit_code": 1, "error": "ZeroDivisionError",
        "message": "internal error: ZeroDivisionError; rerun with -v to see the traceback"}
    assert "9434765919" not in result.output


# --- the group's options after the command name -----------------------------------------------------------

def test_group_options_may_follow_the_command_name(small_site: Path) -> None:
    config = str(small_site / "site.toml")
    before, after = _run("-q", "validate", config), _run("validate", config, "-q")
    assert before.exit_code == after.exit_code == 0
    assert before.stdout == after.stdout
    assert [line.replace(" -q", "") for line in log_lines(after.stderr)] == log_lines(before.stderr)

    _run("validate", config, "-v")
    assert logging.getLogger("linkcare").level == logging.DEBUG
    _run("validate", config, "--quiet")
    assert logging.getLogger("linkcare").level == logging.WARNING
    _run("validate", config, "-vv")
    assert logging.getLogger("linkcare").level == logging.DEBUG

    for args in (["validate", config, "-v", "-q"], ["-v", "validate", config, "-q"]):
        result = _run(*args)
        assert result.exit_code == 2
        assert error_lines(result.stderr) == ["Error: use -v or -q, not both"]

    result = _run("validate", config, "--version")
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"linkcare {V}\n", "")


def test_group_options_after_a_subcommand_of_a_group_and_in_help(tmp_path: Path) -> None:
    result = _run("evaluate", "links", str(tmp_path), "--truth", str(tmp_path / "t.parquet"), "-q")
    assert result.exit_code == 1
    assert len(error_lines(result.stderr)) == 1
    help_text = _run("link", "--help").stdout
    assert "-q, --quiet" in help_text and "-v, --verbose" in help_text
