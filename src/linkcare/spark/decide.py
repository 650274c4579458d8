"""Score, accept and cluster on Spark, and attach the records no exact rule could place.

Scoring runs linkcare.linkage.scoring's `match_weights` a batch at a time; people are connected
components (linkcare.spark.graph) of the exact clusters joined by accepted pairs; the attach step
builds, with joins, the table linkcare.linkage.attach's `choose_attachments` decides on, and runs
that function on partitions that hold every row of their orphans. Only small tables reach the
driver: per source, the records per exact cluster (for the gamma shapes) and the share of owners
found among candidates.
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from linkcare.config import Linkage
from linkcare.linkage.attach import choose_attachments
from linkcare.linkage.model import MatchModel, PatternCodec
from linkcare.linkage.scoring import match_probabilities, match_weights, pattern_table
from linkcare.log import get_logger
from linkcare.spark.frames import materialize, polars_map
from linkcare.spark.graph import components
from linkcare.spark.nodes import present

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = get_logger("link")
#: Up to this many possible patterns, the weight of every pattern travels with the scoring function.
SHIPPED_TABLE = 1 << 16


def score_pairs(pairs: DataFrame, model: MatchModel, tf_totals: dict[int, tuple[str, float]]) -> DataFrame:
    """Return the pairs with `weight` (log2 odds) and `probability`, scored a batch at a time by the
    local engine's functions; `tf_totals` holds, per term-frequency field, the column with the count
    of nodes holding the left node's value and the number of nodes holding any value."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    patterns = PatternCodec([c.n_levels for c in model.comparisons])
    table = pattern_table(model, patterns, SHIPPED_TABLE)

    def score(batch: pl.DataFrame) -> pl.DataFrame:
        code = batch["code"].to_numpy()

        def frequency(j: int, exact: np.ndarray) -> np.ndarray:
            column, total = tf_totals[j]
            return batch[column].to_numpy()[exact].astype(np.float64) / total

        weight = match_weights(model, patterns, table, code, frequency)
        return batch.with_columns(pl.Series("weight", weight), pl.Series("probability", match_probabilities(weight)))

    schema = StructType([*pairs.schema.fields, StructField("weight", DoubleType()),
                         StructField("probability", DoubleType())])
    return polars_map(pairs, score, schema)


def one_to_one(accepted: DataFrame, sources: list[str], pair: tuple[str, ...]) -> DataFrame:
    """Return (l, r) of the accepted pairs to drop so that between the two sources each node keeps at
    most one partner: rounds of mutual best choices by weight, as linkcare.linkage.cluster.one_to_one
    (equal weights are decided by node order here, by candidate order there)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    a, b = sources.index(pair[0]), sources.index(pair[1])
    is_a = F.col("src_l") == a
    between = accepted.where((is_a & (F.col("src_r") == b)) | ((F.col("src_l") == b) & (F.col("src_r") == a)))
    frame = materialize(between.select("l", "r", "weight", F.when(is_a, F.col("l")).otherwise(F.col("r")).alias("x"),
                                       F.when(is_a, F.col("r")).otherwise(F.col("l")).alias("y")))
    kept: DataFrame | None = None
    order = [F.col("weight").desc(), F.col("l"), F.col("r")]
    while True:
        best_x = frame.withColumn("_k", F.row_number().over(Window.partitionBy("x").orderBy(*order))).where("_k = 1")
        best_y = frame.withColumn("_k", F.row_number().over(Window.partitionBy("y").orderBy(*order))).where("_k = 1")
        chosen = materialize(best_x.select("l", "r", "x", "y").join(best_y.select("l", "r"), ["l", "r"]))
        if chosen.limit(1).count() == 0:
            break
        kept = chosen if kept is None else kept.unionByName(chosen)
        frame = materialize(frame.join(chosen.select("x"), "x", "left_anti").join(chosen.select("y"), "y", "left_anti"))
    dropped = between.select("l", "r")
    return dropped if kept is None else dropped.join(kept.select("l", "r"), ["l", "r"], "left_anti")


def people(spark: SparkSession, nodes: DataFrame, accepted: DataFrame) -> DataFrame:
    """Return (node, person) with person the component of the node's exact cluster under the
    accepted pairs (connected components run on the exact clusters, each one vertex)."""
    from pyspark.sql import functions as F

    edges = accepted.where(F.col("det_l") != F.col("det_r")).select(F.col("det_l").alias("a"),
                                                                    F.col("det_r").alias("b"))
    labels = components(spark, edges).select(F.col("id").alias("det"), F.col("label"))
    return (nodes.select("node", "det").join(labels, "det", "left")
            .select("node", F.coalesce("label", "det").alias("person")))


def _among(nodes: DataFrame, blocking: tuple[tuple[str, ...], ...]) -> DataFrame:
    """Return (src, available, among) as linkcare.linkage.attach.owner_among_candidates: per
    source and set of passes a node can take part in, the share of placed records whose person
    has another record agreeing on one of those passes' keys; only sums per (source, passes)
    reach the driver."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    available, hits = F.lit(0).cast("long"), F.lit(0).cast("long")
    for k, key in enumerate(blocking):
        shared = F.count(F.lit(1)).over(Window.partitionBy("det", *key)) > 1
        available = available + F.when(present(key), F.lit(1 << k)).otherwise(0)
        hits = hits + F.when(present(key) & shared, F.lit(1 << k)).otherwise(0)
    marked = nodes.select("src", "placed", "det_size", "records", available.alias("available"), hits.alias("hits"))
    reference = {(int(r["src"]), int(r["hits"])): int(r["w"]) for r in marked.where(
        F.col("placed") & (F.col("det_size") > 1)).groupBy("src", "hits").agg(F.sum("records").alias("w")).collect()}
    combos = [(int(r["src"]), int(r["available"])) for r in
              marked.where(~F.col("placed")).select("src", "available").distinct().collect()]
    rows = []
    for s_, mask in combos:
        weight = np.array([w for (s, _), w in reference.items() if s == s_], dtype=np.float64)
        found = np.array([((h & mask) > 0) * w for (s, h), w in reference.items() if s == s_], dtype=np.float64)
        rows.append((s_, mask, float(found.sum() / weight.sum()) if weight.sum() else 0.0))
    schema = "src long, available long, among double"
    return nodes.sparkSession.createDataFrame(rows, schema) if rows else nodes.sparkSession.createDataFrame([], schema)


def _activity_shape(nodes: DataFrame) -> np.ndarray:
    """Return per source the gamma shape of records per exact cluster of placed nodes, as
    linkcare.linkage.attach.activity_shape, from sums per source.

    As there, sources run up to the last one with a placed node, and a cluster row is counted for
    every component numbered up to the last one holding a placed node (components are numbered in
    order of their smallest node, so an unplaced node in between counts as a person with no
    records).
    """
    from pyspark.sql import functions as F

    placed = nodes.where(F.col("placed"))
    last, last_source = placed.agg(F.max("det"), F.max("src")).first()  # type: ignore[misc]
    if last is None:
        return np.zeros(0)
    n_sources = int(last_source) + 1
    rows = int(nodes.where(F.col("det") <= last).select("det").distinct().count())
    per = placed.groupBy("det", "src").agg(F.sum("records").alias("x"))
    sums = {int(r["src"]): (int(r["s1"]), int(r["s2"])) for r in per.groupBy("src").agg(
        F.sum("x").alias("s1"), F.sum(F.col("x") * F.col("x")).alias("s2")).collect()}
    alpha = np.zeros(n_sources)
    for s in range(n_sources):
        s1, s2 = sums.get(s, (0, 0))
        mean = Fraction(s1, rows)
        excess = max(float(Fraction(s2, rows) - mean * mean - mean), 1e-9)
        alpha[s] = float(mean) * float(mean) / excess
    return np.clip(alpha, 0.01, 10.0)


def attach_unplaced(spark: SparkSession, nodes: DataFrame, scored: DataFrame, person: DataFrame,
                    model: MatchModel, lk: Linkage) -> DataFrame:
    """Return (orphan_node, other_node, posterior, orphan, candidate): the unplaced people (orphan) to
    attach to a placed one (candidate), decided by linkcare.linkage.attach.choose_attachments."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    among = _among(nodes, lk.blocking)
    alpha = _activity_shape(nodes)
    log.debug("records per person, gamma shape per source: %s", alpha.round(3))
    shapes = spark.createDataFrame([(i, float(a)) for i, a in enumerate(alpha)] or [(-1, 0.0)],
                                   "src long, alpha double")
    with_person = nodes.join(person, "node")
    placed_person = with_person.groupBy("person").agg(F.max("placed").alias("placed_person"))
    side_l = with_person.select(F.col("node").alias("l"), F.col("person").alias("cl")).join(
        placed_person.select(F.col("person").alias("cl"), F.col("placed_person").alias("pl")), "cl")
    side_r = with_person.select(F.col("node").alias("r"), F.col("person").alias("cr")).join(
        placed_person.select(F.col("person").alias("cr"), F.col("placed_person").alias("pr")), "cr")
    orphan_pairs = (scored.where(~F.col("placed_l") | ~F.col("placed_r"))
                    .select("l", "r", (F.col("weight") - F.lit(model.intercept)).alias("bf"))
                    .join(side_l, "l").join(side_r, "r"))
    l_unplaced = ~F.col("pl") & F.col("pr")
    oriented = orphan_pairs.where(l_unplaced | (~F.col("pr") & F.col("pl"))).select(
        F.when(l_unplaced, F.col("cl")).otherwise(F.col("cr")).alias("orphan"),
        F.when(l_unplaced, F.col("cr")).otherwise(F.col("cl")).alias("candidate"),
        F.when(l_unplaced, F.col("l")).otherwise(F.col("r")).alias("orphan_node"),
        F.when(l_unplaced, F.col("r")).otherwise(F.col("l")).alias("other_node"), "bf")
    oriented = materialize(oriented)
    sources = (oriented.select("orphan", F.col("orphan_node").alias("node"))
               .join(nodes.select("node", "src"), "node").select("orphan", "src").distinct())
    prior = sources.join(F.broadcast(shapes), "src").groupBy("orphan").agg(F.sum("alpha").alias("alpha"))
    per = with_person.groupBy("person", "src").agg(F.sum("records").alias("records"))
    order = Window.partitionBy("orphan", "candidate").orderBy(F.col("bf").desc(), "orphan_node", "other_node")
    best = oriented.withColumn("_k", F.row_number().over(order)).where("_k = 1").drop("_k")
    activity = (best.select("orphan", "candidate").join(sources, "orphan")
                .join(per.withColumnRenamed("person", "candidate"), ["candidate", "src"])
                .groupBy("orphan", "candidate").agg(F.sum("records").alias("activity")))
    owners = nodes.select(F.col("node").alias("orphan_node"), "src", *[F.col(f) for f in _key_fields(lk)])
    with_among = _with_among(owners, among, lk).select("orphan_node", "among")
    table = (best.join(activity, ["orphan", "candidate"], "left").join(prior, "orphan")
             .join(with_among, "orphan_node", "left").fillna(0.0, subset=["among"]))

    def choose(frame: pl.DataFrame) -> pl.DataFrame:
        return choose_attachments(frame, lk.threshold)

    schema = StructType([StructField("orphan_node", LongType()), StructField("other_node", LongType()),
                         StructField("posterior", DoubleType())])
    chosen = polars_map(table.repartition("orphan"), choose, schema, whole_partition=True)
    to_person = person.select(F.col("node").alias("orphan_node"), F.col("person").alias("orphan"))
    to_candidate = person.select(F.col("node").alias("other_node"), F.col("person").alias("candidate"))
    return materialize(chosen.join(to_person, "orphan_node").join(to_candidate, "other_node"))


def _key_fields(lk: Linkage) -> list[str]:
    return sorted({f for key in lk.blocking for f in key})


def _with_among(frame: DataFrame, among: DataFrame, lk: Linkage) -> DataFrame:
    from pyspark.sql import functions as F

    available = F.lit(0).cast("long")
    for k, key in enumerate(lk.blocking):
        available = available + F.when(present(key), F.lit(1 << k)).otherwise(0)
    return frame.withColumn("available", available).join(F.broadcast(among), ["src", "available"], "left")


__all__ = ["attach_unplaced", "one_to_one", "people", "score_pairs"]
