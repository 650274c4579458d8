"""`linkcare validate`: check a site config and every extract it names, listing every problem at once.

Nothing is linked and no cell is read: only each extract's header (CSV) or schema (Parquet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from linkcare.config import Config, check_config
from linkcare.errors import DataError, LinkcareError, ProblemList
from linkcare.io.extracts import read_header
from linkcare.log import get_logger
from linkcare.sources.columns import check_columns

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


__all__ = ["SourceSummary", "ValidationReport", "validate_site"]
