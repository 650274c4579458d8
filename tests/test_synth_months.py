"""`linkcare synth --months N`: monthly snapshots of one site, the same whatever N is, cut by dates,
with late records and corrections at their documented rates, and person IDs that carry over."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli
from linkcare.io.parquet import parquet_codecs
from linkcare.synth import MonthlyRates, SynthOptions, make_site, write_months, write_site
from linkcare.synth.audit import ID_COLUMN, measure_months
from linkcare.synth.extracts import SOURCE_NAMES, SOURCES
from linkcare.synth.months import (
    EVENT_SOURCES,
    month_end,
    month_index,
    monthly_plan,
    snapshot,
    snapshot_months,
)

REF = date(2026, 3, 31)
DATES = {"gp_registrations": "Registration_Date", "apc": "ADMIDATE", "ae": "Arrival_Date",
         "outpatients": "APPTDATE", "social_care": "Event_Start_Date"}
FOLDERS = ["2026-01-31", "2026-02-28", "2026-03-31"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _read(folder: Path, name: str) -> pl.DataFrame:
    return pl.read_csv(folder / f"{name}.csv", infer_schema=False)


def _gp_events(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(folder / "gp_events.parquet")


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("months") / "site"
    write_months(out, SynthOptions(people=1500, seed=3, reference_date=REF), 3)
    return out


def test_month_ends_and_their_configs(months: Path) -> None:
    assert sorted(p.name for p in months.iterdir()) == [*FOLDERS, "months.json"]
    assert snapshot_months(REF, 3) == [month_index(date(2026, m, 1)) for m in (1, 2, 3)]
    assert [month_end(m).isoformat() for m in snapshot_months(date(2024, 2, 29), 3)] == \
        ["2023-12-31", "2024-01-31", "2024-02-29"]
    index = json.loads((months / "months.json").read_text())
    assert list(index["months"]) == FOLDERS and index["monthly_rates"] == {
        "late_arrival": 0.05, "birth_month_corrected": 0.005, "nhs_filled": 0.02}
    for name in FOLDERS:
        folder = months / name
        assert f'reference_date = "{name}"' in (folder / "site.toml").read_text()
        meta = json.loads((folder / "synth.json").read_text())
        assert meta["reference_date"] == name and meta["site_reference_date"] == "2026-03-31"
        rows = {n: _read(folder, n).height for n in SOURCES} | {"gp_events": _gp_events(folder).height}
        assert meta["rows"] == rows == index["months"][name]["rows"]
        assert {p.name for p in (folder / "truth").iterdir()} == {"records.parquet", "persons.parquet",
                                                                  "revisions.parquet"}
        for path in (folder / "truth").iterdir():  # one compression, as every other output (io/parquet.py)
            assert parquet_codecs(path) == {"ZSTD"}, path


def test_a_month_end_is_the_same_whatever_the_number_of_months(months: Path, tmp_path: Path) -> None:
    write_months(tmp_path / "two", SynthOptions(people=1500, seed=3, reference_date=REF), 2)
    write_months(tmp_path / "six", SynthOptions(people=1500, seed=3, reference_date=REF), 6)
    for name in FOLDERS[1:]:
        assert _files(tmp_path / "two" / name) == _files(months / name), name
    for name in FOLDERS:
        assert _files(tmp_path / "six" / name) == _files(months / name), name
    assert len([p for p in (tmp_path / "six").iterdir() if p.is_dir()]) == 6


def test_each_month_holds_what_had_arrived_by_its_end(months: Path) -> None:
    previous: dict[str, pl.DataFrame] = {}
    for name in FOLDERS:
        folder, end = months / name, name
        truth = pl.read_parquet(folder / "truth" / "records.parquet")
        ids = pl.concat([_read(folder, n).select(pl.lit(SOURCE_NAMES[n]).alias("source"),
                                                 pl.col(ID_COLUMN[n]).alias("record_id")) for n in SOURCES]
                        + [_gp_events(folder).select(pl.lit("gp_events").alias("source"),
                                                     pl.col("Event_ID").alias("record_id"))])
        assert truth.select("source", "record_id").sort(["source", "record_id"]).equals(
            ids.sort(["source", "record_id"]))
        for n in SOURCES:
            frame = _read(folder, n)
            assert frame[DATES[n]].max() <= end, (name, n)  # ISO dates compare as text
            for later in ("DISDATE", "Event_End_Date", "Date_Of_Death"):
                if later in frame.columns:
                    assert (frame[later].drop_nulls() <= end).all(), (name, later)
            if n in previous:
                # New records every month, and every record of last month still there, under its id.
                old, new = previous[n][ID_COLUMN[n]], frame[ID_COLUMN[n]]
                assert old.is_in(new.implode()).all() and new.len() > old.len(), (name, n)
            previous[n] = frame
        people = pl.read_parquet(folder / "truth" / "persons.parquet")
        assert people["person"].sort().equals(truth["person"].unique().sort())
    # The same record belongs to the same person in every month.
    truths = [pl.read_parquet(months / n / "truth" / "records.parquet") for n in FOLDERS]
    joined = truths[0].join(truths[2], on=["source", "record_id"], suffix="_last")
    assert joined.height == truths[0].height and (joined["person"] == joined["person_last"]).all()


def test_the_spine_follows_registrations_moves_changes_of_practice_and_deaths(months: Path) -> None:
    last = pl.read_parquet(months / FOLDERS[2] / "truth" / "persons.parquet")
    first_people = pl.read_parquet(months / FOLDERS[0] / "truth" / "persons.parquet")
    gp = [_read(months / n, "gp_registrations") for n in FOLDERS]
    truth = pl.read_parquet(months / FOLDERS[0] / "truth" / "records.parquet").filter(pl.col("source") == "gp")
    first = gp[0].join(truth, left_on="Patient_ID", right_on="record_id").join(
        last.select("person", "lsoa", "previous_lsoa", "move_date", "practice", "previous_practice",
                    "practice_change_date", "death_date"), on="person")
    end = date(2026, 1, 31)
    moved_later = first.filter(pl.col("move_date") > end)
    died_later = first.filter(pl.col("death_date") > end)
    assert moved_later.height > 0 and died_later.height > 0
    assert (moved_later["LSOA"] == moved_later["previous_lsoa"]).all()
    assert died_later["Date_Of_Death"].is_null().all()
    # (A site this small has one practice; changes of practice are tested on a larger one below.)
    assert first.filter(pl.col("move_date") <= end)["LSOA"].equals(first.filter(pl.col("move_date") <= end)["lsoa"])
    later = first_people.join(died_later.select("person"), on="person", how="semi")
    assert later["alive_at_reference"].all() and later["death_date"].is_null().all()
    assert (first_people.join(moved_later.select("person", "previous_lsoa"), on="person")
            .select((pl.col("lsoa") == pl.col("previous_lsoa_right")).all()).item())
    # Risk and outcome are known only at the site's reference date.
    assert first_people["risk"].is_null().all() and last["risk"].is_not_null().any()
    # New registrations: people registered after January are not in January's spine.
    assert (gp[0]["Registration_Date"] <= "2026-01-31").all()
    assert gp[2].filter(pl.col("Registration_Date") > "2026-02-28").height > 0


def test_the_spine_shows_the_practice_before_a_later_change_of_practice() -> None:
    site = make_site(SynthOptions(people=12_500, seed=4, reference_date=REF))  # two practices
    month = month_index(date(2025, 12, 31))
    snap = snapshot(site, monthly_plan(site, MonthlyRates(), np.random.default_rng(1)), month, month_index(REF))
    gp = snap.site.extracts["gp_registrations"].join(
        site.truth_records.filter(pl.col("source") == "gp"), left_on="Patient_ID", right_on="record_id").join(
        site.truth_persons.select("person", "practice", "previous_practice", "practice_change_date"), on="person")
    later = gp["practice_change_date"] > date(2025, 12, 31)
    assert later.sum() > 10
    assert (gp.filter(later)["Practice_Code"] == gp.filter(later)["previous_practice"]).all()
    assert (gp.filter(~later.fill_null(False))["Practice_Code"] == gp.filter(~later.fill_null(False))["practice"]).all()
    persons = snap.site.truth_persons.join(gp.filter(later).select("person"), on="person", how="semi")
    assert persons["practice_change_date"].is_null().all() and persons["previous_practice"].is_null().all()


def test_the_last_month_is_the_plain_site_less_what_is_still_to_come(months: Path, tmp_path: Path) -> None:
    """Documented in README.md: records whose late arrival or correction falls after the reference
    date are missing from (or uncorrected in) the last month, as they would be at a real month end."""
    write_site(tmp_path / "plain", SynthOptions(people=1500, seed=3, reference_date=REF))
    last = months / FOLDERS[2]
    revisions = pl.read_parquet(last / "truth" / "revisions.parquet")
    pending = revisions.filter(pl.col("revision") != "late", pl.col("corrected").is_null())
    assert pending.height > 0 and (revisions.filter(pl.col("revision") != "late")["arrived"] <= REF).all()
    for n in SOURCES:
        plain, snap, key = _read(tmp_path / "plain", n), _read(last, n), ID_COLUMN[n]
        missing = plain.join(snap, on=key, how="anti")
        # What is missing is late records that arrive after the reference date (none of the spine).
        assert n in EVENT_SOURCES or missing.height == 0
        assert not missing[key].is_in(revisions["record_id"].implode()).any()
        differ = plain.join(snap, on=list(plain.columns), how="anti", nulls_equal=True).join(
            missing, on=key, how="anti")
        assert set(differ[key]) == set(pending.filter(pl.col("source") == SOURCE_NAMES[n])["record_id"]), n
        assert snap.join(plain, on=key, how="anti").height == 0
    # Without late records and corrections, the last month is the plain site, byte for byte.
    write_months(tmp_path / "exact", SynthOptions(people=1500, seed=3, reference_date=REF), 1,
                 MonthlyRates(late_arrival=0.0, birth_month_corrected=0.0, nhs_filled=0.0))
    exact, plain_files = _files(tmp_path / "exact" / FOLDERS[2]), _files(tmp_path / "plain")
    meta = json.loads(exact.pop("synth.json"))
    assert {k: v for k, v in meta.items() if k not in ("site_reference_date", "monthly_rates", "changes")} == \
        json.loads(plain_files.pop("synth.json"))
    assert pl.read_parquet(tmp_path / "exact" / FOLDERS[2] / "truth" / "revisions.parquet").height == 0
    del exact["truth/revisions.parquet"]
    assert exact == plain_files


def test_the_plan_holds_each_documented_rate_exactly() -> None:
    site = make_site(SynthOptions(people=1000, seed=9, reference_date=REF))
    rates = MonthlyRates()
    plan = monthly_plan(site, rates, np.random.default_rng(0))
    for name, frame in plan.records.items():
        n = frame.height
        late = frame.filter(pl.col("arrival") > pl.col("month"))
        assert late.height == (round(rates.late_arrival * n) if name in EVENT_SOURCES else 0), name
        assert set(late.select((pl.col("arrival") - pl.col("month")).unique())["arrival"]) <= {1, 2, 3}
        count = dict(frame.group_by("revision").len().iter_rows())
        assert count.get("birth_month", 0) == round(rates.birth_month_corrected * n), name
        assert count.get("nhs_token", 0) == (round(rates.nhs_filled * n) if name in EVENT_SOURCES else 0), name
        fixed = frame.filter(pl.col("revision").is_not_null())
        assert fixed.select(((pl.col("fixed") - pl.col("arrival")).is_between(1, 3)).all()).item()


def test_the_documented_rates_measured_on_a_generated_site(tmp_path: Path) -> None:
    """README.md quotes these figures, measured on this site (10,000 people, seed 42, 6 months)."""
    rates = MonthlyRates()
    write_months(tmp_path / "site", SynthOptions(people=10_000, seed=42, reference_date=REF), 6, rates)
    folders = sorted(p for p in (tmp_path / "site").iterdir() if p.is_dir())
    measured = measure_months(folders)

    def within(share: float, rate: float, n: float) -> bool:  # four standard errors of a binomial share
        return abs(share - rate) <= 4 * math.sqrt(rate * (1 - rate) / n)

    assert within(measured["late_share"], rates.late_arrival, measured["new_event_records"])
    assert within(measured["nhs_filled_share"], rates.nhs_filled, measured["new_event_records"])
    assert within(measured["birth_month_corrected_share"], rates.birth_month_corrected, measured["new_records"])
    quoted = {"late_share": 0.0532, "birth_month_corrected_share": 0.0061, "nhs_filled_share": 0.0189,
              "new_registrations_per_month": 42.6, "deaths_per_month": 11.0, "moves_per_month": 20.4}
    assert {k: round(measured[k], 4) for k in quoted} == quoted, "update the figures README.md quotes"
    # The same figures from the truth each month writes.
    revisions = pl.read_parquet(folders[-1] / "truth" / "revisions.parquet")
    filled = revisions.filter(pl.col("revision") == "nhs_token",
                              pl.col("corrected") > date.fromisoformat(folders[0].name))
    assert filled.height == round(measured["nhs_filled_share"] * measured["new_event_records"])


def test_the_cli_writes_month_ends_and_refuses_what_it_cannot(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["synth", str(tmp_path / "m"), "--people", "300", "--months", "2",
                                 "--late-arrival", "0.1"])
    assert result.exit_code == 0, result.output
    assert "Wrote 2 month ends" in result.output and "2026-02-28" in result.output
    meta = json.loads((tmp_path / "m" / "2026-03-31" / "synth.json").read_text())
    assert meta["monthly_rates"]["late_arrival"] == 0.1
    result = runner.invoke(cli, ["synth", str(tmp_path / "n"), "--people", "300", "--nhs-filled", "0.1"])
    assert result.exit_code == 2 and "Error: --nhs-filled needs --months" in result.output
    result = runner.invoke(cli, ["synth", str(tmp_path / "n"), "--people", "300", "--months", "2",
                                 "--reference-date", "2026-03-30"])
    assert result.exit_code == 2
    assert ("Error: --reference-date 2026-03-30 is not the last day of a month; with --months the snapshots are "
            "month ends ending at the reference date") in result.output
    result = runner.invoke(cli, ["synth", str(tmp_path / "n"), "--months", "13"])
    assert result.exit_code == 2
    help_text = runner.invoke(cli, ["synth", "--help"]).output
    for option in ("--months", "--late-arrival", "--birth-month-corrected", "--nhs-filled"):
        assert option in help_text


def test_person_ids_carry_over_from_one_month_to_the_next(months: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    first, second = tmp_path / "c1", tmp_path / "c2"
    for folder, out, extra in ((FOLDERS[0], first, []), (FOLDERS[1], second, ["--previous", str(first)])):
        result = runner.invoke(cli, ["-q", "link", str(months / folder / "site.toml"), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
    truth = pl.read_parquet(months / FOLDERS[0] / "truth" / "records.parquet")
    index = [pl.read_parquet(c / "person_index.parquet", columns=["source", "record_id", "person_id"])
             for c in (first, second)]
    both = index[0].join(truth, on=["source", "record_id"]).join(index[1], on=["source", "record_id"],
                                                                 suffix="_next")
    assert both.height == index[0].height  # a row rejected in one month is rejected in the next too
    # Each true person's ID is the one most of their records carry; kept if the next month gives the same.
    def modal(column: str) -> pl.DataFrame:
        return (both.group_by("person", column).len().sort(["person", "len", column], descending=[False, True, False])
                .group_by("person", maintain_order=True).first().select("person", column))

    people = modal("person_id").join(modal("person_id_next"), on="person")
    kept = (people["person_id"] == people["person_id_next"]).mean()
    assert kept is not None and kept >= 0.995, kept
    assert (pl.read_parquet(second / "lineage.parquet")["change"] == "kept").mean() > 0.95
