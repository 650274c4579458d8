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
