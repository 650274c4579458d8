"""What an extract holds, before a first link: per mapped field its completeness and distinct
values, the year range of a birth field and the date range of each event date; counts and dates
only, never a value.

Everything is one lazy aggregation over the extract (linkcare.sources.read.scan_source), so the
file is read once and no row is held. The fields' values are read as the row checks and the linkage
read them (linkcare.sources.checks, linkcare.sources.read): an empty value is missing; the
standardised value is the one blocking and comparison see.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from linkcare.config import Config, Source
from linkcare.sources.checks import birth_year_of, event_date_columns, is_birth_field
from linkcare.sources.dates import read_date, read_types
from linkcare.sources.read import scan_source, unreadable_error


@dataclass(frozen=True)
class FieldProfile:
    """One mapped field of one source: how often its column holds a value, and how many distinct ones."""

    field: str
    column: str
    present: int  # rows whose column holds a value (not empty)
    distinct_in_extract: int  # distinct values as the extract writes them (trimmed)
    #: for a birth field, the first and last birth year that parses (never a full date of birth)
    first_year: int | None = None
    last_year: int | None = None
    is_birth: bool = False


@dataclass(frozen=True)
class DateProfile:
    """One event date column of one source: how many rows hold a date, and the first and last."""

    key: str  # events.<key>
    column: str
    present: int
    dates: int  # rows whose value parses as a date
    first: dt.date | None
    last: dt.date | None


@dataclass(frozen=True)
class ColumnsProfile:
    """A source's rows, and the profile of each mapped field and event date column."""

    rows: int
    fields: tuple[FieldProfile, ...]
    dates: tuple[DateProfile, ...]


def profile_columns(source: Source, config: Config) -> ColumnsProfile:
    """Return the rows of a source and the profile of its mapped fields and event dates, in one pass.

    A birth field's year range is given for the field that holds the year (not for the month or
    day read from the same column)."""
    lf = scan_source(source)
    types = read_types(lf.collect_schema())
    exprs: list[pl.Expr] = [pl.len().alias("rows")]
    # A column mapped to several fields (MYDOB's year and month) is counted once.
    columns = sorted({spec.column for spec in source.fields.values()})
    for j, column in enumerate(columns):
        as_written = pl.col(column).cast(pl.String).str.strip_chars()
        present = as_written.is_not_null() & (as_written != "")
        exprs += [present.sum().alias(f"c{j}_present"), as_written.filter(present).n_unique().alias(f"c{j}_raw")]
    for i, (name, spec) in enumerate(sorted(source.fields.items())):
        year = birth_year_of(name, spec, types.get(spec.column)) if spec.part in (None, "year") else None
        if year is not None:
            exprs += [year.min().alias(f"f{i}_first"), year.max().alias(f"f{i}_last")]
    dates = event_date_columns(source, types)
    for i, (key, column) in enumerate(dates):
        raw = pl.col(column).cast(pl.String).str.strip_chars()
        parsed = read_date(column, source.event_formats.get(key), types.get(column))
        exprs += [(raw.is_not_null() & (raw != "")).sum().alias(f"d{i}_present"),
                  parsed.is_not_null().sum().alias(f"d{i}_dates"),
                  parsed.min().alias(f"d{i}_first"), parsed.max().alias(f"d{i}_last")]
    try:
        row = lf.select(exprs).collect().row(0, named=True)
    except pl.exceptions.ComputeError as exc:
        raise unreadable_error(source, exc) from None
    fields = []
    for i, (name, spec) in enumerate(sorted(source.fields.items())):
        j = columns.index(spec.column)
        fields.append(FieldProfile(name, spec.column, int(row[f"c{j}_present"]), int(row[f"c{j}_raw"]),
                                   row.get(f"f{i}_first"), row.get(f"f{i}_last"), is_birth_field(name)))
    profiles = tuple(DateProfile(key, column, int(row[f"d{i}_present"]), int(row[f"d{i}_dates"]),
                                 row[f"d{i}_first"], row[f"d{i}_last"]) for i, (key, column) in enumerate(dates))
    return ColumnsProfile(int(row["rows"]), tuple(fields), profiles)


__all__ = ["ColumnsProfile", "DateProfile", "FieldProfile", "profile_columns"]
