"""Attach records that no exact rule could place to the most likely existing person.

Pairwise Fellegi-Sunter cannot tell two people with the same birth month, sex and area apart, so
a hospital record without an NHS token scores about evens against each of them. But records are
not spread evenly over people: someone with ten admissions is far more likely to own an eleventh
than someone with none. For each unplaced cluster, the posterior over its candidate people is

    P(person B) = P(owner among candidates) × a_B 2^BF_B / Σ a_B' 2^BF_B'

where BF_B is the best log2 Bayes factor between the cluster and B, a_B = (records B already has
in the cluster's sources) + alpha, and P(owner among candidates) is measured on the people the
exact rules found. alpha is the shape of a gamma-Poisson fit to the records per person in each
source (small when a few people hold most records, as with hospital use), so a person with no
records of that kind yet still has some chance. The cluster joins B when the posterior reaches
the threshold.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def activity_shape(cluster: np.ndarray, src: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Return per source the gamma shape (alpha) of records per person, by the method of moments
    over the given clusters (people with none of a source's records count as zero)."""
    n_src = int(src.max()) + 1
    n_clusters = int(cluster.max()) + 1
    counts = np.zeros((n_clusters, n_src))
    np.add.at(counts, (cluster, src), records)
    mean = counts.mean(axis=0)
    var = counts.var(axis=0)
    excess = np.maximum(var - mean, 1e-9)
    return np.clip(mean * mean / excess, 0.01, 10.0)


def attach_unplaced(cluster: np.ndarray, placed_node: np.ndarray, src: np.ndarray, records: np.ndarray,
                    left: np.ndarray, right: np.ndarray, log2_bf: np.ndarray, among: np.ndarray,
                    threshold: float, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (left node, right node, posterior) of the attachments to make.

    `placed_node` marks nodes an exact rule could place (they anchor their cluster); `among` is
    per node the chance that its owner is among its candidates.
    """
    placed_cluster = np.zeros(cluster.max() + 1, dtype=bool)
    np.logical_or.at(placed_cluster, cluster, placed_node)
    cl, cr = cluster[left], cluster[right]
    # Orient every pair from the unplaced cluster to the placed one; drop the rest.
    l_unplaced = ~placed_cluster[cl] & placed_cluster[cr]
    r_unplaced = ~placed_cluster[cr] & placed_cluster[cl]
    orphan_node = np.where(l_unplaced, left, right)[l_unplaced | r_unplaced]
    other_node = np.where(l_unplaced, right, left)[l_unplaced | r_unplaced]
    bf = log2_bf[l_unplaced | r_unplaced]
    if orphan_node.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
    # Records each cluster has per source, to weight candidates by activity in the orphan's sources.
    per = pl.DataFrame({"cluster": cluster, "src": src, "records": records}).group_by("cluster", "src").agg(
        pl.col("records").sum())
    orphan_sources = pl.DataFrame({"orphan": cluster[orphan_node], "src": src[orphan_node]}).unique()
    shapes = pl.DataFrame({"src": np.arange(alpha.size, dtype=src.dtype), "alpha": alpha})
    prior = orphan_sources.join(shapes, on="src").group_by("orphan").agg(pl.col("alpha").sum())
    frame = pl.DataFrame({"orphan": cluster[orphan_node], "candidate": cluster[other_node],
                          "orphan_node": orphan_node, "other_node": other_node, "bf": bf,
                          "among": among[orphan_node]})
    best = frame.sort("bf", descending=True).group_by("orphan", "candidate", maintain_order=True).first()
    activity = (best.select("orphan", "candidate").join(orphan_sources, on="orphan")
                .join(per.rename({"cluster": "candidate"}), on=["candidate", "src"])
                .group_by("orphan", "candidate").agg(pl.col("records").sum().alias("activity")))
    best = best.join(activity, on=["orphan", "candidate"], how="left").join(prior, on="orphan")
    chosen = choose_attachments(best, threshold)
    return (chosen["orphan_node"].to_numpy(), chosen["other_node"].to_numpy(), chosen["posterior"].to_numpy())


def choose_attachments(best: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """Return the attachments to make (orphan_node, other_node, posterior), at most one per orphan.

    `best` holds, per unplaced cluster (`orphan`) and candidate person (`candidate`), the best pair
    between them (`orphan_node`, `other_node`, its log2 Bayes factor `bf`), `among` (the chance the
    orphan's owner is among its candidates), `activity` (the candidate's records in the orphan's
    sources, null for none) and `alpha` (the gamma shapes of those sources, summed). Every orphan's
    rows must be present, so a slice of orphans (a Spark partition) is decided on its own.
    """
    best = best.with_columns((pl.col("activity").fill_null(0) + pl.col("alpha")).alias("activity"))
    # Normalise in log space per orphan for numerical safety.
    best = best.with_columns((pl.col("activity").log(2) + pl.col("bf")).alias("score"))
    best = best.with_columns((pl.col("score") - pl.col("score").max().over("orphan")).alias("rel"))
    best = best.with_columns((2.0 ** pl.col("rel")).alias("mass"))
    share = pl.col("mass") / pl.col("mass").sum().over("orphan")
    best = best.with_columns((share * pl.col("among")).alias("posterior"))
    chosen = best.filter(pl.col("posterior") >= threshold).sort(["orphan", "posterior"], descending=[False, True])
    chosen = chosen.group_by("orphan", maintain_order=True).first()
    return chosen.select("orphan_node", "other_node", "posterior")


def placed_nodes(codes: dict[str, np.ndarray], rules: tuple[tuple[str, ...], ...]) -> np.ndarray:
    """Return which nodes have every field of at least one deterministic rule."""
    placed = np.zeros(next(iter(codes.values())).size, dtype=bool)
    for rule in rules:
        ok = np.ones(placed.size, dtype=bool)
        for f in rule:
            ok &= codes[f] >= 0
        placed |= ok
    return placed


def owner_among_candidates(codes: dict[str, np.ndarray], blocking: tuple[tuple[str, ...], ...],
                            det_cluster: np.ndarray, det_size: np.ndarray, src: np.ndarray,
                            records: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """Return per node the chance that its owner is among its candidates, measured on the people
    the exact rules found: among placed records of the same source, the share whose person has
    another record agreeing with them on the key of a blocking pass this node can take part in."""
    n = src.size
    available = np.zeros(n, dtype=np.int64)  # bit k: the node has every field of pass k
    hits = np.zeros(n, dtype=np.int64)  # bit k: another node of the person agrees on pass k's key
    for k, key in enumerate(blocking):
        present = np.ones(n, dtype=bool)
        for f in key:
            present &= codes[f] >= 0
        frame = pl.DataFrame({"c": det_cluster, **{f: codes[f] for f in key}})
        shared = frame.select(pl.len().over(["c", *key]) > 1).to_series().to_numpy()
        available |= present.astype(np.int64) << k
        hits |= (present & shared).astype(np.int64) << k
    reference = placed & (det_size[det_cluster] > 1)
    out = np.zeros(n)
    combos = pl.DataFrame({"src": src, "mask": available}).filter(pl.Series(~placed)).unique()
    for s_, mask in zip(combos["src"].to_list(), combos["mask"].to_list(), strict=True):
        ref = reference & (src == s_)
        weight = records[ref].astype(np.float64)
        share = float((((hits[ref] & mask) > 0) * weight).sum() / weight.sum()) if weight.sum() else 0.0
        out[(src == s_) & (available == mask)] = share
    return out


__all__ = ["activity_shape", "attach_unplaced", "choose_attachments", "owner_among_candidates", "placed_nodes"]
