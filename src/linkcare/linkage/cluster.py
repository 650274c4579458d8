"""From accepted pairs to people: an optional one-to-one constraint between two sources, and the
connected components of the accepted pairs (person IDs are in linkcare.cohort.lineage)."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def one_to_one(left: np.ndarray, right: np.ndarray, weight: np.ndarray, src: np.ndarray,
               sources: tuple[int, int]) -> np.ndarray:
    """Return which pairs to keep so that, between the two given sources, each node links to at most
    one node of the other: pairs are taken greedily by weight, in rounds of mutual best choices."""
    a, b = sources
    between = ((src[left] == a) & (src[right] == b)) | ((src[left] == b) & (src[right] == a))
    keep = ~between
    idx = np.nonzero(between)[0]
    if idx.size == 0:
        return keep
    x = np.where(src[left[idx]] == a, left[idx], right[idx])
    y = np.where(src[left[idx]] == a, right[idx], left[idx])
    frame = pl.DataFrame({"i": idx, "x": x, "y": y, "w": weight[idx]})
    while frame.height:
        # A pair is chosen when it is the best remaining pair of both of its nodes.
        best_x = frame.sort(["w", "i"], descending=[True, False]).group_by("x", maintain_order=True).first()
        best_y = frame.sort(["w", "i"], descending=[True, False]).group_by("y", maintain_order=True).first()
        chosen = best_x.join(best_y.select("i"), on="i")
        if chosen.height == 0:
            break
        keep[chosen["i"].to_numpy()] = True
        frame = frame.filter(~pl.col("x").is_in(chosen["x"].implode()) & ~pl.col("y").is_in(chosen["y"].implode()))
    return keep


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Return a component label per node for the graph with the given edges."""
    graph = coo_matrix((np.ones(left.size, dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)
