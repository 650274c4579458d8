"""`linkcare validate`: check a site config and every extract it names, listing every problem at once.

Nothing is linked. Without `--rows` no cell is read: only each extract's header (CSV) or schema
(Parquet). With `--rows` (`check_rows`), every row of every source goes through the row checks
`link` runs (linkcare.sources.read.read_source), and a source whose rejects would stop `link` is a
problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from linkcare.config import Config, check_config
from linkcare.errors import DataError, LinkcareError, ProblemList
from linkcare.io.extracts import read_header
from linkcare.log import get_logger
from linkcare.sources.checks import RowCheck, enforce_limits
from linkcare.sources.columns import check_columns
from linkcare.sources.read import read_source

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


@dataclass(frozen=True)
class SourceRows:
    """What the row checks found in one source: rows read, rows rejected, and per check the rows
    failing it and the first (only checks some row fails); `stops` is the error `link` would give."""

    name: str
    path: Path
    rows: int
    rejected: int
    counts: tuple[tuple[RowCheck, int, int], ...]
    stops: str | None = None


@dataclass(frozen=True)
class RowsReport:
    """The row checks over every source, and every problem that would stop `link`."""

    config: Config
    sources: tuple[SourceRows, ...]
    problems: tuple[DataError, ...]


def check_rows(config: Config, strict: bool = False) -> RowsReport:
    """Return what the row checks find in every row of every source, without linking: per source the
    counts per column and check with the first failing row, and as problems every source `link`
    would stop on (too many rejects, any under `strict`; an unreadable extract; missing or repeated
    record ids), all at once."""
    sources: list[SourceRows] = []
    problems: list[DataError] = []
    for source in config.sources:
        log.info("checking every row of source %s (%s)", source.name, source.path.name)
        try:
            found = read_source(source, config).rejects
        except DataError as exc:
            problems.append(exc)
            continue
        stops = None
        try:
            enforce_limits(source, found, config.validation.max_reject_share, strict)
        except DataError as exc:
            problems.append(exc)
            stops = str(exc)
        sources.append(SourceRows(source.name, source.path, found.rows, found.n, tuple(found.counts), stops))
    return RowsReport(config, tuple(sources), tuple(problems))


__all__ = ["RowsReport", "SourceRows", "SourceSummary", "ValidationReport", "check_rows", "validate_site"]
