"""Spark plumbing the engine's stages share: a polars function over every Arrow batch (or whole
partition), rows numbered in order, checkpoints, and a DataFrame written as one Parquet file.

No function here reads a record value on the driver: what comes back are counts per partition.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from linkcare.io.parquet import spark_parquet_options, write_arrow_parquet

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

#: Bits of monotonically_increasing_id that count rows within a partition (Spark's layout).
_ROW_BITS = 33


def polars_map(df: DataFrame, fn: Callable[[pl.DataFrame], pl.DataFrame], schema: StructType,
               whole_partition: bool = False) -> DataFrame:
    """Return `fn` applied to the rows of `df` a batch at a time (or a whole partition at a time, for
    functions that need all rows of a group that the partitioning keeps together), as `schema`."""
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(schema)
    names = schema.names

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        frames: Any
        if whole_partition:
            held = list(batches)
            frames = [pl.from_arrow(pa.Table.from_batches(held))] if held else []
        else:
            frames = (pl.from_arrow(batch) for batch in batches)
        for frame in frames:
            out = fn(frame)
            if out.height:
                yield from out.select(names).to_arrow().cast(arrow_schema).to_batches()

    return df.mapInArrow(run, schema)


def materialize(df: DataFrame) -> DataFrame:
    """Return `df` computed once and cut from its lineage: a reliable checkpoint when the session has
    a checkpoint folder ([engine] checkpoint_dir), else a local one on the executors' disks.

    On disk, not in memory: a run keeps many intermediate tables, and held on the JVM's heap they
    leave the joins and sorts too little room (and the garbage collector too much work).
    """
    if df.sparkSession.sparkContext.getCheckpointDir():
        return df.checkpoint(eager=True)
    from pyspark import StorageLevel

    try:
        return df.localCheckpoint(eager=True, storageLevel=StorageLevel.DISK_ONLY)
    except TypeError:  # PySpark before 4.0 keeps local checkpoints in memory and on disk
        return df.localCheckpoint(eager=True)


def with_index(df: DataFrame, name: str, spark: SparkSession) -> DataFrame:
    """Return `df` with `name` numbering its rows 0, 1, … in partition order (file order for a
    scan, sort order after orderBy), without moving the rows: each partition's row count comes to
    the driver, nothing else."""
    from pyspark.sql import functions as F

    marked = materialize(df.withColumn("_mid", F.monotonically_increasing_id()))
    part = F.shiftright(F.col("_mid"), _ROW_BITS)
    counts = sorted((int(r["p"]), int(r["n"])) for r in marked.groupBy(part.alias("p")).count()
                    .withColumnRenamed("count", "n").collect())
    offsets, total = [], 0
    for p, n in counts:
        offsets.append((p, total))
        total += n
    table = spark.createDataFrame(offsets or [(0, 0)], "p long, _offset long")
    within = F.col("_mid").bitwiseAND(F.lit((1 << _ROW_BITS) - 1))
    return (marked.join(F.broadcast(table), part == F.col("p"))
            .withColumn(name, F.col("_offset") + within).drop("_mid", "p", "_offset"))


def write_parquet_file(df: DataFrame, path: Path, order: list[Column | str], drop: list[str] | None = None) -> None:
    """Write `df` as one Parquet file at `path`, rows in `order` (then the `drop` columns left out):
    Spark writes a single part into a scratch folder beside it, which is then moved into place (the
    caller's folder is a temporary one that replaces the output only when the whole run succeeds)."""
    scratch = path.parent / f".{path.name}.{uuid.uuid4().hex}.spark"
    try:
        ordered = df.repartition(1).sortWithinPartitions(*order) if order else df.repartition(1)
        if drop:
            ordered = ordered.drop(*drop)
        ordered.write.mode("error").options(**spark_parquet_options()).parquet(str(scratch))
        parts = sorted(scratch.glob("part-*.parquet"))
        if parts:
            parts[0].replace(path)
        else:  # nothing to write: an empty file with the schema
            from pyspark.sql.pandas.types import to_arrow_schema

            schema = ordered.schema
            write_arrow_parquet(pa.Table.from_batches([], to_arrow_schema(schema)), path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


__all__ = ["materialize", "polars_map", "with_index", "write_parquet_file"]
