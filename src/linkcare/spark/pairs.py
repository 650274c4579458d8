"""Candidate pairs on Spark: each blocking pass a join of the nodes on its key (a sorted-
neighbourhood pass a join on its block and nearby ranks), counted before any pair is formed, and
each pair compared once, with the local engine's comparators, a partition at a time.

A pair several passes find is compared once: the pairs of every pass are grouped, and a pair
counts as new in the first pass that found it (as the local engine skips a pair an earlier pass
produced). Every pass's pairs still train its own EM session, as on one machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from linkcare.config import Comparison, Linkage
from linkcare.linkage.blocking import BlockPlan, check_pair_counts
from linkcare.linkage.compare import compare_values
from linkcare.linkage.engine import TRAIN_PAIRS_PER_PASS
from linkcare.linkage.model import PatternCodec, PatternCounts
from linkcare.spark.frames import materialize, polars_map, with_index
from linkcare.spark.nodes import present

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class Pass:
    """One candidate pass: its plan (key, pairs, window) and the nodes that take part in it."""

    plan: BlockPlan
    members: DataFrame  # node, src and the columns its join is on
    on: list[str]  # join columns (the key; for sorted neighbourhood the block and `rank`)


def allowed(link_type: str) -> Column:
    """Return the condition the link type puts on a pair's sources (src_l, src_r)."""
    from pyspark.sql import functions as F

    if link_type == "link_only":
        return F.col("src_l") != F.col("src_r")
    if link_type == "dedupe_only":
        return F.col("src_l") == F.col("src_r")
    return F.lit(True)


def _count(frame: DataFrame, expr: Column) -> int:
    from pyspark.sql import functions as F

    value = frame.agg(F.sum(expr)).first()[0]  # type: ignore[index]
    return int(value or 0)


def plan_passes(spark: SparkSession, nodes: DataFrame, lk: Linkage) -> list[Pass]:
    """Return every pass with its number of pairs under the link type, counted from block sizes;
    stop with the local engine's error if a pass would yield more than max_pairs."""
    from pyspark.sql import functions as F

    passes = []
    for key in lk.blocking:
        members = materialize(nodes.where(present(key)).select("node", "src", *key))
        per = members.groupBy(*key, "src").agg(F.count(F.lit(1)).alias("c"))
        size = per.groupBy(*key).agg(F.sum("c").alias("n"), F.sum(F.col("c") * F.col("c")).alias("sq"))
        within = _count(size, F.expr("(sq - n) div 2"))
        across = _count(size, F.expr("(n * n - sq) div 2"))
        pairs = {"link_only": across, "dedupe_only": within, "link_and_dedupe": within + across}[lk.link_type]
        passes.append(Pass(BlockPlan(tuple(key), _EMPTY, _EMPTY, pairs), members, list(key)))
    for sn in lk.sorted_neighbourhood:
        key = (sn.field, *sn.block)
        chosen = nodes.where(present(key))
        values = chosen.select(F.col(sn.field).alias("_v")).distinct().orderBy("_v")
        ranks = with_index(values, "rank", spark)
        members = materialize(chosen.join(ranks, F.col(sn.field) == F.col("_v"))
                              .select("node", "src", *sn.block, "rank"))
        counts = members.groupBy(*sn.block, "rank", "src").agg(F.count(F.lit(1)).alias("c"))
        pairs = 0
        for d in range(sn.window // 2 + 1):
            other = counts.select(*sn.block, (F.col("rank") - d).alias("rank"), F.col("src").alias("src_o"),
                                  F.col("c").alias("c_o"))
            joined = counts.join(other, [*sn.block, "rank"])
            same = F.col("src") == F.col("src_o")
            product = F.col("c") * F.col("c_o")
            if d == 0:  # unordered pairs within the same value; across sources each pair appears twice
                within = _count(joined.where(same), F.expr("c * (c - 1) div 2"))
                across = _count(joined.where(~same), product) // 2
            else:
                within = _count(joined.where(same), product)
                across = _count(joined.where(~same), product)
            pairs += {"link_only": across, "dedupe_only": within, "link_and_dedupe": within + across}[lk.link_type]
        plan = BlockPlan(key, _EMPTY, _EMPTY, pairs, sn.window, _EMPTY)
        passes.append(Pass(plan, members, [*sn.block, "rank"]))
    check_pair_counts([p.plan for p in passes], lk.max_pairs)
    return passes


def pass_pairs(passes: list[Pass], link_type: str) -> DataFrame:
    """Return (pass, l, r, l < r) for every pair of every pass that the link type allows."""
    from pyspark.sql import functions as F

    found: DataFrame | None = None
    for i, p in enumerate(passes):
        left = p.members.select(F.col("node").alias("l"), F.col("src").alias("src_l"), *p.on)
        right = p.members.select(F.col("node").alias("r"), F.col("src").alias("src_r"), *p.on)
        steps = range(p.plan.window // 2 + 1) if p.plan.window else [0]
        for d in steps:
            shifted = right.withColumn("rank", F.col("rank") - d) if d else right
            joined = left.join(shifted, p.on)
            if d == 0:
                joined = joined.where(F.col("l") < F.col("r"))
            pairs = joined.where(allowed(link_type)).select(
                F.lit(i).alias("pass"), F.least("l", "r").alias("l"), F.greatest("l", "r").alias("r"))
            found = pairs if found is None else found.unionByName(pairs)
    assert found is not None
    return found


def sample_rates(passes: list[Pass]) -> list[float]:
    """Return the share of each pass's pairs that trains its EM session (as the local engine)."""
    return [min(1.0, TRAIN_PAIRS_PER_PASS / max(p.plan.pairs, 1)) for p in passes]


def sampled(rates: list[float], seed: int) -> Column:
    """Return whether a (pass, l, r) pair is in its pass's training sample: every pair where the rate
    is 1; else a seeded hash of the pair below the rate, so the draw does not depend on partitions."""
    from pyspark.sql import functions as F

    draw = F.xxhash64(F.lit(seed), F.col("pass"), F.col("l"), F.col("r")).bitwiseAND(F.lit((1 << 53) - 1)) / float(
        1 << 53)
    rate = F.element_at(F.array(*[F.lit(float(x)) for x in rates]), F.col("pass") + 1)
    return (rate >= 1.0) | (draw < rate)


def node_sides(nodes: DataFrame, comparisons: list[Comparison], tf_columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """Return the node columns a pair needs, once for its left node and once for its right."""
    from pyspark.sql import functions as F

    fields = [c.field for c in comparisons]
    common = ["det", "records", "placed", "src"]
    left = nodes.select(F.col("node").alias("l"), *[F.col(c).alias(f"{c}_l") for c in common],
                        *[F.col(f).alias(f"{f}__l") for f in fields], *tf_columns)
    right = nodes.select(F.col("node").alias("r"), *[F.col(c).alias(f"{c}_r") for c in common],
                         *[F.col(f).alias(f"{f}__r") for f in fields])
    return left, right


def compare_in_partitions(pairs: DataFrame, comparisons: list[Comparison], carry: list[str]) -> DataFrame:
    """Return the pairs with `code`, their comparison pattern packed by PatternCodec, computed a batch
    at a time by linkcare.linkage.compare (the same comparators as on one machine)."""
    from pyspark.sql.types import LongType, StructField, StructType

    codec = PatternCodec([c.n_levels for c in comparisons])
    left_names = {f"{c.field}__l": c.field for c in comparisons}
    right_names = {f"{c.field}__r": c.field for c in comparisons}

    def compare(batch: pl.DataFrame) -> pl.DataFrame:
        levels = compare_values(comparisons, batch.select(left_names.keys()).rename(left_names),
                                batch.select(right_names.keys()).rename(right_names))
        return batch.select(carry).with_columns(pl.Series("code", codec.encode(levels).astype(np.int64)))

    fields = {f.name: f for f in pairs.schema.fields}
    schema = StructType([fields[c] for c in carry] + [StructField("code", LongType())])
    return polars_map(pairs, compare, schema)


@dataclass
class Compared:
    """The compared pairs and the counts that train the model."""

    pairs: DataFrame  # l, r, first (pass), needed, w, code and the node columns scoring needs
    sessions: list[PatternCounts]  # per pass, the patterns of its sampled pairs (weights: record pairs)
    candidates: PatternCounts  # the patterns of the pairs to score
    new_per_pass: list[int]


def compare_candidates(nodes: DataFrame, passes: list[Pass], lk: Linkage, tf_columns: list[str]) -> Compared:
    """Form, de-duplicate and compare the candidate pairs; count their patterns per pass (only the
    (pass, pattern, weight) table reaches the driver)."""
    from pyspark.sql import functions as F

    comparisons = list(lk.comparisons)
    codec = PatternCodec([c.n_levels for c in comparisons])
    every = pass_pairs(passes, lk.link_type).withColumn("sampled", sampled(sample_rates(passes), lk.seed))
    # Each distinct pair once, with the first pass that found it and the passes whose training samples hold it.
    distinct = materialize(every.groupBy("l", "r").agg(
        F.min("pass").alias("first"), F.collect_set(F.when(F.col("sampled"), F.col("pass"))).alias("sessions")))
    left, right = node_sides(nodes, comparisons, tf_columns)
    joined = (distinct.join(left, "l").join(right, "r")
              .withColumn("needed", F.col("det_l") != F.col("det_r"))
              .withColumn("w", (F.col("records_l") * F.col("records_r")).cast("double"))
              .where(F.col("needed") | (F.size("sessions") > 0)))
    carry = ["l", "r", "first", "sessions", "needed", "w", "det_l", "det_r", "placed_l", "placed_r", "src_l",
             "src_r", *tf_columns]
    compared = materialize(compare_in_partitions(joined, comparisons, carry))
    per_pass = (compared.select(F.explode("sessions").alias("pass"), "code", "w")
                .groupBy("pass", "code").agg(F.sum("w").alias("w")).collect())
    sessions = [PatternCounts(codec) for _ in passes]
    for i, counts in enumerate(sessions):
        rows = [(r["code"], r["w"]) for r in per_pass if r["pass"] == i]
        _add(counts, rows)
    candidates = PatternCounts(codec)
    _add(candidates, [(r["code"], r["w"]) for r in compared.where(F.col("needed")).groupBy("code")
                      .agg(F.sum("w").alias("w")).collect()])
    new = {int(r["first"]): int(r["count"]) for r in distinct.groupBy("first").count().collect()}
    return Compared(compared, sessions, candidates, [new.get(i, 0) for i in range(len(passes))])


def _add(counts: PatternCounts, rows: list[tuple[int, float]]) -> None:
    if rows:
        rows.sort()
        counts.add_codes(np.array([c for c, _ in rows], dtype=counts.codec.dtype),
                         np.array([w for _, w in rows], dtype=np.float64))


__all__ = ["Compared", "Pass", "allowed", "compare_candidates", "compare_in_partitions", "node_sides",
           "plan_passes", "sample_rates"]
