"""`manifest.json`: what every command writes beside its outputs, so that a later run (or an
auditor) can tell what made them: the version, the command, the config's SHA-256 and the facts the
command adds (inputs with their checksums and rows, outputs' checksums, timings). No record values."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from linkcare import __version__
from linkcare.config import Config, config_hash
from linkcare.io.checksum import file_sha256

MANIFEST_NAME = "manifest.json"


def checksums(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """Return the SHA-256 of each named file in `folder`, by name."""
    return {name: file_sha256(folder / name) for name in names}


def write_manifest(folder: Path, command: str, config: Config, facts: Mapping[str, Any]) -> dict[str, Any]:
    """Write manifest.json into `folder` (which holds the written outputs) and return it: the version,
    the command and the config, then `facts` in their order."""
    manifest: dict[str, Any] = {
        "linkcare_version": __version__,
        "command": command,
        "config": {"path": config.path.name, "sha256": config_hash(config.path)},
        **facts,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


__all__ = ["MANIFEST_NAME", "checksums", "write_manifest"]
