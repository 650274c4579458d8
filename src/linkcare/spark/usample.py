"""u on Spark: the chance of each comparison level among non-matching pairs, from a seeded sample
of random record pairs, the same sample the local engine draws.

The local engine draws 2 × 2,000,000 uniform positions among the records (in node order) from its
seeded generator, after the draws that sampled each pass's training pairs. Here each partition
advances its own copy of that generator (PCG64 can jump ahead) to its slice of the same stream, so
the positions are the same numbers without any driver drawing them. A position falls on the node
whose records cover it: the nodes are cut into buckets of consecutive nodes, only each bucket's
record total reaches the driver, and a position is looked up within its bucket. The sampled pairs
are compared in partitions; only (pattern, count) comes back, from which u is computed by the same
function as on one machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import polars as pl

from linkcare.config import Linkage
from linkcare.linkage.model import PatternCodec
from linkcare.linkage.train import U_SAMPLE_PAIRS, u_from_levels
from linkcare.spark.frames import materialize, polars_map
from linkcare.spark.pairs import allowed, compare_in_partitions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

BUCKET_NODES = 1 << 16  # consecutive nodes per lookup bucket (buckets are looked up in parallel)
CHUNK_DRAWS = 1 << 18  # positions drawn per task


def estimate_u(spark: SparkSession, nodes: DataFrame, lk: Linkage, skip: int,
               sample: int = U_SAMPLE_PAIRS) -> tuple[list[np.ndarray], int]:
    """Return u per field and the pairs used, as linkcare.linkage.train.estimate_u does with the
    generator seeded by `lk.seed` after `skip` draws."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    comparisons = list(lk.comparisons)
    bucket = F.expr(f"node div {BUCKET_NODES}")
    totals = sorted((int(r["b"]), int(r["n"])) for r in nodes.groupBy(bucket.alias("b"))
                    .agg(F.sum("records").alias("n")).collect())
    ends = np.cumsum([n for _, n in totals])
    starts = {b: int(end - n) for (b, n), end in zip(totals, ends, strict=True)}
    bucket_of = np.array([b for b, _ in totals], dtype=np.int64)
    ends_f = ends.astype(np.float64)
    records = float(ends[-1])
    n_draws = 2 * sample
    n_chunks = -(-n_draws // CHUNK_DRAWS)
    seed = lk.seed

    def draw(batch: pl.DataFrame) -> pl.DataFrame:
        parts = []
        for task in batch["id"].to_list():  # one per chunk of draws, not per draw
            side, chunk = divmod(int(task), n_chunks)
            first = chunk * CHUNK_DRAWS
            count = min(CHUNK_DRAWS, n_draws - first)
            generator = np.random.PCG64(np.random.SeedSequence(seed))  # what default_rng(seed) wraps
            generator.advance(skip + side * n_draws + first)
            position = np.random.Generator(generator).random(count) * records
            parts.append(pl.DataFrame({
                "i": np.arange(first, first + count, dtype=np.int64), "side": np.full(count, side, dtype=np.int64),
                "d": position, "bucket": bucket_of[np.searchsorted(ends_f, position, side="right")]}))
        return pl.concat(parts)

    schema = StructType([StructField("i", LongType()), StructField("side", LongType()),
                         StructField("d", DoubleType()), StructField("bucket", LongType())])
    draws = polars_map(spark.range(2 * n_chunks, numPartitions=max(1, min(2 * n_chunks, 64))), draw, schema)

    def locate(found: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
        if found.empty:
            return pd.DataFrame({k: np.zeros(0, dtype=np.int64) for k in ("i", "side", "node")})
        members = members.sort_values("node")
        b = int(found["bucket"].iloc[0])
        cumulative = (starts[b] + np.cumsum(members["records"].to_numpy(dtype=np.int64))).astype(np.float64)
        at = np.searchsorted(cumulative, found["d"].to_numpy(), side="right")
        return pd.DataFrame({"i": found["i"].to_numpy(), "side": found["side"].to_numpy(),
                             "node": members["node"].to_numpy()[at]})

    located = draws.groupBy("bucket").cogroup(
        nodes.select(bucket.alias("bucket"), "node", "records").groupBy("bucket")).applyInPandas(
        locate, "i long, side long, node long")
    located = materialize(located)
    side_l = nodes.select(F.col("node").alias("l"), F.col("src").alias("src_l"), F.col("det").alias("det_l"))
    side_r = nodes.select(F.col("node").alias("r"), F.col("src").alias("src_r"), F.col("det").alias("det_r"))
    pairs = (located.where(F.col("side") == 0).select("i", F.col("node").alias("l"))
             .join(located.where(F.col("side") == 1).select("i", F.col("node").alias("r")), "i")
             .join(side_l, "l").join(side_r, "r")
             .where((F.col("l") != F.col("r")) & allowed(lk.link_type) & (F.col("det_l") != F.col("det_r"))))
    pairs = materialize(pairs.select("i", "l", "r"))
    last = pairs.select("i").orderBy("i").limit(sample).agg(F.max("i")).first()[0]  # type: ignore[index]
    if last is None:
        return u_from_levels(np.zeros((0, len(comparisons)), dtype=np.int8), list(comparisons)), 0
    pairs = pairs.where(F.col("i") <= last)
    fields = [c.field for c in comparisons]
    values = pairs.join(nodes.select(F.col("node").alias("l"), *[F.col(f).alias(f"{f}__l") for f in fields]), "l") \
        .join(nodes.select(F.col("node").alias("r"), *[F.col(f).alias(f"{f}__r") for f in fields]), "r")
    counted = (compare_in_partitions(values, comparisons, ["i"]).groupBy("code").count().collect())
    codec = PatternCodec([c.n_levels for c in comparisons])
    codes = np.array([r["code"] for r in counted], dtype=np.int64)
    counts = np.array([r["count"] for r in counted], dtype=np.int64)
    levels = np.repeat(codec.decode(codes), counts, axis=0)
    return u_from_levels(levels, list(comparisons)), int(counts.sum())


__all__ = ["estimate_u"]
