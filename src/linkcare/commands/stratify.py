"""`linkcare stratify`: score, tier and explain every living registered person, and write
risk.parquet, one worklist per GP practice (its worklist tiers only, new people marked against a
previous run), risk_report.html and manifest.json, whole or not at all; without a model folder,
train on the same cohort first (into the output's `model/`)."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linkcare.cohort.dataset import open_cohort
from linkcare.commands.snapshots import Snapshots, snapshot_run
from linkcare.commands.train import train_into
from linkcare.config import Config
from linkcare.io.atomic import atomic_dir, output_lock
from linkcare.io.checksum import file_sha256
from linkcare.io.manifest import checksums, write_manifest
from linkcare.io.modes import modes_for
from linkcare.io.parquet import write_parquet
from linkcare.log import get_logger, peak_mib
from linkcare.report.risk_report import REPORT_NAME, Inputs, write_stratify_report
from linkcare.risk.features import spine_source
from linkcare.risk.store import load_model
from linkcare.risk.stratify import (
    PreviousLists,
    mark_listed,
    read_previous_lists,
    score_people,
    tier_counts,
    write_worklists,
)

log = get_logger("risk")


@dataclass(frozen=True)
class StratifySummary:
    """What `linkcare stratify` did; holds no record values."""

    out: Path
    index_date: dt.date
    people: int
    model: str
    trained_here: bool
    tiers: list[dict[str, Any]]
    practices: int
    seconds: float
    peak_mib: float
    #: the worklists: their tiers, the people they list and those new since `previous` (None: no --previous,
    #: everyone listed is new)
    worklist_tiers: tuple[str, ...] = ()
    listed: int = 0
    new_to_list: int = 0
    previous: Path | None = None


def stratify(config: Config, cohort_dir: Path, out: Path | Snapshots, model_dir: Path | None = None,
             as_of: dt.date | None = None, previous: Path | None = None,
             write_features: bool = False) -> StratifySummary:
    """Score everyone living at the index date (`as_of`, default the config's reference date) and write
    risk.parquet and the worklists into `out` (a folder, or dated snapshots), whole or not at all;
    without `model_dir`, train on the same cohort first. With `previous` (an earlier stratify output,
    or "latest": the last run's), the worklists mark who is new to them since; without it, or when
    "latest" finds none yet, everyone listed is marked new. With `write_features`, features.parquet holds
    every feature the model used for each person scored, as of the index date (for audit)."""
    started = time.perf_counter()
    index = as_of or config.reference_date
    log.info("as of %s: %s", index.isoformat(),
             config.as_of_facts["why"] if as_of is None else f"as_of {index.isoformat()} given")
    cohort = open_cohort(cohort_dir)
    spine = spine_source(config)
    inputs = Inputs(config, Path(cohort_dir).name, file_sha256(Path(cohort_dir) / "events.parquet"))
    snapshots = out if isinstance(out, Snapshots) else Snapshots(Path(out))
    with snapshot_run(snapshots, index) as target:
        previous = snapshots.previous(previous, target, afresh="everyone on the worklists is marked new")
        before = read_previous_lists(previous) if previous is not None else None
        if before is None:
            log.info("no --previous stratify output: everyone on the worklists is marked new (new_to_list)")
        return _stratify(config, cohort_dir, target, model_dir, index, (cohort, spine, inputs, before), started,
                         write_features)


def _stratify(config: Config, cohort_dir: Path, out: Path, model_dir: Path | None, index: dt.date,
              read: tuple[Any, Any, Inputs, PreviousLists | None], started: float,
              write_features: bool = False) -> StratifySummary:
    cohort, spine, inputs, before = read
    previous = None if before is None else before.folder
    with output_lock(Path(out)), atomic_dir(Path(out), modes_for(config.output.mode)) as tmp:
        if model_dir is None:
            log.info("no --model given: training on this cohort first (written to %s)", Path(out) / "model")
            (tmp / "model").mkdir()
            train_into(tmp / "model", config, cohort_dir)
            model = load_model(tmp / "model", config.risk.model)
        else:
            model = load_model(model_dir, config.risk.model)
        listed_tiers = config.risk.listed_tiers
        scored, features = score_people(config, cohort, model, index, model_dir)
        table = mark_listed(scored, listed_tiers, before)
        listed, new = int(table["listed"].sum()), int(table["new_to_list"].sum())
        log.info("writing risk.parquet and the worklists (tiers %s: %s people listed, %s new to the list)…",
                 ", ".join(listed_tiers), f"{listed:,}", f"{new:,}")
        write_parquet(table, tmp / "risk.parquet")
        outputs = ["risk.parquet"]
        if write_features:
            write_parquet(features, tmp / "features.parquet")
            outputs.append("features.parquet")
        practices = write_worklists(table, tmp / "worklists", spine, config, index)
        tiers = tier_counts(table)
        write_manifest(tmp, "stratify", config, {
            "index_date": index.isoformat(),
            "as_of": config.as_of_facts,
            "cohort": {"folder": inputs.cohort_folder, "events_sha256": inputs.events_sha256},
            "model": {"kind": model.kind, "folder": "model" if model_dir is None else Path(model_dir).name,
                      "trained_here": model_dir is None, "fitted": model.fitted},
            "people": table.height, "practices": practices,
            "worklists": {"tiers": list(listed_tiers), "listed": config.disclosure.value(listed),
                          "new_to_list": config.disclosure.value(new),
                          "previous": None if previous is None else Path(previous).name},
            "tiers": [{"tier": r["tier"], "people": config.disclosure.value(r["people"])} for r in tiers.to_dicts()],
            "outputs": checksums(tmp, outputs),
        })
        log.info("writing %s…", REPORT_NAME)
        model_folder = tmp / "model" if model_dir is None else Path(model_dir)
        write_stratify_report(tmp / REPORT_NAME, inputs, table, index, model.horizon_days, model.kind, model_folder,
                              "model (trained by this run)" if model_dir is None else Path(model_dir).name)
    tier_rows = [{"tier": r["tier"], "people": r["people"], "risk_from": r["from"], "risk_to": r["to"]}
                 for r in tiers.to_dicts()]
    return StratifySummary(Path(out), index, table.height, model.kind, model_dir is None, tier_rows, practices,
                           time.perf_counter() - started, peak_mib(), listed_tiers, listed, new,
                           None if previous is None else Path(previous))


__all__ = ["StratifySummary", "stratify"]
