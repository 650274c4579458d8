"""Dates as extracts hold them: every text form, a format per event column and field, Parquet date
and timestamp columns read natively, the row checks' reasons, and `link` end to end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli
from linkcare.cohort.events import event_exprs
from linkcare.config import Config, check_config, load_config
from linkcare.linkage.prepare import read_records
from linkcare.sources.read import scan_source

DAY = dt.date(2024, 3, 15)
TOKENS = [f"{i:032x}" for i in range(1, 7)]

SITE = """\
version = 1
reference_date = "2026-03-31"

[[sources]]
name = "gp"
path = "gp.csv"
id = "Patient_ID"
kind = "gp_registrations"
events = {{ ethnicity = [], death_date = [] }}
fields = {{ nhs = "NHS", birth_year = "Birth_Year", sex = "Sex" }}

[[sources]]
name = "apc"
path = "{apc}"
id = "EPIKEY"
kind = "apc"
events = {{ {events} }}
fields = {{ nhs = "NHS", sex = "SEX"{fields} }}

[linkage]
link_type = "link_only"
deterministic = [["nhs", "sex"]]
blocking = [["nhs"], ["birth_year"]]

[[linkage.comparisons]]
field = "nhs"
method = "exact"

[[linkage.comparisons]]
field = "sex"
method = "exact"
"""


def _gp(folder: Path) -> None:
    pl.DataFrame({
        "Patient_ID": [f"P{i}" for i in range(len(TOKENS))], "NHS": TOKENS,
        "Birth_Year": [str(1940 + i) for i in range(len(TOKENS))], "Sex": ["M", "F"] * (len(TOKENS) // 2),
        "Registration_Date": ["2001-01-01 00:00:00.000"] * len(TOKENS), "Practice_Code": ["A1"] * len(TOKENS),
    }).write_csv(folder / "gp.csv")


def _site(folder: Path, admidate: pl.Series, *, parquet: bool = False, events: str = "",
          fields: str = "", extra: dict[str, pl.Series] | None = None) -> Path:
    """Write a two-source site whose APC extract has the given ADMIDATE column; return its config."""
    folder.mkdir(parents=True, exist_ok=True)
    _gp(folder)
    n = admidate.len()
    apc = pl.DataFrame({
        "EPIKEY": [f"E{i}" for i in range(n)], "NHS": [TOKENS[i % len(TOKENS)] for i in range(n)],
        "SEX": [["M", "F"][i % len(TOKENS) % 2] for i in range(n)], "ADMIMETH": ["21"] * n,
    }).with_columns(admidate.alias("ADMIDATE"), *[v.alias(k) for k, v in (extra or {}).items()])
    name = "apc.parquet" if parquet else "apc.csv"
    if parquet:
        apc.write_parquet(folder / name)
    else:
        apc.write_csv(folder / name)
    config = folder / "site.toml"
    config.write_text(SITE.format(apc=name, events=events or "end_date = []", fields=fields))
    return config


def _start_dates(config: Config) -> list[dt.date | None]:
    """Return the APC events' start dates as `link` reads them, after the row checks pass."""
    read_records(config)  # the row checks: a DataError above max_reject_share
    source = config.sources[1]
    lf = scan_source(source)
    return lf.select(event_exprs(source, lf.collect_schema())).collect()["start_date"].to_list()


def _link(config: Path, out: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["-q", "link", str(config), "--out", str(out)])
    return result.exit_code, [line for line in result.stderr.splitlines() if line.startswith("Error:")]


# --- each form of date ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "2024-03-15",                   # ISO date
    "20240315",                     # YYYYMMDD
    "2024-03-15T10:22:00",          # ISO date-time
    "2024-03-15 10:22:00",          # ISO date-time with a space
    "2024-03-15T10:22:00Z",         # ISO date-time in UTC: the date as written
    "2024-03-15 00:00:00.000",      # SQL Server datetime as text
    "2024-03-15 00:00:00.0000000",  # SQL Server datetime2 as text
])
def test_csv_text_in_a_default_form_is_read_without_a_format(tmp_path: Path, text: str) -> None:
    config = load_config(_site(tmp_path, pl.Series([text, f" {text} ", ""])))
    assert _start_dates(config) == [DAY, DAY, None]


@pytest.mark.parametrize(("text", "fmt"), [
    ("15/03/2024", "%d/%m/%Y"),                # UK date
    ("15/03/2024 10:22", "%d/%m/%Y %H:%M"),    # UK date and time
    ("03/15/2024", "%m/%d/%Y"),                # US date, when the format says so
    ("15-Mar-2024", "%d-%b-%Y"),
])
def test_csv_text_in_the_events_format_is_read_with_it(tmp_path: Path, text: str, fmt: str) -> None:
    config = load_config(_site(tmp_path, pl.Series([text]), events=f'start_date = {{ format = "{fmt}" }}'))
    assert config.sources[1].events["start_date"] == "ADMIDATE"  # the kind's default column kept
    assert dict(config.sources[1].event_formats) == {"start_date": fmt}
    assert _start_dates(config) == [DAY]


def test_an_event_table_may_rename_the_column_and_give_its_format(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path, pl.Series(["2024-03-15"]), extra={"Adm": pl.Series(["15/03/2024"])},
                               events='start_date = { column = "Adm", format = "%d/%m/%Y" }, end_date = []'))
    assert _start_dates(config) == [DAY]


def test_a_parquet_date_column_is_read_natively(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path, pl.Series([DAY, None]), parquet=True))
    assert pl.read_parquet(config.sources[1].path).schema["ADMIDATE"] == pl.Date
    assert _start_dates(config) == [DAY, None]


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
def test_a_parquet_timestamp_column_is_read_natively(tmp_path: Path, unit: str) -> None:
    # As SQL Server's datetime lands in Parquet: a timestamp without a time zone. A format for text
    # does not apply to it.
    stamps = pl.Series([dt.datetime(2024, 3, 15, 0, 0), dt.datetime(2024, 3, 15, 23, 59, 59)],
                       dtype=pl.Datetime(unit))  # type: ignore[arg-type]
    config = load_config(_site(tmp_path, stamps, parquet=True, events='start_date = { format = "%d/%m/%Y" }'))
    assert _start_dates(config) == [DAY, DAY]


def test_a_time_zone_aware_parquet_timestamp_gives_the_date_in_its_own_zone(tmp_path: Path) -> None:
    # 23:30 UTC on 15 June is 00:30 on the 16th in London (BST); 23:30 UTC on 15 March is 23:30 GMT.
    utc = pl.Series([dt.datetime(2024, 6, 15, 23, 30), dt.datetime(2024, 3, 15, 23, 30)]).dt.replace_time_zone("UTC")
    config = load_config(_site(tmp_path / "utc", utc, parquet=True))
    assert _start_dates(config) == [dt.date(2024, 6, 15), DAY]
    london = load_config(_site(tmp_path / "london", utc.dt.convert_time_zone("Europe/London"), parquet=True))
    assert _start_dates(london) == [dt.date(2024, 6, 16), DAY]


def test_a_parquet_text_column_is_read_as_text(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path, pl.Series(["2024-03-15 00:00:00.000"]), parquet=True))
    assert _start_dates(config) == [DAY]


def test_a_field_from_a_parquet_timestamp_is_a_date_and_gives_its_parts(tmp_path: Path) -> None:
    births = pl.Series([dt.datetime(1948, 3, 1)] * 2)
    config = load_config(_site(tmp_path, pl.Series([DAY, DAY]), parquet=True, extra={"DOB": births},
                               fields=', dob = "DOB", birth_year = { column = "DOB", format = "%Y", part = "year" }'))
    frame = read_records(config).frame.filter(pl.col("source") == "apc")
    assert frame["dob"].to_list() == ["1948-03-01"] * 2
    assert frame["birth_year"].to_list() == ["1948"] * 2


def test_a_field_format_reads_sql_server_datetime_text(tmp_path: Path) -> None:
    births = pl.Series(["1948-03-01 00:00:00.000"])
    config = load_config(_site(tmp_path, pl.Series([DAY.isoformat()]), extra={"DOB": births},
                               fields=', dob = { column = "DOB", format = "%Y-%m-%d %H:%M:%S%.f" }'))
    assert read_records(config).frame.filter(pl.col("source") == "apc")["dob"].to_list() == ["1948-03-01"]


def test_an_event_date_after_the_reference_date_is_rejected_whatever_its_form(tmp_path: Path) -> None:
    texts = ["2024-03-15T10:00:00"] * 199 + ["2026-04-01 00:00:00.000"]
    config = load_config(_site(tmp_path, pl.Series(texts)))
    found = read_records(config).rejects["apc"]
    assert found.frame.select("row", "reason").rows() == [
        (200, "ADMIDATE: a date after the reference date 2026-03-31")]


# --- dates that cannot be read ----------------------------------------------------------------------


def test_a_few_unreadable_dates_are_set_aside_with_their_reason(tmp_path: Path) -> None:
    texts = ["2024-03-15"] * 297 + ["15/03/2024", "2024-02-30", "2024-03-15 25:00:00"]
    config = load_config(_site(tmp_path, pl.Series(texts)))
    found = read_records(config).rejects["apc"]
    assert found.frame.select("row", "reason").rows() == [
        (298, 'ADMIDATE: a date with slashes, which needs a format: set format = "%d/%m/%Y" under '
              "events.start_date (day first)"),
        (299, "ADMIDATE: not a date (YYYY-MM-DD, YYYYMMDD, or YYYY-MM-DD with a time)"),
        (300, "ADMIDATE: not a date (YYYY-MM-DD, YYYYMMDD, or YYYY-MM-DD with a time)"),
    ]


def test_slashed_dates_without_a_format_stop_the_run_saying_which_format_to_set(tmp_path: Path) -> None:
    config = _site(tmp_path, pl.Series(["15/03/2024", "16/03/2024", "2024-03-17"]))
    code, errors = _link(config, tmp_path / "cohort")
    assert code == 1
    assert errors == [
        f"Error: {tmp_path / 'apc.csv'}: 2 of 3 row(s) (66.7%) fail the row checks, above [validation] "
        "max_reject_share = 0.01: column ADMIDATE (events.start_date): 2 row(s) a date with slashes, which "
        'needs a format: set format = "%d/%m/%Y" under events.start_date (day first), the first at row 1; '
        "fix the extract, or raise max_reject_share if so many bad rows are expected"]
    assert not (tmp_path / "cohort").exists()


def test_dates_in_another_format_than_the_configured_one_stop_the_run(tmp_path: Path) -> None:
    config = _site(tmp_path, pl.Series(["2024-03-15", "2024-03-16"]),
                   events='start_date = { format = "%d/%m/%Y" }, end_date = []')
    code, errors = _link(config, tmp_path / "cohort")
    assert code == 1
    assert errors == [
        f"Error: {tmp_path / 'apc.csv'}: 2 of 2 row(s) (100.0%) fail the row checks, above [validation] "
        "max_reject_share = 0.01: column ADMIDATE (events.start_date): 2 row(s) not a date in the format "
        "%d/%m/%Y, the first at row 1; fix the extract, or raise max_reject_share if so many bad rows are expected"]
    assert not (tmp_path / "cohort").exists()


def test_a_field_in_another_format_names_the_field(tmp_path: Path) -> None:
    config = _site(tmp_path, pl.Series(["2024-03-15"]), extra={"DOB": pl.Series(["01/03/1948"])},
                   fields=', dob = { column = "DOB", format = "%Y-%m-%d" }')
    code, errors = _link(config, tmp_path / "cohort")
    assert code == 1
    assert "column DOB (fields.dob): 1 row(s) not a date in the format %Y-%m-%d, the first at row 1" in errors[0]
    assert "01/03/1948" not in errors[0]


# --- the config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("events", "message"), [
    ('start_date = { format = "%d/%q/%Y" }',
     "sources[1].events.start_date.format: '%q' is not a date directive; use %Y, %m, %d and the like; "
     'e.g. format = "%d/%m/%Y"'),
    ('start_date = { format = "%d/%m" }',
     'sources[1].events.start_date.format: has no year; a date format needs %Y or %y; e.g. format = "%d/%m/%Y"'),
    ('start_date = { format = 3 }',
     'sources[1].events.start_date.format: must be a strftime date format; e.g. format = "%d/%m/%Y"'),
    ('start_date = { colum = "ADMIDATE" }',
     "sources[1].events.start_date.colum: unknown key; did you mean 'column'? allowed keys: column, format"),
    ('start_date = { column = 1 }',
     'sources[1].events.start_date.column: must be a column name, not an integer; e.g. column = "ADMIDATE"'),
    ('admission_method = { column = "ADMIMETH", format = "%Y" }',
     "sources[1].events.admission_method.format: applies only to the event dates (start_date, end_date, "
     "registration_date, death_date, deregistration_date); remove it"),
])
def test_each_event_format_rule_names_its_key(tmp_path: Path, events: str, message: str) -> None:
    config = _site(tmp_path, pl.Series(["2024-03-15"]), events=events)
    assert [str(p) for p in check_config(config).problems] == [f"{config}: {message}"]


def test_an_event_column_without_a_table_has_no_format(tmp_path: Path) -> None:
    config = load_config(_site(tmp_path, pl.Series(["2024-03-15"]), events='start_date = "ADMIDATE"'))
    assert dict(config.sources[1].event_formats) == {}


# --- end to end -----------------------------------------------------------------------------------


def test_link_reads_every_form_into_events(tmp_path: Path) -> None:
    # The spine's registrations as SQL Server text (in _gp), APC as Parquet: admissions a timestamp,
    # discharges UK text with their format.
    n = 12
    stamps = pl.Series([dt.datetime(2024, 3, 15, 10, 22) + dt.timedelta(days=i) for i in range(n)])
    discharged = pl.Series([(dt.date(2024, 3, 16) + dt.timedelta(days=i)).strftime("%d/%m/%Y") for i in range(n)])
    config = _site(tmp_path, stamps, parquet=True, extra={"DISDATE": discharged},
                   events='end_date = { format = "%d/%m/%Y" }')
    out = tmp_path / "cohort"
    code, errors = _link(config, out)
    assert (code, errors) == (0, [])
    assert not (out / "rejects").exists()  # no row was rejected
    events = pl.read_parquet(out / "events.parquet")
    apc = events.filter(pl.col("source") == "apc").sort("record_id")
    assert apc.schema["start_date"] == pl.Date and apc.null_count()["start_date"].item() == 0
    starts = {f"E{i}": DAY + dt.timedelta(days=i) for i in range(n)}
    assert dict(zip(apc["record_id"], apc["start_date"], strict=True)) == starts
    assert dict(zip(apc["record_id"], apc["end_date"], strict=True)) == {
        k: v + dt.timedelta(days=1) for k, v in starts.items()}
    gp = events.filter(pl.col("source") == "gp")
    assert gp["start_date"].to_list() == [dt.date(2001, 1, 1)] * len(TOKENS)
    assert apc["person_id"].null_count() == 0
