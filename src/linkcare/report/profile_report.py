"""The profile report (`profile.html`): what each extract holds before a first link, as one
self-contained page (see linkcare.report.html).

Sections (their ids are stable; tests look for them):

- `sources`: rows, rows the row checks would reject, distinct identifier tuples, and whether
  `link` would stop on the source;
- `fields`: per mapped field its column, the rows holding a value and their share, the distinct
  values as linkage compares them and as the extract writes them, and a birth field's year range;
- `checks`: every row check with the rows that pass and fail it and the first failing row;
- `dates`: the first and last date of each event date column;
- `blocking`: the candidate pairs each blocking pass would yield.

Counts of rows pass through the site's disclosure control, and a share is shown only for a source
of at least the disclosure threshold. Counts of distinct values (how many codes a column uses) and
of candidate pairs (comparisons) are not counts of people or records and are shown as they are, as
the link report shows pair counts. No value of a record appears: only names of columns and checks,
counts, shares, event dates and birth years.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from linkcare.config import config_hash
from linkcare.linkage.profile import SiteProfile
from linkcare.report.html import Report, note, table

REPORT_NAME = "profile.html"


def write_profile_report(path: Path, site: SiteProfile, when: dt.datetime | None = None) -> int:
    """Write the profile report to `path`; return its size in bytes."""
    config = site.config
    facts = [("config", config.path.name), ("config SHA-256", config_hash(config.path)),
             ("reference date", config.reference_date.isoformat()),
             ("link type", config.linkage.link_type),
             ("would link stop?", "yes: see below" if site.stops_link else "no")]
    report = Report("linkcare profile", facts, config.disclosure, when)
    _sources(report, site)
    _fields(report, site)
    _checks(report, site)
    _dates(report, site)
    _blocking(report, site)
    return report.write(path)


def _sources(report: Report, site: SiteProfile) -> None:
    rows = [(s.name, s.kind, s.path.name, report.count(s.rows), report.count(s.rejected),
             report.share(s.rejected, s.rows), report.count(s.nodes), "stops" if s.stops_link else "reads")
            for s in site.sources]
    limit = site.config.validation.max_reject_share
    report.section("sources", "Sources",
                   table(("source", "kind", "file", "rows", "rejected", "rejected share", "identifier tuples",
                          "link"), rows),
                   note(f"A row is rejected when a value that is present fails a row check (see Row checks); "
                        f"link stops on a source with more than {limit:.1%} of its rows rejected "
                        "([validation] max_reject_share). Identifier tuples are the distinct combinations of "
                        "linkage fields that link compares."),
                   *(note(f"link would stop: {reason}") for reason in site.stop_reasons))


def _fields(report: Report, site: SiteProfile) -> None:
    rows = []
    for s in site.sources:
        for f in s.fields:
            years = "" if f.first_year is None else f"{f.first_year}–{f.last_year}"
            rows.append((s.name, f.field, f.column, report.count(f.present), report.share(f.present, s.rows),
                         f"{s.distinct.get(f.field, 0):,}", f"{f.distinct_in_extract:,}", years))
    report.section("fields", "Fields",
                   table(("source", "field", "column", "rows with a value", "completeness", "distinct",
                          "distinct in extract", "birth years"), rows),
                   note("Distinct counts the standardised values linkage compares (of the rows link keeps); "
                        "distinct in extract counts them as the extract writes them. A birth field shows only "
                        "the range of its years."))


def _checks(report: Report, site: SiteProfile) -> None:
    rows = [(s.name, c.column, c.key, c.check, "reject" if c.rejects else "keep as missing",
             report.count(s.rows - c.failed), report.count(c.failed),
             "" if c.first_failed_row is None else f"{c.first_failed_row:,}")
            for s in site.sources for c in s.checks]
    report.section("checks", "Row checks",
                   table(("source", "column", "config key", "check", "a failing row is", "rows passing",
                          "rows failing", "first failing row"), rows),
                   note("The checks link runs on every row before linking. A missing value never fails a "
                        "check. Row numbers count from 1 after the header."))


def _dates(report: Report, site: SiteProfile) -> None:
    rows = [(s.name, f"events.{d.key}", d.column, report.count(d.present), report.count(d.dates),
             "" if d.first is None else d.first.isoformat(), "" if d.last is None else d.last.isoformat())
            for s in site.sources for d in s.dates]
    report.section("dates", "Event dates",
                   table(("source", "event", "column", "rows with a value", "dates read", "first", "last"), rows))


def _blocking(report: Report, site: SiteProfile) -> None:
    limit = site.config.linkage.max_pairs
    rows = [(p.label, p.config_key, f"{p.pairs:,}", "above max_pairs: link stops" if p.above_max_pairs else "")
            for p in site.passes]
    report.section("blocking", "Candidate pairs per blocking pass",
                   table(("pass", "config key", "candidate pairs", ""), rows),
                   note(f"The pairs each pass would form under link_type = {site.config.linkage.link_type}, "
                        "before pairs found by an earlier pass are dropped: the pairs link reports per pass. "
                        f"A pass above linkage.max_pairs = {limit:,} stops link."))


__all__ = ["REPORT_NAME", "write_profile_report"]
