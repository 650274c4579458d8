"""Row checks: the rows of an extract that cannot be trusted, with the reason, never a value.

A row fails when a value that is present is wrong: a date that does not parse or lies after the
config's reference date, a birth year out of range, an NHS token that is not a well-formed token, or a value that
does not match its field's `pattern`. Empty values are missing, not wrong. A failing row is
rejected (written to `rejects/<source>.parquet` by `link` and left out of the cohort) unless its
field says `invalid = "missing"`, in which case the row is kept and the value treated as missing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from linkcare.config import Config, FieldSpec, Source
from linkcare.config.kinds import match_columns
from linkcare.errors import DataError
from linkcare.sources.dates import (
    DEFAULT_FORMS,
    UK_FORMAT,
    is_native_date,
    read_date,
    read_types,
    slashed,
    text_date,
)

#: A pseudonymised NHS token, unless the field gives its own pattern: one run of 16 to 128
#: letters, digits or base64/url-safe symbols. A 10-digit NHS number is not a token.
DEFAULT_TOKEN_PATTERN = r"^[0-9A-Za-z+/=_-]{16,128}$"
TOKEN_FIELD = "nhs"
#: Event dates that record something that has happened, so cannot lie after the reference date;
#: end dates may be planned.
PAST_EVENT_DATES = ("start_date", "registration_date", "death_date", "deregistration_date")
EVENT_DATES = (*PAST_EVENT_DATES, "end_date")


@dataclass(frozen=True)
class RowCheck:
    """One check on one column: where it fails, why, and which fields lose the value if kept."""

    column: str
    key: str  # the config key that maps the column, e.g. fields.birth_year or events.start_date
    fails: pl.Expr  # true on rows where a present value is wrong
    reason: str  # says what is wrong, never what the value is
    reject: bool  # False: keep the row and treat the value as missing
    fields: tuple[str, ...] = ()  # linkage fields read from the column


def _present(column: str) -> tuple[pl.Expr, pl.Expr]:
    raw = pl.col(column).cast(pl.String).str.strip_chars()
    return raw, raw.is_not_null() & (raw != "")


def is_birth_field(name: str) -> bool:
    """Return whether a field holds a birth date or year (so only its year range may be shown)."""
    return name == "birth_year" or "birth" in name or name.startswith("dob")


def field_value(spec: FieldSpec) -> tuple[pl.Expr, pl.Expr]:
    """Return a field's raw value as the row checks see it (trimmed text, recoded through `values`)
    and whether its column holds a value at all (an empty value is missing)."""
    raw, present = _present(spec.column)
    return (raw.replace(dict(spec.values)) if spec.values else raw), present


def birth_year_of(name: str, spec: FieldSpec, dtype: pl.DataType | None) -> pl.Expr | None:
    """Return the birth year the row checks judge in a field whose column is read as `dtype` (null
    where it does not read), or None if they judge none: the field `birth_year`, or a dated field
    named for a birth."""
    raw, _ = field_value(spec)
    if spec.format or is_native_date(dtype):
        if not is_birth_field(name):
            return None
        parsed = read_date(spec.column, None, dtype) if is_native_date(dtype) else text_date(raw, spec.format)
        return parsed.dt.year()
    return raw.cast(pl.Int64, strict=False) if name == "birth_year" else None


def event_date_columns(source: Source, types: Mapping[str, pl.DataType]) -> list[tuple[str, str]]:
    """Return (event key, column) of each event date the extract holds, in EVENT_DATES order."""
    found = []
    for key in EVENT_DATES:
        configured = source.events.get(key)
        if isinstance(configured, str) and (columns := match_columns(configured, types)):
            found.append((key, columns[0]))
    return found


#: Adds one check: column, config key, where it fails, why, the field (None for an event date).
_Add = Callable[[str, str, pl.Expr, str, FieldSpec | None, str | None], None]


def row_checks(source: Source, header: Mapping[str, pl.DataType] | Sequence[str], config: Config) -> list[RowCheck]:
    """Return the checks every row of a source must pass, one per column and kind of fault.

    `header` is the extract's schema as scan_source reads it (a date or timestamp column is read
    natively), or its column names, all text. A date is judged against the config's reference date,
    not the machine's clock, so that the same inputs reject the same rows on any day."""
    types = read_types(header)
    checks: dict[tuple[str, str], RowCheck] = {}

    def add(column: str, key: str, fails: pl.Expr, reason: str, spec: FieldSpec | None, name: str | None) -> None:
        found = checks.get((column, reason))
        if found is not None:  # one column mapped to several fields (MYDOB's year and month)
            keys = found.key if key in found.key.split(", ") else f"{found.key}, {key}"
            checks[(column, reason)] = RowCheck(column, keys, found.fails, reason,
                                                found.reject or spec is None or spec.invalid == "reject",
                                                found.fields + ((name,) if name else ()))
            return
        reject = spec is None or spec.invalid == "reject"
        checks[(column, reason)] = RowCheck(column, key, fails, reason, reject, (name,) if name else ())

    _field_checks(source, types, config, add)
    _event_date_checks(source, types, config, add)
    return list(checks.values())


def _field_checks(source: Source, types: Mapping[str, pl.DataType], config: Config, add: _Add) -> None:
    after = f"a date after the reference date {config.reference_date.isoformat()}"
    first_year, last_year = config.validation.min_birth_year, config.reference_date.year
    years = f"birth year before {first_year} or after {last_year}"
    for name, spec in sorted(source.fields.items()):
        raw, present = field_value(spec)
        key = f"fields.{name}"
        dtype = types.get(spec.column)
        year = birth_year_of(name, spec, dtype)
        native = is_native_date(dtype)
        if spec.format or native:
            # A date or timestamp column is its own date; text is read with the field's format.
            parsed = read_date(spec.column, None, dtype) if native else text_date(raw, spec.format)
            if not native:
                add(spec.column, key, present & parsed.is_null(), f"not a date in the format {spec.format}", spec, name)
            add(spec.column, key, parsed > config.reference_date, after, spec, name)
        elif year is not None:
            add(spec.column, key, present & year.is_null(), "birth year is not a whole number", spec, name)
        if year is not None:
            add(spec.column, key, (year < first_year) | (year > last_year), years, spec, name)
        pattern = spec.pattern or (DEFAULT_TOKEN_PATTERN if name == TOKEN_FIELD else None)
        if pattern is not None:
            what = "not a well-formed pseudonymised token" if name == TOKEN_FIELD and not spec.pattern \
                else "does not match the field's pattern"
            add(spec.column, key, present & ~raw.str.contains(pattern), what, spec, name)


def _event_date_checks(source: Source, types: Mapping[str, pl.DataType], config: Config, add: _Add) -> None:
    after = f"a date after the reference date {config.reference_date.isoformat()}"
    for key, column in event_date_columns(source, types):
        fmt, where = source.event_formats.get(key), f"events.{key}"
        raw, present = _present(column)
        parsed = read_date(column, fmt, types.get(column))
        if not is_native_date(types.get(column)):
            unread = present & parsed.is_null()
            if fmt is not None:
                add(column, where, unread, f"not a date in the format {fmt}", None, None)
            else:
                add(column, where, unread & ~slashed(raw), f"not a date ({DEFAULT_FORMS})", None, None)
                add(column, where, unread & slashed(raw), "a date with slashes, which needs a format: "
                    f'set format = "{UK_FORMAT}" under {where} (day first)', None, None)
        if key in PAST_EVENT_DATES:
            add(column, where, parsed > config.reference_date, after, None, None)


def check_flags(checks: list[RowCheck]) -> list[pl.Expr]:
    """Return one boolean column per check (`_fails_<i>`), false where the value is missing."""
    return [c.fails.fill_null(False).alias(f"_fails_{i}") for i, c in enumerate(checks)]


@dataclass(frozen=True)
class SourceRejects:
    """What the row checks found in one source."""

    frame: pl.DataFrame  # row (from 1, the header is row 0), record_id, reason
    counts: list[tuple[RowCheck, int, int]]  # check, rows failing it, first failing row
    rows: int
    #: rows rejected, when `frame` is not held here (the Spark engine keeps the rejects in Spark)
    rejected: int | None = None

    @property
    def n(self) -> int:
        return self.frame.height if self.rejected is None else self.rejected


def check_counts(frame: pl.DataFrame, checks: list[RowCheck]) -> list[tuple[RowCheck, int, int]]:
    """Return (check, rows failing it, first failing row) for each check some row fails."""
    flags = [f"_fails_{i}" for i in range(len(checks))]
    counts: list[tuple[RowCheck, int, int]] = []
    if flags:
        summary = frame.select(
            *[pl.col(f).sum().alias(f"n{i}") for i, f in enumerate(flags)],
            *[pl.col("row").filter(pl.col(f)).min().alias(f"r{i}") for i, f in enumerate(flags)])
        for i, check in enumerate(checks):
            n = int(summary[f"n{i}"][0])
            if n:
                counts.append((check, n, int(summary[f"r{i}"][0])))
    return counts


#: Columns mark_checks adds: whether a row is rejected, and why (from its rejecting checks).
REJECTED, REASON = "_rejected", "_reason"


def mark_checks(frame: pl.DataFrame, checks: list[RowCheck]) -> pl.DataFrame:
    """Return the rows with REJECTED and REASON added and the values failing a keep-as-missing check
    made missing; the `_fails_<i>` flags stay. Works on any slice of rows (a chunk or a partition)."""
    flags = [f"_fails_{i}" for i in range(len(checks))]
    rejecting = [f for f, c in zip(flags, checks, strict=True) if c.reject]
    rejected = pl.any_horizontal(rejecting) if rejecting else pl.lit(False)
    reason = pl.concat_str([pl.when(pl.col(f)).then(pl.lit(f"{c.column}: {c.reason}"))
                            for f, c in zip(flags, checks, strict=True) if c.reject] or [pl.lit(None, pl.String)],
                           separator="; ", ignore_nulls=True)
    marked = frame.with_columns(rejected.alias(REJECTED), reason.alias(REASON))
    for flag, check in zip(flags, checks, strict=True):
        if not check.reject and check.fields:
            marked = marked.with_columns([pl.when(pl.col(flag)).then(None).otherwise(pl.col(f)).alias(f)
                                          for f in check.fields if f in marked.columns])
    return marked


def apply_checks(frame: pl.DataFrame, checks: list[RowCheck]) -> tuple[pl.DataFrame, SourceRejects]:
    """Return the kept rows (values failing a keep-as-missing check made missing) and the rejects.

    `frame` holds `row`, `record_id`, the field columns and the `_fails_<i>` flags of check_flags.
    """
    flags = [f"_fails_{i}" for i in range(len(checks))]
    counts = check_counts(frame, checks)
    marked = mark_checks(frame, checks)
    rejects = marked.filter(pl.col(REJECTED)).select(pl.col("row").cast(pl.Int64), "record_id",
                                                     pl.col(REASON).alias("reason"))
    kept = marked.filter(~pl.col(REJECTED)).drop(REJECTED, REASON)
    return kept.drop(flags), SourceRejects(rejects.sort("row"), counts, frame.height)


def _detail(counts: list[tuple[RowCheck, int, int]], rejecting: bool) -> str:
    return "; ".join(f"column {c.column} ({c.key}): {n:,} row(s) {c.reason}, the first at row {first}"
                     for c, n, first in counts if c.reject == rejecting)


def enforce_limits(source: Source, found: SourceRejects, max_share: float, strict: bool) -> None:
    """Raise DataError if a source's rejects are fatal: any under --strict, or more than the share."""
    if not found.n:
        return
    share = found.n / max(found.rows, 1)
    if strict:
        why, fix = "and --strict makes any reject fatal", "run without --strict to set the rows aside"
    elif share > max_share:
        why = f"above [validation] max_reject_share = {max_share:g}"
        fix = "raise max_reject_share if so many bad rows are expected"
    else:
        return
    if any(c.fields for c, _, _ in found.counts if c.reject):
        fix += ', or set invalid = "missing" on a field whose value may be wrong while its row is right'
    raise DataError(f"{source.path}: {found.n:,} of {found.rows:,} row(s) ({share:.1%}) fail the row checks, {why}: "
                    f"{_detail(found.counts, True)}; fix the extract, or {fix}")


def write_rejects_csv(parquet: Path) -> Path:
    """Return the CSV written beside a rejects Parquet file (`rejects/<source>.csv`): the same rows,
    in the same order, with the same columns (row, record_id, reason), for the data supplier, who
    may have no Parquet reader. UTF-8, comma-separated, a header line, values quoted where needed."""
    csv = parquet.with_suffix(".csv")
    pl.read_parquet(parquet).write_csv(csv)
    return csv


def describe(found: SourceRejects) -> tuple[str, str]:
    """Return the log lines for rejected rows and for values kept as missing (empty if none)."""
    return _detail(found.counts, True), _detail(found.counts, False)


__all__ = ["DEFAULT_TOKEN_PATTERN", "EVENT_DATES", "REASON", "REJECTED", "RowCheck", "SourceRejects", "apply_checks",
           "birth_year_of", "check_counts", "check_flags", "describe", "enforce_limits", "event_date_columns",
           "field_value", "is_birth_field", "mark_checks", "row_checks", "write_rejects_csv"]
