"""The months `monitor` counts, and which of them each source covers.

The last month is the last complete month at the as-of date. A source covers a month when it holds at
least half as many events starting in it as in the median month of its last twelve: an extract that
starts part-way through its first month, arrives late, or has a gap then shows as months it does not
cover, and the measures drawn from it are flagged missing there, never joined across. The first month,
unless `[monitor] start` gives it, is the first from which every event source covers three months in
a row (an extract's few older rows, such as social-care services that began years before it was cut,
do not pull the start back).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from linkcare.errors import DataError

#: A month with fewer events than this share of the recent median month is not covered.
COVERED_SHARE = 0.5
RECENT_MONTHS = 12
RUN_MONTHS = 3


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def add_months(month: dt.date, n: int) -> dt.date:
    """Return the first day of the month `n` months after `month`'s."""
    k = month.year * 12 + month.month - 1 + n
    return dt.date(k // 12, k % 12 + 1, 1)


def month_end(month: dt.date) -> dt.date:
    return add_months(month, 1) - dt.timedelta(days=1)


def last_complete_month(as_of: dt.date) -> dt.date:
    """Return the first day of the last month that has ended by the as-of date (its own month if the
    as-of date is that month's last day)."""
    return month_start(as_of) if month_end(as_of) == as_of else add_months(month_start(as_of), -1)


def month_range(first: dt.date, last: dt.date) -> list[dt.date]:
    out, month = [], month_start(first)
    while month <= last:
        out.append(month)
        month = add_months(month, 1)
    return out


@dataclass(frozen=True)
class Window:
    """The months counted, and for each source the months it does not cover."""

    months: tuple[dt.date, ...]
    uncovered: Mapping[str, frozenset[dt.date]]
    start_source: str  # "config" or the name of the source whose coverage set the first month

    @property
    def first(self) -> dt.date:
        return self.months[0]

    @property
    def last(self) -> dt.date:
        return self.months[-1]


def monthly_counts(events: pl.LazyFrame, sources: Sequence[str], last: dt.date) -> pl.DataFrame:
    """Return source, month and the number of events starting in that month, up to `last`'s month."""
    return (events.filter(pl.col("source").is_in(list(sources)) & pl.col("start_date").is_not_null()
                          & (pl.col("start_date") <= month_end(last)))
            .group_by("source", pl.col("start_date").dt.truncate("1mo").alias("month"))
            .agg(pl.len().alias("events")).collect())


def covered_months(counts: pl.DataFrame, source: str, last: dt.date) -> tuple[set[dt.date], dt.date | None]:
    """Return the months a source covers up to `last`, and the first month of its first run of
    RUN_MONTHS covered months (None if it has none)."""
    rows = counts.filter(pl.col("source") == source)
    by_month = dict(zip(rows["month"].to_list(), rows["events"].to_list(), strict=True))
    recent = [by_month.get(m, 0) for m in month_range(add_months(last, 1 - RECENT_MONTHS), last)]
    median = sorted(recent)[len(recent) // 2] if recent else 0
    if median == 0:
        return set(), None
    covered = {m for m, n in by_month.items() if n >= COVERED_SHARE * median and m <= last}
    first = None
    for month in sorted(covered):
        if all(add_months(month, k) in covered for k in range(RUN_MONTHS)):
            first = month
            break
    return covered, first


def monitor_window(events: pl.LazyFrame, sources: Sequence[str], as_of: dt.date, start: dt.date | None,
                   events_path: str) -> Window:
    """Return the months to count and each event source's uncovered months among them."""
    last = last_complete_month(as_of)
    counts = monthly_counts(events, sources, last)
    covered: dict[str, set[dt.date]] = {}
    firsts: dict[str, dt.date] = {}
    for source in sources:
        months, first = covered_months(counts, source, last)
        covered[source] = months
        if first is not None:
            firsts[source] = first
    if start is not None:
        first, why = start, "config"
    elif firsts:
        why = max(firsts, key=lambda s: (firsts[s], s))
        first = firsts[why]
    else:
        raise DataError(f"{events_path}: no source has events in the twelve months before {last:%Y-%m}, so no month "
                        "can be counted; check --as-of, or give [monitor] start")
    if first > last:
        raise DataError(f"[monitor] start {first:%Y-%m} is after the last complete month {last:%Y-%m} at the "
                        f"as-of date {as_of.isoformat()}; give an earlier start or a later --as-of")
    counted = tuple(month_range(first, last))
    uncovered = {s: frozenset(m for m in counted if m not in covered[s]) for s in sources}
    return Window(counted, uncovered, why)


__all__ = ["Window", "add_months", "covered_months", "last_complete_month", "month_end", "month_range",
           "month_start", "monitor_window", "monthly_counts"]
