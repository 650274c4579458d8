"""Logging set-up: rich and coloured on a terminal, plain one-line records under cron."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TextIO

resource: ModuleType | None
try:
    import resource
except ImportError:  # Windows: peak memory comes from the process's memory counters instead
    resource = None

LOGGER_NAME = "linkcare"
#: The child logger of each run's start and end lines, which show at every verbosity (-q included).
RUN_LOGGER = "run"
#: Under cron (no terminal), a long stage logs a progress line at most this often, and at its end.
PROGRESS_EVERY_SECONDS = 30.0
_terminal: dict[str, Any] = {"console": None}  # the rich console when logging to a terminal without -q


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the linkcare logger, or a child of it."""
    return logging.getLogger(LOGGER_NAME if name is None else f"{LOGGER_NAME}.{name}")


def configure_logging(verbosity: int = 0, *, stream: TextIO | None = None) -> None:
    """Send linkcare's log to stderr: INFO by default, DEBUG with -v, WARNING with -q (and each run's
    start and end lines, whatever the verbosity).

    On a terminal the lines go through rich; elsewhere (cron, pipes, CI) they are plain
    `time level message` lines that grep and log shippers can read.
    """
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    out = stream if stream is not None else sys.stderr
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler: logging.Handler
    _terminal["console"] = None
    if getattr(out, "isatty", lambda: False)():
        from rich.console import Console
        from rich.logging import RichHandler

        console = Console(file=out)
        if verbosity >= 0:
            _terminal["console"] = console  # progress bars share the console, so log lines print above them
        handler = RichHandler(
            console=console, show_path=False, markup=False, rich_tracebacks=False
        )
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="%H:%M:%S"))
    else:
        handler = logging.StreamHandler(out)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
        )
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    get_logger(RUN_LOGGER).setLevel(min(level, logging.INFO))


@contextmanager
def progress(description: str, total: int, unit: str) -> Iterator[Callable[[int], None]]:
    """Yield a function that advances a long stage by a number of `unit`s out of `total`.

    On a terminal (and without -q) it draws a rich progress bar with counts and elapsed time;
    elsewhere (cron, pipes) it logs a plain line, `compare: 1,200,000 of 4,000,000 pairs (30%),
    12 s`, at most every PROGRESS_EVERY_SECONDS and when the stage ends. Counts only, never values.
    """
    console = _terminal["console"]
    if console is not None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                   TaskProgressColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(description, total=max(total, 1))
            yield lambda n: bar.advance(task, n)
        return
    logger = get_logger("progress")
    started = last = time.monotonic()
    done = 0

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_SECONDS or done >= total:
            share = f" ({done / total:.0%})" if total else ""
            logger.info("%s: %s of %s %s%s, %.0f s", description, f"{done:,}", f"{total:,}", unit, share,
                        now - started)
            last = now

    yield advance


def peak_mib() -> float:
    """Return the peak resident memory of this process so far, in MiB (0.0 where it cannot be had)."""
    if resource is not None:
        return _maxrss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if sys.platform == "win32":
        return _windows_peak_mib()
    return 0.0


def children_peak_mib() -> float:
    """Return the peak resident memory of the largest child process that ended (a compare worker), in
    MiB; 0.0 where there was none or it cannot be had (Windows)."""
    if resource is None:
        return 0.0
    return _maxrss_mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def _maxrss_mib(maxrss: int) -> float:
    # getrusage gives kilobytes on Linux and the BSDs, bytes on macOS.
    return maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0


def _windows_peak_mib() -> float:
    if sys.platform != "win32":
        return 0.0
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):
        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD),
                    ("PeakWorkingSetSize", ctypes.c_size_t), ("WorkingSetSize", ctypes.c_size_t),
                    ("QuotaPeakPagedPoolUsage", ctypes.c_size_t), ("QuotaPagedPoolUsage", ctypes.c_size_t),
                    ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t), ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                    ("PagefileUsage", ctypes.c_size_t), ("PeakPagefileUsage", ctypes.c_size_t)]

    counters = Counters()
    counters.cb = ctypes.sizeof(Counters)
    kernel32 = ctypes.WinDLL("kernel32")
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    kernel32.K32GetProcessMemoryInfo.argtypes = [wintypes.HANDLE, ctypes.c_void_p, wintypes.DWORD]
    if not kernel32.K32GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb):
        return 0.0
    return counters.PeakWorkingSetSize / (1024.0 * 1024.0)


@dataclass
class StageLog:
    """Time and peak memory of each stage of a run, logged as each ends."""

    stages: list[dict[str, float | str]] = field(default_factory=list)
    logger: logging.Logger = field(default_factory=lambda: get_logger("link"))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        self.logger.info("%s…", name)
        yield
        peak = peak_mib()
        seconds = time.perf_counter() - started
        self.stages.append({"stage": name, "seconds": round(seconds, 3), "peak_mib": round(peak, 1)})
        self.logger.info("%s done in %.1f s (peak memory so far %.0f MiB)", name, seconds, peak)
