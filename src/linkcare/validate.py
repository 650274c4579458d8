"""Check a site config and every extract it names, listing every problem at once.

Nothing is linked and no cell is read: only each extract's header (CSV) or schema (Parquet).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from linkcare.config import Config, Source, check_config
from linkcare.errors import DataError, LinkcareError, ProblemList
from linkcare.io.extracts import read_header
from linkcare.log import get_logger
from linkcare.sources.kinds import default_events, is_glob, match_columns, required_events

log = get_logger("validate")


@dataclass(frozen=True)
class SourceSummary:
    """What validate learned about one source."""

    name: str
    kind: str
    path: Path
    n_columns: int
    fields: tuple[str, ...]
    #: Optional event columns that are absent; not problems, but worth knowing.
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ValidationReport:
    """A valid site: its resolved config and a summary per source."""

    config: Config
    sources: tuple[SourceSummary, ...]

    @property
    def notes(self) -> tuple[str, ...]:
        """Return every source's notes, in config order."""
        return tuple(note for s in self.sources for note in s.notes)


def validate_site(config_path: str | Path) -> ValidationReport:
    """Return a report on a valid site, or raise ProblemList with every config and data problem.

    The ProblemList exits 2 if any problem is in the config, else 1. A config that cannot be
    parsed at all (not TOML) raises a single ConfigError.
    """
    check = check_config(config_path)
    problems: list[LinkcareError] = list(check.problems)
    summaries: list[SourceSummary] = []
    for source in check.sources:
        log.debug("checking source %s (%s)", source.name, source.path)
        try:
            header = read_header(source)
        except DataError as exc:
            problems.append(DataError(f"source {source.name!r}: {exc}"))
            continue
        missing, notes = check_columns(source, header)
        problems.extend(missing)
        summaries.append(
            SourceSummary(source.name, source.kind, source.path, len(header),
                          tuple(source.fields), tuple(notes))
        )
    if problems or check.config is None:
        raise ProblemList(problems)
    log.debug("%s: %d source(s) valid", check.path, len(summaries))
    return ValidationReport(check.config, tuple(summaries))


def check_columns(source: Source, header: Sequence[str]) -> tuple[list[DataError], list[str]]:
    """Return a problem for every mapped column missing from the header, and a note for every
    optional event column that is absent."""
    problems: list[DataError] = []
    notes: list[str] = []
    where = f"source {source.name!r}"

    def report(key: str, column: str) -> None:
        problems.append(DataError(f"{where}: {key}: {_not_found(column, source.path, header)}"))

    if source.id and source.id not in header:
        report("id", source.id)
    for name, spec in source.fields.items():
        if spec.column not in header:
            report(f"fields.{name}", spec.column)
    required = required_events(source.kind)
    defaults = default_events(source.kind)
    for key, configured in source.events.items():
        columns = (configured,) if isinstance(configured, str) else configured
        for column in columns:
            if match_columns(column, header):
                continue
            is_default = defaults.get(key) == column
            origin = f" (the default for kind {source.kind!r})" if is_default else ""
            if key in required:
                report(f"events.{key}{origin}", column)
            else:
                notes.append(f"{where}: optional column {column!r} for events.{key} not found; "
                             f"that attribute will be empty (set events.{key} = [] to silence)")
    return problems, notes


def _not_found(column: str, path: Path, header: Sequence[str]) -> str:
    if is_glob(column):
        return (f"no column in {path} matches {column!r}; fix the pattern in the config "
                "or the extract's header")
    close = difflib.get_close_matches(column, list(header), n=1, cutoff=0.6)
    if not close:
        folded = [c for c in header if c.strip().lower() == column.strip().lower()]
        close = folded[:1]
    if close:
        return f"column {column!r} not found in {path}; did you mean {close[0]!r}?"
    return (f"column {column!r} not found in {path} ({len(header)} columns); "
            "fix the name in the config or the extract")


__all__ = ["SourceSummary", "ValidationReport", "check_columns", "validate_site"]
