"""Safe to run from cron: crashes (SIGKILL) never damage the previous output, one run at a time per
output, owner-only files, byte-identical outputs for the same inputs, and no record value in any
log, manifest or report."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import record_values, write_config
from linkcare.cli import cli
from linkcare.errors import EXIT_LOCKED
from linkcare.io.atomic import output_lock

PARQUET = ("person_index.parquet", "persons.parquet", "events.parquet", "pairs.parquet")


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _complete_link_output(folder: Path) -> None:
    """Assert that a link output is whole: every output the manifest lists has the manifest's checksum."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name, digest in manifest["outputs"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert pl.read_parquet(folder / "person_index.parquet").height > 0


def _run_and_kill(args: list[str], marker: str, timeout: float = 120.0) -> bool:
    """Run linkcare in a child with -v; SIGKILL it as soon as a log line contains `marker`.
    Return True if it was killed there, False if it finished first."""
    cmd = [sys.executable, "-m", "linkcare", "-v", *args]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert child.stderr is not None
    deadline = time.monotonic() + timeout
    for line in child.stderr:
        if marker in line:
            child.send_signal(signal.SIGKILL)
            child.wait()
            return True
        assert time.monotonic() < deadline, "the run took too long"
    child.wait()
    return False


@pytest.fixture(scope="module")
def linked_once(small_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ops") / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("marker", ["read and standardise…", "compare…", "score and cluster…",
                                    "build and write the cohort…"])
def test_a_killed_link_leaves_the_previous_output_whole(small_site: Path, linked_once: Path, tmp_path: Path,
                                                        marker: str) -> None:
    out = tmp_path / "cohort"
    shutil.copytree(linked_once, out)  # the previous month's complete output
    before = _digests(out)
    killed = _run_and_kill(["link", str(small_site / "site.toml"), "--out", str(out)], marker)
    assert killed, f"the run finished before {marker!r}"
    assert _digests(out) == before
    _complete_link_output(out)
    # Nothing half-written looks like an output: only hidden temporary names were left beside it, and
    # the record of a run that started and never ended.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["cohort", "cohort.run.json"]
    assert json.loads((tmp_path / "cohort.run.json").read_text())["exit_code"] is None
    # The next run clears what the killed one left and replaces the output whole.
    result = CliRunner().invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    _complete_link_output(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "cohort.run.json"]
    assert json.loads((tmp_path / "cohort.run.json").read_text())["exit_code"] == 0


@pytest.mark.parametrize("marker", ["no --model given", "building features", "scoring and explaining",
                                    "writing risk.parquet"])
def test_a_killed_stratify_leaves_the_previous_output_whole(small_site: Path, linked_once: Path, tmp_path: Path,
                                                            marker: str) -> None:
    out = tmp_path / "risk"
    config = str(small_site / "site.toml")
    first = CliRunner().invoke(cli, ["-q", "stratify", config, "--cohort", str(linked_once), "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = _digests(out)
    killed = _run_and_kill(["stratify", config, "--cohort", str(linked_once), "--out", str(out)], marker)
    assert killed, f"the run finished before {marker!r}"
    assert _digests(out) == before
    assert pl.read_parquet(out / "risk.parquet").height > 0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["risk", "risk.run.json"]


def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(small_site: Path, tmp_path: Path,
                                                                         runner: CliRunner) -> None:
    out = tmp_path / "cohort"
    with output_lock(out):
        result = runner.invoke(cli, ["link", str(small_site / "site.toml"), "--out", str(out)])
    assert result.exit_code == EXIT_LOCKED == 3
    assert result.stderr.splitlines()[-1] == (
        f"Error: {out}: another linkcare run (process {os.getpid()}) is writing this output; "
        "wait for it to finish, or stop it, then run again")
    assert not out.exists()
    # Once the first run is over, the lock is free again.
    result = runner.invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output


def test_a_lock_file_removed_before_it_is_locked_is_not_held(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # A run opens the lock file just as the run holding it finishes and removes it: the run's first
    # open gets the removed file. Its lock must end up on the file at the path, which any later run
    # also opens, not on the removed one.
    import fcntl

    import linkcare.io.atomic as atomic

    out = tmp_path / "cohort"
    path = tmp_path / ".cohort.lock"
    path.write_text("")
    removed = os.open(path, os.O_RDWR)
    path.unlink()
    real_open = os.open
    opened: list[int] = []

    def first_the_removed_file(name: Any, flags: int, mode: int = 0o777) -> int:
        opened.append(1)
        return removed if len(opened) == 1 else real_open(name, flags, mode)

    monkeypatch.setattr(atomic.os, "open", first_the_removed_file)
    with output_lock(out):
        assert len(opened) == 2 and path.exists()
        other = real_open(path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(other)
    assert not path.exists()


def test_a_lock_left_by_a_dead_run_is_taken_over(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    out = tmp_path / "cohort"
    # A run killed while it held the lock leaves the file with its process number, but no lock.
    (tmp_path / ".cohort.lock").write_text("999999\n")
    result = runner.invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    _complete_link_output(out)
    assert not (tmp_path / ".cohort.lock").exists()  # removed when the run ended


def test_outputs_are_readable_by_their_owner_only(linked_once: Path, small_site: Path, tmp_path: Path,
                                                  runner: CliRunner) -> None:
    risk = tmp_path / "risk"
    result = runner.invoke(cli, ["-q", "stratify", str(small_site / "site.toml"), "--cohort", str(linked_once),
                                 "--out", str(risk)])
    assert result.exit_code == 0, result.output
    for folder in (linked_once, risk):
        paths = [folder, *folder.rglob("*")]
        assert len(paths) > 5
        for p in paths:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))


def test_same_inputs_give_byte_identical_outputs(small_site: Path, linked_once: Path, tmp_path: Path,
                                                 runner: CliRunner) -> None:
    again = tmp_path / "again"
    result = runner.invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    for name in (*PARQUET, "model.json"):
        assert (again / name).read_bytes() == (linked_once / name).read_bytes(), name
    config = str(small_site / "site.toml")
    for out in (tmp_path / "r1", tmp_path / "r2"):
        result = runner.invoke(cli, ["-q", "stratify", config, "--cohort", str(linked_once), "--out", str(out)])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "r1/risk.parquet").read_bytes() == (tmp_path / "r2/risk.parquet").read_bytes()
    for name in ("gradient_boosting.json", "logistic.json"):
        assert (tmp_path / "r1/model" / name).read_bytes() == (tmp_path / "r2/model" / name).read_bytes()
    assert _digests(tmp_path / "r1/worklists") == _digests(tmp_path / "r2/worklists")


def test_no_log_message_or_report_holds_a_value_from_a_record(small_site: Path, tmp_path: Path) -> None:
    config = str(small_site / "site.toml")
    runs = [["link", config, "--out", str(tmp_path / "cohort")],
            ["train", config, "--cohort", str(tmp_path / "cohort"), "--out", str(tmp_path / "model")],
            ["stratify", config, "--cohort", str(tmp_path / "cohort"), "--model", str(tmp_path / "model"),
             "--out", str(tmp_path / "risk")],
            ["evaluate", "links", str(tmp_path / "cohort"), "--truth", str(small_site / "truth/records.parquet")]]
    text = []
    for args in runs:
        done = subprocess.run([sys.executable, "-m", "linkcare", "-v", *args], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        text += [done.stdout, done.stderr]
    reports = [tmp_path / "cohort/manifest.json", tmp_path / "cohort/model.json", tmp_path / "model/metrics.json",
               tmp_path / "model/model_card.md", tmp_path / "model/manifest.json", tmp_path / "risk/manifest.json",
               tmp_path / "cohort/link_report.html", tmp_path / "model/risk_report.html",
               tmp_path / "model/curves.json", tmp_path / "risk/risk_report.html"]
    text += [p.read_text() for p in reports]
    everything = "\n".join(text)
    values = record_values(small_site)
    assert len(values) > 10_000
    leaked = sorted(v for v in values if v in everything)
    assert leaked == [], f"{len(leaked)} record value(s) in logs or reports"


# --- bad input: one clear line, the documented exit code, the previous output untouched ------------------

def _break(site: Path, case: str) -> None:
    gp = site / "gp_registrations.csv"
    text = gp.read_bytes()
    header = text.split(b"\n", 1)[0]
    if case == "missing file":
        gp.unlink()
    elif case == "empty file":
        gp.write_bytes(b"")
    elif case == "header without rows":
        gp.write_bytes(header + b"\n")
    elif case == "mapped column absent":
        gp.write_bytes(text.replace(b"Birth_Year", b"BirthYear", 1))
    elif case == "wrong delimiter":
        gp.write_bytes(text.replace(b",", b";"))
    elif case == "not UTF-8":
        gp.write_bytes(text + b"P9,\xff\xfe,1950,1,M,E01,A1,2001-01-01,A,\n")
    elif case == "truncated last line":
        gp.write_bytes(text[:-20])
    elif case == "repeated record ids":
        lines = text.split(b"\n")
        gp.write_bytes(b"\n".join([lines[0], lines[1], lines[1], lines[2], *lines[3:]]))
    elif case in ROW_BREAKS:
        column, bad = ROW_BREAKS[case]
        _set_rows(gp, column, bad, every=10)  # 10% of the rows, above the default 1% limit
    else:
        config = site / "site.toml"
        old, new = CONFIG_BREAKS[case]
        config.write_text(config.read_text().replace(old, new, 1))


def _set_rows(path: Path, column: str, value: str, every: int = 0, rows: tuple[int, ...] = ()) -> None:
    """Write `value` into `column` of every `every`-th data row (rows 10, 20, …) or of the given rows
    (counted from 1 after the header)."""
    frame = pl.read_csv(path, infer_schema=False).with_row_index("_row", offset=1)
    hit = (pl.col("_row") % every == 0) if every else pl.col("_row").is_in(list(rows))
    frame.with_columns(pl.when(hit).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)).drop(
        "_row").write_csv(path)


ROW_BREAKS = {
    "dates that do not parse": ("Registration_Date", "2023-02-31"),
    "dates in the future": ("Registration_Date", "2999-01-01"),
    "birth years out of range": ("Birth_Year", "1850"),
    "NHS token not well formed": ("Pseudo_NHS_Number", "9434765919"),
}

CONFIG_BREAKS = {
    "unknown config key": ("threshold = 0.95", "threshold = 0.95\nthreshhold = 1"),
    "threshold outside (0, 1)": ("threshold = 0.95", "threshold = 1.5"),
    "config value of the wrong type": ("threshold = 0.95", 'threshold = 0.95\nmax_pairs = "many"'),
    "unknown comparison method": ('method = "exact"', 'method = "soundex"'),
    "blocking field no source provides": ('["la_id"]', '["postcode"]'),
}


BAD_INPUTS = [
    ("missing file", 1, "gp_registrations.csv: file not found; check the source's path (relative to the config)"),
    ("empty file", 1, "gp_registrations.csv: is empty (0 bytes); the extract needs at least a header row"),
    ("header without rows", 1, "gp_registrations.csv: has a header but no rows; the extract is empty: export it again"),
    ("mapped column absent", 1, "fields.birth_year: column 'Birth_Year' not found in"),
    ("wrong delimiter", 1, "the header has one column but looks delimited by ';'; the delimiter seems wrong"),
    ("not UTF-8", 1, "gp_registrations.csv: 1 line(s) are not UTF-8 text (the first is line 1502); re-export"),
    ("truncated last line", 1, "the last line is cut short (7 of 10 columns, no line end); the file looks truncated: "
     "1 row affected"),
    ("repeated record ids", 1, "gp_registrations.csv: column Patient_ID: 1 row(s) repeat a record id already used"),
    ("dates that do not parse", 1, "fail the row checks, above [validation] max_reject_share = 0.01: column "
     "Registration_Date (events.registration_date): 150 row(s) not a date (YYYY-MM-DD, YYYYMMDD, or "
     "YYYY-MM-DD with a time), "
     "the first at row 10"),
    ("dates in the future", 1, "column Registration_Date (events.registration_date): 150 row(s) a date after the "
     "reference date 2026-03-31, "
     "the first at row 10"),
    ("birth years out of range", 1, "column Birth_Year (fields.birth_year): 150 row(s) birth year before 1900 or "
     "after 2026, the first at row 10"),
    ("NHS token not well formed", 1, "column Pseudo_NHS_Number (fields.nhs): 150 row(s) not a well-formed "
     "pseudonymised token, the first at row 10"),
    ("unknown config key", 2, "site.toml: linkage.threshhold: unknown key; did you mean 'threshold'?"),
    ("threshold outside (0, 1)", 2, "site.toml: linkage.threshold: 1.5 is not strictly between 0 and 1"),
    ("config value of the wrong type", 2, "site.toml: linkage.max_pairs: must be a whole number"),
    ("unknown comparison method", 2, "site.toml: linkage.comparisons[0].method: 'soundex' is not a comparison method"),
    ("blocking field no source provides", 2, "site.toml: linkage.blocking[1][0]: no source maps field 'postcode'"),
]


@pytest.mark.parametrize(("case", "code", "message"), BAD_INPUTS, ids=[c for c, _, _ in BAD_INPUTS])
def test_bad_input_gets_one_clear_error_and_leaves_the_previous_output(small_site: Path, linked_once: Path,
                                                                       tmp_path: Path, case: str, code: int,
                                                                       message: str) -> None:
    site = tmp_path / "site"
    shutil.copytree(small_site, site)
    out = tmp_path / "cohort"
    shutil.copytree(linked_once, out)
    before = _digests(out)
    _break(site, case)
    result = CliRunner().invoke(cli, ["-q", "link", str(site / "site.toml"), "--out", str(out)])
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], errors
    assert "Traceback" not in result.output
    assert _digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_extracts_pseudonymised_with_different_keys_are_caught(small_site: Path, linked_once: Path,
                                                               tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(small_site, site)
    out = tmp_path / "cohort"
    shutil.copytree(linked_once, out)
    before = _digests(out)
    # The hospital extract's tokens made with another key: the same people, none of the same tokens.
    apc = pl.read_csv(site / "apc.csv", infer_schema=False)
    apc = apc.with_columns(pl.col("Pseudo_NHS_Number").map_elements(
        lambda t: hashlib.sha256(b"another key" + t.encode()).hexdigest()[:32], return_dtype=pl.String))
    apc.write_csv(site / "apc.csv")
    result = CliRunner().invoke(cli, ["-q", "link", str(site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert errors[0].startswith("Error: sources 'ae' and 'apc' share 0.0% of their nhs tokens while")
    assert "probably pseudonymised with different keys" in errors[0]
    assert _digests(out) == before


# --- rows that fail the row checks: set aside with their reason, counted, fatal above the limit or --strict --

def _site_with_bad_rows(small_site: Path, tmp_path: Path) -> Path:
    """Copy the small site and break four gp rows (under 1% of 1,500): one each of a date that
    does not parse, a date in the future, a birth year out of range and a malformed NHS token."""
    site = tmp_path / "site"
    shutil.copytree(small_site, site)
    gp = site / "gp_registrations.csv"
    for (column, bad), row in zip(ROW_BREAKS.values(), (3, 30, 300, 1_000), strict=True):
        _set_rows(gp, column, bad, rows=(row,))
    return site


def test_row_checks_judge_dates_against_the_reference_date_not_the_clock(small_site: Path, tmp_path: Path) -> None:
    # A day after the site's reference date (2026-03-31) is in the past by the clock this test runs
    # on, yet it cannot be in an extract taken at that date: the same inputs reject the same rows
    # on any day. The reference date itself is kept.
    site = tmp_path / "site"
    shutil.copytree(small_site, site)
    gp = site / "gp_registrations.csv"
    _set_rows(gp, "Registration_Date", "2026-04-01", rows=(7,))
    _set_rows(gp, "Registration_Date", "2026-03-31", rows=(8,))
    out = tmp_path / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rejects = pl.read_parquet(out / "rejects" / "gp.parquet")
    assert rejects.select("row", "reason").rows() == [(7, "Registration_Date: a date after the reference date "
                                                          "2026-03-31")]


def test_rejected_rows_are_set_aside_with_their_reason_and_counted(small_site: Path, tmp_path: Path) -> None:
    site = _site_with_bad_rows(small_site, tmp_path)
    out = tmp_path / "cohort"
    result = CliRunner().invoke(cli, ["link", str(site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rejects = pl.read_parquet(out / "rejects" / "gp.parquet")
    gp = pl.read_csv(site / "gp_registrations.csv", infer_schema=False)
    assert rejects["row"].to_list() == [3, 30, 300, 1_000]
    assert rejects["record_id"].to_list() == [gp["Patient_ID"][r - 1] for r in (3, 30, 300, 1_000)]
    assert rejects["reason"].to_list() == [
        "Registration_Date: not a date (YYYY-MM-DD, YYYYMMDD, or YYYY-MM-DD with a time)",
        "Registration_Date: a date after the reference date 2026-03-31",
        "Birth_Year: birth year before 1900 or after 2026", "Pseudo_NHS_Number: not a well-formed pseudonymised token"]
    # Set aside, not silently dropped: not in the index or the events, counted in the summary and manifest.
    ids = rejects["record_id"].implode()
    assert pl.read_parquet(out / "person_index.parquet").filter(pl.col("record_id").is_in(ids)).height == 0
    assert pl.read_parquet(out / "events.parquet").filter(pl.col("record_id").is_in(ids)).height == 0
    row = next(line for line in result.stdout.splitlines() if line.startswith("gp "))
    assert row.split()[1:3] == ["1,500", "4"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {i["source"]: i["rejected"] for i in manifest["inputs"]}["gp"] == 4
    warning = next(line for line in result.stderr.splitlines() if "row(s) rejected" in line)
    assert "source gp: 4 row(s) rejected (see rejects/gp.parquet and rejects/gp.csv)" in warning
    for value in ("2023-02-31", "2999-01-01", "1850", "9434765919"):  # reasons never quote a value
        assert value not in warning and not rejects["reason"].str.contains(value, literal=True).any()
    assert stat.S_IMODE((out / "rejects").stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "rejects" / "gp.parquet").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "rejects" / "gp.csv").stat().st_mode) == 0o600


def test_rejects_are_written_as_csv_too_with_the_same_rows(small_site: Path, tmp_path: Path) -> None:
    # rejects/<source>.csv goes back to the data supplier, who may have no Parquet reader.
    site = _site_with_bad_rows(small_site, tmp_path)
    out = tmp_path / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "rejects").iterdir()) == ["gp.csv", "gp.parquet"]
    parquet = pl.read_parquet(out / "rejects" / "gp.parquet")
    csv = pl.read_csv(out / "rejects" / "gp.csv", schema=dict(parquet.schema))
    assert csv.columns == ["row", "record_id", "reason"]
    assert csv.equals(parquet) and csv.height == 4
    # Record ids keep their leading zeros in the text, and a reason with "; " stays one field.
    text = (out / "rejects" / "gp.csv").read_text(encoding="utf-8").splitlines()
    assert text[0] == "row,record_id,reason" and len(text) == 5


def test_strict_makes_any_reject_fatal(small_site: Path, linked_once: Path, tmp_path: Path) -> None:
    site = _site_with_bad_rows(small_site, tmp_path)
    out = tmp_path / "cohort"
    shutil.copytree(linked_once, out)
    before = _digests(out)
    result = CliRunner().invoke(cli, ["-q", "link", str(site / "site.toml"), "--out", str(out), "--strict"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "gp_registrations.csv: 4 of 1,500 row(s) (0.3%) fail the row checks, and --strict makes any " \
           "reject fatal: column Birth_Year (fields.birth_year): 1 row(s) birth year before 1900 or after 2026, " \
           "the first at row 300; column Pseudo_NHS_Number" in errors[0]
    assert errors[0].endswith("fix the extract, or run without --strict to set the rows aside, or set invalid = "
                              '"missing" on a field whose value may be wrong while its row is right')
    assert _digests(out) == before


def test_the_reject_share_is_configurable(small_site: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(small_site, site)
    _set_rows(site / "gp_registrations.csv", "Registration_Date", "31/02/2023", every=10)
    config = site / "site.toml"
    config.write_text(config.read_text() + "\n[validation]\nmax_reject_share = 0.2\n")
    out = tmp_path / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out / "rejects" / "gp.parquet").height == 150


def test_a_field_marked_invalid_missing_keeps_the_row_without_the_value(small_site: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(small_site, site)
    _set_rows(site / "gp_registrations.csv", "Birth_Year", "1850", every=10)
    config = site / "site.toml"
    config.write_text(config.read_text().replace('birth_year = "Birth_Year"',
                                                 'birth_year = { column = "Birth_Year", invalid = "missing" }', 1))
    out = tmp_path / "cohort"
    result = CliRunner().invoke(cli, ["link", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "rejects" / "gp.parquet").exists()
    assert "values kept as missing" in result.stderr and "150 row(s) birth year before 1900" in result.stderr
    index = pl.read_parquet(out / "person_index.parquet").filter(pl.col("source") == "gp")
    assert index.height == 1_500


# --- monthly refreshes keep people's IDs -------------------------------------------------------------------

def test_a_refresh_keeps_ids_and_records_what_changed(small_site: Path, tmp_path: Path) -> None:
    """Month 1 lacks one person (added in month 2), holds one who leaves by month 2, and has one gp
    record with a mistyped token, birth year and area (a person of its own, corrected in month 2)."""
    truth = pl.read_parquet(small_site / "truth" / "records.parquet")
    sizes = truth.group_by("person").agg(pl.len().alias("n"), pl.col("source").n_unique().alias("sources"),
                                         (pl.col("source") == "gp").sum().alias("gp")).sort("person")
    multi = sizes.filter((pl.col("gp") == 1) & (pl.col("sources") >= 3))["person"].to_list()
    added, leaving, corrected = multi[0], multi[1], multi[2]
    files = {"gp": "gp_registrations.csv", "apc": "apc.csv", "ae": "ae.csv", "outpatients": "outpatients.csv",
             "social_care": "social_care.csv"}
    ids = {"gp": "Patient_ID", "apc": "EPIKEY", "ae": "EC_Ident", "outpatients": "ATTENDKEY",
           "social_care": "Der_Unique_Record_ID"}

    def month(name: str, without: int, mistyped: int | None) -> Path:
        site = tmp_path / name
        shutil.copytree(small_site, site)
        for source, file in files.items():
            drop = truth.filter((pl.col("person") == without) & (pl.col("source") == source))["record_id"]
            frame = pl.read_csv(site / file, infer_schema=False).filter(~pl.col(ids[source]).is_in(drop.implode()))
            if source == "gp" and mistyped is not None:
                wrong = truth.filter((pl.col("person") == mistyped) & (pl.col("source") == "gp"))["record_id"]
                hit = pl.col("Patient_ID").is_in(wrong.implode())
                frame = frame.with_columns(
                    pl.when(hit).then(pl.lit("0123456789abcdef0123456789abcdef")).otherwise(pl.col("Pseudo_NHS_Number"))
                    .alias("Pseudo_NHS_Number"),
                    pl.when(hit).then(pl.lit("1901")).otherwise(pl.col("Birth_Year")).alias("Birth_Year"),
                    pl.when(hit).then(pl.lit("E01999999")).otherwise(pl.col("LSOA")).alias("LSOA"))
            frame.write_csv(site / file)
        # The GP clinical extract comes from the registrations' system: the person is missing from it too,
        # and its rows of the mistyped registration carry the same mistakes.
        gone = truth.filter((pl.col("person") == without) & (pl.col("source") == "gp_events"))["record_id"]
        gp_events = pl.read_parquet(site / "gp_events.parquet").filter(~pl.col("Event_ID").is_in(gone.implode()))
        if mistyped is not None:
            wrong = truth.filter((pl.col("person") == mistyped) & (pl.col("source") == "gp"))["record_id"]
            hit = pl.col("Patient_ID").is_in(wrong.implode())
            gp_events = gp_events.with_columns(
                pl.when(hit).then(pl.lit("0123456789abcdef0123456789abcdef")).otherwise(pl.col("Pseudo_NHS_Number"))
                .alias("Pseudo_NHS_Number"),
                pl.when(hit).then(pl.lit(1901)).otherwise(pl.col("Birth_Year")).alias("Birth_Year"),
                pl.when(hit).then(pl.lit("E01999999")).otherwise(pl.col("LSOA")).alias("LSOA"))
        gp_events.write_parquet(site / "gp_events.parquet")
        # A source with no change this month (no one left or joined it) is expected here.
        with (site / "site.toml").open("a", encoding="utf-8") as f:
            f.write('\n[validation]\nunchanged_inputs = "allow"\n')
        return site

    runner = CliRunner()
    old, new = tmp_path / "old", tmp_path / "new"
    first = runner.invoke(cli, ["-q", "link", str(month("m1", added, corrected) / "site.toml"), "--out", str(old)])
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli, ["link", str(month("m2", leaving, None) / "site.toml"), "--out", str(new),
                                 "--previous", str(old)])
    assert second.exit_code == 0, second.output

    def person_of(out: Path, person: int) -> set[str]:
        recs = truth.filter(pl.col("person") == person).select("source", "record_id")
        index = pl.read_parquet(out / "person_index.parquet")
        return set(index.join(recs, on=["source", "record_id"], how="semi")["person_id"].to_list())

    lineage = pl.read_parquet(new / "lineage.parquet")
    assert lineage.columns == ["person_id", "previous_person_id", "change"]
    assert set(lineage["change"].unique()) <= {"kept", "new", "merged", "split", "gone"}
    change = {(r["person_id"], r["previous_person_id"]): r["change"] for r in lineage.to_dicts()}
    # The person added in month 2 is new, with an ID no one had in month 1.
    (added_id,) = person_of(new, added)
    assert change[(added_id, None)] == "new"
    old_ids = set(pl.read_parquet(old / "persons.parquet")["person_id"].to_list())
    assert added_id not in old_ids
    # The person who left is gone.
    (leaving_id,) = person_of(old, leaving)
    assert change[(None, leaving_id)] == "gone"
    # The corrected record rejoins its person: two people of month 1 merge; the larger keeps its ID.
    parts = person_of(old, corrected)
    assert len(parts) == 2
    (merged_id,) = person_of(new, corrected)
    assert {change[(merged_id, p)] for p in parts} == {"merged"}
    index_old = pl.read_parquet(old / "person_index.parquet")
    larger = index_old.filter(pl.col("person_id").is_in(list(parts)))["person_id"].value_counts().sort(
        ["count", "person_id"], descending=[True, False])["person_id"][0]
    assert merged_id == larger
    # Everyone else whose records did not change keeps their ID.
    unchanged = sizes.filter(~pl.col("person").is_in([added, leaving, corrected]))["person"].head(200).to_list()
    kept = [p for p in unchanged if person_of(old, p) == person_of(new, p)]
    assert len(kept) >= 195  # the linkage itself may re-decide a borderline record
    assert lineage.filter(pl.col("change") == "kept").height >= 0.95 * len(old_ids)
    assert lineage.filter(pl.col("change") == "kept").select(
        (pl.col("person_id") == pl.col("previous_person_id")).all()).item()
    assert "person IDs carried over from --previous:" in second.stdout
    # Every person of month 2 is in the lineage, and every person of month 1 is accounted for.
    new_ids = set(pl.read_parquet(new / "persons.parquet")["person_id"].to_list())
    assert set(lineage["person_id"].drop_nulls().to_list()) == new_ids
    assert set(lineage["previous_person_id"].drop_nulls().to_list()) == old_ids
    # A refresh is deterministic.
    again = runner.invoke(cli, ["-q", "link", str(tmp_path / "m2" / "site.toml"), "--out", str(tmp_path / "again"),
                                "--previous", str(old)])
    assert again.exit_code == 0
    for name in ("lineage.parquet", "person_index.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == (new / name).read_bytes()


def test_previous_may_be_the_output_folder_itself(small_site: Path, linked_once: Path, tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    shutil.copytree(linked_once, out)
    before = pl.read_parquet(out / "person_index.parquet")
    # The same extracts again: allowed here, so the run replaces its own previous output.
    config = write_config(small_site / "site.toml", tmp_path / "site.toml",
                          extra='\n[validation]\nunchanged_inputs = "allow"\n')
    result = CliRunner().invoke(cli, ["-q", "link", str(config), "--out", str(out), "--previous", str(out)])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out / "person_index.parquet").equals(before)
    assert set(pl.read_parquet(out / "lineage.parquet")["change"].unique()) == {"kept"}


def test_a_previous_folder_that_was_changed_is_refused(small_site: Path, linked_once: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(linked_once, old)
    index = pl.read_parquet(old / "person_index.parquet")
    index.with_columns(pl.lit("P0").alias("person_id")).write_parquet(old / "person_index.parquet")
    result = CliRunner().invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(tmp_path / "new"),
                                      "--previous", str(old)])
    assert result.exit_code == 2
    assert "person_index.parquet: its checksum does not match manifest.json" in result.stderr
    missing = CliRunner().invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(tmp_path / "new"),
                                       "--previous", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1
    assert "--previous names no folder" in missing.stderr


def test_carry_over_follows_the_documented_rules() -> None:
    """Old people A (3 records), B (2), C (2), D (2), E (1), F (1), G (1); new clusters: A with one
    record added (kept), B and C together (merged; equal shares, so the smaller ID keeps), D split
    in two with E's record joining one half, F's record gone, G unchanged, and a new person whose
    fresh ID would be G's (G's ID is made to be the keyed hash of the new person's anchor)."""
    from linkcare.cohort.lineage import carry_over, person_ids

    clash = person_ids(pl.Series(["s/n1"]), b"k")[0]
    previous = pl.DataFrame({
        "source": ["s"] * 12,
        "record_id": ["a1", "a2", "a3", "b1", "b2", "c1", "c2", "d1", "d2", "e1", "f1", "g1"],
        "person_id": ["PA", "PA", "PA", "PB", "PB", "PC", "PC", "PD", "PD", "PE", "PF", clash],
    })
    records = pl.DataFrame({
        "source": ["s"] * 13,
        "record_id": ["a1", "a2", "a3", "a4", "b1", "b2", "c1", "c2", "d1", "d2", "e1", "n1", "g1"],
        "cluster": [0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 4, 5],
    })
    anchors = records.group_by("cluster").agg(
        pl.concat_str([pl.col("source"), pl.lit("/"), pl.col("record_id")]).min().alias("anchor")).sort("cluster")
    ids, lineage = carry_over(records, anchors, previous, key=b"k")
    got = dict(zip(ids["cluster"].to_list(), ids["person_id"].to_list(), strict=True))
    assert got[0] == "PA"  # kept, with one record added
    assert got[1] == "PB"  # B and C merge: two records each, the smaller ID keeps
    assert got[2] == "PD"  # D splits 1-1: the part with the smaller anchor record keeps the ID
    assert got[3] == "PE"  # E's only record is here, with half of D: E is its best match
    assert got[5] == clash  # G keeps its ID …
    assert got[4] != clash and got[4] not in set(previous["person_id"])  # … so the new person's is salted
    assert got[4] == person_ids(pl.Series(["s/n1#1"]), b"k")[0]
    rows = {(r["person_id"], r["previous_person_id"], r["change"]) for r in lineage.to_dicts()}
    assert rows == {
        ("PA", "PA", "kept"), ("PB", "PB", "merged"), ("PB", "PC", "merged"), ("PD", "PD", "split"),
        ("PE", "PD", "merged"), ("PE", "PE", "merged"), (got[4], None, "new"), (clash, clash, "kept"),
        (None, "PF", "gone"),
    }
