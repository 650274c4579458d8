"""Read and standardise every source on Spark, with the local engine's polars expressions.

Spark reads each extract (every CSV column as a string) and hands it to Python an Arrow batch at a
time; each batch goes through the same `record_exprs` (linkcare.sources.read), row checks and
`mark_checks` (linkcare.sources.checks) as on one machine. What the driver gets back are counts:
rows, rows per check, the first failing row, ids missing or repeated.

Rows are numbered as the local engine numbers them (from 1 after the header): Spark splits a file
into partitions in file order, so a row's number is the rows of the partitions before it plus its
place in its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from linkcare.config import ComparisonMethod, Config, Source
from linkcare.errors import DataError
from linkcare.sources.checks import REASON, REJECTED, RowCheck, SourceRejects, check_flags, mark_checks, row_checks
from linkcare.sources.dates import conform, read_types, text_columns
from linkcare.sources.read import (
    FORM_PREFIX,
    form_exprs,
    record_exprs,
    record_fields,
    report_rejects,
    scan_source,
    unreadable_error,
)
from linkcare.spark.frames import materialize, polars_map

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_ROW_BITS = 33
#: What Spark puts in place of bytes that are not UTF-8.
_REPLACEMENT = "\ufffd"


@dataclass
class SparkRecords:
    """The standardised records of every source, and what the row checks set aside."""

    frame: DataFrame  # source, record_id, one String column per field (rows that passed)
    fields: tuple[str, ...]
    rows: dict[str, int]  # rows read per source, rejected ones included
    rejects: dict[str, SourceRejects]  # counts; the rows themselves are in `reject_rows`
    reject_rows: dict[str, DataFrame]  # row, record_id, reason
    #: field, value, form: each standardised value as the extracts wrote it (sources.read.choose_forms)
    forms: DataFrame | None = None


def read_records(spark: SparkSession, config: Config, strict: bool = False) -> SparkRecords:
    """Return the standardised records of every source, as linkcare.linkage.prepare.read_records does."""
    fields, methods = record_fields(config)
    frames, counts, rows, rejects, reject_rows = [], [], {}, {}, {}
    for source in config.sources:
        kept, found, rejected, written = _read_source(spark, config, source, fields, methods, strict)
        frames.append(kept)
        counts.extend(written)
        rows[source.name] = found.rows
        rejects[source.name] = found
        reject_rows[source.name] = rejected
    frame = frames[0]
    for other in frames[1:]:
        frame = frame.unionByName(other)
    return SparkRecords(frame, fields, rows, rejects, reject_rows, choose_forms(counts))


def choose_forms(counts: list[DataFrame]) -> DataFrame | None:
    """Return per field and standardised value the form most records wrote it in (ties: the
    smallest), as linkcare.sources.read.choose_forms does: field, value, form."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not counts:
        return None
    union = counts[0]
    for other in counts[1:]:
        union = union.unionByName(other)
    totals = union.groupBy("field", "value", "form").agg(F.sum("n").alias("n"))
    best = Window.partitionBy("field", "value").orderBy(F.col("n").desc(), F.col("form"))
    return materialize(totals.withColumn("_k", F.row_number().over(best)).where("_k = 1")
                       .select("field", "value", "form"))


def scan_extract(spark: SparkSession, source: Source, header: list[str]) -> DataFrame:
    """Return a source's extract as Spark reads it: every CSV column a string, in file order. As polars
    reads it for the local engine, a row with too many fields loses the extra ones and a row with
    too few has nulls for the rest; bytes that are not UTF-8 are found after (see _read_source)."""
    from pyspark.sql.types import StringType, StructField, StructType

    path = str(source.path)
    if source.format == "parquet":
        return spark.read.parquet(path)
    schema = StructType([StructField(name, StringType(), True) for name in header])
    return (spark.read.schema(schema).option("header", True).option("sep", source.delimiter)
            .option("quote", '"').option("escape", '"').option("mode", "PERMISSIVE").option("encoding", "UTF-8")
            .csv(path))


def _read_source(spark: SparkSession, config: Config, source: Source, fields: tuple[str, ...],
                 methods: dict[str, ComparisonMethod], strict: bool,
                 ) -> tuple[DataFrame, SourceRejects, DataFrame, list[DataFrame]]:
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, LongType, StringType, StructField, StructType

    lf = scan_source(source)  # on the driver: the file, its header and its last line are checked
    read = lf.collect_schema()
    header = read.names()
    types = read_types(read)
    checks = row_checks(source, read, config)
    flags = [f"_fails_{i}" for i in range(len(checks))]
    written = form_exprs(source, fields, read)
    forms = [e.meta.output_name() for e in written]
    exprs = [pl.col("_mid"), *record_exprs(source, fields, methods, read), *written, *check_flags(checks)]
    raw_names = list(header)
    text = text_columns(types)

    def standardise(batch: pl.DataFrame) -> pl.DataFrame:
        # As the local engine reads the extract: text, but for Parquet dates and timestamps.
        batch = conform(batch, types)
        bad = pl.any_horizontal([pl.col(c).str.contains(_REPLACEMENT, literal=True) for c in text] or [pl.lit(False)])
        marked = mark_checks(batch.select(*exprs, bad.fill_null(False).alias("_not_utf8")), checks)
        return marked

    schema = StructType(
        [StructField("_mid", LongType()), StructField("source", StringType()), StructField("record_id", StringType())]
        + [StructField(f, StringType()) for f in [*fields, *forms]]
        + [StructField(f, BooleanType()) for f in flags]
        + [StructField("_not_utf8", BooleanType()), StructField(REJECTED, BooleanType()),
           StructField(REASON, StringType())])
    raw = scan_extract(spark, source, header).select(*[F.col(f"`{c}`") for c in raw_names])
    std = polars_map(raw.withColumn("_mid", F.monotonically_increasing_id()), standardise, schema)

    part = F.shiftright(F.col("_mid"), _ROW_BITS)
    position = F.col("_mid").bitwiseAND(F.lit((1 << _ROW_BITS) - 1))
    aggregates = [F.count(F.lit(1)).alias("n"), F.count_if(F.col("record_id").isNull()).alias("no_id"),
                  F.count_if(F.col(REJECTED)).alias("rejected"), F.count_if(F.col("_not_utf8")).alias("not_utf8"),
                  F.min(F.when(F.col("_not_utf8"), position)).alias("first_not_utf8")]
    for i, flag in enumerate(flags):
        aggregates += [F.count_if(F.col(flag)).alias(f"n{i}"), F.min(F.when(F.col(flag), position)).alias(f"r{i}")]
    try:
        std = materialize(std)
        found_parts = std.groupBy(part.alias("p")).agg(*aggregates).collect()
    except Exception as exc:
        # Spark's reader failed on the file (its message may quote the row, so it is not shown).
        if "MALFORMED_RECORD" in str(exc) or "Malformed" in str(exc):
            raise unreadable_error(source, exc) from None
        raise
    offsets, found = _found(source, [r.asDict() for r in found_parts], checks, std)
    report_rejects(source, found, config.validation.max_reject_share, strict)

    table = spark.createDataFrame(list(offsets.items()) or [(0, 0)], "p long, _offset long")
    rejected = (std.where(F.col(REJECTED)).join(F.broadcast(table), part == F.col("p"))
                .select((F.col("_offset") + position + 1).alias("row"), "record_id", F.col(REASON).alias("reason")))
    kept = std.where(~F.col(REJECTED)).select("source", "record_id", *fields)
    counts = [std.where(~F.col(REJECTED) & F.col(f).isNotNull() & F.col(form).isNotNull())
              .groupBy(F.col(f).alias("value"), F.col(form).alias("form")).agg(F.count(F.lit(1)).alias("n"))
              .select(F.lit(f).alias("field"), "value", "form", "n")
              for form in forms if (f := form[len(FORM_PREFIX):])]
    return kept, found, rejected, counts


def _found(source: Source, counts: list[dict[str, Any]], checks: list[RowCheck],
           std: DataFrame) -> tuple[dict[int, int], SourceRejects]:
    """Return each partition's first row number and what the row checks found, from the counts per
    partition; raise DataError for bytes that are not UTF-8, no rows, or missing or repeated ids."""
    from pyspark.sql import functions as F

    per_part = sorted(counts, key=lambda r: r["p"])
    offsets, total = {}, 0
    for r in per_part:
        offsets[r["p"]] = total
        total += r["n"]

    def first_row(column: str) -> int:
        return min(offsets[r["p"]] + r[column] + 1 for r in per_part if r[column] is not None)

    not_utf8 = sum(r["not_utf8"] for r in per_part)
    if not_utf8:
        # A row is a line when no value spans lines; the header is line 1.
        raise DataError(f"{source.path}: {not_utf8} line(s) are not UTF-8 text (the first is line "
                        f"{first_row('first_not_utf8') + 1}); re-export the extract as UTF-8")
    if total == 0:
        raise DataError(f"{source.path}: has a header but no rows; the extract is empty: export it again")
    missing_ids = sum(r["no_id"] for r in per_part)
    if missing_ids:
        raise DataError(f"{source.path}: column {source.id}: {missing_ids} row(s) have no record id")
    duplicated = total - int(std.select(F.countDistinct("record_id")).first()[0])  # type: ignore[index]
    if duplicated:
        raise DataError(f"{source.path}: column {source.id}: {duplicated} row(s) repeat a record id "
                        "already used in this file; record ids must be unique")
    found = []
    for i, check in enumerate(checks):
        n = sum(r[f"n{i}"] for r in per_part)
        if n:
            found.append((check, n, first_row(f"r{i}")))
    n_rejected = sum(r["rejected"] for r in per_part)
    empty = pl.DataFrame(schema={"row": pl.Int64, "record_id": pl.String, "reason": pl.String})
    return offsets, SourceRejects(empty, found, total, rejected=n_rejected)


__all__ = ["SparkRecords", "read_records", "scan_extract"]
