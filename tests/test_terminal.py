"""The terminal: progress bars on a terminal, plain progress lines under cron, a summary table at
the end of every command, and `--json` for scripts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from linkcare import log
from linkcare.cli import cli


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal() -> None:
    stream = _Terminal()
    log.configure_logging(0, stream=stream)
    try:
        with log.progress("compare", 1_000, "pairs") as advance:
            for _ in range(4):
                advance(250)
    finally:
        log.configure_logging(0)
    drawn = stream.getvalue()
    assert "compare" in drawn and "1000/1000" in drawn and "pairs" in drawn and "━" in drawn


def test_progress_logs_plain_lines_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    log.configure_logging(0, stream=stream)
    monkeypatch.setattr(log, "PROGRESS_EVERY_SECONDS", 0.0)
    try:
        with log.progress("compare", 1_000, "pairs") as advance:
            advance(250)
            advance(750)
    finally:
        log.configure_logging(0)
    lines = stream.getvalue().splitlines()
    assert [line.split(" ", 1)[1].rsplit(",", 1)[0] for line in lines] == [
        "INFO compare: 250 of 1,000 pairs (25%)", "INFO compare: 1,000 of 1,000 pairs (100%)"]
    assert "━" not in stream.getvalue()


def test_quiet_shows_no_progress_even_on_a_terminal() -> None:
    stream = _Terminal()
    log.configure_logging(-1, stream=stream)
    try:
        with log.progress("compare", 10, "pairs") as advance:
            advance(10)
    finally:
        log.configure_logging(0)
    assert stream.getvalue() == ""


def _json(args: list[str]) -> dict:
    result = CliRunner().invoke(cli, ["-q", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # the whole of standard output is one JSON document


def test_every_command_prints_its_summary_as_json(small_site: Path, tmp_path: Path) -> None:
    config = str(small_site / "site.toml")
    checked = _json(["validate", config])
    assert checked["command"] == "validate" and checked["valid"] is True
    assert [s["name"] for s in checked["sources"]] == ["gp", "apc", "ae", "outpatients", "social_care", "gp_events"]

    linked = _json(["link", config, "--out", str(tmp_path / "cohort")])
    assert linked["command"] == "link" and linked["persons"] > 1_000
    assert {s["source"] for s in linked["sources"]} == {"gp", "apc", "ae", "outpatients", "social_care", "gp_events"}
    assert {"records", "rejected", "linked_share", "deterministic", "probabilistic"} <= set(linked["sources"][0])
    assert [p["blocking"] for p in linked["passes"]] == ["nhs", "la_id", "birth_year+birth_month+area"]
    assert linked["stages"][0]["stage"] == "read and standardise"

    trained = _json(["train", config, "--cohort", str(tmp_path / "cohort"), "--out", str(tmp_path / "model")])
    assert trained["command"] == "train"
    assert set(trained["metrics"]["models"]) == {"gradient_boosting", "logistic"}
    assert 0.5 < trained["metrics"]["models"]["logistic"]["auroc"] <= 1.0

    scored = _json(["stratify", config, "--cohort", str(tmp_path / "cohort"), "--model", str(tmp_path / "model"),
                    "--out", str(tmp_path / "risk")])
    assert scored["command"] == "stratify" and scored["people"] > 1_000
    assert [t["tier"] for t in scored["tiers"]] == ["case management", "high risk", "moderate risk", "low risk"]
    assert sum(t["people"] for t in scored["tiers"]) == scored["people"]

    made = _json(["synth", str(tmp_path / "site2"), "--people", "200", "--seed", "3"])
    assert made["command"] == "synth" and made["people"] == 200 and made["rows"]["gp_registrations"] > 0


def test_every_command_ends_with_a_summary_table(small_site: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    config = str(small_site / "site.toml")
    result = runner.invoke(cli, ["-q", "link", config, "--out", str(tmp_path / "cohort")])
    assert result.stdout.splitlines()[0].split() == ["source", "records", "rejected", "linked", "deterministic",
                                                     "probabilistic"]
    result = runner.invoke(cli, ["-q", "validate", config])
    assert result.stdout.splitlines()[0].split() == ["source", "kind", "columns", "fields", "path"]
    result = runner.invoke(cli, ["-q", "synth", str(tmp_path / "site2"), "--people", "200"])
    assert result.stdout.splitlines()[0].split() == ["extract", "rows"]
