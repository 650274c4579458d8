"""One run at a time per output: the lock `.<name>.lock` beside the output, held while a run writes it.

Two ways to hold it, the first wherever it can be had:

- **flock** (Linux, macOS, other Unix): the operating system's lock on the open lock file. The
  kernel drops it when the process dies, however it dies, so a lock file left by a dead run is
  simply taken over. The file holds the holder's process number, for the message of a refused run.
- **lock file** (Windows, where `fcntl` does not exist; a file system whose flock fails, such as
  some network shares; or `LINKCARE_PORTABLE_IO=1`): the lock is the file itself, created with
  O_CREAT | O_EXCL so that only one run can create it, holding `<pid> <host> <token>`. A file left
  by a run that died is taken over once its process is seen to be gone: it is renamed aside, and
  removed only if it is still the dead run's (so that of two runs finding the same dead lock, only
  one goes on). A lock written from another host, or whose process number a new process has taken
  since, is never taken over: the run is refused and the message says which file to delete.

Either way a run refused stops at once (exit code 3), and the file is removed when the run ends.
docs/operations.md states what each way guarantees.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from linkcare.errors import EXIT_LOCKED, LinkcareError
from linkcare.io.modes import OWNER, OutputModes

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

#: Set to 1 to use the portable fallbacks (the lock file, and the folder swap by renames) everywhere.
PORTABLE_ENV = "LINKCARE_PORTABLE_IO"
#: A lock file still empty this long after it was made was left by a run that died creating it.
EMPTY_LOCK_SECONDS = 10.0
_ATTEMPTS = 5


class OutputLocked(LinkcareError):
    """Another linkcare run is writing the same output (exit code 3)."""

    exit_code = EXIT_LOCKED


def portable_io() -> bool:
    """Return True when the portable fallbacks are forced by the environment (LINKCARE_PORTABLE_IO=1)."""
    return os.environ.get(PORTABLE_ENV, "").strip() in ("1", "true", "yes")


def lock_path(target: Path) -> Path:
    """Return the lock file of an output: `.<name>.lock` beside it."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


@contextmanager
def output_lock(target: Path, modes: OutputModes = OWNER) -> Iterator[None]:
    """Hold the lock on `target` for the block; raise OutputLocked if another live run holds it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(target)
    fd = _flock_file(path, target, modes) if fcntl is not None and not portable_io() else None
    token = _create_lock_file(path, target, modes) if fd is None else None
    try:
        # Temporary folders of this output can only be left by a run that died holding the lock.
        for leftover in target.parent.glob(f".{target.name}.*.tmp"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        if fd is not None:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        if fd is not None:
            # Removed while still held, so a run that opened it meanwhile sees, once it has the lock,
            # that the file is gone, and starts again on the one at the path (see _flock_file).
            path.unlink(missing_ok=True)
            os.close(fd)  # closing drops the flock
        elif token is not None:
            held = _read_holder(path)
            if held is not None and held.token == token:
                path.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Holder:
    """What a lock file says about the run that holds it."""

    text: str
    pid: int | None
    host: str | None = None  # None: written by the flock way, on this host
    token: str | None = None

    def shown(self) -> str:
        if self.pid is None:
            return "unknown"
        return f"{self.pid}" if self.host in (None, socket.gethostname()) else f"{self.pid} on host {self.host}"


def _read_holder(path: Path) -> _Holder | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return None
    parts = text.split()
    pid = int(parts[0]) if parts and parts[0].isdigit() else None
    if len(parts) >= 3:
        return _Holder(text, pid, parts[1], parts[2])
    return _Holder(text, pid)


def _refused(target: Path, holder: str, path: Path | None = None) -> OutputLocked:
    fix = "wait for it to finish, or stop it, then run again"
    if path is not None:
        fix += f"; if no linkcare run is going, delete {path}"
    return OutputLocked(f"{target}: another linkcare run (process {holder}) is writing this output; {fix}")


def _not_ours(target: Path, path: Path) -> OutputLocked:
    return OutputLocked(f"{target}: the lock file {path} belongs to another user, whose run may be writing this "
                        "output; if none is, ask them to delete it")


def _flock_file(path: Path, target: Path, modes: OutputModes) -> int | None:
    """Return an open descriptor of the lock file at `path`, flocked by this process; None where the
    file system has no flock (then the lock file way is used).

    A run that finishes removes its lock file while holding it. A run that opened that file just
    before could then lock it after the removal, holding a lock no later run can see; so, once
    locked, the file must still be the one at the path, else the lock is let go and taken again.
    """
    assert fcntl is not None
    while True:
        try:
            try:
                fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, modes.file), True
            except FileExistsError:
                fd, created = os.open(path, os.O_RDWR), False
        except FileNotFoundError:
            continue  # removed between the two opens
        except PermissionError:
            raise _not_ours(target, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise _refused(target, holder) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                if created:
                    path.unlink(missing_ok=True)  # the lock file way makes its own
                return None
            raise
        held = os.fstat(fd)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            lock_holder = _read_holder(path)
            if lock_holder is not None and lock_holder.token is not None and not _is_dead(lock_holder, path):
                os.close(fd)  # a run holding it the lock file way (LINKCARE_PORTABLE_IO=1) is going
                raise _refused(target, lock_holder.shown(), path)
            return fd
        os.close(fd)  # locked a file that was removed meanwhile: try the one at the path now


def _create_lock_file(path: Path, target: Path, modes: OutputModes) -> str:
    """Create the lock file at `path` (taking over one a dead run left) and return this run's token."""
    for _ in range(_ATTEMPTS):
        token = secrets.token_hex(8)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), modes.file)
        except FileExistsError:
            holder = _read_holder(path)
            if holder is None:
                continue  # removed meanwhile: try again
            if not _is_dead(holder, path):
                raise _refused(target, holder.shown(), path) from None
            _remove_dead(path, holder)
            continue
        except PermissionError:
            raise _not_ours(target, path) from None
        try:
            os.write(fd, f"{os.getpid()} {socket.gethostname()} {token}\n".encode("ascii", "replace"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return token
    raise OutputLocked(f"{target}: other linkcare runs keep taking the lock {path}; run again once they end")


def _is_dead(holder: _Holder, path: Path) -> bool:
    """Return True if the run that wrote the lock file is known to be gone."""
    if holder.pid is None:
        try:  # empty: a run died between making the file and writing it, or is between the two now
            return time.time() - path.stat().st_mtime > EMPTY_LOCK_SECONDS
        except FileNotFoundError:
            return True
    if holder.host is not None and holder.host != socket.gethostname():
        return False  # another machine's process cannot be checked from here
    if holder.pid == os.getpid():
        return False
    return not process_alive(holder.pid)


def _remove_dead(path: Path, holder: _Holder) -> None:
    """Remove a dead run's lock file, unless another run took it over first."""
    aside = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.dead")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    now = _read_holder(aside)
    if now is not None and now.text != holder.text:
        os.replace(aside, path)  # a live run's lock, made after the dead one was seen: put it back
    else:
        aside.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Return True if a process of that number runs on this machine."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists, and is not ours
        code = ctypes.c_ulong()
        try:
            ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        finally:
            kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


__all__ = ["EMPTY_LOCK_SECONDS", "PORTABLE_ENV", "OutputLocked", "lock_path", "output_lock", "portable_io",
           "process_alive"]
