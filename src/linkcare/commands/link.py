"""`linkcare link`: link every source into people and write the cohort dataset, whole or not at all.

This is the one orchestrator for both engines. It takes the output's lock, checks what can be
checked before any work (the config's comparisons, a `--previous` folder, a reused model), runs
the stages of linkcare.linkage.engine on the chosen engine with their time and peak memory, and
writes into a temporary folder that replaces the output only when everything is written: the
engine's cohort files, then model.json, lineage.parquet, rejects/, link_report.html and
manifest.json, written here once for every engine.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linkcare.cohort.lineage import read_previous, write_lineage
from linkcare.cohort.nodes import NODES_NAME, rule_label
from linkcare.cohort.persons import ATTACHMENTS_NAME
from linkcare.commands.previous_run import check_row_changes, check_unchanged, previous_inputs, stale_sources
from linkcare.commands.snapshots import Snapshots, snapshot_run
from linkcare.config import Config, load_config
from linkcare.errors import ConfigError
from linkcare.io.atomic import atomic_dir, output_lock
from linkcare.io.checksum import file_sha256
from linkcare.io.manifest import checksums, write_manifest
from linkcare.io.modes import modes_for
from linkcare.linkage.engine import CohortWritten, LinkEngine
from linkcare.linkage.local import LocalEngine
from linkcare.linkage.model import MatchModel
from linkcare.log import StageLog, children_peak_mib, get_logger, peak_mib
from linkcare.report.link_report import REPORT_NAME, write_link_report
from linkcare.sources.checks import write_rejects_csv

log = get_logger("link")
DEFAULT_PERSON_KEY = b"linkcare-person-id/v1"
COHORT_FILES = ("person_index.parquet", "persons.parquet", "events.parquet", "pairs.parquet", NODES_NAME)


@dataclass(frozen=True)
class LinkOptions:
    """How `linkcare link` runs, beyond the config."""

    model_path: Path | None = None
    key: bytes | None = None
    previous: Path | None = None  # an earlier run's output folder to carry person IDs over from ("latest": the last)
    strict: bool = False  # any row failing the row checks stops the run
    engine: str = "local"  # "local" (this machine) or "spark" (linkcare.spark)
    as_of: dt.date | None = None  # --as-of: overrides the config's reference_date
    snapshot: bool = False  # write OUT/<as-of date>/ and move OUT/latest (linkcare.commands.snapshots)
    keep: int | None = None  # with snapshot: how many dated snapshots to keep


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
    #: the as-of date, where it came from and why (linkcare.config.asof)
    as_of: dict[str, str] | None = None
    #: warnings from the checks against the previous run and of each extract's latest event
    warnings: tuple[str, ...] = ()


def run_link(config_path: Path, out: Path, options: LinkOptions | None = None) -> LinkSummary:
    """Link the config's sources into people and write the cohort dataset into `out`, holding the
    output's lock so that no other run writes it meanwhile."""
    options = options or LinkOptions()
    if options.engine == "spark":
        from linkcare.spark import require_pyspark

        require_pyspark()
    started = time.perf_counter()
    config = load_config(config_path, options.as_of)
    log.info("as of %s: %s", config.reference_date.isoformat(), config.as_of_facts["why"])
    snapshots = Snapshots(Path(out), options.snapshot, options.keep)
    with snapshot_run(snapshots, config.reference_date) as target, output_lock(target):
        previous = snapshots.previous(options.previous, target)
        options = dataclasses.replace(options, previous=previous)
        if previous is not None:
            read_previous(previous, check_only=True)  # a wrong folder fails before any work
        comparisons = list(config.linkage.comparisons)
        if not comparisons:
            raise ConfigError(f"{config.path}: [[linkage.comparisons]] is empty; add a comparison per field to link on")
        # A model to reuse is checked before any work, so a wrong file fails at once.
        reused = MatchModel.load(options.model_path, comparisons) if options.model_path is not None else None
        # Last month's file delivered again fails before any work too (a missing file is left to
        # the reader, whose error names it).
        before = previous_inputs(previous)
        digests = {s.name: file_sha256(s.path) for s in config.sources if before and s.path.is_file()}
        check_unchanged(config, digests, before)
        with open_engine(options.engine, config) as engine:
            return _link(engine, config, target, options, reused, started, (digests, before))


@contextmanager
def open_engine(name: str, config: Config) -> Iterator[LinkEngine[Any, Any, Any, Any, Any, Any]]:
    """Yield the engine a run uses, started for the run and stopped after it."""
    if name == "spark":
        from linkcare.spark.engine import spark_engine

        with spark_engine(config) as engine:
            yield engine
        return
    yield LocalEngine(config)


@dataclass(frozen=True)
class Linked:
    """What the stages up to `decide` gave: the nodes (with the read stage's facts), the engine's
    decisions, the model and the pairs of each candidate pass."""

    nodes: Any
    decisions: Any
    model: MatchModel
    pass_pairs: list[dict[str, int | str]]


def link_stages(engine: LinkEngine[Any, Any, Any, Any, Any, Any], stages: StageLog, strict: bool = False,
                reused: MatchModel | None = None, model_path: Path | None = None) -> Linked:
    """Run the stages from reading to deciding on `engine`, each timed in `stages`; with `reused`
    (loaded from `model_path`), score with that model instead of training one."""
    with stages.stage("read and standardise"):
        records = engine.read(strict)
    with stages.stage("reduce to distinct identifiers"):
        nodes = engine.reduce(records)
    del records  # the nodes carry what is needed on
    with stages.stage("deterministic rules"):
        clusters = engine.deterministic(nodes)
    with stages.stage("candidate pairs"):
        plans = engine.plan(clusters)
    with stages.stage("compare"):
        compared = engine.compare(plans)
    with stages.stage("train model"):
        if reused is not None:
            model = reused
            log.info("reusing the model in %s (no training)", model_path)
        else:
            model = engine.train(compared)
    with stages.stage("score and cluster"):
        decisions = engine.decide(compared, model)
    # Only the decisions go on: the pairs to score, their patterns and the blocks are let go here.
    return Linked(nodes, decisions, model, compared.pass_pairs)


def _link(engine: LinkEngine[Any, Any, Any, Any, Any, Any], config: Config, out: Path, options: LinkOptions,
          reused: MatchModel | None, started: float,
          inputs_before: tuple[dict[str, str], dict[str, dict[str, Any]]]) -> LinkSummary:
    stages = StageLog()
    linked = link_stages(engine, stages, options.strict, reused, options.model_path)
    nodes, model, pass_pairs = linked.nodes, linked.model, linked.pass_pairs
    digests, before = inputs_before
    check_row_changes(config, nodes.rows, before)
    with stages.stage("build and write the cohort"), atomic_dir(out, modes_for(config.output.mode)) as tmp:
        written, report = engine.write_cohort(linked.decisions, tmp, options.key or DEFAULT_PERSON_KEY,
                                              options.previous)
        del linked
        lineage = write_lineage(tmp, written.lineage)
        rejected = {name: found.n for name, found in nodes.rejects.items()}
        if any(rejected.values()):
            (tmp / "rejects").mkdir(mode=0o700)
            for name, n in rejected.items():
                if n:
                    engine.write_rejects(nodes, name, tmp / "rejects" / f"{name}.parquet")
                    write_rejects_csv(tmp / "rejects" / f"{name}.parquet")
        model.save(tmp / "model.json")
        inputs = link_inputs(config, nodes.rows, rejected, digests)
        warnings = stale_sources(config, tmp / "events.parquet")
        report_started = time.perf_counter()
        size = write_link_report(tmp / REPORT_NAME, config, report, inputs, written.people)
        log.info("wrote %s (%s bytes) in %.1f s", REPORT_NAME, f"{size:,}", time.perf_counter() - report_started)
        _write_link_manifest(tmp, config, options, inputs, lineage, model, written, pass_pairs, stages, engine,
                             warnings)
    workers = children_peak_mib()
    if workers and engine.name == "local":
        log.info("peak memory of a compare worker (forked, sharing the main process's pages): %.0f MiB", workers)
    return LinkSummary(out, summary_sources(written.shares, nodes.rows, rejected), pass_pairs, stages.stages,
                       written.people, written.pairs_scored, written.pairs_accepted, model.trained_by,
                       time.perf_counter() - started, peak_mib(), lineage, config.as_of_facts, tuple(warnings))


def summary_sources(shares: list[dict[str, Any]], rows: Mapping[str, int],
                    rejected: Mapping[str, int]) -> list[dict[str, Any]]:
    """Return the summary's row per source: its linked shares (rounded), rows read and rows rejected."""
    return [{**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
             "records": rows.get(row["source"], row["records"]), "rejected": rejected.get(row["source"], 0)}
            for row in shares]


def link_inputs(config: Config, rows: Mapping[str, int], rejected: Mapping[str, int],
                digests: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Return the manifest's inputs: each source's file, SHA-256 (from `digests` when the run took
    them at its start), rows read and rows rejected."""
    digests = digests or {}
    return [{"source": s.name, "file": s.path.name, "sha256": digests.get(s.name) or file_sha256(s.path),
             "rows": rows.get(s.name, 0), "rejected": rejected.get(s.name, 0)} for s in config.sources]


def linkage_facts(config: Config) -> dict[str, Any]:
    """Return the manifest's account of how the run decided (what `linkcare explain` needs beside the
    outputs): the link type, the threshold, the exact rules and passes by their labels, and the
    pairs_min_probability below which pairs are not kept."""
    lk = config.linkage
    return {"link_type": lk.link_type, "threshold": lk.threshold,
            "deterministic": [rule_label(rule) for rule in lk.deterministic],
            "pairs_min_probability": lk.pairs_min_probability}


def _write_link_manifest(folder: Path, config: Config, options: LinkOptions, inputs: list[dict[str, Any]],
                         lineage: dict[str, int] | None, model: MatchModel, written: CohortWritten,
                         pass_pairs: list[dict[str, int | str]], stages: StageLog,
                         engine: LinkEngine[Any, Any, Any, Any, Any, Any], warnings: list[str]) -> None:
    facts: dict[str, Any] = {
        "reference_date": config.reference_date.isoformat(),
        "as_of": config.as_of_facts,
        "warnings": warnings,
        "inputs": inputs,
        "previous": None if lineage is None else {"folder": Path(options.previous or "").name, "lineage": lineage},
        "model": {"trained_by": model.trained_by,
                  "reused_from": options.model_path.name if options.model_path else None,
                  "sha256": file_sha256(folder / "model.json")},
        "outputs": checksums(folder, [*COHORT_FILES, *([ATTACHMENTS_NAME] if written.attach is not None else [])]),
        "persons": written.people,
        "linkage": linkage_facts(config),
        "blocking": list(pass_pairs),
        "stages": stages.stages,
    }
    if written.attach is not None:
        facts["attach"] = written.attach
    where = engine.facts()
    if where is not None:
        facts["engine"] = where
        log.info("Spark: %s", ", ".join(f"{k} {v}" for k, v in where.items()))
    write_manifest(folder, "link", config, facts)


__all__ = ["DEFAULT_PERSON_KEY", "LinkOptions", "LinkSummary", "Linked", "link_stages", "open_engine",
           "run_link"]
