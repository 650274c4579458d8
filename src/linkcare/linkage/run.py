"""Run `linkcare link` end to end and write the cohort dataset, whole or not at all."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from linkcare import __version__, cohort
from linkcare.config import Config, config_hash, load_config
from linkcare.io.atomic import atomic_dir, output_lock
from linkcare.io.checksum import file_sha256
from linkcare.linkage.lineage import read_previous
from linkcare.linkage.pipeline import link
from linkcare.log import get_logger
from linkcare.report.link_report import REPORT_NAME, local_report_data, report_persons, write_link_report

log = get_logger("link")
DEFAULT_PERSON_KEY = b"linkcare-person-id/v1"


@dataclass(frozen=True)
class LinkSummary:
    """What `linkcare link` did, for the terminal and for scripts; holds no record values."""

    out: Path
    sources: list[dict[str, Any]]
    passes: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    persons: int
    pairs_scored: int
    pairs_accepted: int
    model: str
    seconds: float
    peak_mib: float
    #: people per lineage change (kept, new, merged, split, gone) when IDs were carried over
    lineage: dict[str, int] | None = None


@dataclass(frozen=True)
class LinkOptions:
    """How `linkcare link` runs, beyond the config."""

    model_path: Path | None = None
    key: bytes | None = None
    previous: Path | None = None  # an earlier run's output folder to carry person IDs over from
    strict: bool = False  # any row failing the row checks stops the run
    engine: str = "local"  # "local" (this machine) or "spark" (linkcare.spark)


def run_link(config_path: Path, out: Path, options: LinkOptions | None = None) -> LinkSummary:
    """Link the config's sources into people and write the cohort dataset into `out`, holding the
    output's lock so that no other run writes it meanwhile."""
    options = options or LinkOptions()
    if options.engine == "spark":
        from linkcare.spark import require_pyspark

        require_pyspark()
    with output_lock(Path(out)):
        if options.engine == "spark":
            from linkcare.spark.engine import run_link_spark

            return run_link_spark(config_path, out, options)
        return _run_link(config_path, out, options)


def _run_link(config_path: Path, out: Path, options: LinkOptions) -> LinkSummary:
    started = time.perf_counter()
    config: Config = load_config(config_path)
    model_path = options.model_path
    if options.previous is not None:
        read_previous(options.previous, check_only=True)  # a wrong folder fails before any work
    linked = link(config, model_path, options.strict)
    stages = linked.stages
    accepted = int(linked.pairs["accepted"].sum()) if linked.pairs.height else 0
    with stages.stage("build and write the cohort"), atomic_dir(Path(out)) as tmp:
        previous = read_previous(options.previous) if options.previous is not None else None
        per_node, lineage = cohort.node_persons(linked, options.key or DEFAULT_PERSON_KEY, previous)
        del previous
        lineage_counts = write_lineage(tmp, lineage)
        rejected = {name: found.n for name, found in linked.rejects.items()}
        if any(rejected.values()):
            (tmp / "rejects").mkdir(mode=0o700)
            for name, found in linked.rejects.items():
                if found.n:
                    found.frame.write_parquet(tmp / "rejects" / f"{name}.parquet")
        index = cohort.person_index(linked, per_node)
        index.write_parquet(tmp / "person_index.parquet")
        people = cohort.persons(linked, per_node)
        people.write_parquet(tmp / "persons.parquet")
        n_people = people.height
        report_started = time.perf_counter()
        persons_for_report = report_persons(config, people, per_node)  # the report needs them after events
        report_seconds = time.perf_counter() - report_started
        del people, per_node
        cohort.write_events(config, index, tmp / "events.parquet")
        linked.pairs.write_parquet(tmp / "pairs.parquet")
        linked.model.save(tmp / "model.json")
        linked_share = index.group_by("source").agg(
            pl.len().alias("records"), (pl.col("match_stage") != "unlinked").mean().alias("linked_share"),
            (pl.col("match_stage") == "deterministic").sum().alias("deterministic"),
            (pl.col("match_stage") == "probabilistic").sum().alias("probabilistic"),
        ).sort("source")
        sources = summary_sources(linked_share.to_dicts(), linked.rows, rejected)
        inputs = link_inputs(config, linked.rows, rejected)
        report_started = time.perf_counter()
        data = local_report_data(config, linked, persons_for_report, tmp / "events.parquet")
        size = write_link_report(tmp / REPORT_NAME, config, data, inputs, n_people)
        del persons_for_report
        report_seconds += time.perf_counter() - report_started
        log.info("wrote %s (%s bytes) in %.1f s", REPORT_NAME, f"{size:,}", report_seconds)
        write_link_manifest(tmp, config, inputs, options.previous, lineage_counts, linked.model.trained_by,
                            model_path, n_people, linked.pass_pairs, stages.stages)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    if workers:
        log.info("peak memory of a compare worker (forked, sharing the main process's pages): %.0f MiB", workers)
    return LinkSummary(Path(out), sources, linked.pass_pairs, stages.stages, n_people,
                       int(linked.pairs.height), accepted, linked.model.trained_by,
                       time.perf_counter() - started, peak, lineage_counts)


def summary_sources(shares: list[dict[str, Any]], rows: Mapping[str, int],
                    rejected: Mapping[str, int]) -> list[dict[str, Any]]:
    """Return the summary's row per source: its linked shares (rounded), rows read and rows rejected."""
    return [{**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
             "records": rows.get(row["source"], row["records"]), "rejected": rejected.get(row["source"], 0)}
            for row in shares]


def link_inputs(config: Config, rows: Mapping[str, int], rejected: Mapping[str, int]) -> list[dict[str, Any]]:
    """Return the manifest's inputs: each source's file, SHA-256, rows read and rows rejected."""
    return [{"source": s.name, "file": s.path.name, "sha256": file_sha256(s.path),
             "rows": rows.get(s.name, 0), "rejected": rejected.get(s.name, 0)} for s in config.sources]


def write_lineage(folder: Path, lineage: pl.DataFrame | None) -> dict[str, int] | None:
    """Write lineage.parquet into `folder` (given a lineage) and return the people per change."""
    if lineage is None:
        return None
    lineage.write_parquet(folder / "lineage.parquet")
    return {c: int(n) for c, n in lineage.group_by("change").len().sort("change").iter_rows()}


def write_link_manifest(folder: Path, config: Config, inputs: list[dict[str, Any]], previous: Path | None,
                        lineage_counts: dict[str, int] | None, trained_by: str, model_path: Path | None, n_people: int,
                        pass_pairs: Sequence[Mapping[str, Any]], stages: list[dict[str, Any]],
                        engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write manifest.json into `folder` (which holds the written outputs) and return it."""
    manifest: dict[str, Any] = {
        "linkcare_version": __version__,
        "command": "link",
        "config": {"path": config.path.name, "sha256": config_hash(config.path)},
        "reference_date": config.reference_date.isoformat(),
        "inputs": inputs,
        "previous": None if lineage_counts is None else {"folder": Path(previous or "").name,
                                                          "lineage": lineage_counts},
        "model": {"trained_by": trained_by, "reused_from": model_path.name if model_path else None,
                  "sha256": file_sha256(folder / "model.json")},
        "outputs": {name: file_sha256(folder / name) for name in
                    ("person_index.parquet", "persons.parquet", "events.parquet", "pairs.parquet")},
        "persons": n_people,
        "blocking": list(pass_pairs),
        "stages": stages,
    }
    if engine is not None:
        manifest["engine"] = engine
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
