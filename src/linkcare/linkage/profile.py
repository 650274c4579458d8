"""A site profiled before a first link: per source its fields (linkcare.sources.profile), how many
rows pass each row check, whether its rejects would stop `link`, and the candidate pairs each
blocking pass would bring; counts and dates only, never a value.

The row checks are the ones `link` runs, through the same read (linkcare.sources.read.read_source);
the pairs are counted by the same plan of blocks `link` makes before forming any pair
(linkcare.linkage.blocking.plan_passes), over the same distinct identifier tuples (nodes), so the
estimate is the "pairs" that `link` then reports per pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from linkcare.config import Config, Source
from linkcare.errors import DataError
from linkcare.linkage.blocking import encode_fields, pass_config_key, plan_passes, source_codes
from linkcare.linkage.prepare import check_tuple_keys, distinct_tuples
from linkcare.log import get_logger
from linkcare.sources.checks import SourceRejects, enforce_limits
from linkcare.sources.profile import DateProfile, FieldProfile, profile_columns
from linkcare.sources.read import SourceRead, read_source

log = get_logger("profile")


@dataclass(frozen=True)
class CheckProfile:
    """One row check of one source: the rows it fails (a missing value never fails) and the first."""

    column: str
    key: str  # the config key that maps the column, e.g. fields.birth_year or events.start_date
    check: str  # what the check finds wrong, as the rejects file says it
    rejects: bool  # True: a failing row is rejected; False: its value is kept as missing
    failed: int
    first_failed_row: int | None  # counted from 1 after the header


@dataclass(frozen=True)
class SourceProfile:
    """What one source holds and how `link` would read it."""

    name: str
    kind: str
    path: Path
    rows: int
    rejected: int  # rows the row checks would reject
    nodes: int  # distinct identifier tuples left to link
    fields: tuple[FieldProfile, ...]
    #: per mapped field, the distinct standardised values (as blocking and comparison see them) of the kept rows
    distinct: Mapping[str, int]
    checks: tuple[CheckProfile, ...]
    dates: tuple[DateProfile, ...]
    #: why `link` would stop on this source's rejects (the error it would give), else None
    stops_link: str | None


@dataclass(frozen=True)
class PassEstimate:
    """One candidate pass: the pairs it would yield under the link type, before de-duplication."""

    label: str  # as the link summary and manifest name it
    config_key: str  # linkage.blocking[i] or linkage.sorted_neighbourhood[i]
    fields: tuple[str, ...]
    pairs: int
    above_max_pairs: bool


@dataclass(frozen=True)
class SiteProfile:
    """Every source profiled and every candidate pass estimated."""

    config: Config
    sources: tuple[SourceProfile, ...]
    passes: tuple[PassEstimate, ...]
    #: problems found across sources that would stop `link` (extracts pseudonymised with different keys)
    problems: tuple[str, ...]

    @property
    def stop_reasons(self) -> tuple[str, ...]:
        """Return why `link` would stop on these extracts: each source's rejects, the problems across
        sources, each pass above linkage.max_pairs; empty if it would not."""
        limit = self.config.linkage.max_pairs
        return (*(f"source {s.name}: {s.stops_link}" for s in self.sources if s.stops_link), *self.problems,
                *(f"{p.config_key} ({p.label}) would yield {p.pairs:,} candidate pairs, above linkage.max_pairs = "
                  f"{limit:,}" for p in self.passes if p.above_max_pairs))

    @property
    def stops_link(self) -> bool:
        """Return whether `link` would stop on these extracts (see stop_reasons)."""
        return bool(self.stop_reasons)


def check_profiles(read: SourceRead) -> tuple[CheckProfile, ...]:
    """Return every row check of a source with the rows failing it, from what the read found."""
    failing = {(c.column, c.reason): (n, first) for c, n, first in read.rejects.counts}
    return tuple(CheckProfile(c.column, c.key, c.reason, c.reject, *failing.get((c.column, c.reason), (0, None)))
                 for c in read.checks)


def _stops(source: Source, found: SourceRejects, config: Config) -> str | None:
    try:
        enforce_limits(source, found, config.validation.max_reject_share, strict=False)
    except DataError as exc:
        return str(exc)
    return None


def profile_site(config: Config) -> SiteProfile:
    """Return the profile of every source of the config and the pairs of every candidate pass."""
    fields, rules = config.fields, config.linkage.deterministic
    profiles, tuples = [], []
    for source in config.sources:
        columns = profile_columns(source, config)
        read = read_source(source, config)
        nodes = distinct_tuples(read.frame, fields, rules)
        distinct = read.frame.select(pl.col(sorted(source.fields)).n_unique() - pl.col(sorted(source.fields))
                                     .null_count().clip(upper_bound=1)).row(0, named=True)
        found, checks = read.rejects, check_profiles(read)
        del read  # only its nodes go on
        tuples.append(nodes)
        profiles.append(SourceProfile(source.name, source.kind, source.path, columns.rows, found.n, nodes.height,
                                      columns.fields, distinct, checks, columns.dates, _stops(source, found, config)))
        log.info("source %s: %s rows, %s rejected, %s distinct identifier tuples", source.name,
                 f"{columns.rows:,}", f"{found.n:,}", f"{nodes.height:,}")
    frame = pl.concat(tuples)
    del tuples
    problems = []
    try:
        check_tuple_keys(frame, fields)
    except DataError as exc:
        problems.append(str(exc))
    passes = estimate_passes(frame, fields, config)
    return SiteProfile(config, tuple(profiles), passes, tuple(problems))


def estimate_passes(nodes: pl.DataFrame, fields: tuple[str, ...], config: Config) -> tuple[PassEstimate, ...]:
    """Return the pairs each candidate pass would yield over these nodes (source and the fields)."""
    lk = config.linkage
    plans = plan_passes(encode_fields(nodes, fields), source_codes(nodes), lk)
    return tuple(PassEstimate(plan.label, pass_config_key(plans, i), plan.key, plan.pairs, plan.pairs > lk.max_pairs)
                 for i, plan in enumerate(plans))


__all__ = ["CheckProfile", "PassEstimate", "SiteProfile", "SourceProfile", "check_profiles", "estimate_passes",
           "profile_site"]
