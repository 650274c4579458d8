"""The attach step on Spark (linkcare.linkage.attach): records no exact rule could place, attached
to an existing person or to none, by the local engine's functions.

The activity weights come from counts per source and records per person (weights_from_counts);
the trials (linkcare.spark.trials) are fitted on the driver by fit_prior; the table of unplaced
clusters and their candidates is built with joins and decided by prior_columns,
choose_attachments and orphan_decisions on partitions that hold every row of their orphans (the
prior is a few small arrays, shipped with the function). What reaches the driver: per source and
count of records, the people and the records (a row per count seen), the trials' rows, and the
count of attachments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from linkcare.config import Linkage
from linkcare.linkage.attach import (
    ACTIVITY_BANDS,
    AttachPrior,
    activity_band,
    choose_attachments,
    fit_prior,
    log_attach_prior,
    orphan_decisions,
    prior_columns,
    weights_from_counts,
)
from linkcare.linkage.model import MatchModel
from linkcare.log import get_logger
from linkcare.spark.frames import materialize, polars_map
from linkcare.spark.nodes import present
from linkcare.spark.pairs import Pass
from linkcare.spark.trials import spark_trials

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = get_logger("link")


@dataclass(frozen=True)
class Attached:
    """The attachments to make, what was decided per node of each unplaced cluster with a
    candidate, and the prior measured on the trials."""

    chosen: DataFrame  # orphan_node, other_node, posterior, orphan, candidate (the two people)
    decided: DataFrame  # node, candidate_node, posterior, none, candidates, attached
    prior: AttachPrior


def attach_unplaced(spark: SparkSession, nodes: DataFrame, scored: DataFrame, person: DataFrame, model: MatchModel,
                    lk: Linkage, passes: list[Pass], fields: tuple[str, ...], tf_totals: dict[int, tuple[str, float]],
                    sources: list[str], allowed: np.ndarray) -> Attached:
    """Return the attach step's decisions on the people after accepted pairs (`person`: node,
    person), as LocalEngine's: `nodes` is the cluster stage's frame, `scored` the scored pairs,
    `sources` the source names in code order and `allowed` the ones the config lets attach."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, BooleanType, DoubleType, LongType, StructField, StructType

    placed = F.sum(F.col("placed").cast("long")).over(Window.partitionBy("person"))
    with_person = materialize(nodes.join(person, "node").withColumn("person_placed", placed))
    log_weight, people = _activity_weights(with_person, len(sources))
    trials = spark_trials(spark, with_person, passes, model, lk, fields, tf_totals)
    prior = fit_prior(trials, log_weight, people, allowed, lk.threshold)
    log_attach_prior(prior, sources)
    table = _orphan_rows(with_person, scored, model, passes)
    threshold, temperature = lk.threshold, prior.temperature

    def decide(frame: pl.DataFrame) -> pl.DataFrame:
        rows = prior_columns(frame.sort("orphan", "candidate"), prior)  # the local engine's row order
        return orphan_decisions(rows, choose_attachments(rows, threshold, temperature), temperature)

    schema = StructType([StructField("orphan", LongType()), StructField("candidate_node", LongType()),
                         StructField("posterior", DoubleType()), StructField("none", DoubleType()),
                         StructField("candidates", LongType()), StructField("orphan_node", LongType()),
                         StructField("attached", BooleanType()),
                         StructField("alternative_nodes", ArrayType(LongType())),
                         StructField("alternative_posteriors", ArrayType(DoubleType()))])
    per_orphan = materialize(polars_map(table.repartition("orphan"), decide, schema, whole_partition=True))
    persons = person.select(F.col("node").alias("other_node"), F.col("person").alias("candidate"))
    chosen = materialize(per_orphan.where("attached").select(
        "orphan_node", F.col("candidate_node").alias("other_node"), "posterior", "orphan").join(persons, "other_node"))
    decided = (person.select("node", F.col("person").alias("orphan")).join(per_orphan, "orphan")
               .select("node", "candidate_node", "posterior", "none", "candidates", "attached", "alternative_nodes",
                       "alternative_posteriors"))
    return Attached(chosen, decided, prior)


def _activity_weights(nodes: DataFrame, n_sources: int) -> tuple[np.ndarray, np.ndarray]:
    """Return linkcare.linkage.attach.activity_weights over the nodes of people holding a placed
    node, from counts: per source and count n of a person's records of it, the people with n and
    the records whose owner has n - 1 others (people with none of a source's records have n = 0)."""
    from pyspark.sql import functions as F

    anchored = nodes.where(F.col("person_placed") > 0)
    per = anchored.groupBy("person", "src").agg(F.sum("records").alias("n"))
    everyone = anchored.select("person").distinct().count()
    holders = _per_band(per.groupBy("src", "n").agg(F.count(F.lit(1)).alias("w")), n_sources)
    holders[:, 0] += everyone - holders.sum(axis=1)
    owners = anchored.join(per, ["person", "src"]).groupBy("src", (F.col("n") - 1).alias("n")).agg(
        F.sum("records").alias("w"))
    return weights_from_counts(holders, _per_band(owners, n_sources))


def _per_band(counts: DataFrame, n_sources: int) -> np.ndarray:
    """Return a (source × band) array of the counts per (src, n) summed over the bands of n."""
    got = pl.DataFrame([(int(r["src"]), int(r["n"]), int(r["w"])) for r in counts.collect()],
                       schema={"src": pl.Int64, "n": pl.Int64, "w": pl.Int64}, orient="row")
    banded = got.group_by("src", activity_band(pl.col("n")).alias("band")).agg(pl.col("w").sum())
    out = np.zeros((n_sources, ACTIVITY_BANDS), dtype=np.int64)
    out[banded["src"].to_numpy(), banded["band"].to_numpy()] = banded["w"].to_numpy()
    return out


def _orphan_rows(nodes: DataFrame, scored: DataFrame, model: MatchModel, passes: list[Pass]) -> DataFrame:
    """Return linkcare.linkage.attach.orphan_rows' table: per unplaced person (orphan) and placed
    person (candidate) joined by a scored pair, the best pair (orphan_node, other_node, bf; ties
    as orphan_candidates), the source and pass mask of the orphan's smallest node, and the
    candidate's records of that source (activity)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    side = nodes.select("node", "person", (F.col("person_placed") > 0).alias("anchored"))
    side_l = side.select(F.col("node").alias("l"), F.col("person").alias("cl"), F.col("anchored").alias("pl"))
    side_r = side.select(F.col("node").alias("r"), F.col("person").alias("cr"), F.col("anchored").alias("pr"))
    pairs = (scored.where(~F.col("placed_l") | ~F.col("placed_r"))
             .select("l", "r", (F.col("weight") - F.lit(model.intercept)).alias("bf"))
             .join(side_l, "l").join(side_r, "r"))
    l_unplaced = ~F.col("pl") & F.col("pr")
    oriented = pairs.where(l_unplaced | (~F.col("pr") & F.col("pl"))).select(
        F.when(l_unplaced, F.col("cl")).otherwise(F.col("cr")).alias("orphan"),
        F.when(l_unplaced, F.col("cr")).otherwise(F.col("cl")).alias("candidate"),
        F.when(l_unplaced, F.col("l")).otherwise(F.col("r")).alias("orphan_node"),
        F.when(l_unplaced, F.col("r")).otherwise(F.col("l")).alias("other_node"), "bf")
    order = Window.partitionBy("orphan", "candidate").orderBy(F.col("bf").desc(), "orphan_node", "other_node")
    best = oriented.withColumn("_k", F.row_number().over(order)).where("_k = 1").drop("_k")
    mask = F.lit(0).cast("long")
    for k, p in enumerate(passes):
        mask = mask + F.when(present(list(p.plan.key)), F.lit(1 << k)).otherwise(0)
    smallest = nodes.where(F.col("person_placed") == 0).groupBy(F.col("person").alias("orphan")).agg(
        F.min("node").alias("node"))
    reference = smallest.join(nodes.select("node", "src", mask.alias("mask")), "node").drop("node")
    activity = nodes.groupBy(F.col("person").alias("candidate"), "src").agg(F.sum("records").alias("activity"))
    return (best.join(reference, "orphan").join(activity, ["candidate", "src"], "left")
            .select("orphan", "candidate", "orphan_node", "other_node", "bf", "src", "mask", "activity"))


__all__ = ["Attached", "attach_unplaced"]
