"""The exceptions linkcare raises on purpose; the CLI turns each into one `Error: …` line.

Messages name the file, column or config key and say what to fix. They give counts,
never a value taken from a record, a token or a key.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3  # another run is writing the same output


class LinkcareError(Exception):
    """Base class: an expected failure with a message fit for an analyst."""

    exit_code: int = EXIT_DATA


class DataError(LinkcareError):
    """An input file or the data in it is unusable (exit code 1)."""

    exit_code = EXIT_DATA


class ConfigError(LinkcareError):
    """The config or the command line is wrong (exit code 2)."""

    exit_code = EXIT_USAGE


class ProblemList(LinkcareError):
    """Several problems found at once, for example by `linkcare validate`.

    Each problem is a (message, exit_code) pair; the exit code of the whole is the
    usage code if any problem is a config problem, else the data code.
    """

    def __init__(self, problems: list[LinkcareError]):
        self.problems = list(problems)
        codes = {p.exit_code for p in self.problems}
        self.exit_code = EXIT_USAGE if EXIT_USAGE in codes else EXIT_DATA
        super().__init__(f"{len(self.problems)} problem(s) found")
