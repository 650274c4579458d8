"""Score, tier and explain every living registered person at an index date (the work of
`linkcare stratify`), and the worklists: one per GP practice, keyed by the spine's pseudonymised
record keys, highest risk first."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl

from linkcare.cohort.dataset import Cohort
from linkcare.config import Config
from linkcare.errors import ConfigError
from linkcare.log import get_logger
from linkcare.risk.features import build_features
from linkcare.risk.model import RiskModel
from linkcare.risk.scoring import score_table

log = get_logger("risk")


def score_people(config: Config, cohort: Cohort, model: RiskModel, index: dt.date,
                 model_dir: Path | None) -> pl.DataFrame:
    """Return the risk table (as risk.parquet) of everyone living at `index`, scored by `model`
    (from `model_dir`, None when trained by this run)."""
    log.info("building features as of %s…", index)
    features = build_features(config, cohort, index, model.windows)
    frame = features.frame
    missing = [f.name for f in model.features if f.name not in frame.columns]
    if missing:
        raise ConfigError(f"{model_dir}: the model uses features this config cannot build "
                          f"({', '.join(missing[:3])}); retrain it with this config")
    x = features.matrix(model.names)
    log.info("scoring and explaining %s people…", f"{x.shape[0]:,}")
    return score_table(model, frame, x, config.risk.tiers)


def tier_counts(table: pl.DataFrame) -> pl.DataFrame:
    """Return per tier (highest first) its people and the lowest and highest risk in it."""
    return (table.group_by("tier", "tier_rank").agg(pl.len().alias("people"), pl.col("risk").min().alias("from"),
                                                     pl.col("risk").max().alias("to")).sort("tier_rank"))


def _safe_name(practice: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", practice) or "unknown"


def write_worklists(table: pl.DataFrame, folder: Path, spine: str, config: Config) -> int:
    """Write one CSV per practice, highest risk first; return how many were written."""
    folder.mkdir()
    id_column = config.source(spine).id
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


__all__ = ["score_people", "tier_counts", "write_worklists"]
