"""Load a site config (TOML, `version = 1`) into frozen, validated objects.

Everything the user wrote is checked before any work starts, and every problem is collected so
that one run lists them all. Each problem names the config file and the key path
(`site.toml: sources[2].fields.sex: ...`; array positions count from 0) and says how to fix it.
The format is documented, key by key, in docs/config.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from linkcare.disclosure import Disclosure
from linkcare.errors import ConfigError, ProblemList
from linkcare.io.toml_tables import (
    KeyProblems,
    did_you_mean,
    expect_choice,
    expect_text,
    expect_whole,
    is_number,
    key_path,
    open_table,
    read_bytes,
    read_toml,
    show_value,
    type_name,
)
from linkcare.risk.config import RiskSettings, check_disclosure, check_risk
from linkcare.sources.kinds import DEFAULT_KIND, KIND_NAMES, default_events, required_events

CONFIG_VERSION = 1
FORMATS = ("csv", "parquet")
LINK_TYPES = ("link_only", "dedupe_only", "link_and_dedupe")
METHODS = ("exact", "jaro_winkler", "levenshtein", "date", "numeric", "dice")
DATE_PARTS = ("year", "month", "day")
DEFAULT_THRESHOLD = 0.95

_TOP_KEYS = ("version", "reference_date", "sources", "linkage", "risk", "disclosure", "validation", "engine")
_ENGINE_KEYS = ("master", "checkpoint_dir", "spark")
_SOURCE_KEYS = ("name", "path", "format", "id", "kind", "delimiter", "fields", "events")
_FIELD_KEYS = ("column", "format", "part", "values", "pattern", "invalid")
INVALID_ACTIONS = ("reject", "missing")
_VALIDATION_KEYS = ("max_reject_share", "min_birth_year")
_LINKAGE_KEYS = ("link_type", "threshold", "deterministic", "blocking", "comparisons", "model", "labels",
                 "max_pairs", "one_to_one", "indexer", "seed", "chunk_pairs", "pairs_min_probability",
                 "sorted_neighbourhood")
_SORTED_KEYS = ("field", "window", "block")
MODELS = ("fellegi_sunter", "ecm", "logistic")
INDEXERS = ("auto", "recordlinkage", "polars")
_COMPARISON_KEYS = ("field", "method", "levels", "term_frequency")
_NAME = re.compile(r"^[a-z0-9_]+$")
# strftime/chrono directives; a format must also say where the year is.
_DIRECTIVES = set("aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZf%")
_YEAR_DIRECTIVES = set("YyGFDxcs")
_LEVEL_EXAMPLES = {
    "jaro_winkler": "[0.95, 0.88]",
    "dice": "[0.95, 0.85]",
    "levenshtein": "[0, 1, 2]",
    "numeric": "[0, 1, 5]",
    "date": "[31, 366]",
}


@dataclass(frozen=True)
class FieldSpec:
    """Where a linkage field comes from: a column, optionally parsed as a date (and cut to one part
    of it) and recoded through a map of raw values."""

    column: str
    format: str | None = None
    part: str | None = None
    values: Mapping[str, str] | None = field(default=None, hash=False)
    #: A regular expression every non-empty value must match (after trimming spaces).
    pattern: str | None = None
    #: What a value failing the row checks does to its row: "reject" it (to the rejects file), or
    #: keep the row and treat the value as "missing".
    invalid: str = "reject"


@dataclass(frozen=True)
class Validation:
    """Row checks: how many rows may be rejected before a run fails, and which birth years are real."""

    #: A source with more than this share of its rows rejected stops the run.
    max_reject_share: float = 0.01
    #: Birth years before this (or after the reference date's year) are out of range.
    min_birth_year: int = 1900


@dataclass(frozen=True)
class Source:
    """One extract: where it is, how to read it, which columns are its key, fields and events."""

    name: str
    path: Path
    format: str
    id: str
    kind: str
    delimiter: str
    fields: Mapping[str, FieldSpec] = field(hash=False)
    #: event key -> column, glob, or tuple of columns; the kind's defaults merged with overrides.
    #: An empty tuple means the extract does not have that (optional) event attribute.
    events: Mapping[str, str | tuple[str, ...]] = field(hash=False)


@dataclass(frozen=True)
class Comparison:
    """How one field is compared: the method and its agreement levels, best first."""

    field: str
    method: str
    levels: tuple[float, ...] = ()
    term_frequency: bool = False


@dataclass(frozen=True)
class SortedNeighbourhood:
    """A sorted-neighbourhood pass: records whose values of `field`, sorted, lie within `window`
    distinct values of each other (centred: window // 2 on each side), within each `block`."""

    field: str
    window: int
    block: tuple[str, ...] = ()


@dataclass(frozen=True)
class Linkage:
    """How the sources are linked."""

    link_type: str = "link_and_dedupe"
    threshold: float = DEFAULT_THRESHOLD
    deterministic: tuple[tuple[str, ...], ...] = ()
    blocking: tuple[tuple[str, ...], ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    model: str = "fellegi_sunter"
    labels: Path | None = None
    max_pairs: int = 200_000_000
    one_to_one: tuple[str, ...] = ()
    indexer: str = "auto"
    seed: int = 0
    chunk_pairs: int = 2_000_000
    pairs_min_probability: float = 0.01
    sorted_neighbourhood: tuple[SortedNeighbourhood, ...] = ()


@dataclass(frozen=True)
class Engine:
    """Where `linkcare link --engine spark` runs; the local engine ignores it."""

    #: The Spark master URL; None: from the Spark environment (spark-submit, spark-defaults.conf), else local[*].
    master: str | None = None
    #: Where the iterative steps checkpoint (a path or URI every executor can reach); None: local checkpoints.
    checkpoint_dir: str | None = None
    #: Spark settings ("spark.executor.memory" = "4g"), as strings.
    spark: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class Config:
    """A whole site config, resolved: absolute paths, defaults filled in."""

    path: Path
    version: int
    reference_date: dt.date
    sources: tuple[Source, ...]
    linkage: Linkage
    risk: RiskSettings = field(default_factory=RiskSettings)
    disclosure: Disclosure = field(default_factory=Disclosure)
    validation: Validation = field(default_factory=Validation)
    engine: Engine = field(default_factory=Engine)


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


def load_config(config_path: str | Path) -> Config:
    """Return the validated config; raise ProblemList with every problem if there are any, or one
    ConfigError if the file cannot be read or parsed as TOML."""
    check = check_config(config_path)
    if check.problems or check.config is None:
        raise ProblemList(list(check.problems))
    return check.config


def check_config(config_path: str | Path) -> ConfigCheck:
    """Return every problem in the config, and what could be built from it despite them.

    Raises ConfigError only when the file cannot be read or is not valid TOML.
    """
    path = Path(config_path)
    data = read_toml(path)
    problems = KeyProblems(str(path))
    base = path.resolve().parent
    problems.unknown_keys(data, _TOP_KEYS, "")

    version = _check_version(data, problems)
    reference_date = _check_reference_date(data, problems)
    drafts = _check_sources(data, base, problems)
    mapped = {name for d in drafts for name in d.field_names}
    names = [d.source.name for d in drafts if d.source is not None]
    linkage = _check_linkage(data.get("linkage"), len(drafts), mapped, problems, base, names)
    kinds = {d.source.name: d.source.kind for d in drafts if d.source is not None}
    risk = check_risk(data.get("risk"), base, kinds, mapped, problems)
    disclosure = check_disclosure(data.get("disclosure"), problems)
    validation = _check_validation(data.get("validation"), problems)
    engine = _check_engine(data.get("engine"), base, problems)

    sources = tuple(d.source for d in drafts if d.source is not None)
    config = None
    if not problems.items and version is not None and reference_date is not None:
        config = Config(path.resolve(), version, reference_date, sources, linkage, risk, disclosure, validation,
                        engine)
    return ConfigCheck(path, config, sources, tuple(problems.items))


# --- top level ---------------------------------------------------------------------------------


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


def _check_reference_date(data: Mapping[str, Any], p: KeyProblems) -> dt.date | None:
    if "reference_date" not in data:
        p.missing("", "reference_date", 'reference_date = "2026-03-31"')
        return None
    value = data["reference_date"]
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value  # a TOML local date written without quotes
    fix = 'write it as "YYYY-MM-DD", e.g. reference_date = "2026-03-31"'
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        p.add("reference_date", f"must be a date; {fix}")
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        p.add("reference_date", f"{show_value(value)} is not a real date; {fix}")
        return None


# --- sources -----------------------------------------------------------------------------------


@dataclass
class _Draft:
    """A source as far as it could be built; `source` is None if its file cannot be located."""

    source: Source | None
    field_names: set[str]


def _check_sources(data: Mapping[str, Any], base: Path, p: KeyProblems) -> list[_Draft]:
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
    drafts: list[_Draft] = []
    seen: dict[str, str] = {}
    for i, table in enumerate(tables):
        where = f"sources[{i}]"
        drafts.append(_check_source(table, where, base, p))
        name = table.get("name")
        if isinstance(name, str) and _NAME.match(name):
            if name in seen:
                p.add(f"{where}.name", f"{name!r} is already the name of {seen[name]}; "
                      "give each source a unique name")
            else:
                seen[name] = where
    return drafts


def _check_source(t: Mapping[str, Any], where: str, base: Path, p: KeyProblems) -> _Draft:
    p.unknown_keys(t, _SOURCE_KEYS, where)
    name = None
    if "name" not in t:
        p.missing(where, "name", 'name = "gp"')
    else:
        name = expect_text(t["name"], f"{where}.name", 'name = "gp"', p)
        if name is not None and not _NAME.match(name):
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

    events = _check_events(t.get("events"), f"{where}.events", kind, p)
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
        )
    return _Draft(source, names)


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
        if not _NAME.match(fname):
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
    p.unknown_keys(spec, _FIELD_KEYS, key)
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


def _check_validation(value: Any, p: KeyProblems) -> Validation:
    value = open_table(value, "validation", _VALIDATION_KEYS, p)
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
    return Validation(**out)


def _check_engine(value: Any, base: Path, p: KeyProblems) -> Engine:
    value = open_table(value, "engine", _ENGINE_KEYS, p)
    if value is None:
        return Engine()
    out: dict[str, Any] = {}
    if "master" in value:
        out["master"] = expect_text(value["master"], "engine.master", 'master = "local[*]"', p)
    if "checkpoint_dir" in value:
        where = expect_text(value["checkpoint_dir"], "engine.checkpoint_dir", 'checkpoint_dir = "spark-checkpoints"', p)
        # A URI (hdfs://, dbfs:/, s3a://) is kept as written; a plain path is relative to the config's folder.
        if where is not None:
            out["checkpoint_dir"] = where if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", where) else str(base / where)
    if "spark" in value:
        settings = value["spark"]
        example = '[engine.spark] "spark.executor.memory" = "4g"'
        if not isinstance(settings, dict):
            p.add("engine.spark", f"must be a table of Spark settings, not {type_name(settings)}; e.g. {example}")
        else:
            checked: dict[str, str] = {}
            for name, setting in settings.items():
                key = key_path("engine.spark", name)
                if not name.startswith("spark."):
                    p.add(key, f"is not a Spark setting (they start with \"spark.\"); e.g. {example}")
                elif name == "spark.master":
                    p.add(key, 'set the master with [engine] master = "..." instead')
                elif isinstance(setting, bool):
                    checked[name] = "true" if setting else "false"
                elif isinstance(setting, str | int | float):
                    checked[name] = str(setting)
                else:
                    p.add(key, f"must be a string, number or boolean, not {type_name(setting)}; e.g. {example}")
            out["spark"] = MappingProxyType(checked)
    return Engine(**{k: v for k, v in out.items() if v is not None})


def _check_date_format(value: Any, key: str, p: KeyProblems) -> str | None:
    example = 'e.g. format = "%m%Y" for MYDOB or "%Y-%m-%d"'
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
) -> dict[str, str | tuple[str, ...]]:
    events: dict[str, str | tuple[str, ...]] = dict(default_events(kind)) if kind else {}
    if value is None:
        return events
    if not isinstance(value, dict):
        p.add(where, f"must be a table, not {type_name(value)}; "
              'e.g. events = { start_date = "ADMIDATE" }')
        return events
    if kind is None:
        return events  # the kind is already reported; its event keys are unknown
    allowed = tuple(events)
    if not allowed and value:
        p.add(where, f"kind {kind!r} has no events; set a kind such as "
              f"{', '.join(k for k in KIND_NAMES if k != DEFAULT_KIND)}, or remove events")
        return events
    p.unknown_keys(value, allowed, where)
    for ekey, column in value.items():
        if ekey not in allowed:
            continue
        key = key_path(where, ekey)
        if isinstance(column, str) and column.strip():
            events[ekey] = column
        elif isinstance(column, list) and all(isinstance(c, str) and c.strip() for c in column):
            if not column and ekey in required_events(kind):
                p.add(key, f"is required for kind {kind!r}; give its column")
                continue
            events[ekey] = tuple(column)
        else:
            p.add(key, 'must be a column name, a glob such as "DIAG_4_*", or an array of '
                  "column names ([] if the extract does not have it)")
            del events[ekey]
    return events


# --- linkage -----------------------------------------------------------------------------------


def _check_positive_int(value: dict[str, Any], name: str, default: int, p: KeyProblems) -> int:
    if name not in value:
        return default
    checked = expect_whole(value[name], f"linkage.{name}", 1, f"{name} = {default}", p)
    return default if checked is None else checked


def _check_linkage_options(value: dict[str, Any], base: Path, source_names: list[str],
                           p: KeyProblems) -> dict[str, Any]:
    """Return the optional linkage settings beyond the rules and comparisons."""
    out: dict[str, Any] = {}
    if "model" in value:
        out["model"] = expect_choice(value["model"], "linkage.model", MODELS, "model", p) or Linkage.model
    if "indexer" in value:
        out["indexer"] = expect_choice(value["indexer"], "linkage.indexer", INDEXERS, "indexer", p) or Linkage.indexer
    if "labels" in value:
        labels = expect_text(value["labels"], "linkage.labels", 'labels = "truth/records.parquet"', p)
        out["labels"] = (base / labels).resolve() if labels else None
    if out.get("model") == "logistic" and out.get("labels") is None:
        p.add("linkage.labels", 'model = "logistic" learns from labelled records; give labels = "…parquet" '
              "with columns source, record_id, person")
    out["max_pairs"] = _check_positive_int(value, "max_pairs", Linkage.max_pairs, p)
    out["chunk_pairs"] = _check_positive_int(value, "chunk_pairs", Linkage.chunk_pairs, p)
    if "seed" in value:
        seed = expect_whole(value["seed"], "linkage.seed", 0, "seed = 0", p)
        if seed is not None:
            out["seed"] = seed
    if "pairs_min_probability" in value:
        v = value["pairs_min_probability"]
        if is_number(v) and 0 <= v < 1:
            out["pairs_min_probability"] = float(v)
        else:
            p.add("linkage.pairs_min_probability", "must be a number from 0 up to (not including) 1")
    if "one_to_one" in value:
        pair = value["one_to_one"]
        if (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)
                and pair[0] != pair[1]):
            unknown = [x for x in pair if x not in source_names]
            if unknown:
                p.add("linkage.one_to_one", f"no source named {unknown[0]!r}; name two of: {', '.join(source_names)}")
            else:
                out["one_to_one"] = tuple(pair)
        else:
            p.add("linkage.one_to_one", 'must name two different sources, e.g. one_to_one = ["a", "b"]')
    return out


def _check_linkage(value: Any, n_sources: int, mapped: set[str], p: KeyProblems,
                   base: Path | None = None, source_names: list[str] | None = None) -> Linkage:
    value = open_table(value, "linkage", _LINKAGE_KEYS, p)
    if value is None:
        return Linkage()
    link_type: str | None = Linkage.link_type
    if "link_type" in value:
        key = "linkage.link_type"
        link_type = expect_choice(value["link_type"], key, LINK_TYPES, "link type", p)
        if link_type == "link_only" and n_sources < 2:
            p.add("linkage.link_type", "link_only needs at least two sources; add a source or "
                  'use link_type = "dedupe_only"')
    threshold = DEFAULT_THRESHOLD
    if "threshold" in value:
        t, example = value["threshold"], "e.g. threshold = 0.95"
        if is_number(t) and 0 < t < 1:
            threshold = float(t)
        elif is_number(t):
            p.add("linkage.threshold", f"{t} is not strictly between 0 and 1; {example}")
        else:
            p.add("linkage.threshold", f"must be a number, not {type_name(t)}; {example}")
    deterministic = _check_rules(value.get("deterministic"), "linkage.deterministic", mapped, p)
    blocking = _check_rules(value.get("blocking"), "linkage.blocking", mapped, p)
    comparisons = _check_comparisons(value.get("comparisons"), mapped, p)
    options = _check_linkage_options(value, base or Path("."), source_names or [], p)
    options["sorted_neighbourhood"] = _check_sorted(value.get("sorted_neighbourhood"), mapped, p)
    return Linkage(link_type or Linkage.link_type, threshold, deterministic, blocking, comparisons, **options)


def _check_field_ref(name: Any, key: str, mapped: set[str], p: KeyProblems) -> str | None:
    if not isinstance(name, str):
        p.add(key, f"must be a field name (a string), not {type_name(name)}")
        return None
    if name not in mapped:
        hint = did_you_mean(name, sorted(mapped))
        p.add(key, f"no source maps field {name!r};{hint} add it to a source's fields or remove it")
        return None
    return name


def _check_sorted(value: Any, mapped: set[str], p: KeyProblems) -> tuple[SortedNeighbourhood, ...]:
    if value is None:
        return ()
    where = "linkage.sorted_neighbourhood"
    example = '[{ field = "surname", window = 5, block = ["birth_year"] }]'
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        p.add(where, f"must be an array of tables, e.g. sorted_neighbourhood = {example}")
        return ()
    out = []
    for i, t in enumerate(value):
        key = f"{where}[{i}]"
        p.unknown_keys(t, _SORTED_KEYS, key)
        name = _check_field_ref(t.get("field"), f"{key}.field", mapped, p)
        window = t.get("window")
        if not (isinstance(window, int) and not isinstance(window, bool) and window >= 3 and window % 2 == 1):
            p.add(f"{key}.window", "must be an odd whole number of 3 or more, e.g. window = 5")
            window = None
        block = _check_rules([t.get("block", [])] if t.get("block") else None, f"{key}.block", mapped, p)
        if name and window:
            out.append(SortedNeighbourhood(name, window, block[0] if block else ()))
    return tuple(out)


def _check_rules(
    value: Any, where: str, mapped: set[str], p: KeyProblems
) -> tuple[tuple[str, ...], ...]:
    if value is None:
        return ()
    example = '[["nhs"], ["birth_year", "area"]]'
    if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
        p.add(where, f"must be an array of arrays of field names, e.g. {example}")
        return ()
    rules: list[tuple[str, ...]] = []
    for i, rule in enumerate(value):
        if not rule:
            p.add(f"{where}[{i}]", "is empty; each rule needs at least one field")
            continue
        names = [_check_field_ref(n, f"{where}[{i}][{j}]", mapped, p) for j, n in enumerate(rule)]
        if len({n for n in names if n}) < len([n for n in names if n]):
            p.add(f"{where}[{i}]", "names a field twice; list each field once")
        if all(names):
            rules.append(tuple(n for n in names if n))
    return tuple(rules)


def _check_comparisons(value: Any, mapped: set[str], p: KeyProblems) -> tuple[Comparison, ...]:
    where = "linkage.comparisons"
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(c, dict) for c in value):
        p.add(where, "must be an array of tables; write each as [[linkage.comparisons]]")
        return ()
    out: list[Comparison] = []
    seen: dict[str, str] = {}
    for i, c in enumerate(value):
        key = f"{where}[{i}]"
        n_before = len(p.items)
        p.unknown_keys(c, _COMPARISON_KEYS, key)
        fname = None
        if "field" not in c:
            p.missing(key, "field", 'field = "surname"')
        else:
            fname = _check_field_ref(c["field"], f"{key}.field", mapped, p)
            if fname is not None and fname in seen:
                p.add(f"{key}.field", f"{fname!r} is already compared by {seen[fname]}; "
                      "compare each field once")
            elif fname is not None:
                seen[fname] = key
        method = None
        if "method" not in c:
            p.missing(key, "method", 'method = "exact"')
        else:
            method = expect_choice(c["method"], f"{key}.method", METHODS, "comparison method", p)
        levels: tuple[float, ...] = ()
        if method is not None:
            levels = _check_levels(c.get("levels"), f"{key}.levels", method, p)
        tf = c.get("term_frequency", False)
        if not isinstance(tf, bool):
            p.add(f"{key}.term_frequency", f"must be true or false, not {type_name(tf)}")
        if len(p.items) == n_before and fname is not None and method is not None:
            out.append(Comparison(fname, method, levels, bool(tf)))
    return tuple(out)


def _check_levels(value: Any, key: str, method: str, p: KeyProblems) -> tuple[float, ...]:
    if method == "exact":
        if value:
            p.add(key, "exact compares agree or disagree and takes no levels; remove levels")
        return ()
    example = f"levels = {_LEVEL_EXAMPLES[method]}"
    if value is None or value == []:
        p.add(key, f"{method} needs levels, best first; e.g. {example}")
        return ()
    if not isinstance(value, list):
        p.add(key, f"must be an array of numbers, e.g. {example}")
        return ()
    ok = True
    for i, v in enumerate(value):
        if method == "date":
            good = isinstance(v, int) and not isinstance(v, bool) and v > 0
            rule = "a whole number of days above 0"
        elif method in ("jaro_winkler", "dice"):
            good, rule = is_number(v) and 0 < v <= 1, "a similarity above 0 and at most 1"
        else:
            good, rule = is_number(v) and v >= 0, "a number 0 or above"
        if not good:
            p.add(f"{key}[{i}]", f"{show_value(v)} must be {rule}; e.g. {example}")
            ok = False
    if not ok:
        return ()
    decreasing = method in ("jaro_winkler", "dice")
    pairs = list(zip(value, value[1:], strict=False))
    if not all((a > b) if decreasing else (a < b) for a, b in pairs):
        order = "decreasing" if decreasing else "increasing"
        p.add(key, f"must be strictly {order} (best first); e.g. {example}")
        return ()
    return tuple(float(v) for v in value)


__all__ = [
    "CONFIG_VERSION",
    "Comparison",
    "Config",
    "ConfigCheck",
    "FieldSpec",
    "Linkage",
    "Source",
    "Validation",
    "check_config",
    "config_hash",
    "load_config",
]
