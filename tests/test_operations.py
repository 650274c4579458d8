"""Safe to run from cron: crashes (SIGKILL) never damage the previous output, one run at a time per
output, owner-only files, byte-identical outputs for the same inputs, and no record value in any
log, manifest or report."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

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
    os.system(f"cp -a '{linked_once}' '{out}'")  # the previous month's complete output
    before = _digests(out)
    killed = _run_and_kill(["link", str(small_site / "site.toml"), "--out", str(out)], marker)
    assert killed, f"the run finished before {marker!r}"
    assert _digests(out) == before
    _complete_link_output(out)
    # Nothing half-written looks like an output: only hidden temporary names were left beside it.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["cohort"]
    # The next run clears what the killed one left and replaces the output whole.
    result = CliRunner().invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    _complete_link_output(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


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
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["risk"]


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


def _record_values(site: Path) -> set[str]:
    """Return identifying values taken from the site's extracts: tokens, council IDs, record keys, areas."""
    values: set[str] = set()
    for csv in site.glob("*.csv"):
        if csv.name == "areas.csv":
            continue
        frame = pl.read_csv(csv, infer_schema=False)
        for column in frame.columns:
            if any(k in column for k in ("NHS", "Pseudo", "LSOA", "_ID", "Ident", "KEY", "Record")):
                values |= {v for v in frame[column].drop_nulls().unique().to_list() if len(v) >= 6}
    return values


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
               tmp_path / "model/model_card.md", tmp_path / "model/manifest.json", tmp_path / "risk/manifest.json"]
    text += [p.read_text() for p in reports]
    everything = "\n".join(text)
    values = _record_values(small_site)
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
    else:
        config = site / "site.toml"
        old, new = CONFIG_BREAKS[case]
        config.write_text(config.read_text().replace(old, new, 1))


CONFIG_BREAKS = {
    "unknown config key": ("threshold = 0.95", "threshold = 0.95\nthreshhold = 1"),
    "threshold outside (0, 1)": ("threshold = 0.95", "threshold = 1.5"),
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
    ("unknown config key", 2, "site.toml: linkage.threshhold: unknown key; did you mean 'threshold'?"),
    ("threshold outside (0, 1)", 2, "site.toml: linkage.threshold: 1.5 is not strictly between 0 and 1"),
    ("unknown comparison method", 2, "site.toml: linkage.comparisons[0].method: 'soundex' is not a comparison method"),
    ("blocking field no source provides", 2, "site.toml: linkage.blocking[1][0]: no source maps field 'postcode'"),
]


@pytest.mark.parametrize(("case", "code", "message"), BAD_INPUTS, ids=[c for c, _, _ in BAD_INPUTS])
def test_bad_input_gets_one_clear_error_and_leaves_the_previous_output(small_site: Path, linked_once: Path,
                                                                       tmp_path: Path, case: str, code: int,
                                                                       message: str) -> None:
    site = tmp_path / "site"
    os.system(f"cp -a '{small_site}' '{site}'")
    out = tmp_path / "cohort"
    os.system(f"cp -a '{linked_once}' '{out}'")
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
    os.system(f"cp -a '{small_site}' '{site}'")
    out = tmp_path / "cohort"
    os.system(f"cp -a '{linked_once}' '{out}'")
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
