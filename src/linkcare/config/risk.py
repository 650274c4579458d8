"""The `[risk]` and `[disclosure]` tables of a site config: how to build features, which model to
score with, how to tier people and how to publish counts. Checked with the rest of the config,
every problem collected (see linkcare.config.load)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from linkcare.config.model import (
    DEFAULT_TIERS,
    DEMOGRAPHIC_FIELDS,
    RISK_MODELS,
    DeprivationLookup,
    RiskSettings,
    Tier,
)
from linkcare.config.toml import (
    KeyProblems,
    expect_choice,
    expect_text,
    expect_whole,
    is_number,
    key_path,
    open_table,
)
from linkcare.disclosure import Disclosure

RISK_KEYS = ("horizon_days", "lookback_days", "spine", "model", "seed", "tiers", "worklist_tiers", "deprivation",
             "fields")
TIER_KEYS = ("name", "share")
DEPRIVATION_KEYS = ("path", "area", "decile", "format", "delimiter")
DISCLOSURE_KEYS = ("threshold", "rounding")


def check_risk(value: Any, base: Path, source_kinds: Mapping[str, str], mapped: set[str],
               p: KeyProblems) -> RiskSettings:
    """Return the `[risk]` settings, recording every problem in `p`. Without `spine`, the spine is
    the only source of kind gp_registrations, if there is exactly one."""
    value = open_table(value, "risk", RISK_KEYS, p)
    out = {} if value is None else _risk_settings(value, base, source_kinds, mapped, p)
    spines = [name for name, kind in source_kinds.items() if kind == "gp_registrations"]
    if "spine" not in out and len(spines) == 1:
        out["spine"] = spines[0]
    return RiskSettings(**out)


def _risk_settings(value: dict[str, Any], base: Path, source_kinds: Mapping[str, str], mapped: set[str],
                   p: KeyProblems) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "horizon_days" in value:
        horizon = expect_whole(value["horizon_days"], "risk.horizon_days", 1, "horizon_days = 365", p)
        if horizon is not None:
            out["horizon_days"] = horizon
    if "lookback_days" in value:
        windows = value["lookback_days"]
        if (isinstance(windows, list) and windows
                and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in windows)
                and windows == sorted(set(windows))):
            out["lookback_days"] = tuple(windows)
        else:
            p.add("risk.lookback_days", "must be an increasing array of whole numbers of days, "
                  "e.g. lookback_days = [90, 365, 730]")
    if "spine" in value:
        spine = expect_text(value["spine"], "risk.spine", 'spine = "gp"', p)
        if spine is not None and source_kinds.get(spine) != "gp_registrations":
            names = [n for n, k in source_kinds.items() if k == "gp_registrations"]
            p.add("risk.spine", f"{spine!r} is not a source of kind gp_registrations; "
                  f"name one of: {', '.join(names) or '(none: add a gp_registrations source)'}")
        elif spine is not None:
            out["spine"] = spine
    if "model" in value:
        choices = ("auto", *RISK_MODELS)
        out["model"] = expect_choice(value["model"], "risk.model", choices, "risk model", p) or RiskSettings.model
    if "seed" in value:
        seed = expect_whole(value["seed"], "risk.seed", 0, "seed = 0", p)
        if seed is not None:
            out["seed"] = seed
    if "tiers" in value:
        tiers = _check_tiers(value["tiers"], p)
        if tiers is not None:
            out["tiers"] = tiers
    if "worklist_tiers" in value:
        tiers_ok = "tiers" in out or "tiers" not in value  # else the tiers' own problems are reported
        listed = _check_worklist_tiers(value["worklist_tiers"], out.get("tiers", DEFAULT_TIERS), tiers_ok, p)
        if listed is not None:
            out["worklist_tiers"] = listed
    if "deprivation" in value:
        out["deprivation"] = _check_deprivation(value["deprivation"], base, p)
    if "fields" in value:
        fields = _check_fields(value["fields"], mapped, p)
        if fields is not None:
            out["fields"] = fields
    return out


def _check_tiers(value: Any, p: KeyProblems) -> tuple[Tier, ...] | None:
    example = '[[risk.tiers]] tables, e.g. name = "case management", share = 0.005'
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        p.add("risk.tiers", f"must be an array of tables, highest risk first: {example}")
        return None
    tiers: list[Tier] = []
    ok = True
    for i, t in enumerate(value):
        where = f"risk.tiers[{i}]"
        p.unknown_keys(t, TIER_KEYS, where)
        name = expect_text(t.get("name"), f"{where}.name", 'name = "high risk"', p) if "name" in t else None
        if "name" not in t:
            p.missing(where, "name", 'name = "high risk"')
        last = i == len(value) - 1
        share = t.get("share")
        if share is None and last:
            share = 1.0 - sum(x.share for x in tiers)  # the last tier takes everyone left
        elif not (is_number(share) and 0 < share <= 1):
            p.add(f"{where}.share", "must be a number above 0 and at most 1, the share of people in this tier; "
                  "e.g. share = 0.045 (only the last tier may leave it out and take the rest)")
            ok = False
            continue
        if name is None:
            ok = False
            continue
        tiers.append(Tier(name, float(share)))
    names = [t.name for t in tiers]
    if len(set(names)) < len(names):
        p.add("risk.tiers", "names a tier twice; give each tier its own name")
        ok = False
    total = sum(t.share for t in tiers)
    if ok and abs(total - 1.0) > 1e-9:
        p.add("risk.tiers", f"shares add up to {total:g}, not 1; adjust them or leave out the last tier's share")
        ok = False
    if ok and tiers and tiers[-1].share <= 0:
        p.add("risk.tiers", "the shares before the last tier already add up to 1; make them smaller")
        ok = False
    return tuple(tiers) if ok else None


def _check_worklist_tiers(value: Any, tiers: tuple[Tier, ...], check_names: bool,
                          p: KeyProblems) -> tuple[str, ...] | None:
    """Return the names of the tiers the worklists list, each a tier of [[risk.tiers]], in tier order."""
    names = [t.name for t in tiers]
    example = f"worklist_tiers = {json.dumps(names[:-1] or names)}"
    if not (isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)):
        p.add("risk.worklist_tiers", f"must be a non-empty array of tier names, e.g. {example}")
        return None
    if len(set(value)) < len(value):
        p.add("risk.worklist_tiers", "names a tier twice; name each tier once")
        return None
    unknown = [v for v in value if v not in names]
    if check_names and unknown:
        p.add("risk.worklist_tiers", f"{len(unknown)} name(s) are not tiers of [[risk.tiers]] "
              f"({', '.join(map(repr, unknown))}); tiers are: {', '.join(map(repr, names))}")
        return None
    return tuple(n for n in names if n in value) if check_names else None


def _check_deprivation(value: Any, base: Path, p: KeyProblems) -> DeprivationLookup | None:
    example = 'deprivation = { path = "imd_by_lsoa.csv", area = "LSOA11CD", decile = "IMD_Decile" }'
    if not isinstance(value, dict):
        p.add("risk.deprivation", f"must be a table, e.g. {example}")
        return None
    p.unknown_keys(value, DEPRIVATION_KEYS, "risk.deprivation")
    got: dict[str, str] = {}
    for key in ("path", "area", "decile"):
        if key not in value:
            p.missing("risk.deprivation", key, example)
            continue
        text = expect_text(value[key], f"risk.deprivation.{key}", example, p)
        if text is not None:
            got[key] = text
    if len(got) < 3:
        return None
    path = (base / got["path"]).resolve()
    fmt = value.get("format") or {".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower())
    if fmt not in ("csv", "parquet"):
        p.add("risk.deprivation.format", 'must be "csv" or "parquet" (or give the path a .csv or .parquet extension)')
        return None
    delimiter = value.get("delimiter", ",")
    if not (isinstance(delimiter, str) and len(delimiter) == 1):
        p.add("risk.deprivation.delimiter", 'must be one character, e.g. "," or "\\t"')
        return None
    return DeprivationLookup(path, got["area"], got["decile"], fmt, delimiter)


def _check_fields(value: Any, mapped: set[str], p: KeyProblems) -> Mapping[str, str] | None:
    example = 'fields = { birth_year = "yob", sex = "gender" }'
    if not isinstance(value, dict):
        p.add("risk.fields", f"must be a table of role = linkage field, e.g. {example}")
        return None
    out = {f: f for f in DEMOGRAPHIC_FIELDS}
    ok = True
    for role, name in value.items():
        key = key_path("risk.fields", role)
        if role not in DEMOGRAPHIC_FIELDS:
            p.add(key, f"unknown role; roles are: {', '.join(DEMOGRAPHIC_FIELDS)}")
            ok = False
        elif not isinstance(name, str) or name not in mapped:
            p.add(key, f"must name a field that a source maps; fields are: {', '.join(sorted(mapped))}")
            ok = False
        else:
            out[role] = name
    return MappingProxyType(out) if ok else None


def check_disclosure(value: Any, p: KeyProblems) -> Disclosure:
    """Return the `[disclosure]` settings: counts below `threshold` are shown as "<threshold", others
    rounded to the nearest `rounding`."""
    value = open_table(value, "disclosure", DISCLOSURE_KEYS, p)
    if value is None:
        return Disclosure()
    out: dict[str, int] = {}
    for key, minimum, example in (("threshold", 0, "threshold = 8"), ("rounding", 1, "rounding = 5")):
        if key in value:
            checked = expect_whole(value[key], f"disclosure.{key}", minimum, example, p)
            if checked is not None:
                out[key] = checked
    return Disclosure(**out)


__all__ = ["check_disclosure", "check_risk"]
