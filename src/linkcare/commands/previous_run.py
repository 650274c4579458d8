"""Checks of this month's inputs against the previous run's manifest, and of each extract's latest event.

A monthly job that nobody watches can be fed last month's file again, a half-delivered extract, or
one that stopped months ago. These checks name the file and the figures, never a value:

- an input byte-identical to the previous run's (the SHA-256 in its manifest) stops the run, unless
  `[validation] unchanged_inputs = "allow"`;
- a source whose row count changed by more than `max_row_change` (a share) since the previous run
  gets a warning, or stops the run with `row_change = "error"`;
- a source whose latest event is more than `stale_after_days` before the as-of date gets a warning.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from linkcare.config import Config
from linkcare.errors import DataError
from linkcare.log import get_logger

log = get_logger("checks")


def previous_inputs(previous: Path | None) -> dict[str, dict[str, Any]]:
    """Return the previous run's inputs by source (file, sha256, rows), or {} when there is none."""
    if previous is None or not (previous / "manifest.json").is_file():
        return {}
    try:
        facts = json.loads((previous / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{previous / 'manifest.json'}: cannot be read ({e.__class__.__name__}); give --previous "
                        f"an output folder written by linkcare link") from None
    return {str(row["source"]): row for row in facts.get("inputs", []) if isinstance(row, dict) and "source" in row}


def check_unchanged(config: Config, digests: Mapping[str, str], before: Mapping[str, dict[str, Any]]) -> None:
    """Stop the run if any input is byte-identical to the previous run's, unless the config allows it."""
    same = [s for s in config.sources if s.name in before and before[s.name].get("sha256") == digests.get(s.name)]
    if not same:
        return
    names = ", ".join(s.path.name for s in same)
    if config.validation.unchanged_inputs == "allow":
        log.info("%d input(s) unchanged since the previous run (allowed by [validation] unchanged_inputs): %s",
                 len(same), names)
        return
    raise DataError(f"{names}: byte-identical to the previous run's input (same SHA-256 as in its manifest.json), "
                    f"so this month's extract has probably not arrived; replace the file, or set [validation] "
                    f'unchanged_inputs = "allow" if an unchanged extract is expected')


def check_row_changes(config: Config, rows: Mapping[str, int], before: Mapping[str, dict[str, Any]]) -> None:
    """Warn about (or, with row_change = "error", stop on) sources whose rows changed by more than
    max_row_change since the previous run."""
    limit = config.validation.max_row_change
    found = []
    for s in config.sources:
        old = before.get(s.name, {}).get("rows")
        if not isinstance(old, int) or s.name not in rows:
            continue
        change = (rows[s.name] - old) / old if old else (0.0 if rows[s.name] == 0 else float("inf"))
        if abs(change) > limit:
            found.append(f"{s.path.name} has {rows[s.name]:,} rows against {old:,} in the previous run "
                         f"({change:+.0%}, more than max_row_change {limit:.0%})")
    if not found:
        return
    if config.validation.row_change == "error":
        raise DataError("; ".join(found) + '; check the extract, or set [validation] row_change = "warn"')
    for message in found:
        log.warning("%s", message)


def stale_sources(config: Config, events: Path) -> list[str]:
    """Return a warning for each source whose latest event is more than stale_after_days before the
    as-of date (and log it); `events` is the events.parquet the run wrote."""
    as_of, days = config.reference_date, config.validation.stale_after_days
    latest = (pl.scan_parquet(events).group_by("source").agg(pl.col("start_date").max().alias("latest"))
              .collect())
    by_source: dict[str, dt.date | None] = dict(zip(latest["source"].to_list(), latest["latest"].to_list(),
                                                     strict=True))
    out = []
    for s in config.sources:
        last = by_source.get(s.name)
        if last is None:
            continue
        gap = (as_of - last).days
        if gap > days:
            out.append(f"{s.path.name} holds no events after {last.isoformat()}, {gap} days before the as-of date "
                       f"{as_of.isoformat()} (more than stale_after_days {days})")
    for message in out:
        log.warning("%s", message)
    return out


__all__ = ["check_row_changes", "check_unchanged", "previous_inputs", "stale_sources"]
