"""Dated snapshots of an output: `OUT/<as-of date>/`, a `latest` pointer, and a retention count.

With `--snapshot`, `link` and `stratify` write into `OUT/<YYYY-MM-DD>/` (the run's as-of date), so
each month's output is kept beside the earlier ones instead of replacing them. Only when the run has
succeeded does `OUT/latest` move to the new folder (a relative symbolic link, replaced in one
rename; where the file system cannot hold one, a one-line file naming the folder), and then the
oldest dated folders beyond `--keep` are deleted, never the one `latest` names.

`--previous latest` names the output the run before this one wrote: `OUT/latest` with snapshots,
else OUT itself. When there is none yet (the first run), the run says so and carries on without
carrying IDs over, so the same cron line works from the first month.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from linkcare.errors import ConfigError
from linkcare.io.atomic import output_lock
from linkcare.log import get_logger

log = get_logger("snapshots")
LATEST = "latest"
MANIFEST = "manifest.json"
_DATED = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Snapshots:
    """How a run lays out its output: dated snapshots under `root` (keeping `keep`), or `root` itself."""

    root: Path
    enabled: bool = False
    keep: int | None = None

    def target(self, as_of: dt.date) -> Path:
        """Return the folder this run writes: `root/<as_of>` with snapshots, else `root`."""
        return self.root / as_of.isoformat() if self.enabled else self.root

    def previous(self, given: Path | None, this_run: Path,
                 afresh: str = "no person IDs carried over, no checks against a previous run") -> Path | None:
        """Return the earlier output to compare with and carry IDs from: `given`, or for the word
        "latest" the output the last run wrote (None, with a plain warning saying what the run does
        without it, `afresh`, when there is none)."""
        if given is None or str(given) != LATEST:
            return given
        found = latest(self.root) if self.enabled else (self.root if (self.root / MANIFEST).is_file() else None)
        if found is None:
            log.warning("--previous latest: %s holds no earlier output yet, so this run starts afresh "
                        "(%s)", self.root, afresh)
        elif found.resolve() == this_run.resolve():
            log.info("--previous latest is %s, the folder this run replaces (a rerun of the same as-of date)",
                     found)
        return found


def latest(root: Path) -> Path | None:
    """Return the snapshot `root/latest` names, or None if there is none (or it holds no manifest)."""
    pointer = root / LATEST
    if pointer.is_symlink() or pointer.is_dir():
        folder = pointer.resolve()
    elif pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        if not _DATED.fullmatch(name):
            raise ConfigError(f"{pointer}: does not name a dated snapshot folder (YYYY-MM-DD); delete it and "
                              f"rerun, or give --previous the folder to use")
        folder = root / name
    else:
        return None
    return folder if (folder / MANIFEST).is_file() else None


def dated_folders(root: Path) -> list[Path]:
    """Return the snapshot folders under `root` (named YYYY-MM-DD and holding a manifest), oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if _DATED.fullmatch(p.name) and p.is_dir() and not p.is_symlink() and (p / MANIFEST).is_file())


def publish(root: Path, folder: Path, keep: int | None) -> list[Path]:
    """Point `root/latest` at `folder` and delete the oldest snapshots beyond `keep`; return those deleted."""
    with output_lock(root / LATEST):
        _point(root, folder.name)
        removed: list[Path] = []
        if keep is not None:
            folders = dated_folders(root)
            for old in folders[:max(len(folders) - keep, 0)]:
                if old.name != folder.name:
                    shutil.rmtree(old)
                    removed.append(old)
        for old in removed:
            log.info("deleted the snapshot %s (--keep %d)", old.name, keep)
        return removed


def _point(root: Path, name: str) -> None:
    """Make `root/latest` name the snapshot `name`, replaced in one rename."""
    tmp = root / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        os.symlink(name, tmp, target_is_directory=True)
    except (OSError, NotImplementedError):
        tmp.write_text(name + "\n", encoding="utf-8")  # no symbolic links here: a file naming the folder
    pointer = root / LATEST
    if pointer.is_dir() and not pointer.is_symlink():
        raise ConfigError(f"{pointer}: is a folder, not the latest-snapshot pointer; move it away and rerun")
    os.replace(tmp, pointer)


@contextmanager
def snapshot_run(snapshots: Snapshots, as_of: dt.date) -> Iterator[Path]:
    """Yield the folder a run writes; with snapshots, publish it once the block has succeeded."""
    target = snapshots.target(as_of)
    if snapshots.enabled:
        snapshots.root.mkdir(parents=True, exist_ok=True)
    yield target
    if snapshots.enabled:
        publish(snapshots.root, target, snapshots.keep)


__all__ = ["LATEST", "Snapshots", "dated_folders", "latest", "publish", "snapshot_run"]
