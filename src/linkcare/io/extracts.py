"""Look at an extract without loading it: its header (CSV) or schema (Parquet).

Messages name the file and say what is wrong with it; they never quote a cell.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from linkcare.config import Source
from linkcare.errors import DataError

#: A header longer than this is not a header; stop reading rather than load a whole file.
MAX_HEADER_BYTES = 1 << 20
_OTHER_DELIMITERS = (",", ";", "\t", "|")
_DENIED = "cannot be read (permission denied); ask for read access"


def read_header(source: Source) -> list[str]:
    """Return the column names of a source's extract, reading only its header or schema.

    Raises DataError naming the file if it is missing, unreadable, empty, not UTF-8, not Parquet,
    or if its CSV header looks split on the wrong delimiter.
    """
    path = Path(source.path)
    _check_file(path)
    if source.format == "parquet":
        return _parquet_columns(path)
    return _csv_header(path, source.delimiter)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found; check the source's path (relative to the config)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file; point the source's path at the extract")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: {_DENIED}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: is empty (0 bytes); the extract needs at least a header row")


def _csv_header(path: Path, delimiter: str) -> list[str]:
    try:
        with path.open("rb") as fh:
            line = fh.readline(MAX_HEADER_BYTES)
    except PermissionError:
        raise DataError(f"{path}: {_DENIED}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(line) >= MAX_HEADER_BYTES and not line.endswith(b"\n"):
        raise DataError(f"{path}: the first line is over {MAX_HEADER_BYTES} bytes; "
                        "is this a CSV file with a header row?")
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: the header is not UTF-8 (bad byte at position {exc.start}); "
                        "re-export the extract as UTF-8") from None
    text = text.rstrip("\r\n")
    if not text.strip():
        raise DataError(f"{path}: the first line is blank; the first line must be the header row")
    header = next(csv.reader([text], delimiter=delimiter, strict=False))
    if len(header) == 1:
        for other in _OTHER_DELIMITERS:
            if other != delimiter and other in text:
                shown = "\\t" if other == "\t" else other
                raise DataError(f"{path}: the header has one column but looks delimited by "
                                f"'{shown}'; the delimiter seems wrong: "
                                f'set delimiter = "{shown}" for this source')
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise DataError(f"{path}: the header repeats column(s) {', '.join(map(repr, duplicates))}; "
                        "each column needs a unique name")
    return header


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except PermissionError:
        raise DataError(f"{path}: {_DENIED}") from None
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: is not a readable Parquet file ({type(exc).__name__}); "
                        'check the file, or set format = "csv" if it is CSV') from None


def check_last_line(path: Path, delimiter: str, n_columns: int) -> None:
    """Raise DataError if a CSV file ends in a line that is cut short: no line end, and fewer
    fields than the header (a transfer or export that stopped part-way)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - (1 << 16)))
        tail = fh.read()
    if not tail or tail.endswith(b"\n"):
        return
    last = tail.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
    fields = next(csv.reader([last], delimiter=delimiter, strict=False), [])
    if len(fields) < n_columns:
        raise DataError(f"{path}: the last line is cut short ({len(fields)} of {n_columns} columns, no line end); "
                        "the file looks truncated: 1 row affected; export it again")


def count_non_utf8_lines(path: Path) -> tuple[int, int]:
    """Return how many lines of a file are not UTF-8, and the number of the first (from 1; 0 if none)."""
    bad, first = 0, 0
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
                first = first or number
    return bad, first


__all__ = ["MAX_HEADER_BYTES", "check_last_line", "count_non_utf8_lines", "read_header"]
