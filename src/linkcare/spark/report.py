"""The link report's data on Spark: the same figures as the local engine's, from the same functions.

What reaches the driver is small: the weight histogram (120 bins), the records summed per source,
stage and group (a few thousand rows at most), the kept pairs near the threshold, the records per
source and reach, the kept pairs' sums per threshold (a few hundred rows) and the people per size
(a row per records, sources and merged flag seen). Each node's and each person's groups, each
node's reach and each person's size are worked out per partition by linkcare.cohort.equity's and
linkcare.linkage.quality's own functions; only joins and sums run as Spark operations.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from linkcare.cohort.equity import (
    DIMENSIONS,
    GROUP_TYPES,
    STAGES,
    latest_ethnicity,
    own_groups,
    person_groups,
    report_deprivation,
)
from linkcare.config import Config
from linkcare.linkage.engine import LinkReportData
from linkcare.linkage.model import MatchModel
from linkcare.linkage.quality import (
    ThresholdCurve,
    pair_sums,
    reach_counts,
    reach_fields,
    size_counts,
    threshold_curve,
    threshold_grid,
)
from linkcare.linkage.scoring import WEIGHT_EDGES, weight_counts
from linkcare.spark.frames import polars_map

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def weight_histogram(scored: DataFrame) -> np.ndarray:
    """Return the scored pairs per bin of WEIGHT_EDGES, counted as the local engine counts them."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StructField, StructType

    bins = WEIGHT_EDGES.size - 1

    def count(batch: pl.DataFrame) -> pl.DataFrame:
        counts = weight_counts(batch["weight"].to_numpy())
        return pl.DataFrame({"bin": np.arange(bins, dtype=np.int64), "n": counts.astype(np.int64)})

    schema = StructType([StructField("bin", LongType()), StructField("n", LongType())])
    totals = polars_map(scored.select("weight"), count, schema).groupBy("bin").agg(F.sum("n").alias("n")).collect()
    histogram = np.zeros(bins, dtype=np.int64)
    for row in totals:
        histogram[int(row["bin"])] = int(row["n"])
    return histogram


def spark_report_data(spark: SparkSession, config: Config, decisions: DataFrame, folder: Path, model: MatchModel,
                      pass_pairs: list[dict[str, Any]], scored: DataFrame,
                      tf_totals: dict[int, tuple[str, float]]) -> LinkReportData:
    """Return the report's data from the Spark run's node decisions (with the `tfc<j>` value counts
    that `tf_totals` names), its scored pairs and the outputs written in `folder` (persons.parquet,
    events.parquet and pairs.parquet)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType

    roles = {role: name for role, name in config.risk.fields.items() if name in decisions.columns}
    deprivation, why = report_deprivation(config, roles)
    dims = list(GROUP_TYPES)
    text = StringType()

    def own(batch: pl.DataFrame) -> pl.DataFrame:
        stage = pl.col("match_stage").replace_strict({s: i for i, s in enumerate(STAGES)}, return_dtype=pl.Int32)
        frame = own_groups(config, batch.with_columns(stage.alias("stage")), deprivation)
        return frame.with_columns(pl.col(d).cast(pl.String) for d in dims)

    own_schema = StructType([StructField("key", text), StructField("source", text), StructField("records", LongType()),
                             StructField("stage", IntegerType()), *[StructField(d, text) for d in dims]])
    nodes = polars_map(decisions.select(F.col("person_id").alias("key"), "source", F.col("records").cast("long"),
                                        "match_stage", *[F.col(n).alias(f"_{r}") for r, n in roles.items()]),
                       own, own_schema)

    # Each person's latest registered ethnicity: a partition holds every registration of its people.
    spines = [s.name for s in config.sources if s.kind == "gp_registrations"]
    registrations = (spark.read.parquet(str(folder / "events.parquet"))
                     .where(F.col("source").isin(spines) & (F.col("event_type") == "registration"))
                     .select("person_id", "source", "event_type", "start_date", "ethnicity")
                     .repartition("person_id"))
    ethnicity = polars_map(registrations, lambda batch: latest_ethnicity(config, batch.lazy()).collect(),
                           StructType([StructField("person_id", text), StructField("ethnicity", text)]),
                           whole_partition=True)
    persons = (spark.read.parquet(str(folder / "persons.parquet"))
               .select("person_id", *[F.col(n).cast("string").alias(f"_{r}") for r, n in roles.items()])
               .join(ethnicity, "person_id", "left"))

    def person(batch: pl.DataFrame) -> pl.DataFrame:
        frame = person_groups(config, batch.drop("ethnicity").with_columns(pl.col("person_id").alias("key")),
                              batch.select("person_id", "ethnicity"), deprivation)
        return frame.with_columns(pl.col(c).cast(pl.String) for c in frame.columns if c != "key")

    person_schema = StructType([StructField("key", text), *[StructField(f"person_{d}", text) for d in dims],
                                StructField("ethnic_group", text)])
    groups = polars_map(persons, person, person_schema)

    shown = [d for d in DIMENSIONS if d != "source" and (d != "deprivation" or deprivation is not None)]
    combined = nodes.join(groups, "key", "left").select(
        "source", "records", "stage", (F.col("stage") < 2).alias("linked"),
        *[F.coalesce(d, f"person_{d}", F.lit("unknown")).alias(d) for d in dims],
        F.coalesce("ethnic_group", F.lit("not recorded")).alias("ethnic_group"))
    summed = (combined.groupBy("source", "stage", "linked", *shown).agg(F.sum("records").alias("records"))
              .collect())
    columns = ["source", "records", "stage", "linked", *shown]
    frame = pl.DataFrame([{c: row[c] for c in columns} for row in summed],
                         schema={"source": pl.String, "records": pl.Int64, "stage": pl.UInt8, "linked": pl.Boolean,
                                 **{d: pl.String for d in shown}}, orient="row")
    frame = frame.sort(columns[:1] + columns[2:])  # the row order Spark returned them in is not fixed
    pairs = pl.scan_parquet(folder / "pairs.parquet")
    histogram = weight_histogram(scored)
    return LinkReportData(model, pass_pairs, histogram, pairs, frame, why,
                          reach_table(config, model, decisions, tf_totals),
                          threshold_table(config, scored, histogram), size_table(config, decisions))


def reach_table(config: Config, model: MatchModel, decisions: DataFrame,
                tf_totals: dict[int, tuple[str, float]]) -> pl.DataFrame:
    """Return the records per source and reach, and per field the records missing it, as
    linkcare.linkage.quality.reach_counts gives them on one machine (summed over partitions here)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ByteType, LongType, StringType, StructField, StructType

    lk, fields = config.linkage, reach_fields(config)
    missing = [f"missing_{f}" for f in fields]
    columns = list(dict.fromkeys(["source", "records", *fields, *[c for c, _ in tf_totals.values()]]))

    def count(batch: pl.DataFrame) -> pl.DataFrame:
        return reach_counts(model, lk.deterministic, lk.threshold, fields, batch, tf_totals)

    schema = StructType([StructField("source", StringType()), StructField("reach", ByteType()),
                         StructField("records", LongType()), *[StructField(m, LongType()) for m in missing]])
    rows = (polars_map(decisions.select(*columns), count, schema).groupBy("source", "reach")
            .agg(*[F.sum(c).alias(c) for c in ("records", *missing)]).collect())
    return pl.DataFrame([[row[c] for c in schema.names] for row in rows], orient="row",
                        schema={"source": pl.String, "reach": pl.Int8, "records": pl.Int64,
                                **{m: pl.Int64 for m in missing}}).sort("source", "reach")


def threshold_table(config: Config, scored: DataFrame, histogram: np.ndarray) -> ThresholdCurve:
    """Return the expected true and false matches against the threshold from the kept pairs'
    sums per partition (linkcare.linkage.quality.pair_sums) and the weight histogram."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ByteType, LongType, StructField, StructType

    lk = config.linkage
    grid = threshold_grid(lk.threshold, lk.pairs_min_probability)

    def sums(batch: pl.DataFrame) -> pl.DataFrame:
        return pair_sums(batch["weight"].to_numpy(), batch["probability"].to_numpy(), grid)

    schema = StructType([StructField("kind", ByteType()), StructField("index", LongType()),
                         StructField("pairs", LongType()), StructField("p", LongType())])
    kept = scored.where(F.col("probability") >= lk.pairs_min_probability).select("weight", "probability")
    rows = (polars_map(kept, sums, schema).groupBy("kind", "index")
            .agg(F.sum("pairs").alias("pairs"), F.sum("p").alias("p")).collect())
    table = pl.DataFrame([[row[c] for c in schema.names] for row in rows], orient="row",
                         schema={"kind": pl.Int8, "index": pl.Int64, "pairs": pl.Int64, "p": pl.Int64})
    return threshold_curve(table, histogram, grid, lk.pairs_min_probability)


def size_table(config: Config, decisions: DataFrame) -> pl.DataFrame:
    """Return the people per records, sources and merged flag (linkcare.linkage.quality.size_counts),
    each person's nodes brought into one partition and the counts summed."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, LongType, StructField, StructType

    spines = [s.name for s in config.sources if s.kind == "gp_registrations"]
    schema = StructType([StructField("records", LongType()), StructField("sources", LongType()),
                         StructField("merged", BooleanType()), StructField("people", LongType())])
    nodes = decisions.select(F.col("person").alias("key"), "source", F.col("records").cast("long")).repartition("key")
    rows = (polars_map(nodes, lambda batch: size_counts(batch, spines), schema, whole_partition=True)
            .groupBy("records", "sources", "merged").agg(F.sum("people").alias("people")).collect())
    return pl.DataFrame([[row[c] for c in schema.names] for row in rows], orient="row",
                        schema={"records": pl.Int64, "sources": pl.Int64, "merged": pl.Boolean,
                                "people": pl.Int64}).sort("records", "sources", "merged")


__all__ = ["spark_report_data", "weight_histogram"]
