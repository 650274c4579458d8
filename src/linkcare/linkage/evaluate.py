"""Score linkage against the truth: pairwise precision, recall and F1 over records."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from linkcare.errors import DataError


@dataclass(frozen=True)
class PairwiseScore:
    """Counts of record pairs put together by the linkage and by the truth, and the scores."""

    records: int
    predicted_pairs: int
    true_pairs: int
    true_positive_pairs: int
    precision: float
    recall: float
    f1: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _pairs(sizes: pl.Series) -> int:
    s = sizes.cast(pl.Int64)
    return int((s * (s - 1) // 2).sum())


def pairwise_score(frame: pl.DataFrame, focus: pl.Expr | None = None) -> PairwiseScore:
    """Return pairwise scores for records with `person_id` (predicted) and `person` (true).

    With `focus`, only pairs that involve at least one record where `focus` holds are counted.
    """
    if focus is None:
        pred = _pairs(frame.group_by("person_id").len()["len"])
        true = _pairs(frame.group_by("person").len()["len"])
        both = _pairs(frame.group_by("person_id", "person").len()["len"])
        n = frame.height
    else:
        f = frame.with_columns(focus.alias("_focus"))

        def involving(keys: list[str]) -> int:
            g = f.group_by(keys).agg(pl.len().alias("n"), pl.col("_focus").sum().alias("k"))
            n_ = g["n"].cast(pl.Int64)
            other = n_ - g["k"].cast(pl.Int64)
            return int(((n_ * (n_ - 1) - other * (other - 1)) // 2).sum())

        pred, true, both = involving(["person_id"]), involving(["person"]), involving(["person_id", "person"])
        n = int(f["_focus"].sum())
    precision = both / pred if pred else 1.0
    recall = both / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairwiseScore(n, pred, true, both, precision, recall, f1)


def _rejected_records(out_dir: Path) -> pl.DataFrame:
    """Return the rows `link` rejected, each as a person of its own: a rejected record was linked
    to no one, so the pairs it belongs to count as missed."""
    frames = [pl.read_parquet(path, columns=["record_id"]).select(
        pl.lit(path.stem).alias("source"), pl.col("record_id").cast(pl.String),
        pl.concat_str([pl.lit(f"rejected/{path.stem}/"), pl.col("record_id")]).alias("person_id"))
        for path in sorted((out_dir / "rejects").glob("*.parquet"))]
    schema = {"source": pl.String, "record_id": pl.String, "person_id": pl.String}
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def evaluate_links(out_dir: Path, truth_path: Path) -> dict[str, PairwiseScore]:
    """Return pairwise scores of a `linkcare link` output against a truth file, overall and for
    records with and without an NHS token (pairs involving at least one such record). Rejected
    rows count as records linked to no one."""
    index_path = Path(out_dir) / "person_index.parquet"
    try:
        index = pl.read_parquet(index_path)
    except (OSError, pl.exceptions.PolarsError):
        raise DataError(f"{index_path}: cannot be read; is {out_dir} the output folder of `linkcare link`?") from None
    try:
        truth = pl.read_parquet(truth_path).select(
            pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String), pl.col("person").cast(pl.String))
    except (OSError, pl.exceptions.PolarsError):
        raise DataError(f"{truth_path}: cannot be read as a truth file "
                        "with columns source, record_id, person") from None
    index = pl.concat([index, _rejected_records(Path(out_dir))], how="diagonal_relaxed")
    joined = index.join(truth, on=["source", "record_id"], how="inner")
    unmatched = index.height - joined.height
    if unmatched:
        raise DataError(f"{truth_path}: {unmatched} record(s) of the linkage output are not in the truth file")
    scores = {"all records": pairwise_score(joined)}
    if "has_nhs" in joined.columns:
        scores["records with an NHS token"] = pairwise_score(joined, pl.col("has_nhs"))
        scores["records without an NHS token"] = pairwise_score(joined, ~pl.col("has_nhs"))
    for source in sorted(joined["source"].unique().to_list()):
        scores[f"source {source}"] = pairwise_score(joined, pl.col("source") == source)
        if "has_nhs" in joined.columns:
            no_token = (pl.col("source") == source) & ~pl.col("has_nhs")
            if joined.select(no_token.any()).item():
                scores[f"source {source} without an NHS token"] = pairwise_score(joined, no_token)
    return scores
