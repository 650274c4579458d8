"""The `[linkage]` table of a site config: link type, threshold, rules, blocking, comparisons and
the model, checked with every problem collected (see linkcare.config.load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linkcare.config.methods import METHOD_NAMES, METHODS
from linkcare.config.model import (
    DEFAULT_THRESHOLD,
    INDEXERS,
    LINK_TYPES,
    MODELS,
    Comparison,
    Linkage,
    SortedNeighbourhood,
)
from linkcare.config.toml import (
    KeyProblems,
    did_you_mean,
    expect_choice,
    expect_text,
    expect_whole,
    is_number,
    open_table,
    show_value,
    type_name,
)

LINKAGE_KEYS = ("link_type", "threshold", "deterministic", "blocking", "comparisons", "model", "labels",
                "max_pairs", "one_to_one", "indexer", "seed", "chunk_pairs", "pairs_min_probability",
                "sorted_neighbourhood")
SORTED_KEYS = ("field", "window", "block")
COMPARISON_KEYS = ("field", "method", "levels", "term_frequency", "given")


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


def check_linkage(value: Any, n_sources: int, mapped: set[str], p: KeyProblems,
                   base: Path | None = None, source_names: list[str] | None = None) -> Linkage:
    value = open_table(value, "linkage", LINKAGE_KEYS, p)
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
        p.unknown_keys(t, SORTED_KEYS, key)
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
    positions: list[int] = []  # each comparison's place in the config
    seen: dict[str, str] = {}
    for i, c in enumerate(value):
        key = f"{where}[{i}]"
        n_before = len(p.items)
        p.unknown_keys(c, COMPARISON_KEYS, key)
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
            method = expect_choice(c["method"], f"{key}.method", METHOD_NAMES, "comparison method", p)
        levels: tuple[float, ...] = ()
        if method is not None:
            levels = _check_levels(c.get("levels"), f"{key}.levels", method, p)
        tf = c.get("term_frequency", False)
        if not isinstance(tf, bool):
            p.add(f"{key}.term_frequency", f"must be true or false, not {type_name(tf)}")
        given = c.get("given")
        if given is not None and not isinstance(given, str):
            p.add(f"{key}.given", f"must be the name of another compared field, not {type_name(given)}")
            given = None
        if given is not None and tf is True:
            p.add(f"{key}.term_frequency", "cannot be used with given; its levels are already split by "
                  f"{given!r}")
        if len(p.items) == n_before and fname is not None and method is not None:
            out.append(Comparison(fname, method, levels, bool(tf), given))
            positions.append(i)
    _check_given(out, positions, where, p)
    return tuple(out)


def _check_given(comparisons: list[Comparison], positions: list[int], where: str, p: KeyProblems) -> None:
    """Check that each `given` names another compared field that is not itself split by a given."""
    by_field = {c.field: c for c in comparisons}
    for i, c in zip(positions, comparisons, strict=True):
        if c.given is None:
            continue
        other = by_field.get(c.given)
        if c.given == c.field:
            p.add(f"{where}[{i}].given", f"{c.given!r} is this comparison's own field; name another compared field")
        elif other is None:
            p.add(f"{where}[{i}].given", f"{c.given!r} is not a compared field; compare it in its own "
                  "[[linkage.comparisons]] table, or remove given")
        elif other.given is not None:
            p.add(f"{where}[{i}].given", f"{c.given!r} is itself split by given = {other.given!r}; a field can be "
                  "split only by a field that is not")


def _check_levels(value: Any, key: str, method: str, p: KeyProblems) -> tuple[float, ...]:
    spec = METHODS[method]
    if not spec.example:
        if value:
            p.add(key, f"{method} compares agree or disagree and takes no levels; remove levels")
        return ()
    example = f"levels = {spec.example}"
    if value is None or value == []:
        p.add(key, f"{method} needs levels, best first; e.g. {example}")
        return ()
    if not isinstance(value, list):
        p.add(key, f"must be an array of numbers, e.g. {example}")
        return ()
    ok = True
    for i, v in enumerate(value):
        if not spec.valid_level(v):
            p.add(f"{key}[{i}]", f"{show_value(v)} must be {spec.rule}; e.g. {example}")
            ok = False
    if not ok:
        return ()
    pairs = list(zip(value, value[1:], strict=False))
    if not all((a > b) if spec.decreasing else (a < b) for a, b in pairs):
        order = "decreasing" if spec.decreasing else "increasing"
        p.add(key, f"must be strictly {order} (best first); e.g. {example}")
        return ()
    return tuple(float(v) for v in value)
