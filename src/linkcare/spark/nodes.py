"""Distinct identifier tuples (nodes) on Spark, the pseudonymisation-key check, and the
deterministic rules as Spark joins.

Nodes are numbered exactly as the local engine numbers them (in order of source, then smallest
record id), so that seeded choices made by node number (the u sample) pick the same nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from linkcare.config import Linkage
from linkcare.linkage.prepare import SINGLE, check_key_overlaps
from linkcare.spark.frames import materialize, with_index
from linkcare.spark.graph import components

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


@dataclass
class SparkNodes:
    """The nodes (node, source, src, the fields, records, first_id, placed, det, det_size) and the
    map from records to them."""

    frame: DataFrame
    record_node: DataFrame  # source, record_id, node
    fields: tuple[str, ...]
    sources: list[str]  # source names in code order (src = position)
    n: int


def present(fields: tuple[str, ...] | list[str]) -> Column:
    """Return the condition that every one of the fields has a value."""
    from pyspark.sql import functions as F

    cond = F.lit(True)
    for f in fields:
        cond = cond & F.col(f).isNotNull()
    return cond


def reduce_records(spark: SparkSession, records: DataFrame, fields: tuple[str, ...],
                   rules: tuple[tuple[str, ...], ...]) -> SparkNodes:
    """Return the distinct (source, fields…) tuples as numbered nodes, and each record's node.

    As linkcare.linkage.prepare.reduce_records, only records that hold every field of an exact rule
    share a node with their identical records; any other record is a node of its own (the group-by
    key has SINGLE: null for the first kind, the record id for the second).
    """
    from pyspark.sql import functions as F

    holds_rule = F.lit(False)
    for rule in rules:
        holds_rule = holds_rule | present(rule)
    single = F.when(holds_rule, F.lit(None).cast("string")).otherwise(F.col("record_id")).alias(SINGLE)
    grouped = records.select("*", single).groupBy("source", *fields, SINGLE).agg(
        F.count(F.lit(1)).alias("records"), F.min("record_id").alias("first_id"),
        F.collect_list("record_id").alias("record_ids"))
    numbered = with_index(grouped.orderBy("source", "first_id"), "node", spark)
    record_node = numbered.select(F.explode("record_ids").alias("record_id"), "source", "node")
    sources = sorted(r[0] for r in numbered.select("source").distinct().collect())
    src = F.create_map(*[x for i, name in enumerate(sources) for x in (F.lit(name), F.lit(i))])[F.col("source")]
    placed = F.lit(not rules)
    for rule in rules:
        placed = placed | present(rule)
    frame = numbered.select("node", "source", src.alias("src"), *fields, "records", "first_id",
                            placed.alias("placed"))
    frame = materialize(frame)
    return SparkNodes(frame, record_node.select("source", "record_id", "node"), fields, sources, frame.count())


def check_pseudonymisation_keys(nodes: SparkNodes, token: str = "nhs") -> None:
    """Raise DataError as linkcare.linkage.prepare.check_pseudonymisation_keys does; only counts
    per source (and per pair of sources) reach the driver."""
    from pyspark.sql import functions as F

    if token not in nodes.fields:
        return
    others = [f for f in nodes.fields if f != token]
    frame = nodes.frame
    per_source = frame.groupBy("source").agg(F.count(F.lit(1)).alias("_n"),
                                             *[F.count(f).alias(f) for f in others]).collect()
    held = {r["source"]: [f for f in others if r[f] > 0] for r in per_source}
    tokens = frame.where(F.col(token).isNotNull()).select("source", token).distinct()
    counts = {r["source"]: int(r["count"]) for r in tokens.groupBy("source").count().collect()}
    shared_counts = {(r["a"], r["b"]): int(r["count"]) for r in (
        tokens.withColumnRenamed("source", "a").join(tokens.withColumnRenamed("source", "b"), token)
        .where(F.col("a") < F.col("b")).groupBy("a", "b").count().collect())}
    names = sorted(held)

    def shared_tokens(a: str, b: str) -> int:
        return shared_counts.get((a, b), 0)

    def demographic_overlap(a: str, b: str, shared: list[str]) -> float:
        demo_a = frame.where((F.col("source") == a) & present(shared)).select(shared).distinct()
        demo_b = frame.where((F.col("source") == b) & present(shared)).select(shared).distinct()
        both = demo_b.join(demo_a, shared, "left_semi").count()
        return both / max(min(demo_a.count(), demo_b.count()), 1)

    check_key_overlaps(names, {s: counts.get(s, 0) for s in names}, held, shared_tokens, demographic_overlap, token)


def deterministic_clusters(spark: SparkSession, nodes: SparkNodes, lk: Linkage) -> DataFrame:
    """Return nodes with `det` (their cluster under the exact rules: the smallest node of each
    component), `det_size` (nodes in it) and `det_rule` (the position of the first exact rule of an
    edge touching the node, null if none); as linkcare.linkage.blocking.deterministic_edges, each
    node joins the first node sharing every field of a rule (under link_only, only in groups that
    span sources; under dedupe_only, within a source)."""
    from pyspark.sql import functions as F

    frame = nodes.frame
    edges: DataFrame | None = None
    for r, rule in enumerate(lk.deterministic):
        keys = [*rule, "src"] if lk.link_type == "dedupe_only" else list(rule)
        members = frame.where(present(rule)).select("node", "src", *rule)
        groups = members.groupBy(*keys).agg(F.min("node").alias("head"),
                                            F.countDistinct("src").alias("_sources"))
        if lk.link_type == "link_only":
            groups = groups.where(F.col("_sources") > 1)
        found = (members.join(groups, keys).where(F.col("node") != F.col("head"))
                 .select(F.col("head").alias("a"), F.col("node").alias("b"), F.lit(r).alias("rule")))
        edges = found if edges is None else edges.unionByName(found)
    frame = frame.withColumn("det", F.col("node"))
    if edges is not None:
        edges = materialize(edges)
        labels = components(spark, edges.select("a", "b"))
        ends = (edges.select(F.col("a").alias("node"), "rule")
                .unionByName(edges.select(F.col("b").alias("node"), "rule")))
        rules = ends.groupBy("node").agg(F.min("rule").alias("det_rule"))
        frame = (frame.join(labels.withColumnRenamed("id", "node"), "node", "left")
                 .withColumn("det", F.coalesce(F.col("label"), F.col("node"))).drop("label")
                 .join(rules, "node", "left"))
    else:
        frame = frame.withColumn("det_rule", F.lit(None).cast("int"))
    sizes = frame.groupBy("det").agg(F.count(F.lit(1)).alias("det_size"))
    return materialize(frame.join(sizes, "det"))


__all__ = ["SparkNodes", "check_pseudonymisation_keys", "deterministic_clusters", "present", "reduce_records"]
