"""`<out>.run.json`: the record of the last run that wrote (or tried to write) an output, kept beside
the output folder or file, never inside it, so that a failed run leaves its record and no partial
output. It holds the command, its arguments, the version, the start and end times, the duration,
the exit code, the error's class and message (which never hold a record's value) and peak memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from linkcare.io.atomic import atomic_path
from linkcare.io.modes import OWNER, OutputModes

RUN_RECORD_SUFFIX = ".run.json"


def run_record_path(out: Path) -> Path:
    """Return where the run record of the output `out` goes: `<out>.run.json` beside it."""
    out = Path(out)
    return out.parent / f"{out.name}{RUN_RECORD_SUFFIX}"


def write_run_record(path: Path, record: Mapping[str, Any], modes: OutputModes = OWNER) -> None:
    """Write the run record at `path`, whole or not at all."""
    with atomic_path(Path(path), modes) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


__all__ = ["RUN_RECORD_SUFFIX", "run_record_path", "write_run_record"]
