"""Read an extract as text and standardise its linkage fields, with clear errors for a bad file.

Standardised values are strings: trimmed, lower-cased, runs of spaces collapsed, leading zeros
of all-digit values dropped (so "04" and "4" agree), recoded through the config's `values`, and
dates written as YYYY-MM-DD (or just the year, month or day when the config asks for a part); a
field's comparison method may standardise it its own way (linkcare.config.methods). Empty strings
are missing values. Standardised values are for comparing only: beside them, each field's value as
the extract wrote it is kept long enough to count its forms, so that outputs (persons.parquet)
show a value the way the extracts write it. Both engines read every extract through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from linkcare.config import ComparisonMethod, Config, FieldSpec, Source
from linkcare.config.methods import standard_text
from linkcare.errors import DataError, ProblemList
from linkcare.io.extracts import check_last_line, count_non_utf8_lines, read_header
from linkcare.log import get_logger
from linkcare.sources.checks import (
    RowCheck,
    SourceRejects,
    apply_checks,
    check_flags,
    describe,
    enforce_limits,
    row_checks,
)
from linkcare.sources.columns import check_columns
from linkcare.sources.dates import is_native_date, native_date, read_types, text_columns, text_date

log = get_logger("link")


def scan_source(source: Source) -> pl.LazyFrame:
    """Return a lazy frame over a source's extract with every column read as a string, except a
    Parquet date or timestamp column, which keeps its type (linkcare.sources.dates), after checking
    the file: clear errors for a missing, empty, mis-delimited, non-UTF-8 or truncated file, and for
    every mapped column its header lacks."""
    header = read_header(source)
    missing, _ = check_columns(source, header)
    if missing:
        raise ProblemList(list(missing))
    if source.format == "parquet":
        lf = pl.scan_parquet(source.path)
        return lf.with_columns(pl.col(text_columns(read_types(lf.collect_schema()))).cast(pl.String))
    check_last_line(source.path, source.delimiter, len(header))
    return pl.scan_csv(source.path, separator=source.delimiter, infer_schema=False, encoding="utf8")


def _written(spec: FieldSpec) -> pl.Expr:
    """Return a field's value as the extract wrote it: trimmed, empty as missing, recoded through `values`."""
    raw = pl.col(spec.column).cast(pl.String).str.strip_chars()
    raw = pl.when(raw == "").then(None).otherwise(raw)
    return raw.replace(dict(spec.values)) if spec.values else raw


def field_expr(spec: FieldSpec, method: ComparisonMethod | None = None, dtype: pl.DataType | None = None) -> pl.Expr:
    """Return the expression giving a field's standardised string value from its column (of type
    `dtype` as scan_source reads it; text if not given): as its comparison method standardises it,
    or as text for a field that is not compared. A date or timestamp column, and text with the
    field's `format`, give a date (YYYY-MM-DD, or the `part` asked for)."""
    raw = _written(spec)
    if spec.format or is_native_date(dtype):
        parsed = native_date(pl.col(spec.column), dtype) if is_native_date(dtype) else text_date(raw, spec.format)
        if spec.part == "year":
            return parsed.dt.year().cast(pl.String)
        if spec.part == "month":
            return parsed.dt.month().cast(pl.String)
        if spec.part == "day":
            return parsed.dt.day().cast(pl.String)
        return parsed.dt.strftime("%Y-%m-%d")
    return standard_text(raw) if method is None else method.standardise(raw)


def unreadable_error(source: Source, exc: Exception) -> DataError:
    """Return the error for an extract polars could not read: bad bytes counted by line, else the kind."""
    if source.format == "csv":
        bad, first = count_non_utf8_lines(source.path)
        if bad:
            return DataError(f"{source.path}: {bad} line(s) are not UTF-8 text (the first is line {first}); "
                             "re-export the extract as UTF-8")
    return DataError(f"{source.path}: cannot be read as {source.format} ({type(exc).__name__}); "
                     "check that every row has the header's columns")


def record_exprs(source: Source, fields: tuple[str, ...], methods: Mapping[str, ComparisonMethod],
                 schema: Mapping[str, pl.DataType] | None = None) -> list[pl.Expr]:
    """Return the expressions giving a source's `source`, `record_id` and standardised fields (a
    missing field is null), over the extract's columns as scan_source reads them (`schema`; all
    text if not given)."""
    types = read_types(schema) if schema is not None else {}
    exprs = [pl.lit(source.name).alias("source"), pl.col(source.id).cast(pl.String).alias("record_id")]
    for name in fields:
        spec = source.fields.get(name)
        exprs.append(field_expr(spec, methods.get(name), types.get(spec.column)).alias(name) if spec is not None
                     else pl.lit(None, pl.String).alias(name))
    return exprs


#: The prefix of the columns that hold each field's value as the extract wrote it, beside its
#: standardised value, until their forms are counted (see `form_counts`).
FORM_PREFIX = "_form_"
FORM_SCHEMA = pl.Schema({"field": pl.String, "value": pl.String, "form": pl.String, "n": pl.Int64})


def form_exprs(source: Source, fields: tuple[str, ...],
               schema: Mapping[str, pl.DataType] | None = None) -> list[pl.Expr]:
    """Return, for each field the source maps without a date `format` from a text column (of
    `schema` as scan_source reads it; all text if not given), its value as the extract wrote it
    (column FORM_PREFIX + field). A field read with a format, or from a Parquet date or timestamp
    column, has no other form: its standardised value (a date or a part of one) is already
    written the one way."""
    types = read_types(schema) if schema is not None else {}
    return [_written(spec).alias(FORM_PREFIX + name) for name in fields
            if (spec := source.fields.get(name)) is not None and not spec.format
            and not is_native_date(types.get(spec.column))]


def form_counts(frame: pl.DataFrame, fields: tuple[str, ...]) -> pl.DataFrame:
    """Return how often each standardised value of each field was written in each form (field,
    value, form, n), from a frame holding the fields and their FORM_PREFIX columns."""
    parts = [frame.filter(pl.col(f).is_not_null() & pl.col(FORM_PREFIX + f).is_not_null())
             .group_by(pl.col(f).alias("value"), pl.col(FORM_PREFIX + f).alias("form")).len("n")
             .select(pl.lit(f).alias("field"), "value", "form", "n")
             for f in fields if FORM_PREFIX + f in frame.columns]
    return pl.concat([p.cast(FORM_SCHEMA) for p in parts]) if parts else pl.DataFrame(schema=FORM_SCHEMA)


def choose_forms(counts: pl.DataFrame) -> pl.DataFrame:
    """Return per field and standardised value the form most records wrote it in (ties: the
    smallest form), as (field, value, form): standardising is for comparing only, outputs show the
    values as the extracts wrote them (an LSOA code "E01017352", not "e01017352")."""
    return (counts.group_by("field", "value", "form").agg(pl.col("n").sum())
            .sort(["field", "value", "n", "form"], descending=[False, False, True, False])
            .group_by("field", "value", maintain_order=True).first().select("field", "value", "form"))


def record_fields(config: Config) -> tuple[tuple[str, ...], dict[str, ComparisonMethod]]:
    """Return every linkage field any source maps (sorted), and the comparison method of each compared one."""
    return config.fields, {c.field: c.spec for c in config.linkage.comparisons}


@dataclass(frozen=True)
class SourceRead:
    """One source read and checked: the rows that passed, what the row checks found, and the checks."""

    frame: pl.DataFrame  # row (from 1 after the header), source, record_id, one String column per field
    rejects: SourceRejects
    checks: tuple[RowCheck, ...]


def read_source(source: Source, config: Config, forms: bool = False) -> SourceRead:
    """Return a source's standardised records with the rows failing the row checks set aside (not
    judged against the limits: see report_rejects); raise DataError for an unreadable or empty
    extract, or for record ids that are missing or repeated. With `forms`, the frame also holds
    each field's value as the extract wrote it (FORM_PREFIX columns, see form_exprs)."""
    fields, methods = record_fields(config)
    lf = scan_source(source).with_row_index("row", offset=1)
    schema = lf.collect_schema()
    checks = row_checks(source, schema, config)
    exprs = [pl.col("row"), *record_exprs(source, fields, methods, schema),
             *(form_exprs(source, fields, schema) if forms else [])]
    try:
        frame = lf.select(exprs + check_flags(checks)).collect()
    except pl.exceptions.ComputeError as exc:
        raise unreadable_error(source, exc) from None
    if frame.height == 0:
        raise DataError(f"{source.path}: has a header but no rows; the extract is empty: export it again")
    missing_ids = frame["record_id"].null_count()
    if missing_ids:
        raise DataError(f"{source.path}: column {source.id}: {missing_ids} row(s) have no record id")
    duplicated = frame.height - frame["record_id"].n_unique()
    if duplicated:
        raise DataError(f"{source.path}: column {source.id}: {duplicated} row(s) repeat a record id "
                        "already used in this file; record ids must be unique")
    kept, found = apply_checks(frame, checks)
    return SourceRead(kept, found, tuple(checks))


def report_rejects(source: Source, found: SourceRejects, max_share: float, strict: bool) -> None:
    """Raise DataError if the rejects are fatal; otherwise log what the row checks set aside."""
    enforce_limits(source, found, max_share, strict)
    rejected, blanked = describe(found)
    if rejected:
        log.warning("source %s: %s row(s) rejected (see rejects/%s.parquet and rejects/%s.csv): %s",
                    source.name, f"{found.n:,}", source.name, source.name, rejected)
    if blanked:
        log.warning("source %s: values kept as missing (invalid = \"missing\"): %s", source.name, blanked)


__all__ = ["FORM_PREFIX", "FORM_SCHEMA", "SourceRead", "choose_forms", "field_expr", "form_counts", "form_exprs",
           "read_source", "record_exprs", "record_fields", "report_rejects", "scan_source", "unreadable_error"]
