"""`linkcare profile`: what a site's extracts hold before a first link, written whole or not at all.

It checks the config and every extract's header first (as `validate` does, every problem at once),
profiles the site (linkcare.linkage.profile), and writes profile.json, profile.html and
manifest.json into a temporary folder that replaces the output only when all three are written.
Counts, shares and dates only: no value of a record is printed, logged or written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linkcare.commands.validate import validate_site
from linkcare.config import Config
from linkcare.io.atomic import atomic_dir, output_lock
from linkcare.io.checksum import file_sha256
from linkcare.io.manifest import MANIFEST_NAME, checksums, write_manifest
from linkcare.io.modes import modes_for
from linkcare.linkage.profile import SiteProfile, SourceProfile, profile_site
from linkcare.log import get_logger, peak_mib
from linkcare.report.profile_report import REPORT_NAME, write_profile_report

log = get_logger("profile")
PROFILE_NAME = "profile.json"
#: The version of profile.json's layout; a change that removes or renames a key raises it.
PROFILE_SCHEMA = 1


@dataclass(frozen=True)
class ProfileSummary:
    """What `linkcare profile` found and wrote, for the terminal and for scripts; no record values."""

    out: Path
    profile: dict[str, Any]  # the document written to profile.json
    seconds: float
    peak_mib: float


def run_profile(config_path: Path, out: Path) -> ProfileSummary:
    """Profile the site of `config_path` and write profile.json, profile.html and manifest.json into
    `out`, holding the output's lock so that no other run writes it meanwhile."""
    with output_lock(Path(out)):
        started = time.perf_counter()
        config = validate_site(config_path).config
        site = profile_site(config)
        document = profile_document(site)
        for reason in site.stop_reasons:
            log.warning("link would stop: %s", reason)
        with atomic_dir(Path(out), modes_for(config.output.mode)) as tmp:
            (tmp / PROFILE_NAME).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            write_profile_report(tmp / REPORT_NAME, site)
            write_manifest(tmp, "profile", config, {
                "reference_date": config.reference_date.isoformat(),
                "inputs": [{"source": s.name, "file": s.path.name, "sha256": file_sha256(s.path), "rows": s.rows,
                            "rejected": s.rejected} for s in site.sources],
                "outputs": checksums(tmp, [PROFILE_NAME, REPORT_NAME]),
            })
        log.info("wrote %s, %s and %s to %s", PROFILE_NAME, REPORT_NAME, MANIFEST_NAME, out)
        return ProfileSummary(Path(out), document, time.perf_counter() - started, peak_mib())


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 6)


def source_document(source: SourceProfile) -> dict[str, Any]:
    """Return one source's entry of profile.json."""
    rows = source.rows
    return {
        "source": source.name, "kind": source.kind, "file": source.path.name, "rows": rows,
        "rejected": source.rejected, "rejected_share": _share(source.rejected, rows),
        "identifier_tuples": source.nodes, "stops_link": source.stops_link,
        "fields": [{"field": f.field, "column": f.column, "present": f.present,
                    "completeness": _share(f.present, rows), "distinct": source.distinct.get(f.field, 0),
                    "distinct_in_extract": f.distinct_in_extract,
                    "birth_years": None if f.first_year is None else {"first": f.first_year, "last": f.last_year}}
                   for f in source.fields],
        "row_checks": [{"column": c.column, "key": c.key, "check": c.check,
                        "action": "reject" if c.rejects else "keep as missing",
                        "passed": rows - c.failed, "failed": c.failed, "first_failed_row": c.first_failed_row}
                       for c in source.checks],
        "dates": [{"event": d.key, "column": d.column, "present": d.present, "dates": d.dates,
                   "first": None if d.first is None else d.first.isoformat(),
                   "last": None if d.last is None else d.last.isoformat()} for d in source.dates],
    }


def profile_document(site: SiteProfile) -> dict[str, Any]:
    """Return profile.json: the same inputs and config give the same document (no timings in it)."""
    config: Config = site.config
    lk = config.linkage
    return {
        "schema": PROFILE_SCHEMA,
        "config": config.path.name,
        "reference_date": config.reference_date.isoformat(),
        "link_type": lk.link_type,
        "max_reject_share": config.validation.max_reject_share,
        "max_pairs": lk.max_pairs,
        "stops_link": site.stops_link,
        "stop_reasons": list(site.stop_reasons),
        "sources": [source_document(s) for s in site.sources],
        "blocking": [{"pass": p.label, "config_key": p.config_key, "fields": list(p.fields), "pairs": p.pairs,
                      "above_max_pairs": p.above_max_pairs} for p in site.passes],
    }


__all__ = ["PROFILE_NAME", "PROFILE_SCHEMA", "ProfileSummary", "profile_document", "run_profile", "source_document"]
