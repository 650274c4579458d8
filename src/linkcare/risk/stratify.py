"""`linkcare stratify`: score, tier and explain every living registered person, and write one
worklist per GP practice keyed by the spine's pseudonymised identifiers."""

from __future__ import annotations

import datetime as dt
import json
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from linkcare import __version__
from linkcare.config import Config, config_hash
from linkcare.errors import ConfigError
from linkcare.io.atomic import atomic_dir, output_lock
from linkcare.io.checksum import file_sha256
from linkcare.log import get_logger
from linkcare.report.risk_report import REPORT_NAME, Inputs, write_stratify_report
from linkcare.risk.features import build_features, open_cohort, spine_source
from linkcare.risk.scoring import assign_tiers, score, score_table
from linkcare.risk.train import fit_and_write, load_model

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


def _safe_name(practice: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", practice) or "unknown"


def stratify(config: Config, cohort_dir: Path, out: Path, model_dir: Path | None = None,
             as_of: dt.date | None = None) -> StratifySummary:
    """Score everyone living at the index date and write risk.parquet and the worklists into `out`,
    whole or not at all; without `model_dir`, train on the same cohort first."""
    started = time.perf_counter()
    index = as_of or config.reference_date
    cohort = open_cohort(cohort_dir)
    spine = spine_source(config)
    inputs = Inputs(config, Path(cohort_dir).name, file_sha256(Path(cohort_dir) / "events.parquet"))
    with output_lock(Path(out)), atomic_dir(Path(out)) as tmp:
        if model_dir is None:
            log.info("no --model given: training on this cohort first (written to %s)", Path(out) / "model")
            (tmp / "model").mkdir()
            fit_and_write(config, cohort_dir, tmp / "model")
            model = load_model(tmp / "model", config.risk.model)
        else:
            model = load_model(model_dir, config.risk.model)
        log.info("building features as of %s…", index)
        features = build_features(config, cohort, index, model.windows)
        frame = features.frame
        missing = [f.name for f in model.features if f.name not in frame.columns]
        if missing:
            raise ConfigError(f"{model_dir}: the model uses features this config cannot build "
                              f"({', '.join(missing[:3])}); retrain it with this config")
        x = features.matrix(model.names)
        log.info("scoring and explaining %s people…", f"{x.shape[0]:,}")
        table = score_table(model, frame, x, config.risk.tiers)
        log.info("writing risk.parquet and the worklists…")
        table.write_parquet(tmp / "risk.parquet")
        practices = _write_worklists(table, tmp / "worklists", spine, config)
        tiers = (table.group_by("tier", "tier_rank").agg(pl.len().alias("people"), pl.col("risk").min().alias("from"),
                                                          pl.col("risk").max().alias("to")).sort("tier_rank"))
        manifest = {
            "linkcare_version": __version__, "command": "stratify", "index_date": index.isoformat(),
            "config": {"path": config.path.name, "sha256": config_hash(config.path)},
            "cohort": {"folder": inputs.cohort_folder, "events_sha256": inputs.events_sha256},
            "model": {"kind": model.kind, "folder": "model" if model_dir is None else Path(model_dir).name,
                      "trained_here": model_dir is None, "fitted": model.fitted},
            "people": table.height, "practices": practices,
            "tiers": [{"tier": r["tier"], "people": config.disclosure.value(r["people"])} for r in tiers.to_dicts()],
            "outputs": {"risk.parquet": file_sha256(tmp / "risk.parquet")},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        log.info("writing %s…", REPORT_NAME)
        model_folder = tmp / "model" if model_dir is None else Path(model_dir)
        write_stratify_report(tmp / REPORT_NAME, inputs, table, index, model.horizon_days, model.kind, model_folder,
                              "model (trained by this run)" if model_dir is None else Path(model_dir).name)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tier_rows = [{"tier": r["tier"], "people": r["people"], "risk_from": r["from"], "risk_to": r["to"]}
                 for r in tiers.to_dicts()]
    return StratifySummary(Path(out), index, table.height, model.kind, model_dir is None, tier_rows, practices,
                           time.perf_counter() - started, peak)


def _write_worklists(table: pl.DataFrame, folder: Path, spine: str, config: Config) -> int:
    """Write one CSV per practice, highest risk first; return how many were written."""
    folder.mkdir()
    id_column = next(s.id for s in config.sources if s.name == spine)
    lists = table.with_columns(pl.col("practice").fill_null("unknown")).select(
        "practice", pl.col("record_id").alias(id_column), pl.col("risk").round(4), pl.col("percentile").round(1),
        "tier", *[c for c in table.columns if c.startswith(("factor_", "contribution_"))])
    lists = lists.with_columns(pl.col(c).round(3) for c in lists.columns if c.startswith("contribution_"))
    count = 0
    for (practice,), part in lists.group_by("practice", maintain_order=True):
        name = _safe_name(str(practice))
        ranked = part.drop("practice").with_row_index("rank", offset=1)
        ranked.write_csv(folder / f"{name}.csv")
        count += 1
    return count


__all__ = ["StratifySummary", "assign_tiers", "score", "stratify"]
