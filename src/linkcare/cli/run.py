"""The frame around every command: a start line and an end line in the log, the run record
`<out>.run.json` beside the output, and each failure shown as `Error: …` lines (and, under
`--json`, as one JSON object on standard output) with its exit code and no traceback.

The start line gives the linkcare version, the command, its arguments and the as-of date (from
`--as-of`, or the config's `reference_date`); the end line the exit code, the duration and peak
memory. Both show at every verbosity, -q included, and both are written for a run that fails,
whose `Error:` lines follow the end line, so that the log's last line says what went wrong.
Arguments are paths and options; the values of options that name a record (`explain --record`,
`--pair`) are shown as `<given>`. No line, record or JSON error holds a value from a record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shlex
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

from linkcare import __version__
from linkcare.config import OUTPUT_MODES
from linkcare.config.asof import AUTO, resolve_as_of
from linkcare.config.toml import read_toml
from linkcare.errors import EXIT_DATA, LinkcareError, ProblemList
from linkcare.io.modes import OWNER, OutputModes, modes_for
from linkcare.io.runrecord import run_record_path, write_run_record
from linkcare.log import RUN_LOGGER, get_logger, peak_mib

FRAME_KEY = "linkcare.run"
#: Parameters whose values come from a record (a record key): `<given>` in logs and run records.
REDACTED_PARAMS = ("record", "pair")
#: Parameters that name a command's output, whose run record goes beside it.
OUTPUT_PARAMS = ("out", "output_path")
#: Options that print and exit before any run: no frame for them.
NO_RUN_OPTIONS = ("-h", "--help", "--version")
log = get_logger(RUN_LOGGER)


class LinkcareClickError(click.ClickException):
    """A linkcare error shown as one or more `Error: ...` lines with its own exit code."""

    def __init__(self, messages: list[str], exit_code: int) -> None:
        super().__init__(messages[0] if messages else "failed")
        self.messages = messages or ["failed"]
        # click declares exit_code a class variable; ours is the linkcare error's own code.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        for message in self.messages:
            click.echo(f"Error: {message}", file=file, err=file is None)


@dataclass(frozen=True)
class Failure:
    """How a run failed: its exit code, the error's class and message, and each problem of a list."""

    exit_code: int
    error: str
    message: str
    problems: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"exit_code": self.exit_code, "error": self.error, "message": self.message}
        if self.problems:
            body["problems"] = [{"error": e, "message": m} for e, m in self.problems]
        return body


@dataclass
class RunFrame:
    """One run of a command: what it was asked, when it started, and where its record goes."""

    command: str
    arguments: list[str]
    params: dict[str, Any]
    started_at: dt.datetime
    started: float
    start_logged: bool = False
    _toml: dict[str, Any] | None = None

    @property
    def record_path(self) -> Path | None:
        out = next((self.params[p] for p in OUTPUT_PARAMS if self.params.get(p) is not None), None)
        return None if out is None else run_record_path(Path(out))

    def _config(self) -> dict[str, Any]:
        """Return the config's tables as written (read once, unchecked), or {} without a readable one."""
        if self._toml is None:
            self._toml = {}
            # An unreadable config is the command's to report.
            with contextlib.suppress(LinkcareError, OSError):
                if self.params.get("config") is not None:
                    self._toml = read_toml(Path(self.params["config"]))
        return self._toml

    def as_of(self) -> tuple[str, str] | None:
        """Return the as-of date the run was given and where from, or None for a command without one."""
        given = self.params.get("as_of")
        if given is not None:
            return _date_text(given), "--as-of"
        reference = self._config().get("reference_date")
        if reference is not None and self.params.get("config") is not None:
            name = Path(self.params["config"]).name
            if reference == AUTO:
                with contextlib.suppress(LinkcareError):
                    resolved = resolve_as_of(AUTO)
                    return resolved.date.isoformat(), f"{resolved.why} ({name})"
            return _date_text(reference), f"reference_date in {name}"
        return None

    def _date_shown(self) -> str:
        given = self.params.get("as_of")
        if given is not None:
            return f"; as of {_date_text(given)} (--as-of)"
        as_of = self.as_of()
        return "" if as_of is None else f"; as of {as_of[0]} ({as_of[1]})"

    def modes(self) -> OutputModes:
        output = self._config().get("output")
        mode = output.get("mode") if isinstance(output, dict) else None
        return modes_for(mode) if isinstance(mode, str) and mode in OUTPUT_MODES else OWNER

    def log_start(self) -> None:
        if self.start_logged:
            return
        self.start_logged = True
        when = self._date_shown()
        given = f": {shlex.join(self.arguments)}" if self.arguments else " with no arguments"
        log.info("linkcare %s %s started%s%s", __version__, self.command, given, when)
        self._write_record(None, None)

    def finish(self, exit_code: int, failure: Failure | None) -> None:
        """Log the end line and write the run record."""
        self.log_start()
        seconds = time.perf_counter() - self.started
        why = "" if failure is None else f" ({failure.error})"
        log.info("linkcare %s ended: exit %d%s in %.1f s, peak memory %.0f MiB", self.command, exit_code, why,
                 seconds, peak_mib())
        self._write_record(exit_code, failure, seconds)

    def _write_record(self, exit_code: int | None, failure: Failure | None, seconds: float | None = None) -> None:
        path = self.record_path
        if path is None:
            return
        as_of = self.as_of()
        record = {
            "linkcare_version": __version__, "command": self.command, "arguments": self.arguments,
            "output": str(self.params.get("out") or self.params.get("output_path")),
            "as_of": None if as_of is None else {"date": as_of[0], "from": as_of[1]},
            "host": socket.gethostname(), "pid": os.getpid(),
            "started": self.started_at.isoformat(timespec="seconds"),
            "ended": None if seconds is None else _now().isoformat(timespec="seconds"),
            "seconds": None if seconds is None else round(seconds, 3),
            "exit_code": exit_code,  # null while the run goes on, or if it was killed
            "error": None if failure is None else {"class": failure.error, "message": failure.message},
            "peak_mib": round(peak_mib(), 1),
        }
        try:
            write_run_record(path, record, self.modes())
        except (OSError, LinkcareError) as exc:
            log.warning("could not write the run record %s: %s", path, getattr(exc, "strerror", None) or exc)


def _now() -> dt.datetime:
    return dt.datetime.now().astimezone()


def _date_text(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def begin_run(ctx: click.Context, name: str, command: click.Command, args: Sequence[str]) -> None:
    """Open the frame of the command about to run (not for --help or --version), with its arguments as given."""
    args = list(args)
    if any(a in NO_RUN_OPTIONS for a in args[: args.index("--") if "--" in args else len(args)]):
        return
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        name, command, args = f"{name} {args[0]}", command.commands[args[0]], args[1:]
    try:
        # Parsed without callbacks or errors, only to find the output, the config and --json.
        with command.make_context(name, list(args), parent=ctx, resilient_parsing=True) as peek:
            params = dict(peek.params)
    except Exception:
        params = {}
    if "--json" in args:
        params["as_json"] = True
    ctx.meta[FRAME_KEY] = RunFrame(name, _redacted(command, args), params, _now(), time.perf_counter())


def start_run(ctx: click.Context) -> None:
    """Log the start line of the run, once logging is set up."""
    frame = ctx.meta.get(FRAME_KEY)
    if frame is not None:
        frame.log_start()


def _redacted(command: click.Command, args: list[str]) -> list[str]:
    hidden = {opt: p.nargs for p in command.params if isinstance(p, click.Option) and p.name in REDACTED_PARAMS
              for opt in p.opts}
    shown: list[str] = []
    skip = 0
    for arg in args:
        if skip:
            shown.append("<given>")
            skip -= 1
        elif arg.split("=", 1)[0] in hidden and "=" in arg:
            shown.append(arg.split("=", 1)[0] + "=<given>")
        else:
            shown.append(arg)
            skip = hidden.get(arg, 0)
    return shown


def failure_of(exc: BaseException, verbose: bool) -> tuple[Failure, Callable[[], None]]:
    """Return how a command's exception fails the run, and how to show it (never a traceback unless
    `verbose`, since a traceback may quote data)."""
    if isinstance(exc, ProblemList):
        shown = LinkcareClickError([str(p) for p in exc.problems], exc.exit_code)
        problems = tuple((type(p).__name__, str(p)) for p in exc.problems)
        return Failure(exc.exit_code, "ProblemList", str(exc), problems), shown.show
    if isinstance(exc, LinkcareError):
        return Failure(exc.exit_code, type(exc).__name__, str(exc)), LinkcareClickError([str(exc)], exc.exit_code).show
    if isinstance(exc, click.ClickException):
        return Failure(exc.exit_code, type(exc).__name__, exc.format_message()), exc.show
    if isinstance(exc, click.Abort | KeyboardInterrupt):
        return Failure(EXIT_DATA, "Aborted", "stopped before it finished"), lambda: click.echo("Aborted!", err=True)
    name = type(exc).__name__
    message = f"internal error: {name}; rerun with -v to see the traceback"
    text = traceback.format_exc() if verbose else ""

    def show() -> None:
        if text:
            click.echo(text, err=True, nl=False)
        LinkcareClickError([message], EXIT_DATA).show()

    return Failure(EXIT_DATA, name, message), show


def run_framed(ctx: click.Context, invoke: Callable[[], Any]) -> Any:
    """Run the command through `invoke` inside its frame; a failure is shown, ends the frame, and
    exits with its code."""
    try:
        result = invoke()
    except click.exceptions.Exit as exc:
        frame = ctx.meta.get(FRAME_KEY)
        if frame is not None and frame.start_logged:
            frame.finish(exc.exit_code, None)
        raise
    except BrokenPipeError:
        # The reader of our output went away (`linkcare ... | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise click.exceptions.Exit(0) from None
    except BaseException as exc:  # every failure is shown here, once, and ends the frame
        if isinstance(exc, SystemExit | GeneratorExit):
            raise
        failure, show = failure_of(exc, bool(ctx.params.get("verbose")))
        frame = ctx.meta.get(FRAME_KEY)
        if frame is not None:
            if frame.params.get("as_json"):
                click.echo(json.dumps({"command": frame.command, **failure.as_dict()}, indent=2))
            frame.finish(failure.exit_code, failure)
        show()  # last, so that the log's last line says what went wrong
        raise click.exceptions.Exit(failure.exit_code) from None
    frame = ctx.meta.get(FRAME_KEY)
    if frame is not None:
        frame.finish(0, None)
    return result


__all__ = ["FRAME_KEY", "Failure", "LinkcareClickError", "RunFrame", "begin_run", "failure_of", "run_framed",
           "start_run"]
