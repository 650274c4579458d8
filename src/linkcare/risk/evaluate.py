"""`linkcare evaluate risk`: score a `stratify` output against outcomes observed afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from linkcare.disclosure import Disclosure
from linkcare.errors import DataError
from linkcare.risk.metrics import risk_metrics, subgroup_metrics
from linkcare.risk.training import SUBGROUPS, publish_counts

TRUE_VALUES = ("1", "true", "t", "yes", "y")
FALSE_VALUES = ("0", "false", "f", "no", "n")


def read_outcomes(path: Path) -> pl.DataFrame:
    """Return a file's outcomes as (key column, outcome bool), where the key is person_id or record_id."""
    path = Path(path)
    try:
        parquet = path.suffix.lower() == ".parquet"
        frame = pl.read_parquet(path) if parquet else pl.read_csv(path, infer_schema=False)
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except (OSError, pl.exceptions.PolarsError):
        raise DataError(f"{path}: cannot be read as CSV or Parquet") from None
    key = next((k for k in ("person_id", "record_id") if k in frame.columns), None)
    if key is None or "outcome" not in frame.columns:
        raise DataError(f"{path}: needs a column outcome and a key column person_id or record_id "
                        "(the spine's record key, as in the worklists)")
    text = frame["outcome"].cast(pl.String).str.strip_chars().str.to_lowercase()
    out = frame.select(pl.col(key).cast(pl.String)).with_columns(
        pl.when(text.is_in(TRUE_VALUES)).then(True).when(text.is_in(FALSE_VALUES)).then(False)
        .otherwise(None).alias("outcome"))
    bad = out.filter(pl.col("outcome").is_null()).height
    if bad:
        raise DataError(f"{path}: column outcome: {bad} row(s) are not 1/0 or true/false")
    repeated = out.height - out[key].n_unique()
    if repeated:
        raise DataError(f"{path}: column {key}: {repeated} row(s) repeat a key already given")
    return out.select(key, "outcome")


def evaluate_risk(risk_dir: Path, outcomes_path: Path, disclosure: Disclosure | None = None,
                  seed: int = 0) -> dict[str, Any]:
    """Return the metrics of `risk_dir/risk.parquet` against the outcomes file, overall and by group,
    with counts of people passed through the disclosure rule."""
    disclosure = disclosure or Disclosure()
    path = Path(risk_dir) / "risk.parquet"
    try:
        risk = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError):
        raise DataError(f"{path}: cannot be read; is {risk_dir} the output folder of `linkcare stratify`?") from None
    outcomes = read_outcomes(outcomes_path)
    key = outcomes.columns[0]
    joined = risk.join(outcomes, on=key, how="inner")
    unmatched = risk.height - joined.height
    if joined.height == 0:
        raise DataError(f"{outcomes_path}: none of its {key} values are in {path}")
    y = joined["outcome"].to_numpy().astype(bool)
    p = joined["risk"].to_numpy()
    frame = joined.select(list(SUBGROUPS)).with_columns(pl.Series("y", y), pl.Series("p", p))
    result = {
        "people_scored": risk.height, "people_without_outcome": unmatched,
        "overall": risk_metrics(y, p, seed=seed),
        "subgroups": {label: subgroup_metrics(frame, by, seed=seed) for by, label in SUBGROUPS.items()},
    }
    published: dict[str, Any] = publish_counts(result, disclosure)
    published["people_scored"] = disclosure.value(risk.height)
    published["people_without_outcome"] = disclosure.value(unmatched)
    return published


__all__ = ["evaluate_risk", "read_outcomes"]
