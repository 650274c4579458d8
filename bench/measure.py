"""Run one tool as a child process and measure it: wall time and peak resident memory.

Time is a monotonic clock around the child, from start to exit. Peak memory is the child's
maximum resident set size as the kernel accounts it (ru_maxrss, KiB on Linux): the largest
resident size of that process or of any descendant it waited for, not a sum across processes.
The child runs in its own session so that a time limit can end it and anything it started, by
its process group id.

A child forked straight from this process would inherit this process's resident size as its
starting high-water mark (Linux records the forked copy's peak when the child execs), so a tool
smaller than the bench itself would be reported at the bench's size. So the tool is started by
GNU time (/usr/bin/time, a small process), which forks it afresh and writes the tool's own
ru_maxrss to a file; without GNU time, os.wait4's figure is used and may be too high.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = Path("/usr/bin/time")
HOW_MEASURED = ("each tool runs as a child process; seconds = wall clock from start to exit (monotonic clock); "
                "peak MiB = the tool's maximum resident set size (ru_maxrss) as GNU time reports it for the tool it "
                "forks (a child forked straight from the bench would start at the bench's own size)")


class StageClock:
    """Times the stages of a run inside a child: `lap(name)` records the seconds since the last lap
    and reports them through `report`."""

    def __init__(self, report: Callable[[str, float], None]):
        self.stages: dict[str, float] = {}
        self.report = report
        self.clock = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = round(now - self.clock, 3)
        self.clock = now
        self.report(stage, self.stages[stage])


@dataclass(frozen=True)
class ChildRun:
    """How a child process ended, how long it took and its peak resident memory."""

    cmd: tuple[str, ...]
    seconds: float
    peak_mib: float
    exit_code: int | None  # None when it was killed at the time limit
    timed_out: bool
    log: Path | None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def tail(self, lines: int = 15) -> str:
        """Return the last lines of the child's log, for error messages."""
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def run_child(cmd: list[str], *, timeout: float | None = None, log: Path | None = None,
              env: dict[str, str] | None = None) -> ChildRun:
    """Run cmd to completion (or until timeout seconds), its output going to log; return its measurements."""
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    peak_file = None
    launch = list(cmd)
    if GNU_TIME.exists():
        fd, name = tempfile.mkstemp(prefix="peak-", suffix=".txt")
        os.close(fd)
        peak_file = Path(name)
        launch = [str(GNU_TIME), "-f", "%M", "-o", name, *cmd]
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(launch, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if timeout is not None else 0)
            if pid == proc.pid:
                break
            if timeout is not None and time.perf_counter() - started > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own process group, started above
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)  # polling adds at most this much to a measured time
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
    peak_kib = float(usage.ru_maxrss)
    if peak_file is not None:
        # GNU time's file ends with the peak in KiB (after a "Command exited with non-zero status" line
        # when the tool failed); killed at the time limit, it may be empty.
        lines = [ln for ln in peak_file.read_text().split() if ln.isdigit()]
        peak_kib = float(lines[-1]) if lines else peak_kib
        peak_file.unlink(missing_ok=True)
    return ChildRun(tuple(cmd), seconds, peak_kib / 1024.0, None if timed_out else proc.returncode,
                    timed_out, log)
