"""The as-of date of a run: the day its data counts as complete up to, and why that day.

`--as-of DATE` wins; otherwise the config's `reference_date`, a date or `"auto"`. `"auto"` is the
last day of the last complete calendar month before the run date, so a monthly cron job that runs
on the 3rd of May scores and summarises as of 30 April, and next month as of 31 May, with nobody
editing the config. The run date is the machine's date, or `LINKCARE_TODAY` (YYYY-MM-DD) when
set, which reruns a month exactly as it ran (the same inputs and as-of date give the same bytes).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from linkcare.errors import ConfigError

AUTO = "auto"
TODAY_ENV = "LINKCARE_TODAY"


@dataclass(frozen=True)
class AsOf:
    """The as-of date and where it came from: "--as-of", "config" or "auto"."""

    date: dt.date
    source: str
    why: str

    def facts(self) -> dict[str, str]:
        """Return the date, its source and the reason, for manifests and --json."""
        return {"date": self.date.isoformat(), "source": self.source, "why": self.why}


def run_date() -> dt.date:
    """Return the date the run counts as today: LINKCARE_TODAY if set, else the machine's date."""
    value = os.environ.get(TODAY_ENV)
    if value is None or value == "":
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"environment variable {TODAY_ENV}: not a date; write it as YYYY-MM-DD, "
                          f"or unset it to use the machine's date") from None


def last_month_end(day: dt.date) -> dt.date:
    """Return the last day of the calendar month before `day`'s month."""
    return day.replace(day=1) - dt.timedelta(days=1)


def resolve_as_of(configured: dt.date | str, override: dt.date | None = None,
                  today: dt.date | None = None) -> AsOf:
    """Return the run's as-of date from `--as-of` (`override`), else the config's reference_date
    (a date, or "auto": the last complete month's end before `today`, default run_date())."""
    if override is not None:
        return AsOf(override, "--as-of", f"--as-of {override.isoformat()} on the command line")
    if isinstance(configured, dt.date):
        return AsOf(configured, "config", f'reference_date = "{configured.isoformat()}" in the config')
    day = today or run_date()
    end = last_month_end(day)
    return AsOf(end, "auto", f'reference_date = "auto": the last day of the last complete month before the '
                             f"run date {day.isoformat()}")


__all__ = ["AUTO", "TODAY_ENV", "AsOf", "last_month_end", "resolve_as_of", "run_date"]
