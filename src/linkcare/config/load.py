"""Load a site config (TOML, `version = 1`) into frozen, validated objects.

Everything the user wrote is checked before any work starts, and every problem is collected so
that one run lists them all. Each problem names the config file and the key path
(`site.toml: sources[2].fields.sex: ...`; array positions count from 0) and says how to fix it.
Each table has its module of checks; this one reads the file and puts them together. The format
is documented, key by key, in docs/config.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linkcare.config.asof import AUTO, resolve_as_of
from linkcare.config.engine import check_engine
from linkcare.config.linkage import check_linkage
from linkcare.config.model import CONFIG_VERSION, Config, Source
from linkcare.config.monitor import check_monitor
from linkcare.config.output import check_output
from linkcare.config.risk import check_disclosure, check_risk
from linkcare.config.sources import check_sources, check_validation
from linkcare.config.toml import KeyProblems, read_bytes, read_toml, show_value, type_name
from linkcare.errors import ConfigError, ProblemList

TOP_KEYS = ("version", "reference_date", "sources", "linkage", "risk", "disclosure", "validation", "engine",
            "output", "monitor")


@dataclass(frozen=True)
class ConfigCheck:
    """What checking a config found: the config if it is valid, the sources that are complete
    enough to check their files against, and every problem."""

    path: Path
    config: Config | None
    sources: tuple[Source, ...]
    problems: tuple[ConfigError, ...]


def config_hash(config_path: str | Path) -> str:
    """Return the SHA-256 (hex) of the config file's bytes, for manifests."""
    return hashlib.sha256(read_bytes(Path(config_path))).hexdigest()


def load_config(config_path: str | Path, as_of: dt.date | None = None) -> Config:
    """Return the validated config, its reference date resolved (`as_of`, the --as-of date, wins;
    see linkcare.config.asof); raise ProblemList with every problem if there are any, or one
    ConfigError if the file cannot be read or parsed as TOML."""
    check = check_config(config_path, as_of)
    if check.problems or check.config is None:
        raise ProblemList(list(check.problems))
    return check.config


def check_config(config_path: str | Path, as_of: dt.date | None = None) -> ConfigCheck:
    """Return every problem in the config, and what could be built from it despite them.

    Raises ConfigError only when the file cannot be read or is not valid TOML.
    """
    path = Path(config_path)
    data = read_toml(path)
    problems = KeyProblems(str(path))
    base = path.resolve().parent
    problems.unknown_keys(data, TOP_KEYS, "")

    version = _check_version(data, problems)
    reference_date = _check_reference_date(data, problems)
    drafts = check_sources(data, base, problems)
    mapped = {name for d in drafts for name in d.field_names}
    names = [d.source.name for d in drafts if d.source is not None]
    linkage = check_linkage(data.get("linkage"), len(drafts), mapped, problems, base, names)
    kinds = {d.source.name: d.source.kind for d in drafts if d.source is not None}
    risk = check_risk(data.get("risk"), base, kinds, mapped, problems)
    disclosure = check_disclosure(data.get("disclosure"), problems)
    validation = check_validation(data.get("validation"), problems)
    engine = check_engine(data.get("engine"), base, problems)
    output = check_output(data.get("output"), problems)
    monitor = check_monitor(data.get("monitor"), base, problems)

    sources = tuple(d.source for d in drafts if d.source is not None)
    config = None
    if not problems.items and version is not None and reference_date is not None:
        resolved = resolve_as_of(reference_date, as_of)
        config = Config(path.resolve(), version, resolved.date, sources, linkage, risk, disclosure, validation,
                        engine, output, resolved, monitor)
    return ConfigCheck(path, config, sources, tuple(problems.items))


def _check_version(data: Mapping[str, Any], p: KeyProblems) -> int | None:
    if "version" not in data:
        p.missing("", "version", f"version = {CONFIG_VERSION}")
        return None
    value = data["version"]
    if isinstance(value, int) and not isinstance(value, bool) and value == CONFIG_VERSION:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        p.add("version", f"{value} is not supported; use version = {CONFIG_VERSION}")
    else:
        p.add("version", f"must be the integer {CONFIG_VERSION}, not {type_name(value)}")
    return None


def _check_reference_date(data: Mapping[str, Any], p: KeyProblems) -> dt.date | str | None:
    if "reference_date" not in data:
        p.missing("", "reference_date", 'reference_date = "2026-03-31"')
        return None
    value = data["reference_date"]
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value  # a TOML local date written without quotes
    if value == AUTO:
        return AUTO
    fix = 'write it as "YYYY-MM-DD", e.g. reference_date = "2026-03-31", or "auto" (the last complete month\'s end)'
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        p.add("reference_date", f"must be a date; {fix}")
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        p.add("reference_date", f"{show_value(value)} is not a real date; {fix}")
        return None


__all__ = ["ConfigCheck", "check_config", "config_hash", "load_config"]
