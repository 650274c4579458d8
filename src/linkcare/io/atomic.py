"""Write files and folders whole or not at all, readable by their owner only, one run at a time.

- `atomic_path` and `atomic_dir` write into a temporary sibling (a hidden name ending `.tmp`),
  set owner-only modes (files 0600, folders 0700), and only then move it onto the target. On
  Linux an existing folder is swapped with the new one in one step (renameat2 RENAME_EXCHANGE),
  so at every instant the target is either the previous complete output or the new complete one.
  Elsewhere the old folder is moved aside first, and `recover_target` puts it back if a crash
  fell between the two renames.
- `output_lock` stops a second run from writing the same target while one is running. It holds
  an flock on `.<name>.lock` beside the target, removed when the run ends; the kernel drops the
  lock when the process dies, however it dies, so a lock file left by a dead run is taken over.
  A lock is kept only on the file that is at the path, so two runs can never hold locks on
  different files of the same name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from linkcare.errors import EXIT_LOCKED, LinkcareError

FILE_MODE = 0o600
DIR_MODE = 0o700
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class OutputLocked(LinkcareError):
    """Another linkcare run is writing the same output (exit code 3)."""

    exit_code = EXIT_LOCKED


def owner_only(path: Path) -> None:
    """Make a file 0600, or a folder and everything in it 0700 (folders) and 0600 (files)."""
    path = Path(path)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), DIR_MODE)
            for f in files:
                os.chmod(os.path.join(root, f), FILE_MODE)
        os.chmod(path, DIR_MODE)
    else:
        os.chmod(path, FILE_MODE)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; renamed onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        owner_only(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); return False where the system cannot."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def recover_target(target: Path) -> None:
    """Put back a previous output that a crash left moved aside (only on systems without an atomic swap)."""
    target = Path(target)
    if target.exists() or not target.parent.is_dir():
        return
    olds = sorted(target.parent.glob(f".{target.name}.*.old"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], target)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_target(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        owner_only(tmp)
        if not target.exists():
            os.replace(tmp, target)
        elif not _exchange(tmp, target):
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rmdir(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        # After a swap, tmp holds the previous output; either way it is no longer wanted.
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold the lock on `target` for the block; raise OutputLocked if another live run holds it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.lock"
    fd = _lock_file(path, target)
    try:
        # Temporary folders of this output can only be left by a run that died holding the lock.
        for leftover in target.parent.glob(f".{target.name}.*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        # Removed while still held, so a run that opened it meanwhile sees, once it has the lock,
        # that the file is gone, and starts again on the one at the path (see _lock_file).
        path.unlink(missing_ok=True)
        os.close(fd)  # closing drops the flock


def _lock_file(path: Path, target: Path) -> int:
    """Return an open descriptor of the lock file at `path`, flocked by this process.

    A run that finishes removes its lock file while holding it. A run that opened that file just
    before could then lock it after the removal, holding a lock no later run can see; so, once
    locked, the file must still be the one at the path, else the lock is let go and taken again.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise OutputLocked(f"{target}: another linkcare run (process {holder}) is writing this output; "
                               "wait for it to finish, or stop it, then run again") from None
        held = os.fstat(fd)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # locked a file that was removed meanwhile: try the one at the path now


__all__ = ["OutputLocked", "atomic_dir", "atomic_path", "output_lock", "owner_only", "recover_target"]
