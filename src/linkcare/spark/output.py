"""The cohort dataset from Spark: person_index, persons, events, pairs and attachments, each written
by Spark as one Parquet file with the local engine's columns, types and row order.

The per-node decisions are joined back to records in Spark; person IDs come from
linkcare.cohort.lineage.person_ids (a keyed hash of each person's smallest source/record key),
and events from linkcare.cohort.events' `event_exprs` and `shape_events`, a batch at a time.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from linkcare.cohort.events import EVENT_COLUMNS, event_exprs, shape_events
from linkcare.cohort.lineage import assign_ids, person_ids
from linkcare.cohort.persons import ATTACHMENT_COLUMNS
from linkcare.config import Comparison, Config, Source
from linkcare.linkage.model import PatternCodec
from linkcare.sources.dates import ColumnTypes, conform, read_types
from linkcare.sources.read import scan_source
from linkcare.spark.frames import materialize, polars_map, write_parquet_file
from linkcare.spark.read import scan_extract

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType


def _spark_type(dtype: Any) -> DataType:
    from pyspark.sql.types import ArrayType, BooleanType, DateType, DoubleType, LongType, StringType

    if dtype == pl.Date:
        return DateType()
    if dtype == pl.Float64:
        return DoubleType()
    if dtype == pl.Boolean:
        return BooleanType()
    if dtype == pl.Int64:
        return LongType()
    if isinstance(dtype, pl.List):
        return ArrayType(_spark_type(dtype.inner))
    return StringType()


def node_decisions(nodes: DataFrame, person: DataFrame, probability: DataFrame, key: bytes, has_nhs: bool,
                   carry: tuple[DataFrame, DataFrame] | None = None) -> tuple[DataFrame, pl.DataFrame | None]:
    """Return per node its person_id, match_stage and match_probability (null when unlinked), as
    linkcare.cohort.persons.node_persons: records sharing every identifier (one node) or joined by an exact
    rule are deterministic; other nodes of a person of several are probabilistic. With `carry`
    (this run's record_node and a previous run's person_index), person IDs are carried over as
    linkcare.cohort.lineage describes, and the lineage table is returned too (else None)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    frame = (nodes.join(person, "node").join(probability, "node", "left")
             .withColumn("person_size", F.count(F.lit(1)).over(Window.partitionBy("person"))))
    exact = (F.col("det_size") > 1) | ((F.col("person_size") == 1) & (F.col("records") > 1))
    stage = (F.when(exact, "deterministic").when(F.col("person_size") > 1, "probabilistic")
             .otherwise("unlinked"))
    best = F.when(exact, F.lit(1.0)).otherwise(F.coalesce(F.col("best"), F.lit(0.0)))
    frame = frame.withColumn("match_stage", stage).withColumn(
        "match_probability", F.when(stage == "unlinked", F.lit(None).cast("double")).otherwise(best))
    anchors = frame.groupBy("person").agg(F.min(F.concat_ws("/", "source", "first_id")).alias("anchor"))

    def hash_ids(batch: pl.DataFrame) -> pl.DataFrame:
        return batch.select("person", person_ids(batch["anchor"], key))

    schema = StructType([StructField("person", LongType()), StructField("person_id", StringType())])
    lineage = None
    if carry is None:
        ids = polars_map(anchors, hash_ids, schema)
    else:
        ids, lineage = _carry_over(frame, materialize(anchors), *carry, key, schema)
    frame = frame.join(ids, "person")
    if has_nhs:
        frame = frame.withColumn("has_nhs", F.col("nhs").isNotNull())
    return materialize(frame), lineage


def _carry_over(frame: DataFrame, anchors: DataFrame, record_node: DataFrame, previous: DataFrame, key: bytes,
                schema: Any) -> tuple[DataFrame, pl.DataFrame]:
    """Return (person, person_id) carried over from `previous` (a person_index), and the lineage.

    The records shared by each new and previous person are counted with a join and a group-by; the
    counts, the anchors and the previous IDs (a row per person each, not per record) come to the
    driver, where linkcare.cohort.lineage.assign_ids decides as on one machine."""
    from pyspark.sql import functions as F

    records = record_node.select("source", "record_id", "node").join(frame.select("node", "person"), "node")
    prev = previous.select("source", "record_id", F.col("person_id").alias("previous"))
    overlap = (records.join(prev, ["source", "record_id"]).groupBy("person", "previous")
               .agg(F.count(F.lit(1)).cast("int").alias("n")).join(anchors, "person", "left"))

    def local(df: DataFrame) -> pl.DataFrame:
        got = pl.from_arrow(df.toArrow())
        assert isinstance(got, pl.DataFrame)
        return got.rename({"person": "cluster"}) if "person" in got.columns else got

    previous_ids = local(prev.select("previous").distinct())["previous"].sort()
    ids, lineage = assign_ids(local(overlap).cast({"n": pl.UInt32}), local(anchors), previous_ids, key)
    spark = frame.sparkSession
    table = ids.rename({"cluster": "person"}).to_arrow()
    return spark.createDataFrame(table.to_pandas(), schema), lineage


def write_person_index(decisions: DataFrame, record_node: DataFrame, path: Path, has_nhs: bool) -> DataFrame:
    """Write person_index.parquet (one row per record) and return it, for events and the summary."""
    columns = ["source", "record_id", "person_id", "match_probability", "match_stage", "node"]
    if has_nhs:
        columns.append("has_nhs")
    index = materialize(record_node.join(decisions.select("node", *[c for c in columns[2:] if c != "node"]), "node")
                        .select(*columns))
    write_parquet_file(index, path, ["source", "record_id"])
    return index


def write_persons(decisions: DataFrame, fields: tuple[str, ...], sources: list[str], path: Path,
                  forms: DataFrame | None = None) -> int:
    """Write persons.parquet: per person, records in all and per source, and each field's value
    carried by most of the person's records (ties: the smallest standardised value), in the form the
    extracts wrote it in (`forms`, as linkcare.cohort.persons.written_forms). Returns the people."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    per = decisions.groupBy("person", "person_id").agg(
        F.sum("records").alias("records"),
        *[F.sum(F.when(F.col("source") == s, F.col("records")).otherwise(0)).alias(f"records_{s}") for s in sources])
    for name in fields:
        totals = (decisions.where(F.col(name).isNotNull()).groupBy("person", name)
                  .agg(F.sum("records").alias("_t")))
        first = Window.partitionBy("person").orderBy(F.col("_t").desc(), F.col(name))
        mode = totals.withColumn("_k", F.row_number().over(first)).where("_k = 1").select("person", name)
        per = per.join(mode, "person", "left")
        if forms is not None:
            mine = forms.where(F.col("field") == name).select(F.col("value").alias(name), F.col("form").alias("_form"))
            per = per.join(mine, name, "left").withColumn(
                name, F.coalesce(F.col("_form"), F.col(name))).drop("_form")
    people = materialize(per.select("person_id", F.col("records").cast("long"),
                                    *[F.col(f"records_{s}").cast("long") for s in sources], *fields))
    write_parquet_file(people, path, ["person_id"])
    return people.count()


def _events(source: Source, exprs: list[pl.Expr], types: ColumnTypes, batch: pl.DataFrame) -> pl.DataFrame:
    # As the local engine reads the extract: text, but for Parquet dates and timestamps.
    return shape_events(source, conform(batch, types).select(exprs))


def write_events(config: Config, index: DataFrame, path: Path) -> None:
    """Write events.parquet: every event of every source of a known kind with its person, a source at
    a time in config order, within a source in order of person, date (missing last) and record."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StructField, StructType

    spark = index.sparkSession
    frames = []
    for order, source in enumerate(config.sources):
        if source.kind == "other":
            continue
        schema = scan_source(source).collect_schema()
        header, types = schema.names(), read_types(schema)
        exprs = event_exprs(source, schema)
        example = shape_events(source, pl.DataFrame(schema=types).select(exprs))
        spark_schema = StructType([StructField(c, _spark_type(t)) for c, t in example.schema.items()])
        raw = scan_extract(spark, source, header).select(*[F.col(f"`{c}`") for c in header])
        events = polars_map(raw, partial(_events, source, exprs, types), spark_schema)
        ids = index.where(F.col("source") == source.name).select("record_id", "person_id")
        events = events.join(ids, "record_id")  # rejected rows have no person
        present = set(example.columns) | {"person_id"}
        columns = [(F.col(c) if c in present else F.lit(None)).cast(_spark_type(t)).alias(c)
                   for c, t in EVENT_COLUMNS.items()]
        frames.append(events.select(F.lit(order).alias("_order"), *columns))
    if not frames:
        empty = spark.createDataFrame([], StructType([StructField(c, _spark_type(t))
                                                      for c, t in EVENT_COLUMNS.items()]))
        write_parquet_file(empty, path, [])
        return
    events = frames[0]
    for other in frames[1:]:
        events = events.unionByName(other)
    write_parquet_file(events, path, ["_order", "person_id", F.col("start_date").asc_nulls_last(), "record_id"],
                       drop=["_order"])


def write_pairs(scored: DataFrame, dropped: DataFrame | None, nodes: DataFrame, comparisons: list[Comparison],
                threshold: float, min_probability: float, pass_labels: list[str], path: Path) -> tuple[int, int]:
    """Write pairs.parquet (pairs scoring at least min_probability, with their nodes, the first pass
    that found them and their levels) and return (pairs written, pairs accepted)."""
    from pyspark.sql import functions as F

    codec = PatternCodec([c.n_levels for c in comparisons])
    kept = scored.where(F.col("probability") >= min_probability).select("l", "r", "first", "code", "weight",
                                                                         "probability")
    label = F.element_at(F.array(*[F.lit(x) for x in pass_labels]), F.col("first").cast("int") + 1)
    accepted = F.col("probability") >= threshold
    if dropped is not None:
        kept = kept.join(dropped.withColumn("_dropped", F.lit(True)), ["l", "r"], "left")
        accepted = accepted & F.col("_dropped").isNull()
    first = nodes.select("node", "source", "first_id")
    levels = [F.expr(f"(code div {int(codec.mult[j])}) % {int(codec.sizes[j])}").cast("byte").alias(f"level_{c.field}")
              for j, c in enumerate(comparisons)]
    pairs = (kept.join(first.select(F.col("node").alias("l"), F.col("source").alias("source_l"),
                                    F.col("first_id").alias("record_id_l")), "l")
             .join(first.select(F.col("node").alias("r"), F.col("source").alias("source_r"),
                                F.col("first_id").alias("record_id_r")), "r")
             .select("source_l", "record_id_l", "source_r", "record_id_r", F.col("l").cast("long").alias("node_l"),
                     F.col("r").cast("long").alias("node_r"), label.alias("pass"), *levels,
                     F.col("weight").alias("match_weight"), F.col("probability").alias("match_probability"),
                     accepted.alias("accepted")))
    pairs = materialize(pairs)
    write_parquet_file(pairs, path, ["source_l", "record_id_l", "source_r", "record_id_r"])
    counts = pairs.agg(F.count(F.lit(1)).alias("n"), F.count_if("accepted").alias("a")).first()
    assert counts is not None
    return int(counts["n"]), int(counts["a"])


def write_attachments(decided: DataFrame, decisions: DataFrame, record_node: DataFrame, path: Path) -> None:
    """Write attachments.parquet as linkcare.cohort.persons.attachments: per record of an unplaced
    cluster with a candidate, its person, its likeliest candidate's person, the attach step's
    decision and the runners-up's persons. `decided` holds node, candidate_node, posterior, none,
    candidates, attached, alternative_nodes and alternative_posteriors; `decisions` each node's
    person_id (node_decisions)."""
    from pyspark.sql import functions as F

    ids = decisions.select("node", "person_id")
    runners = (decided.select("node", F.posexplode("alternative_nodes").alias("_k", "_alt"))
               .join(ids.select(F.col("node").alias("_alt"), F.col("person_id").alias("_pid")), "_alt", "left")
               .groupBy("node").agg(F.sort_array(F.collect_list(F.struct("_k", "_pid"))).alias("_runners"))
               .select("node", F.col("_runners._pid").alias("alternative_person_ids")))
    decided = (decided.join(runners, "node", "left")
               .withColumn("alternative_person_ids",
                           F.coalesce("alternative_person_ids", F.array().cast("array<string>"))))
    frame = (decided.join(ids, "node", "left")
             .join(ids.select(F.col("node").alias("candidate_node"), F.col("person_id").alias("candidate_person_id")),
                   "candidate_node", "left")
             .join(record_node, "node"))
    columns = [F.col(c).cast(_spark_type(t)).alias(c) for c, t in ATTACHMENT_COLUMNS.items()]
    write_parquet_file(frame.select(*columns), path, ["source", "record_id"])


def write_nodes(frame: DataFrame, scored: DataFrame, fields: tuple[str, ...], rules: list[str], path: Path) -> None:
    """Write nodes.parquet as linkcare.cohort.nodes.node_table: per node its source, records, which
    fields it holds, the exact rule that joined it to another node (by its label, `rules`), its
    exact cluster and the candidate pairs scored with it. `frame` is the cluster stage's nodes
    (with det and det_rule), `scored` the scored pairs (l, r)."""
    from pyspark.sql import functions as F

    ends = scored.select(F.col("l").alias("node")).unionByName(scored.select(F.col("r").alias("node")))
    counts = ends.groupBy("node").agg(F.count(F.lit(1)).alias("candidate_pairs"))
    # (element_at with a null position gives the first element, not null: hence the when)
    label = F.when(F.col("det_rule").isNotNull(),
                   F.element_at(F.array(*[F.lit(x) for x in rules]), F.col("det_rule").cast("int") + 1)) \
        if rules else F.lit(None)
    table = frame.join(counts, "node", "left").select(
        F.col("node").cast("long"), "source", F.col("records").cast("long"),
        *[F.col(f).isNotNull().alias(f"has_{f}") for f in fields],
        label.cast("string").alias("exact_rule"), F.col("det").cast("long").alias("exact_cluster"),
        F.coalesce(F.col("candidate_pairs"), F.lit(0)).cast("long").alias("candidate_pairs"))
    write_parquet_file(table, path, ["node"])


__all__ = ["node_decisions", "write_attachments", "write_events", "write_nodes", "write_pairs", "write_person_index",
           "write_persons"]
