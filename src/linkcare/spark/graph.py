"""Connected components on Spark: the alternating large-star / small-star algorithm of Kiveris et
al. ("Connected Components in MapReduce and Beyond", SoCC 2014).

Each round is a few joins and group-bys over the edges, so no step needs the whole graph in one
place; after O(log² n) rounds every component is a star around its smallest vertex. Each round's
edges are checkpointed, so the plan Spark keeps does not grow with the rounds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from linkcare.log import get_logger
from linkcare.spark.frames import materialize

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = get_logger("link")
MAX_ROUNDS = 100


def components(spark: SparkSession, edges: DataFrame) -> DataFrame:
    """Return (id, label) for every vertex an edge (columns a, b) touches: label is the smallest
    vertex of its component. Vertices without edges are their own component and are left out."""
    from pyspark.sql import functions as F

    current = materialize(edges.select(F.least("a", "b").alias("u"), F.greatest("a", "b").alias("v"))
                          .where(F.col("u") != F.col("v")).distinct())
    size = current.count()
    for rounds in range(1, MAX_ROUNDS + 1):
        # Large star: every vertex x sends its larger neighbours to the smallest of x and its neighbours.
        both = current.select(F.col("u").alias("x"), F.col("v").alias("y")).unionByName(
            current.select(F.col("v").alias("x"), F.col("u").alias("y")))
        smallest = both.groupBy("x").agg(F.least(F.min("y"), F.col("x")).alias("m"))
        large = (both.where(F.col("y") > F.col("x")).join(smallest, "x")
                 .select(F.col("m").alias("u"), F.col("y").alias("v")).distinct())
        # Small star: every vertex v sends itself and its smaller neighbours to the smallest of them.
        lowest = large.groupBy("v").agg(F.min("u").alias("m"))
        small = (large.join(lowest, "v").select(F.col("u").alias("y"), "m")
                 .unionByName(lowest.select(F.col("v").alias("y"), "m")).where(F.col("y") != F.col("m")))
        following = materialize(small.select(F.least("y", "m").alias("u"), F.greatest("y", "m").alias("v"))
                                .distinct())
        following_size = following.count()
        changed = following_size != size or following.join(current, ["u", "v"], "left_anti").limit(1).count() > 0
        current, size = following, following_size
        if not changed:
            log.debug("connected components: %s rounds", rounds)
            break
    else:
        raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
    # Now every edge joins a vertex to the smallest vertex of its component.
    return current.select(F.col("v").alias("id"), F.col("u").alias("label")).unionByName(
        current.select(F.col("u").alias("id"), F.col("u").alias("label"))).distinct()


__all__ = ["components"]
