"""Every Parquet file linkcare writes, written one way: zstd compression at one level.

One codec throughout, so that a site's tools (Power BI, Spark, DuckDB, pyarrow) read every output
the same way and a file's bytes depend only on its rows. zstd because every current Parquet reader
has it (Power BI, Spark 3, Arrow, DuckDB, polars), and it gives smaller files than snappy at a
similar speed. The polars writers, the pyarrow writer of events.parquet and the Spark engine all
take their codec from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import polars as pl

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

#: The one Parquet compression codec of every output (the name polars, pyarrow and Spark all accept).
PARQUET_COMPRESSION: Final[Literal["zstd"]] = "zstd"
#: zstd's own default level, fixed here so that a change of a library's default cannot change the bytes.
PARQUET_COMPRESSION_LEVEL = 3


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write a polars frame to `path` as Parquet with linkcare's one compression."""
    frame.write_parquet(path, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL)


def write_arrow_parquet(table: pa.Table, path: Path) -> None:
    """Write an Arrow table to `path` as Parquet with linkcare's one compression."""
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL)


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """Return a pyarrow writer of one Parquet file at `path` (to write a table at a time), with
    linkcare's one compression; use it as a context manager."""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, schema, compression=PARQUET_COMPRESSION,
                            compression_level=PARQUET_COMPRESSION_LEVEL)


def spark_parquet_options() -> dict[str, Any]:
    """Return the options of Spark's Parquet writer for linkcare's one compression (Spark's own
    default is snappy). Spark sets no zstd level through this option, so it uses zstd's default, 3."""
    return {"compression": PARQUET_COMPRESSION}


def parquet_codecs(path: Path) -> set[str]:
    """Return the compression codecs of every column chunk of a Parquet file (upper case, as
    Parquet names them: "ZSTD", "SNAPPY")."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return {meta.row_group(i).column(j).compression.upper()
            for i in range(meta.num_row_groups) for j in range(meta.num_columns)}


__all__ = ["PARQUET_COMPRESSION", "PARQUET_COMPRESSION_LEVEL", "parquet_codecs", "parquet_writer",
           "spark_parquet_options", "write_arrow_parquet", "write_parquet"]
