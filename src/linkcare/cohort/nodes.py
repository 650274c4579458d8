"""nodes.parquet: one row per distinct identifier tuple (node), with what `linkcare explain` needs
to say why its records linked where they did, and never a value.

A node is one source's records that share every linkage field (records that hold no exact rule's
fields are each a node of their own). Nodes are numbered in order of (source, smallest record id),
so the numbering is the same from either engine and any row order; person_index.parquet gives
every record's node, and pairs.parquet names the two nodes of each scored pair.
"""

from __future__ import annotations

import numpy as np
import polars as pl

NODES_NAME = "nodes.parquet"


def rule_label(rule: tuple[str, ...] | list[str]) -> str:
    """Return how an exact rule or a blocking pass is named in the outputs: its fields joined by '+'."""
    return "+".join(rule)


def node_rules(n: int, left: np.ndarray, right: np.ndarray, rule: np.ndarray) -> np.ndarray:
    """Return per node the first exact rule (by position) of an edge that touches it, -1 if none."""
    first = np.full(n, np.iinfo(np.int16).max, dtype=np.int16)
    np.minimum.at(first, left, rule.astype(np.int16))
    np.minimum.at(first, right, rule.astype(np.int16))
    first[first == np.iinfo(np.int16).max] = -1
    return first


def node_table(frame: pl.DataFrame, fields: tuple[str, ...], rules: tuple[tuple[str, ...], ...],
               rule_of: np.ndarray, exact_cluster: np.ndarray, candidate_pairs: np.ndarray) -> pl.DataFrame:
    """Return nodes.parquet from the nodes' frame (node, source, the fields, records): per node its
    source, records, whether it holds each field (`has_<field>`), the exact rule that joined it to
    another node (null if none did), its cluster under the exact rules (`exact_cluster`, the
    cluster's smallest node) and the candidate pairs scored with it (kept in pairs.parquet or not)."""
    labels = pl.Series("exact_rule", [rule_label(r) for r in rules] or [""], dtype=pl.String)
    rule_col = labels.gather(np.maximum(rule_of, 0)).scatter(np.nonzero(rule_of < 0)[0], None) \
        if rules else pl.Series("exact_rule", [None] * frame.height, dtype=pl.String)
    return frame.select(
        pl.col("node").cast(pl.Int64), "source", pl.col("records").cast(pl.Int64),
        *[pl.col(f).is_not_null().alias(f"has_{f}") for f in fields],
    ).with_columns(rule_col.alias("exact_rule"), pl.Series("exact_cluster", exact_cluster, dtype=pl.Int64),
                   pl.Series("candidate_pairs", candidate_pairs, dtype=pl.Int64))


def smallest_members(label: np.ndarray) -> np.ndarray:
    """Return per node the smallest node with the same label (a cluster named by its first node)."""
    first = np.full(int(label.max()) + 1 if label.size else 0, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, label, np.arange(label.size, dtype=np.int64))
    return first[label]


def candidate_counts(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Return per node the scored candidate pairs it is in."""
    return (np.bincount(left, minlength=n) + np.bincount(right, minlength=n)).astype(np.int64)


__all__ = ["NODES_NAME", "candidate_counts", "node_rules", "node_table", "rule_label", "smallest_members"]
