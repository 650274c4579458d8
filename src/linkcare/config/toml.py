"""Read a TOML file with plain errors, and check its tables while collecting every problem.

Each problem is a ConfigError that names the file and the key path (`sources[2].fields.sex`,
array positions counting from 0) and says how to fix it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from linkcare.errors import ConfigError

# Keys shown bare only if they look like names; `values."2"` reads better than `values.2`.
_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def read_bytes(path: Path) -> bytes:
    """Return a config file's bytes; raise ConfigError saying why it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; give the path of the config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot be read (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None


def read_toml(path: Path) -> dict[str, Any]:
    """Return a TOML file parsed into tables; raise one ConfigError if it is not valid TOML."""
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text; save the config as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}; fix the syntax there") from None


class KeyProblems:
    """Collects ConfigErrors, each prefixed with the config file and a key path."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.items: list[ConfigError] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(ConfigError(f"{self.label}: {key}: {message}"))

    def unknown_keys(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                hint = did_you_mean(key, allowed)
                allowed_keys = ", ".join(allowed)
                self.add(key_path(where, key), f"unknown key;{hint} allowed keys: {allowed_keys}")

    def missing(self, where: str, key: str, example: str) -> None:
        self.add(key_path(where, key), f"missing; add it, e.g. {example}")

    def bad_choice(self, key: str, value: Any, choices: Sequence[str], what: str) -> None:
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
        shown = show_value(value)
        self.add(key, f"{shown} is not a {what};{hint} use one of: {', '.join(choices)}")


def key_path(where: str, key: str) -> str:
    """Return `where.key`, quoting the key as TOML would if it is not a bare key."""
    shown = key if _BARE_KEY.match(key) else '"' + key.replace('"', '\\"') + '"'
    return f"{where}.{shown}" if where else shown


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return " did you mean 'x'?" for the closest choice, or "" if none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" did you mean '{close[0]}'?" if close else ""


def show_value(value: Any) -> str:
    """Return a config value as it would be written in TOML (never used for record values)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def type_name(value: Any) -> str:
    """Return the TOML type of a value in words: "a string", "a table"..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dt.datetime | dt.time):
        return "a time"
    if isinstance(value, dt.date):
        return "a date"
    return type(value).__name__


def is_number(value: Any) -> bool:
    """Return True for a TOML integer or float (booleans are not numbers)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def expect_text(value: Any, key: str, example: str, p: KeyProblems) -> str | None:
    """Return the value if it is a non-blank string, else record a problem and return None."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, str):
        p.add(key, f"is empty; give a value, e.g. {example}")
    else:
        p.add(key, f"must be a string, not {type_name(value)}; e.g. {example}")
    return None


def expect_whole(value: Any, key: str, minimum: int, example: str, p: KeyProblems) -> int | None:
    """Return the value if it is a whole number of at least `minimum`, else record a problem and return None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    rule = "above 0" if minimum == 1 else f"of {minimum} or more"
    p.add(key, f"must be a whole number {rule}, e.g. {example}")
    return None


def expect_choice(
    value: Any, key: str, choices: Sequence[str], what: str, p: KeyProblems
) -> str | None:
    """Return the value if it is one of the choices, else record a problem and return None."""
    if isinstance(value, str) and value in choices:
        return value
    p.bad_choice(key, value, choices, what)
    return None


def open_table(value: Any, name: str, allowed: Sequence[str], p: KeyProblems) -> dict[str, Any] | None:
    """Return a top-level `[name]` table with its unknown keys recorded, or None if it is absent or
    not a table (recorded as a problem): the caller then uses its defaults."""
    if value is None:
        return None
    if not isinstance(value, dict):
        p.add(name, f"must be a table, not {type_name(value)}; write it as [{name}]")
        return None
    p.unknown_keys(value, allowed, name)
    return value


__all__ = [
    "KeyProblems",
    "did_you_mean",
    "expect_choice",
    "expect_text",
    "expect_whole",
    "open_table",
    "is_number",
    "key_path",
    "read_bytes",
    "read_toml",
    "show_value",
    "type_name",
]
