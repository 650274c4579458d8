"""The link report's data on Spark: the same figures as the local engine's, from the same functions.

What reaches the driver is small: the weight histogram (120 bins), the records summed per source,
stage and group (a few thousand rows at most), and the kept pairs near the threshold. Each node's
and each person's groups are worked out per partition by linkcare.cohort.equity's own
functions; only their join and the sums run as Spark operations.
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
                      pass_pairs: list[dict[str, Any]], histogram: np.ndarray) -> LinkReportData:
    """Return the report's data from the Spark run's node decisions and the outputs written in `folder`
    (persons.parquet, events.parquet and pairs.parquet)."""
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
    return LinkReportData(model, pass_pairs, histogram, pairs, frame, why)


__all__ = ["spark_report_data", "weight_histogram"]
