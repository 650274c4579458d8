"""Logging set-up: rich and coloured on a terminal, plain one-line records under cron."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LOGGER_NAME = "linkcare"


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the linkcare logger, or a child of it."""
    return logging.getLogger(LOGGER_NAME if name is None else f"{LOGGER_NAME}.{name}")


def configure_logging(verbosity: int = 0, *, stream: TextIO | None = None) -> None:
    """Send linkcare's log to stderr: INFO by default, DEBUG with -v, WARNING with -q.

    On a terminal the lines go through rich; elsewhere (cron, pipes, CI) they are plain
    `time level message` lines that grep and log shippers can read.
    """
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    out = stream if stream is not None else sys.stderr
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler: logging.Handler
    if getattr(out, "isatty", lambda: False)():
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(file=out), show_path=False, markup=False, rich_tracebacks=False
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
