"""Dates as extracts hold them, read with polars expressions (never a Python function per row).

A date comes either as text (every CSV column, and a Parquet text or number column) or natively
(a Parquet date or timestamp column). Text with a strftime `format` is read with that format; text
without one is read in the forms that cannot be misread:

- `YYYY-MM-DD`, optionally followed by a time: `T` or a space, `hh:mm`, optional `:ss` and a
  fraction of up to 9 digits, then optionally `Z` or an offset such as `+01:00`. This covers ISO
  8601 date-times (`2024-03-15T10:22:00`, `2024-03-15 10:22:00`) and SQL Server's datetime text
  (`2024-03-15 00:00:00.000`, datetime2's `2024-03-15 00:00:00.0000000`). The date is the calendar
  date as written; the time and offset do not move it.
- `YYYYMMDD`, eight digits.

Dates with slashes are never guessed: `03/04/2024` is the 3rd of April in the UK and the 4th of
March in the US, so they need a format, and the row checks say so (SLASHED). A native date is
itself; a native timestamp is the date of its wall-clock time, in its own time zone if it has one
(`2024-06-15T23:30:00Z` stored with the time zone Europe/London is the 16th).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeGuard

import polars as pl

#: What the default text forms are, as the row checks' reasons say it.
DEFAULT_FORMS = "YYYY-MM-DD, YYYYMMDD, or YYYY-MM-DD with a time"
#: The default forms as a pattern: the date part is group 1.
_ISO = (r"^(\d{4}-\d{1,2}-\d{1,2})"
        r"(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:[.,]\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?$")
_COMPACT = r"^\d{8}$"
#: Day, month and year separated by slashes (with or without a time after): ambiguous without a format.
_SLASHED = r"^\d{1,2}/\d{1,2}/\d{2,4}(?:[T ].*)?$"
#: The format to suggest for slashed dates: the UK order, which is what NHS extracts hold.
UK_FORMAT = "%d/%m/%Y"
#: strftime directives that need a day before a date can be formed from them.
_DAY_DIRECTIVES = ("%d", "%e", "%j", "%F", "%D", "%x", "%c", "%s")

#: The types a column can have once read: its own if a date or timestamp, else text.
ColumnTypes = Mapping[str, pl.DataType]


def is_native_date(dtype: pl.DataType | None) -> TypeGuard[pl.DataType]:
    """Return True for a date or timestamp column type (read natively, never as text)."""
    return dtype is not None and (dtype == pl.Date or isinstance(dtype, pl.Datetime))


def read_types(schema: Mapping[str, pl.DataType] | Sequence[str]) -> dict[str, pl.DataType]:
    """Return each column's type as linkcare reads it: a date or timestamp keeps its type, anything
    else is text. A plain list of names (a CSV header) is all text."""
    if isinstance(schema, Mapping):
        return {c: (t if is_native_date(t) else pl.String()) for c, t in schema.items()}
    return {c: pl.String() for c in schema}


def text_columns(types: ColumnTypes) -> list[str]:
    """Return the columns read as text."""
    return [c for c, t in types.items() if not is_native_date(t)]


def conform(frame: pl.DataFrame, types: ColumnTypes) -> pl.DataFrame:
    """Return a batch of an extract (as another reader, such as Spark, handed it over) with every
    column of `types` in its read type: text columns as strings, timestamps in the time zone (or
    none) the file gives them, so their dates are those the local reader reads."""
    exprs = []
    for column, target in types.items():
        if column not in frame.columns:
            continue
        have = frame.schema[column]
        col = pl.col(column)
        if not is_native_date(target):
            exprs.append(col.cast(pl.String))
        elif isinstance(target, pl.Datetime) and isinstance(have, pl.Datetime) and have.time_zone != target.time_zone:
            utc = col.dt.replace_time_zone("UTC") if have.time_zone is None else col
            exprs.append(utc.dt.convert_time_zone(target.time_zone) if target.time_zone
                         else utc.dt.convert_time_zone("UTC").dt.replace_time_zone(None))
        elif have != target and not isinstance(target, pl.Datetime):
            exprs.append(col.cast(target))
    return frame.with_columns(exprs) if exprs else frame


def _has_day(fmt: str) -> bool:
    return any(d in fmt for d in _DAY_DIRECTIVES)


def text_date(raw: pl.Expr, fmt: str | None) -> pl.Expr:
    """Return dates read from text: with a strftime format (one without a day, such as MYDOB's
    "%m%Y", is read as the first of the month), else in the default forms. Unreadable text is null."""
    s = raw.cast(pl.String).str.strip_chars()
    if fmt is not None:
        if not _has_day(fmt):
            return pl.concat_str([s, pl.lit("01")]).str.to_date(fmt + "%d", strict=False)
        return s.str.to_date(fmt, strict=False)
    iso = s.str.extract(_ISO, 1).str.to_date("%Y-%m-%d", strict=False)
    compact = pl.when(s.str.contains(_COMPACT)).then(s).otherwise(None).str.to_date("%Y%m%d", strict=False)
    return iso.fill_null(compact)


def native_date(column: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Return the dates of a date or timestamp column: a timestamp's date in its own time zone."""
    return column if dtype == pl.Date else column.dt.date()


def read_date(column: str, fmt: str | None, dtype: pl.DataType | None) -> pl.Expr:
    """Return a column's dates, natively for a date or timestamp column, else from its text (with
    `fmt`, or in the default forms)."""
    if is_native_date(dtype):
        return native_date(pl.col(column), dtype)
    return text_date(pl.col(column), fmt)


def slashed(raw: pl.Expr) -> pl.Expr:
    """Return True where text looks like a day, month and year separated by slashes."""
    return raw.cast(pl.String).str.strip_chars().str.contains(_SLASHED)


__all__ = ["DEFAULT_FORMS", "UK_FORMAT", "ColumnTypes", "conform", "is_native_date", "native_date", "read_date",
           "read_types", "slashed", "text_columns", "text_date"]
