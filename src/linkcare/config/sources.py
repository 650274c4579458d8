"""The `[[sources]]` tables and `[validation]` of a site config: each extract's path, format, key,
fields and events, checked with every problem collected (see linkcare.config.load)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from linkcare.config.kinds import DATE_EVENT_KEYS, DEFAULT_KIND, KIND_NAMES, default_events, required_events
from linkcare.config.model import DATE_PARTS, FORMATS, INVALID_ACTIONS, FieldSpec, Source, Validation
from linkcare.config.toml import (
    KeyProblems,
    expect_choice,
    expect_text,
    expect_whole,
    is_number,
    key_path,
    open_table,
    type_name,
)

SOURCE_KEYS = ("name", "path", "format", "id", "kind", "delimiter", "fields", "events", "attach")
FIELD_KEYS = ("column", "format", "part", "values", "pattern", "invalid")
EVENT_KEYS = ("column", "format")
VALIDATION_KEYS = ("max_reject_share", "min_birth_year", "unchanged_inputs", "stale_after_days", "max_row_change",
                   "row_change")
NAME = re.compile(r"^[a-z0-9_]+$")
# strftime/chrono directives; a format must also say where the year is.
_DIRECTIVES = set("aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZf%")
_YEAR_DIRECTIVES = set("YyGFDxcs")


@dataclass
class SourceDraft:
    """A source as far as it could be built; `source` is None if its file cannot be located."""

    source: Source | None
    field_names: set[str]


def check_sources(data: Mapping[str, Any], base: Path, p: KeyProblems) -> list[SourceDraft]:
    if "sources" not in data:
        p.add("sources", 'missing; add at least one [[sources]] table with name, path, id, fields')
        return []
    tables = data["sources"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        p.add("sources", "must be an array of tables; write each source as a [[sources]] table")
        return []
    if not tables:
        p.add("sources", "is empty; add at least one [[sources]] table")
        return []
    drafts: list[SourceDraft] = []
    seen: dict[str, str] = {}
    for i, table in enumerate(tables):
        where = f"sources[{i}]"
        drafts.append(_check_source(table, where, base, p))
        name = table.get("name")
        if isinstance(name, str) and NAME.match(name):
            if name in seen:
                p.add(f"{where}.name", f"{name!r} is already the name of {seen[name]}; "
                      "give each source a unique name")
            else:
                seen[name] = where
    return drafts


def _check_source(t: Mapping[str, Any], where: str, base: Path, p: KeyProblems) -> SourceDraft:
    p.unknown_keys(t, SOURCE_KEYS, where)
    name = None
    if "name" not in t:
        p.missing(where, "name", 'name = "gp"')
    else:
        name = expect_text(t["name"], f"{where}.name", 'name = "gp"', p)
        if name is not None and not NAME.match(name):
            p.add(f"{where}.name", f"{name!r} may use only a-z, 0-9 and _; e.g. name = \"gp\"")
            name = None

    path = fmt = None
    if "path" not in t:
        p.missing(where, "path", 'path = "gp_registrations.csv"')
    else:
        path_str = expect_text(t["path"], f"{where}.path", 'path = "apc.csv"', p)
        path = (base / path_str).resolve() if path_str is not None else None
    if "format" in t:
        fmt = expect_choice(t["format"], f"{where}.format", FORMATS, "format", p)
    elif path is not None:
        fmt = {".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower())
        if fmt is None:
            p.add(f"{where}.path", f"cannot tell the format from the extension {path.suffix!r}; "
                  'add format = "csv" or format = "parquet"')

    id_col = ""
    if "id" not in t:
        p.missing(where, "id", 'id = "Patient_ID" (the record key column)')
    else:
        id_col = expect_text(t["id"], f"{where}.id", 'id = "Patient_ID"', p) or ""

    kind: str | None = DEFAULT_KIND
    if "kind" in t:
        kind = expect_choice(t["kind"], f"{where}.kind", KIND_NAMES, "kind", p)

    delimiter = ","
    if "delimiter" in t:
        delimiter = _check_delimiter(t["delimiter"], f"{where}.delimiter", fmt, p) or ","

    fields: dict[str, FieldSpec] = {}
    names: set[str] = set()
    if "fields" not in t:
        p.missing(where, "fields", 'fields = { nhs = "NHS_Number", sex = "Sex" }')
    else:
        fields, names = _check_fields(t["fields"], f"{where}.fields", p)

    events, event_formats = _check_events(t.get("events"), f"{where}.events", kind, p)
    attach = t.get("attach", True)
    if not isinstance(attach, bool):
        p.add(f"{where}.attach", f"must be true or false, not {type_name(attach)}; e.g. attach = false")
        attach = True
    source = None
    if path is not None and fmt is not None:
        source = Source(
            name=name or where,
            path=path,
            format=fmt,
            id=id_col,
            kind=kind or DEFAULT_KIND,
            delimiter=delimiter,
            fields=MappingProxyType(fields),
            events=MappingProxyType(events),
            attach=attach,
            event_formats=MappingProxyType(event_formats),
        )
    return SourceDraft(source, names)


def _check_delimiter(value: Any, key: str, fmt: str | None, p: KeyProblems) -> str | None:
    if fmt == "parquet":
        p.add(key, "applies only to CSV sources; remove it")
        return None
    if not isinstance(value, str) or len(value) != 1 or value in "\"\r\n":
        p.add(key, 'must be one character other than a quote or newline, e.g. ";" or "\\t"')
        return None
    return value


def _check_fields(value: Any, where: str, p: KeyProblems) -> tuple[dict[str, FieldSpec], set[str]]:
    if not isinstance(value, dict):
        p.add(where, f"must be a table, not {type_name(value)}; "
              'e.g. fields = { nhs = "NHS_Number", sex = "Sex" }')
        return {}, set()
    if not value:
        p.add(where, 'is empty; map at least one field, e.g. fields = { nhs = "NHS_Number" }')
    specs: dict[str, FieldSpec] = {}
    names: set[str] = set()
    for fname, spec in value.items():
        key = key_path(where, fname)
        if not NAME.match(fname):
            p.add(key, "field names may use only a-z, 0-9 and _; rename it, e.g. birth_year")
            continue
        names.add(fname)
        checked = _check_field_spec(spec, key, p)
        if checked is not None:
            specs[fname] = checked
    return specs, names


def _check_field_spec(spec: Any, key: str, p: KeyProblems) -> FieldSpec | None:
    example = '"MYDOB" or { column = "MYDOB", format = "%m%Y", part = "year" }'
    if isinstance(spec, str):
        column = expect_text(spec, key, example, p)
        return FieldSpec(column) if column is not None else None
    if not isinstance(spec, dict):
        p.add(key, f"must be a column name or an inline table, not {type_name(spec)}; "
              f"e.g. {example}")
        return None
    n_before = len(p.items)
    p.unknown_keys(spec, FIELD_KEYS, key)
    column = None
    if "column" not in spec:
        p.missing(key, "column", 'column = "MYDOB"')
    else:
        column = expect_text(spec["column"], f"{key}.column", 'column = "MYDOB"', p)
    fmt = part = None
    if "format" in spec:
        fmt = _check_date_format(spec["format"], f"{key}.format", p)
    if "part" in spec:
        part = expect_choice(spec["part"], f"{key}.part", DATE_PARTS, "date part", p)
        if "format" not in spec:
            p.add(f"{key}.part", 'needs a date format to take the part from; add format, '
                  'e.g. format = "%m%Y"')
    values = None
    if "values" in spec:
        values = _check_values(spec["values"], f"{key}.values", p)
    pattern = None
    if "pattern" in spec:
        pattern = _check_pattern(spec["pattern"], f"{key}.pattern", p)
    invalid = "reject"
    if "invalid" in spec:
        invalid = expect_choice(spec["invalid"], f"{key}.invalid", INVALID_ACTIONS, "choice", p) or invalid
    if len(p.items) > n_before or column is None:
        return None
    return FieldSpec(column, fmt, part, values, pattern, invalid)


def _check_pattern(value: Any, key: str, p: KeyProblems) -> str | None:
    example = 'e.g. pattern = "^[0-9a-f]{32}$"'
    if not isinstance(value, str) or not value:
        p.add(key, f"must be a regular expression; {example}")
        return None
    try:
        re.compile(value)
    except re.error as exc:
        p.add(key, f"is not a valid regular expression ({exc.msg}); {example}")
        return None
    return value


def _check_date_format(value: Any, key: str, p: KeyProblems,
                       example: str = 'e.g. format = "%m%Y" for MYDOB or "%Y-%m-%d"') -> str | None:
    if not isinstance(value, str) or "%" not in value:
        p.add(key, f"must be a strftime date format; {example}")
        return None
    codes = re.findall(r"%[-_0#^.:]*[0-9]*(.?)", value)
    bad = sorted({c for c in codes if c not in _DIRECTIVES})
    if bad:
        shown = ", ".join(f"'%{c}'" for c in bad)
        p.add(key, f"{shown} is not a date directive; use %Y, %m, %d and the like; {example}")
        return None
    if not set(codes) & _YEAR_DIRECTIVES:
        p.add(key, f"has no year; a date format needs %Y or %y; {example}")
        return None
    return value


def _check_values(value: Any, key: str, p: KeyProblems) -> Mapping[str, str] | None:
    if not isinstance(value, dict):
        p.add(key, 'must be a table of raw value = recoded value, e.g. { "1" = "M", "2" = "F" }')
        return None
    ok = True
    for raw, new in value.items():
        if not isinstance(new, str):
            p.add(key_path(key, raw), f'must be a string, not {type_name(new)}; e.g. "F"')
            ok = False
    return MappingProxyType(dict(value)) if ok else None


def _check_events(
    value: Any, where: str, kind: str | None, p: KeyProblems
) -> tuple[dict[str, str | tuple[str, ...]], dict[str, str]]:
    """Return the event columns (the kind's defaults with the config's overrides) and the date
    formats the config gives."""
    events: dict[str, str | tuple[str, ...]] = dict(default_events(kind)) if kind else {}
    formats: dict[str, str] = {}
    if value is None:
        return events, formats
    if not isinstance(value, dict):
        p.add(where, f"must be a table, not {type_name(value)}; "
              'e.g. events = { start_date = "ADMIDATE" }')
        return events, formats
    if kind is None:
        return events, formats  # the kind is already reported; its event keys are unknown
    allowed = tuple(events)
    if not allowed and value:
        p.add(where, f"kind {kind!r} has no events; set a kind such as "
              f"{', '.join(k for k in KIND_NAMES if k != DEFAULT_KIND)}, or remove events")
        return events, formats
    p.unknown_keys(value, allowed, where)
    for ekey, column in value.items():
        if ekey not in allowed:
            continue
        key = key_path(where, ekey)
        if isinstance(column, dict):
            column = _check_event_table(column, key, ekey, events[ekey], formats, p)
            if column is None:
                continue
        if isinstance(column, str) and column.strip():
            events[ekey] = column
        elif isinstance(column, list) and all(isinstance(c, str) and c.strip() for c in column):
            if not column and ekey in required_events(kind):
                p.add(key, f"is required for kind {kind!r}; give its column")
                continue
            events[ekey] = tuple(column)
        else:
            p.add(key, 'must be a column name, a glob such as "DIAG_4_*", an array of column names '
                  '([] if the extract does not have it), or for a date { column = "ADMIDATE", format = "%d/%m/%Y" }')
            del events[ekey]
    return events, formats


def _check_event_table(spec: dict[str, Any], key: str, ekey: str, default: str | tuple[str, ...],
                       formats: dict[str, str], p: KeyProblems) -> Any:
    """Return the column of an event given as an inline table (the kind's default if it gives none;
    None after a problem), its `format` checked and put in `formats`."""
    p.unknown_keys(spec, EVENT_KEYS, key)
    if "format" in spec:
        if ekey not in DATE_EVENT_KEYS:
            p.add(f"{key}.format", f"applies only to the event dates ({', '.join(DATE_EVENT_KEYS)}); remove it")
        else:
            fmt = _check_date_format(spec["format"], f"{key}.format", p, 'e.g. format = "%d/%m/%Y"')
            if fmt is not None:
                formats[ekey] = fmt
    if "column" not in spec:
        return default
    column = spec["column"]
    if isinstance(column, str) and column.strip():
        return column
    if isinstance(column, list) and all(isinstance(c, str) and c.strip() for c in column):
        return column
    p.add(f"{key}.column", f'must be a column name, not {type_name(column)}; e.g. column = "ADMIDATE"')
    return None


def check_validation(value: Any, p: KeyProblems) -> Validation:
    value = open_table(value, "validation", VALIDATION_KEYS, p)
    if value is None:
        return Validation()
    out: dict[str, Any] = {}
    if "max_reject_share" in value:
        v = value["max_reject_share"]
        if is_number(v) and 0 <= v <= 1:
            out["max_reject_share"] = float(v)
        else:
            p.add("validation.max_reject_share", "must be a number from 0 to 1, e.g. max_reject_share = 0.01")
    if "min_birth_year" in value:
        year = expect_whole(value["min_birth_year"], "validation.min_birth_year", 1, "min_birth_year = 1900", p)
        if year is not None:
            out["min_birth_year"] = year
    _check_previous_run_keys(value, out, p)
    return Validation(**out)


def _check_previous_run_keys(value: Mapping[str, Any], out: dict[str, Any], p: KeyProblems) -> None:
    """Check [validation]'s keys for the checks against the previous run into `out`."""
    for key, allowed in (("unchanged_inputs", ("error", "allow")), ("row_change", ("warn", "error"))):
        if key in value:
            if value[key] in allowed:
                out[key] = value[key]
            else:
                p.add(f"validation.{key}", f"must be {' or '.join(repr(a) for a in allowed)}, e.g. {key} = "
                                           f'"{allowed[0]}"')
    if "stale_after_days" in value:
        days = expect_whole(value["stale_after_days"], "validation.stale_after_days", 1, "stale_after_days = 45", p)
        if days is not None:
            out["stale_after_days"] = days
    if "max_row_change" in value:
        v = value["max_row_change"]
        if is_number(v) and v >= 0:
            out["max_row_change"] = float(v)
        else:
            p.add("validation.max_row_change", "must be a number of at least 0 (a share: 0.25 is 25%), "
                                               "e.g. max_row_change = 0.25")


