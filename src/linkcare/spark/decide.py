"""Score, accept and cluster on Spark (the attach step is linkcare.spark.attach).

Scoring runs linkcare.linkage.scoring's `match_weights` a batch at a time; people are connected
components (linkcare.spark.graph) of the exact clusters joined by accepted pairs; one-to-one keeps
rounds of mutual best choices. Nothing but counts reaches the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from linkcare.linkage.model import MatchModel, PatternCodec
from linkcare.linkage.scoring import match_probabilities, match_weights, pattern_table
from linkcare.log import get_logger
from linkcare.spark.frames import materialize, polars_map
from linkcare.spark.graph import components

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


__all__ = ["one_to_one", "people", "score_pairs"]
