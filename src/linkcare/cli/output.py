"""How every command ends: a short summary table on standard output, or, with `--json`, the same
summary as one JSON document for scripts. Summaries hold counts, names and timings, never a
record's values."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

F = Callable[..., Any]


def json_option(func: F) -> F:
    """Add `--json` to a command: print its summary as JSON instead of tables."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the summary as JSON on standard output, for scripts.")(func)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value


def print_json(command: str, summary: Any) -> None:
    """Print a command's summary (a dataclass or dict) as one JSON document."""
    body = _plain(summary)
    click.echo(json.dumps({"command": command, **(body if isinstance(body, dict) else {"result": body})},
                          indent=2, sort_keys=False))


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print rows as a plain aligned table (first row is the header; first column left-aligned)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        click.echo("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(cells)).rstrip())


__all__ = ["json_option", "print_json", "print_table"]
