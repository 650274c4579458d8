"""Checksums that tie outputs to their inputs, and refuse files changed after linkcare wrote them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from linkcare.errors import ConfigError


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_written_by(path: Path, raw: bytes, expected: object, manifest: Path, command: str, fix: str) -> None:
    """Raise ConfigError unless `raw`, the bytes of `path`, have the SHA-256 its manifest recorded."""
    if hashlib.sha256(raw).hexdigest() != expected:
        raise ConfigError(f"{path}: its checksum does not match {manifest.name}; the file was changed after "
                          f"`linkcare {command}` wrote it, so it is refused; {fix}")


__all__ = ["check_written_by", "file_sha256"]
