"""Score, tier and explain every living registered person at an index date (the work of
`linkcare stratify`), and the worklists: one per GP practice, keyed by the spine's pseudonymised
record keys, highest risk first, listing the people of the worklist tiers ([risk] worklist_tiers),
each with the index date, their top factors in words and whether they are new to the list since
the previous run."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from linkcare.cohort.dataset import Cohort
from linkcare.config import Config
from linkcare.errors import ConfigError, DataError
from linkcare.io.checksum import check_written_by
from linkcare.log import get_logger
from linkcare.risk.features import build_features
from linkcare.risk.model import RiskModel
from linkcare.risk.scoring import score_table
from linkcare.risk.wording import factor_words

log = get_logger("risk")


def score_people(config: Config, cohort: Cohort, model: RiskModel, index: dt.date,
                 model_dir: Path | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return the risk table (as risk.parquet) of everyone living at `index`, scored by `model`
    (from `model_dir`, None when trained by this run), and their features: person_id and every
    feature the model uses, as of `index`, by person_id."""
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
    table = table.join(factor_words(table, frame, model.windows), on="person_id", how="left", maintain_order="left")
    used = frame.select("person_id", *[pl.col(n).cast(pl.Float64) for n in model.names]).sort("person_id")
    return table, used


@dataclass(frozen=True)
class PreviousLists:
    """Who was on each practice's worklist in a previous stratify run, and where that run is."""

    folder: Path
    listed: pl.DataFrame  # person_id, practice


def read_previous_lists(folder: Path) -> PreviousLists:
    """Return who a previous `linkcare stratify` output listed, from its risk.parquet after checking
    that the file is the one stratify wrote there. A run from before worklists were limited by tier
    listed everyone it scored."""
    folder = Path(folder)
    what = "--previous must be the output folder of an earlier `linkcare stratify`"
    if not folder.is_dir():
        raise DataError(f"{folder}: --previous names no folder; {what}")
    manifest_path, risk_path = folder / "manifest.json", folder / "risk.parquet"
    for path in (manifest_path, risk_path):
        if not path.is_file():
            raise DataError(f"{path}: not found; {what}")
    try:
        expected = json.loads(manifest_path.read_text(encoding="utf-8"))["outputs"]["risk.parquet"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{manifest_path}: cannot be read as a stratify manifest; {what}") from None
    raw = risk_path.read_bytes()
    check_written_by(risk_path, raw, expected, manifest_path, "stratify", "give --previous an untouched output folder")
    table = pl.read_parquet(io.BytesIO(raw))
    if "person_id" not in table.columns or "practice" not in table.columns:
        raise DataError(f"{risk_path}: has no person_id or practice column; {what}")
    listed = table.filter(pl.col("listed")) if "listed" in table.columns else table
    return PreviousLists(folder, listed.select("person_id", pl.col("practice").fill_null(UNKNOWN_PRACTICE)).unique())


def mark_listed(table: pl.DataFrame, tiers: tuple[str, ...], previous: PreviousLists | None) -> pl.DataFrame:
    """Return the risk table with `listed` (the person's tier is a worklist tier) and `new_to_list`
    (listed now and not on the same practice's worklist in the previous run; null when not listed).
    Without a previous run everyone listed is new: the list itself is new to the team that reads it."""
    listed = pl.col("tier").is_in(list(tiers))
    table = table.with_columns(listed.alias("listed"))
    if previous is None:
        return table.with_columns(pl.when(listed).then(True).otherwise(None).alias("new_to_list"))
    before = previous.listed.with_columns(pl.lit(True).alias("_before"))
    table = table.with_columns(pl.col("practice").fill_null(UNKNOWN_PRACTICE).alias("_practice")).join(
        before.rename({"practice": "_practice"}), on=["person_id", "_practice"], how="left", maintain_order="left")
    return table.with_columns(pl.when(listed).then(pl.col("_before").is_null()).otherwise(None)
                              .alias("new_to_list")).drop("_practice", "_before")


def tier_counts(table: pl.DataFrame) -> pl.DataFrame:
    """Return per tier (highest first) its people and the lowest and highest risk in it."""
    return (table.group_by("tier", "tier_rank").agg(pl.len().alias("people"), pl.col("risk").min().alias("from"),
                                                     pl.col("risk").max().alias("to")).sort("tier_rank"))


#: The practice of people whose registration has none, in worklists and in matching a previous run.
UNKNOWN_PRACTICE = "unknown"


def _safe_name(practice: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", practice) or UNKNOWN_PRACTICE


def worklist_columns(table: pl.DataFrame, id_column: str, index: dt.date) -> list[pl.Expr]:
    """Return the worklist's columns after `rank`, in order: the spine's record key (named as in
    its extract), the index date, tier, risk, percentile, new_to_list and reason_1..k."""
    reasons = sorted(c for c in table.columns if c.startswith("reason_"))
    return [pl.col("record_id").alias(id_column), pl.lit(index.isoformat()).alias("index_date"), pl.col("tier"),
            pl.col("risk").round(4), pl.col("percentile").round(1), pl.col("new_to_list"), *map(pl.col, reasons)]


def write_worklists(table: pl.DataFrame, folder: Path, spine: str, config: Config, index: dt.date) -> int:
    """Write one CSV per practice of the scored people, highest risk first, listing the people
    `mark_listed` marked (a practice whose people are all in other tiers gets the header alone, so
    that every practice sees this run); return how many were written."""
    folder.mkdir()
    columns = worklist_columns(table, config.source(spine).id, index)
    table = table.with_columns(pl.col("practice").fill_null(UNKNOWN_PRACTICE))
    practices = sorted(set(table["practice"].to_list()), key=_safe_name)
    listed = table.filter(pl.col("listed"))
    for practice in practices:
        part = listed.filter(pl.col("practice") == practice).select(columns).with_row_index("rank", offset=1)
        part.with_columns(pl.col("rank").cast(pl.Int64)).write_csv(folder / f"{_safe_name(str(practice))}.csv")
    return len(practices)


__all__ = ["UNKNOWN_PRACTICE", "PreviousLists", "mark_listed", "read_previous_lists", "score_people", "tier_counts",
           "worklist_columns", "write_worklists"]
