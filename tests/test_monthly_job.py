"""The documented monthly job (docs/monthly.sh), run unchanged over three monthly snapshots of a
synthetic site (`linkcare synth --months 3`) as cron would run it, then on doctored inputs (issue 15)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "monthly.sh"
DATED = re.compile(r"\d{4}-\d{2}-\d{2}")


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three monthly snapshots of a 1,500-person site, oldest first."""
    out = tmp_path_factory.mktemp("months") / "site"
    result = CliRunner().invoke(cli, ["-q", "synth", str(out), "--people", "1500", "--seed", "5", "--months", "3"])
    assert result.exit_code == 0, result.output
    found = sorted(p for p in out.iterdir() if p.is_dir() and DATED.fullmatch(p.name))
    assert len(found) == 3
    return found


def _tools(folder: Path) -> Path:
    """Write a folder with `linkcare` (this interpreter's) and a `mail` that keeps what it is sent."""
    folder.mkdir(parents=True, exist_ok=True)
    linkcare = folder / "linkcare"
    linkcare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m linkcare "$@"\n', encoding="utf-8")
    mail = folder / "mail"
    mail.write_text('#!/bin/sh\n{ echo "subject: $2"; echo "to: $3"; cat; } >> "$MAIL_SENT"\n', encoding="utf-8")
    for tool in (linkcare, mail):
        tool.chmod(0o755)
    return folder


def _deliver(month: Path, site: Path) -> None:
    """Put a month's extracts into the site folder, as the month's delivery replaces last month's,
    with the site's own config, whose reference_date is "auto"."""
    site.mkdir(parents=True, exist_ok=True)
    for item in month.iterdir():
        if item.is_file() and item.name != "site.toml":
            shutil.copy(item, site / item.name)
    text = (month / "site.toml").read_text(encoding="utf-8")
    text, n = re.subn(r'^reference_date = "[^"]*"', 'reference_date = "auto"', text, count=1, flags=re.M)
    assert n == 1
    (site / "site.toml").write_text(text, encoding="utf-8")


def _run(site: Path, tools: Path, today: dt.date, sent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LINKCARE_SITE": str(site), "LINKCARE_BIN": str(tools), "LINKCARE_TODAY": today.isoformat(),
           "LINKCARE_MAILTO": "team@example.nhs.uk", "MAIL_SENT": str(sent), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900, check=False)


def _log(site: Path) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in sorted((site / "logs").glob("*.log")))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def test_the_monthly_script_runs_month_after_month_without_editing_the_config(months: list[Path],
                                                                             tmp_path: Path) -> None:
    site, tools, sent = tmp_path / "site", _tools(tmp_path / "bin"), tmp_path / "mail.txt"
    previous_ids: pl.DataFrame | None = None
    for i, month in enumerate(months):
        _deliver(month, site)
        end = dt.date.fromisoformat(month.name)
        run = _run(site, tools, end + dt.timedelta(days=3), sent)  # cron runs on the 3rd
        assert run.returncode == 0, _log(site)[-3000:]
        cohort, risk = site / "cohort" / month.name, site / "risk" / month.name
        assert (site / "cohort" / "latest").resolve() == cohort.resolve()
        assert (site / "risk" / "latest").resolve() == risk.resolve()
        facts = _manifest(cohort)
        assert facts["as_of"]["date"] == month.name and facts["as_of"]["source"] == "auto"
        assert _manifest(risk)["index_date"] == month.name  # each month scores at its own month end
        # The worklists mark who is new since last month's (none before the first: everyone is new).
        assert _manifest(risk)["worklists"]["previous"] == (months[i - 1].name if i else None)
        index = pl.read_parquet(cohort / "person_index.parquet").select("source", "record_id", "person_id")
        if i == 0:
            assert not (cohort / "lineage.parquet").exists()
            assert "holds no earlier output yet" in _log(site)
        else:
            assert (cohort / "lineage.parquet").is_file()
            assert facts["previous"]["folder"] == months[i - 1].name
            assert previous_ids is not None
            kept = index.join(previous_ids, on=["source", "record_id"], suffix="_before")
            # Records seen last month keep their person's ID (a few move with merges and splits).
            assert kept.height > 0
            assert (kept["person_id"] == kept["person_id_before"]).mean() > 0.98
        previous_ids = index
    assert not sent.exists()  # nothing failed, nothing mailed
    log = _log(site)
    assert log.count("as of ") >= 6 and 'reference_date = "auto"' in log

    # The same files again, a month on: the unchanged-input check stops the job and it is mailed.
    last = dt.date.fromisoformat(months[-1].name)
    later = (last + dt.timedelta(days=40)).replace(day=3)
    run = _run(site, tools, later, sent)
    assert run.returncode == 1
    mailed = sent.read_text(encoding="utf-8")
    assert "subject: linkcare monthly job failed (exit 1)" in mailed and "to: team@example.nhs.uk" in mailed
    assert "byte-identical to the previous run's input" in mailed
    assert (site / "cohort" / "latest").resolve().name == months[-1].name  # latest stays on the last good month

    # A new delivery whose extracts stop long before the as-of date: the job runs, with stale warnings.
    for extract in site.glob("*.csv"):
        if extract.name != "areas.csv":
            lines = extract.read_text(encoding="utf-8").splitlines(keepends=True)
            extract.write_text("".join(lines[:-1]), encoding="utf-8")
    for extract in site.glob("*.parquet"):  # the GP clinical extract
        pl.read_parquet(extract).head(-1).write_parquet(extract)
    far = (last + dt.timedelta(days=100)).replace(day=3)
    run = _run(site, tools, far, sent)
    assert run.returncode == 0, _log(site)[-3000:]
    assert re.search(r"apc\.csv holds no events after \d{4}-\d{2}-\d{2}, \d+ days before the as-of date", _log(site))
