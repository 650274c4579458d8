"""Configs derived from a generated site.toml, for the benchmark's site variants.

`without_fields(site_toml, name, fields)` writes `<name>.toml` beside the site's own config (so that
its relative paths still hold) with the given fields taken out of every source's `fields`, the
comparisons, the blocking passes and the exact rules: a pass or rule that uses such a field goes,
and a comparison given such a field loses its `given`. The sparse variant drops `la_id` and
`practice`; the Splink run without the practice drops `practice` alone.

There is no TOML writer among the project's dependencies, so `dump_toml` writes the plain subset a
linkcare config uses (strings, numbers, booleans, dates as strings, arrays, tables and arrays of
tables); the result is read back by linkcare's own loader before anyone links with it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from linkcare.config import load_config

SPARSE_DROPPED = ("la_id", "practice")
NO_PRACTICE_DROPPED = ("practice",)
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _is_table(key: str, value: Any, prefix: str) -> bool:
    # Top-level mappings and a source's `fields` are tables; every other mapping (a field's column,
    # format and values, [risk] deprivation) is written inline, as linkcare synth writes it.
    return isinstance(value, Mapping) and (not prefix or key == "fields")


def dump_toml(table: Mapping[str, Any], prefix: str = "") -> str:
    """Return TOML text for a parsed config: keys first, then sub-tables and arrays of tables (a
    sub-table of an array element follows the element, as TOML wants)."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in table.items()
             if not _is_table(k, v, prefix) and not _is_table_array(v)]
    for k, v in table.items():
        path = f"{prefix}.{_key(k)}" if prefix else _key(k)
        if _is_table(k, v, prefix):
            lines += ["", f"[{path}]", dump_toml(v, path)]
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{path}]]", dump_toml(item, path)]
    return "\n".join(lines).strip("\n")


def drop_fields(parsed: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """Return a parsed config with the fields taken out of sources, comparisons, blocking and exact rules."""
    gone = set(fields)
    out = json.loads(json.dumps(parsed, default=str))  # a deep copy; dates become strings
    for source in out.get("sources", []):
        source["fields"] = {k: v for k, v in source.get("fields", {}).items() if k not in gone}
    linkage = out.get("linkage", {})
    for key in ("blocking", "deterministic"):
        if key in linkage:
            linkage[key] = [rule for rule in linkage[key] if not gone & set(rule)]
    comparisons = [c for c in linkage.get("comparisons", []) if c["field"] not in gone]
    for c in comparisons:
        if c.get("given") in gone:
            del c["given"]
    if "comparisons" in linkage:
        linkage["comparisons"] = comparisons
    return out


def without_fields(site_toml: Path, name: str, fields: Iterable[str]) -> Path:
    """Write <name>.toml beside site_toml without the fields (see the module docstring); return its path,
    checked by linkcare's loader."""
    dropped = tuple(fields)
    parsed = tomllib.loads(site_toml.read_text(encoding="utf-8"))
    text = (f"# {site_toml.name} without {', '.join(dropped)}: written by bench/site_configs.py.\n"
            + dump_toml(drop_fields(parsed, dropped)) + "\n")
    path = site_toml.parent / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    config = load_config(path)
    left = {f for s in config.sources for f in s.fields} & set(dropped)
    if left:
        raise SystemExit(f"{path}: still maps {sorted(left)}")
    return path
