"""Write files and folders whole or not at all, with the output's modes, one run at a time.

- `atomic_path` and `atomic_dir` write into a temporary sibling (a hidden name ending `.tmp`),
  set the output's modes (linkcare.io.modes: owner only by default), and only then move it onto
  the target. An existing folder is swapped with the new one in one step where the system can
  (Linux renameat2 RENAME_EXCHANGE, macOS renamex_np RENAME_SWAP), so at every instant the target
  is either the previous complete output or the new complete one.
- Elsewhere (Windows, a file system without the exchange, or `LINKCARE_PORTABLE_IO=1`) the swap is
  three steps: the previous output is renamed aside to `.<name>.<random>.old`, the new one is
  renamed in, and the old one is deleted. Between the two renames the target is absent and the
  previous output lies whole beside it; a crash there is undone by `recover_target`, which the
  next write of the target runs first: it renames the old output back, or, once the new one is in
  place, deletes what is left of the old.
- `output_lock` (linkcare.io.lock) stops a second run from writing the same target meanwhile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from linkcare.errors import DataError
from linkcare.io.lock import OutputLocked, output_lock, portable_io
from linkcare.io.modes import OWNER, OutputModes, apply_modes
from linkcare.log import get_logger

log = get_logger("io")
FILE_MODE = OWNER.file
DIR_MODE = OWNER.folder
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h
_AT_FDCWD = -100


def owner_only(path: Path) -> None:
    """Make a file 0600, or a folder and everything in it 0700 (folders) and 0600 (files)."""
    apply_modes(path, OWNER)


@contextmanager
def atomic_path(target: Path, modes: OutputModes = OWNER) -> Iterator[Path]:
    """Yield a temporary path beside `target`; renamed onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        apply_modes(tmp, modes)
        try:
            os.replace(tmp, target)
        except PermissionError as exc:  # Windows: the file is open in another program
            raise _in_use(target, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name, use_errno=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2, macOS renamex_np); return False where the system,
    the file system or LINKCARE_PORTABLE_IO=1 rules it out."""
    if portable_io() or sys.platform == "win32":
        return False
    libc = _libc()
    if libc is None:
        return False
    renameat2 = getattr(libc, "renameat2", None)
    renamex_np = getattr(libc, "renamex_np", None)
    if renameat2 is not None:
        result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif renamex_np is not None:
        result = renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def recover_target(target: Path) -> None:
    """Finish what a run that stopped in the middle of a three-step swap left: put the previous
    output back if the target is missing, else delete the previous output left beside it."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    olds = sorted(target.parent.glob(f".{target.name}.*.old"), key=lambda p: p.stat().st_mtime)
    if not olds:
        return
    if not target.exists():
        log.warning("%s was missing: a run stopped while replacing it; the previous output is put back", target)
        os.replace(olds.pop(), target)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def _in_use(target: Path, exc: OSError) -> DataError:
    return DataError(f"{target}: could not be replaced ({exc.strerror}); a file in it may be open in another "
                     "program: close it and run again (the previous output is unchanged)")


def swap_in(tmp: Path, target: Path) -> None:
    """Move the complete folder `tmp` onto `target`; afterwards `tmp` holds the previous output or is gone."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if exchange(tmp, target):
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rmdir(old)
    try:
        os.replace(target, old)
    except PermissionError as exc:
        raise _in_use(target, exc) from None
    try:
        os.replace(tmp, target)
    except OSError as exc:
        os.replace(old, target)  # the previous output goes back; the new one is dropped
        raise _in_use(target, exc) from None
    shutil.rmtree(old, ignore_errors=True)  # what a crash leaves of it, recover_target deletes


@contextmanager
def atomic_dir(target: Path, modes: OutputModes = OWNER) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_target(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        apply_modes(tmp, modes)
        swap_in(tmp, target)
    finally:
        # After an exchange, tmp holds the previous output; either way it is no longer wanted.
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["DIR_MODE", "FILE_MODE", "OutputLocked", "atomic_dir", "atomic_path", "exchange", "output_lock",
           "owner_only", "recover_target", "swap_in"]
