"""The people of the cohort dataset, from the linkage's decisions per node: each record's person
(person_index.parquet) and one row per person with their consolidated demographics (persons.parquet).

Work is done per distinct identifier tuple (node), not per record; the local engine hands its
decisions over as a NodeDecisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from linkcare.cohort.lineage import carry_over, person_ids


@dataclass(frozen=True)
class NodeDecisions:
    """What linkage decided for each node (distinct identifier tuple), and the records behind them."""

    frame: pl.DataFrame  # node (0..n-1), source, the field columns, records (count), first_id
    record_node: pl.DataFrame  # source, record_id, node
    fields: tuple[str, ...]
    person: np.ndarray  # cluster label per node
    stage: np.ndarray  # 'deterministic' | 'probabilistic' | 'unlinked' per node
    probability: np.ndarray  # best accepted probability touching the node (1 if deterministic)
    codes: dict[str, np.ndarray]  # per field, the rank of each node's value among its sorted values (-1 missing)
    #: field, value, form: each standardised value as the extracts wrote it (linkcare.sources.read.choose_forms)
    forms: pl.DataFrame | None = None

    @property
    def n(self) -> int:
        return self.frame.height


def node_persons(decided: NodeDecisions, key: bytes,
                 previous: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Return per node its person_id, stage and probability (work done per node, not per record),
    and, given a previous run's person index, the lineage table (else None).

    The person ID is a keyed hash of the person's smallest source/record key; with a previous run,
    people carry their IDs over as linkcare.cohort.lineage describes.
    """
    per_node = pl.DataFrame({
        "node": np.arange(decided.n), "cluster": decided.person, "match_stage": decided.stage,
        "match_probability": decided.probability,
        "anchor": decided.frame.select(pl.concat_str([pl.col("source"), pl.lit("/"), pl.col("first_id")])).to_series(),
    })
    anchors = per_node.group_by("cluster").agg(pl.col("anchor").min()).sort("cluster")
    lineage = None
    if previous is None:
        ids = anchors.with_columns(person_ids(anchors["anchor"], key)).select("cluster", "person_id")
    else:
        records = decided.record_node.join(per_node.select("node", "cluster"), on="node", how="left")
        ids, lineage = carry_over(records.select("source", "record_id", "cluster"), anchors, previous, key)
    per_node = per_node.join(ids, on="cluster", how="left").drop("anchor").sort("node")
    if "nhs" in decided.fields:
        per_node = per_node.with_columns(has_nhs=decided.frame["nhs"].is_not_null())
    per_node = per_node.with_columns(
        pl.when(pl.col("match_stage") == "unlinked").then(None).otherwise(pl.col("match_probability"))
        .alias("match_probability"))
    return per_node, lineage


def person_index(decided: NodeDecisions, per_node: pl.DataFrame) -> pl.DataFrame:
    """Return one row per source record: its person, match probability, the stage that linked it and
    its node (distinct identifier tuple, linkcare.cohort.nodes)."""
    index = decided.record_node.join(per_node, on="node", how="left")
    columns = ["source", "record_id", "person_id", "match_probability", "match_stage", "node"]
    if "has_nhs" in index.columns:
        columns.append("has_nhs")
    return index.select(columns).sort(["source", "record_id"])


def weighted_mode(cluster: np.ndarray, code: np.ndarray, weight: np.ndarray, n_clusters: int) -> np.ndarray:
    """Return per cluster the code with the largest total weight (ties: the smallest code), -1 if none."""
    ok = code >= 0
    n_codes = int(code.max()) + 1 if ok.any() else 1
    keys, inverse = np.unique(cluster[ok] * n_codes + code[ok], return_inverse=True)
    total = np.bincount(inverse.ravel(), weights=weight[ok].astype(np.float64))
    out = np.full(n_clusters, -1, dtype=np.int64)
    if keys.size == 0:
        return out
    # keys are sorted by cluster, then code: per cluster, the first code with the largest total.
    owner, value = keys // n_codes, keys % n_codes
    bounds = np.r_[0, np.nonzero(np.diff(owner))[0] + 1]
    best = np.repeat(np.maximum.reduceat(total, bounds), np.diff(np.r_[bounds, owner.size]))
    at_best = np.nonzero(total == best)[0]
    first = at_best[np.r_[True, owner[at_best][1:] != owner[at_best][:-1]]]
    out[owner[first]] = value[first]
    return out


def written_forms(people: pl.DataFrame, forms: pl.DataFrame | None, fields: tuple[str, ...]) -> pl.DataFrame:
    """Return `people` with each field's standardised value replaced by the form the extracts wrote
    it in (`forms`: field, value, form); a value without a form (a date part) stays as it is."""
    if forms is None:
        return people
    out = people
    for name in fields:
        mine = forms.filter(pl.col("field") == name).select(pl.col("value").alias(name), pl.col("form").alias("_form"))
        if mine.height:
            out = (out.join(mine, on=name, how="left", maintain_order="left")
                   .with_columns(pl.coalesce("_form", name).alias(name)).drop("_form"))
    return out


def persons(decided: NodeDecisions, per_node: pl.DataFrame) -> pl.DataFrame:
    """Return one row per person: records per source and each linkage field's most common value
    over the person's records (ties: the smallest standardised value), written in the form the
    extracts wrote it in (linkcare.sources.read.choose_forms): standardising is for comparing only."""
    cluster = decided.person
    n_clusters = int(cluster.max()) + 1 if cluster.size else 0
    records = decided.frame["records"].to_numpy()
    source = decided.frame["source"]
    ids = per_node.select("cluster", "person_id").unique("cluster").sort("cluster")
    data: dict[str, object] = {
        "person_id": ids["person_id"],
        "records": np.bincount(cluster, weights=records, minlength=n_clusters).astype(np.int64),
    }
    for s in sorted(source.unique().to_list()):
        mine = (source == s).to_numpy()
        data[f"records_{s}"] = np.bincount(cluster[mine], weights=records[mine], minlength=n_clusters).astype(np.int64)
    for name in decided.fields:
        # The link stage's codes are ranks among the sorted distinct values, so these are their values.
        values = decided.frame[name].drop_nulls().unique().sort()
        mode = weighted_mode(cluster, decided.codes[name], records, n_clusters)
        data[name] = pl.Series(name, [None] * n_clusters, dtype=values.dtype) if values.len() == 0 else (
            values.gather(np.maximum(mode, 0)).scatter(np.nonzero(mode < 0)[0], None))
    return written_forms(pl.DataFrame(data), decided.forms, decided.fields).sort("person_id")


#: The attach step's decision for every record of an unplaced cluster that had a candidate person.
ATTACHMENTS_NAME = "attachments.parquet"
ATTACHMENT_COLUMNS = {"source": pl.String, "record_id": pl.String, "person_id": pl.String,
                      "candidate_person_id": pl.String, "posterior": pl.Float64, "none": pl.Float64,
                      "candidates": pl.Int64, "attached": pl.Boolean,
                      "alternative_person_ids": pl.List(pl.String), "alternative_posteriors": pl.List(pl.Float64)}


def attachments(decided: pl.DataFrame, record_node: pl.DataFrame, per_node: pl.DataFrame) -> pl.DataFrame:
    """Return attachments.parquet: per record of an unplaced cluster with a candidate person, its
    person, its likeliest candidate's person, that candidate's posterior, the posterior that it is
    none of them, the candidates, whether it was attached and the runners-up's persons and
    posteriors. `decided` holds node, candidate_node, posterior, none, candidates, attached,
    alternative_nodes and alternative_posteriors; `per_node` each node's person_id."""
    ids = per_node.select("node", "person_id")
    runners = (decided.select("node", "alternative_nodes").explode("alternative_nodes").drop_nulls()
               .join(ids.rename({"node": "alternative_nodes"}), on="alternative_nodes", how="left",
                     maintain_order="left")
               .group_by("node", maintain_order=True).agg(pl.col("person_id").alias("alternative_person_ids")))
    decided = decided.join(runners, on="node", how="left").with_columns(
        pl.col("alternative_person_ids").fill_null(pl.lit([], dtype=pl.List(pl.String))))
    return (decided.join(ids, on="node", how="left")
            .join(ids.rename({"node": "candidate_node", "person_id": "candidate_person_id"}), on="candidate_node",
                  how="left")
            .join(record_node, on="node", how="inner")
            .select(list(ATTACHMENT_COLUMNS)).cast(ATTACHMENT_COLUMNS)  # type: ignore[arg-type]
            .sort("source", "record_id"))


__all__ = ["ATTACHMENTS_NAME", "ATTACHMENT_COLUMNS", "NodeDecisions", "attachments", "node_persons", "person_index",
           "persons", "weighted_mode",
           "written_forms"]
