"""Pairwise precision, recall and F1 of a clustering of records into people, against the truth.

A pair is two records. Predicted pairs are the pairs of records put in the same cluster; true pairs
are the pairs of records of the same true person; a true positive is both. Counts come from group
sizes (a group of n records holds n(n-1)/2 pairs), never by listing pairs, so a million people
costs one group-by.

The universe is the truth table: a record the linker left out of its output is its own cluster.

A *focus* set (say, social-care records without an NHS token) restricts every count to the pairs
with at least one focus record: a group of n records of which s are in focus holds
n(n-1)/2 - (n-s)(n-s-1)/2 such pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from linkcare.linkage.evaluate import pairwise_score


@dataclass(frozen=True)
class PairScores:
    """Pairwise counts and scores."""

    true_positives: int
    predicted_pairs: int
    true_pairs: int
    records: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "false_positives": self.predicted_pairs - self.true_positives,
                "false_negatives": self.true_pairs - self.true_positives,
                "precision": round(self.precision, 6), "recall": round(self.recall, 6), "f1": round(self.f1, 6)}


def pairwise_scores(clusters: pl.DataFrame, truth: pl.DataFrame, focus: pl.DataFrame | None = None) -> PairScores:
    """Return pairwise scores of clusters (source, record_id, cluster) against truth (source, record_id, person).

    With focus (source, record_id), only pairs with at least one focus record count. The pairs are
    counted by linkcare's own scorer (linkcare.linkage.evaluate.pairwise_score), the one `linkcare
    evaluate links` uses; this harness only lays every tool's output over the truth the same way.
    """
    universe = truth.select(pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String),
                            pl.col("person").cast(pl.String))
    predicted = clusters.select(pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String),
                                pl.col("cluster").cast(pl.String)).unique(["source", "record_id"], keep="first")
    frame = universe.join(predicted, on=["source", "record_id"], how="left")
    # Records missing from the output are singletons; the prefix keeps them apart from real cluster ids.
    frame = frame.with_columns(pl.col("cluster").fill_null(pl.format("\x00{}\x00{}", "source", "record_id"))
                               .alias("person_id"))
    in_focus = None
    if focus is not None:
        marked = focus.select(pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String)).unique()
        frame = frame.join(marked.with_columns(pl.lit(True).alias("_in_focus")), on=["source", "record_id"],
                           how="left").with_columns(pl.col("_in_focus").fill_null(False))
        in_focus = pl.col("_in_focus")
    score = pairwise_score(frame, in_focus)
    return PairScores(true_positives=score.true_positive_pairs, predicted_pairs=score.predicted_pairs,
                      true_pairs=score.true_pairs, records=score.records)
