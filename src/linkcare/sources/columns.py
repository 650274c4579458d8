"""Check an extract's header against the config: every mapped column present, optional event
columns noted when absent. Messages name the column and the closest header name, never a cell."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from linkcare.config import Source
from linkcare.config.kinds import default_events, is_glob, match_columns, quiet_events, required_events
from linkcare.errors import DataError


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
            elif not (is_default and key in quiet_events(source.kind)):
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


__all__ = ["check_columns"]
