"""Why a record linked where it did, or did not, from the folder `linkcare link` wrote: the exact
rule that placed it, the candidate passes that brought its pairs, each pair's waterfall of weights,
the attach decision, or the row check that rejected it.

Everything here comes from the written outputs (person_index, nodes, pairs, attachments, rejects,
model.json and the manifest), never from the extracts, so it can show levels and weights but never
a value. A pair's waterfall is the model's prior (its intercept, the log2 odds that two records
match), plus the weight of the pair's level on every field, plus any term-frequency adjustment
(the rest of the pair's match weight: agreeing on a rare value is stronger evidence than on a
common one), which sums to the match weight; the match probability is 1 / (1 + 2^-weight).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from linkcare.cohort.nodes import NODES_NAME
from linkcare.cohort.persons import ATTACHMENTS_NAME
from linkcare.errors import ConfigError, DataError

#: Pairs shown per record, the strongest first; --pairs changes it.
DEFAULT_PAIRS = 10


@dataclass(frozen=True)
class LinkOutput:
    """The parts of a `linkcare link` folder that explain reads."""

    folder: Path
    manifest: dict[str, Any]
    model: dict[str, Any]

    @classmethod
    def open(cls, folder: Path) -> LinkOutput:
        folder = Path(folder)
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
            model = json.loads((folder / "model.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise DataError(f"{folder}: no manifest.json and model.json of `linkcare link`; give the output "
                            "folder of `linkcare link`") from None
        if manifest.get("command") != "link" or "linkage" not in manifest:
            raise DataError(f"{folder / 'manifest.json'}: not written by this version's `linkcare link` (no "
                            "'linkage' section); run `linkcare link` again to explain its links")
        for name in ("person_index.parquet", "pairs.parquet", NODES_NAME):
            if not (folder / name).is_file():
                raise DataError(f"{folder / name}: not found; run `linkcare link` again to explain its links")
        return cls(folder, manifest, model)

    def scan(self, name: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.folder / name)

    @property
    def threshold(self) -> float:
        return float(self.manifest["linkage"]["threshold"])


def parse_record(text: str, option: str) -> tuple[str, str]:
    """Return (source, record_id) from SOURCE:RECORD_ID (the record id may itself hold ':')."""
    source, sep, record_id = text.partition(":")
    if not sep or not source or not record_id:
        raise ConfigError(f"{option} {text!r}: give SOURCE:RECORD_ID, e.g. apc:1234")
    return source, record_id


def _index_row(out: LinkOutput, source: str, record_id: str) -> dict[str, Any] | None:
    rows = out.scan("person_index.parquet").filter(
        (pl.col("source") == source) & (pl.col("record_id") == record_id)).collect()
    return rows.row(0, named=True) if rows.height else None


def _rejected(out: LinkOutput, source: str, record_id: str) -> dict[str, Any] | None:
    path = out.folder / "rejects" / f"{source}.parquet"
    if not path.is_file():
        return None
    rows = pl.scan_parquet(path).filter(pl.col("record_id") == record_id).select("row", "reason").collect()
    return rows.row(0, named=True) if rows.height else None


def _check_source(out: LinkOutput, source: str) -> None:
    sources = [entry["source"] for entry in out.manifest.get("inputs", [])]
    if source not in sources:
        raise ConfigError(f"source {source!r} is not one of this link's sources ({', '.join(sources)})")


def _node(out: LinkOutput, node: int) -> dict[str, Any]:
    row = out.scan(NODES_NAME).filter(pl.col("node") == node).collect().row(0, named=True)
    held = [k[4:] for k, v in row.items() if k.startswith("has_") and v]
    missing = [k[4:] for k, v in row.items() if k.startswith("has_") and not v]
    rules = out.manifest["linkage"]["deterministic"]
    cluster = (out.scan(NODES_NAME).filter(pl.col("exact_cluster") == row["exact_cluster"])
               .select(pl.len().alias("nodes"), pl.col("records").sum()).collect().row(0, named=True))
    return {"node": node, "records": row["records"], "fields_held": held, "fields_missing": missing,
            "rules_held": [r for r in rules if all(f in held for f in r.split("+"))],
            "exact_rule": row["exact_rule"], "exact_cluster": row["exact_cluster"],
            "exact_cluster_nodes": cluster["nodes"], "exact_cluster_records": cluster["records"],
            "candidate_pairs": row["candidate_pairs"]}


def waterfall(model: dict[str, Any], pair: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the terms that add up to the pair's match weight: the prior, each field's level and
    weight, and the term-frequency adjustment if any (the rest of the weight)."""
    terms: list[dict[str, Any]] = [{"term": "prior", "weight": float(model["intercept"])}]
    total = float(model["intercept"])
    tf_fields = []
    for f in model["fields"]:
        level = int(pair[f"level_{f['field']}"])
        weight = float(f["weights"][level])
        total += weight
        terms.append({"term": "field", "field": f["field"], "level": f["level_names"][level], "weight": weight})
        if f.get("term_frequency") and level == 1:
            tf_fields.append(f["field"])
    rest = float(pair["match_weight"]) - total
    if tf_fields or abs(rest) > 1e-9:
        terms.append({"term": "term_frequency", "fields": tf_fields, "weight": rest})
    return terms


def _pair_facts(out: LinkOutput, row: dict[str, Any], node: int) -> dict[str, Any]:
    """Return one pair of pairs.parquet as explain shows it, from the side of `node`."""
    side = "r" if row["node_l"] == node else "l"
    return {"other": {"source": row[f"source_{side}"], "record_id": row[f"record_id_{side}"],
                      "node": row[f"node_{side}"]},
            "pass": row["pass"], "accepted": row["accepted"], "match_weight": row["match_weight"],
            "match_probability": row["match_probability"], "terms": waterfall(out.model, row)}


def _pairs_of(out: LinkOutput, node: int) -> pl.DataFrame:
    return (out.scan("pairs.parquet").filter((pl.col("node_l") == node) | (pl.col("node_r") == node))
            .collect().sort(["match_weight", "node_l", "node_r"], descending=[True, False, False]))


def _other_persons(out: LinkOutput, pairs: list[dict[str, Any]], person_id: str | None) -> None:
    """Add each pair's other record's person and whether it is this record's person."""
    if not pairs:
        return
    keys = pl.DataFrame({"source": [p["other"]["source"] for p in pairs],
                         "record_id": [p["other"]["record_id"] for p in pairs]})
    found = out.scan("person_index.parquet").join(keys.lazy(), on=["source", "record_id"], how="semi").select(
        "source", "record_id", "person_id").collect()
    ids = {(s, r): pid for s, r, pid in found.iter_rows()}
    for p in pairs:
        pid = ids.get((p["other"]["source"], p["other"]["record_id"]))
        p["other"]["person_id"] = pid
        p["other"]["same_person"] = pid is not None and pid == person_id


def _passes(pairs: pl.DataFrame) -> list[dict[str, Any]]:
    if not pairs.height:
        return []
    counts = pairs.group_by("pass").agg(pl.len().alias("pairs_kept"), pl.col("accepted").sum().alias("accepted"))
    return [{"pass": p, "pairs_kept": int(n), "accepted": int(a)} for p, n, a in counts.sort("pass").iter_rows()]


def _attach(out: LinkOutput, source: str, record_id: str) -> dict[str, Any] | None:
    path = out.folder / ATTACHMENTS_NAME
    if not path.is_file():
        return None
    rows = pl.scan_parquet(path).filter((pl.col("source") == source) & (pl.col("record_id") == record_id)).collect()
    if not rows.height:
        return None
    row = rows.row(0, named=True)
    facts = {"attached": row["attached"], "candidate_person_id": row["candidate_person_id"],
             "posterior": row["posterior"], "none": row["none"], "candidates": row["candidates"],
             "alternatives": [{"person_id": p, "posterior": q} for p, q in
                              zip(row["alternative_person_ids"] or [], row["alternative_posteriors"] or [],
                                  strict=True)]}
    for entry in out.manifest.get("attach", {}).get("sources", []):
        if entry["source"] == source:
            facts["source_attaches"] = entry["enabled"]
            facts["source_why"] = entry["why"]
    return facts


def explain_record(folder: Path, source: str, record_id: str, max_pairs: int = DEFAULT_PAIRS) -> dict[str, Any]:
    """Return why the record SOURCE:RECORD_ID linked where it did, or did not (see the module)."""
    out = LinkOutput.open(folder)
    _check_source(out, source)
    facts: dict[str, Any] = {"record": {"source": source, "record_id": record_id}, "threshold": out.threshold,
                             "link_type": out.manifest["linkage"]["link_type"], "model": out.model.get("trained_by")}
    index = _index_row(out, source, record_id)
    if index is None:
        rejected = _rejected(out, source, record_id)
        if rejected is None:
            raise DataError(f"{source}:{record_id}: no such record in {out.folder / 'person_index.parquet'} "
                            f"nor in its rejects; check the source and record id")
        return {**facts, "status": "rejected", "rejected": rejected}
    node = int(index["node"])
    person = (out.scan("person_index.parquet").filter(pl.col("person_id") == index["person_id"])
              .select(pl.len().alias("records"), pl.col("source").n_unique().alias("sources"),
                      pl.col("node").n_unique().alias("nodes")).collect().row(0, named=True))
    pairs = _pairs_of(out, node)
    shown = [_pair_facts(out, row, node) for row in pairs.head(max_pairs).iter_rows(named=True)]
    _other_persons(out, shown, index["person_id"])
    node_facts = _node(out, node)
    return {**facts, "status": "linked" if index["match_stage"] != "unlinked" else "unlinked",
            "person_id": index["person_id"], "match_stage": index["match_stage"],
            "match_probability": index["match_probability"], "person": person, "node": node_facts,
            "passes": _passes(pairs), "pairs_kept": pairs.height,
            "pairs_not_kept": max(int(node_facts["candidate_pairs"]) - pairs.height, 0),
            "pairs_min_probability": out.manifest["linkage"]["pairs_min_probability"],
            "pairs": shown, "attach": _attach(out, source, record_id)}


def explain_pair(folder: Path, first: tuple[str, str], second: tuple[str, str]) -> dict[str, Any]:
    """Return how two records were compared: their pair's waterfall if it was scored and kept, else
    why there is none (one node, joined by an exact rule, or not scored or kept)."""
    out = LinkOutput.open(folder)
    sides = []
    for source, record_id in (first, second):
        _check_source(out, source)
        index = _index_row(out, source, record_id)
        if index is None:
            rejected = _rejected(out, source, record_id)
            why = f"rejected by the row checks: {rejected['reason']}" if rejected else "no such record"
            raise DataError(f"{source}:{record_id}: {why}; it has no pairs")
        sides.append({"source": source, "record_id": record_id, "node": int(index["node"]),
                      "person_id": index["person_id"], "match_stage": index["match_stage"]})
    a, b = sides[0]["node"], sides[1]["node"]
    facts: dict[str, Any] = {"records": sides, "threshold": out.threshold, "model": out.model.get("trained_by"),
                             "same_person": sides[0]["person_id"] == sides[1]["person_id"]}
    if a == b:
        return {**facts, "status": "one_node", "pair": None}
    rows = (out.scan("pairs.parquet").filter(((pl.col("node_l") == a) & (pl.col("node_r") == b))
                                             | ((pl.col("node_l") == b) & (pl.col("node_r") == a))).collect())
    if rows.height:
        return {**facts, "status": "scored", "pair": _pair_facts(out, rows.row(0, named=True), a)}
    node_a, node_b = _node(out, a), _node(out, b)
    if node_a["exact_cluster"] == node_b["exact_cluster"]:
        return {**facts, "status": "exact_rule", "exact_rules": sorted({node_a["exact_rule"], node_b["exact_rule"]}),
                "pair": None}
    return {**facts, "status": "not_kept", "pair": None,
            "pairs_min_probability": out.manifest["linkage"]["pairs_min_probability"]}


__all__ = ["DEFAULT_PAIRS", "LinkOutput", "explain_pair", "explain_record", "parse_record", "waterfall"]
