"""The cohort dataset as the commands after `link` read it: events and persons, lazily, from a
folder `linkcare link` wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from linkcare.cohort.events import EVENT_COLUMNS
from linkcare.errors import DataError


@dataclass(frozen=True)
class Cohort:
    """The cohort dataset written by `linkcare link`, as lazy frames."""

    folder: Path
    events: pl.LazyFrame
    persons: pl.LazyFrame


def open_cohort(folder: Path) -> Cohort:
    """Return the cohort dataset in `folder`, checking that the files `linkcare link` writes are there."""
    folder = Path(folder)
    for name in ("events.parquet", "persons.parquet"):
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: not found; give --cohort the output folder of `linkcare link`")
    try:
        events = pl.scan_parquet(folder / "events.parquet")
        persons = pl.scan_parquet(folder / "persons.parquet")
        names = events.collect_schema().names()
        persons.collect_schema()
    except (OSError, pl.exceptions.PolarsError):
        raise DataError(f"{folder}: events.parquet or persons.parquet cannot be read; rerun `linkcare link`") from None
    # A cohort written by an earlier version lacks the event columns added since; they read as missing.
    added = [pl.lit(None, dtype).alias(c) for c, dtype in EVENT_COLUMNS.items() if c not in names]
    if added:
        events = events.with_columns(added)
    return Cohort(folder, events, persons)


__all__ = ["Cohort", "open_cohort"]
