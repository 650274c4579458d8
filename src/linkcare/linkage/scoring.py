"""Score candidate pairs: the match weight of each pair from its comparison pattern, with the
term-frequency adjustments, its probability, and what the later steps keep of them.

Both engines score every pair through `match_weights`; weights are counted in fixed bins
(WEIGHT_EDGES), so histograms of runs, chunks and partitions add up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import polars as pl

from linkcare.config import Comparison
from linkcare.linkage.compare import FieldData
from linkcare.linkage.model import DENSE_PATTERNS, MatchModel, PatternCodec
from linkcare.linkage.prepare import Nodes

#: Pairs scored at once: memory follows this, not the number of pairs.
SCORE_CHUNK = 4_000_000
#: Fixed match-weight bins, so histograms of runs and chunks add up; weights beyond fall in the end bins.
WEIGHT_EDGES: np.ndarray = np.arange(-30.0, 30.25, 0.5)


@dataclass
class Scored:
    """What scoring keeps of the candidate pairs: indices into them, with weights and probabilities."""

    accepted: np.ndarray  # indices of pairs at or above the threshold
    accepted_weight: np.ndarray
    accepted_probability: np.ndarray
    kept: np.ndarray  # indices of pairs written to pairs.parquet
    kept_weight: np.ndarray
    kept_probability: np.ndarray
    kept_accepted: np.ndarray
    orphan: np.ndarray  # indices of pairs touching a node no exact rule could place
    orphan_bf: np.ndarray  # their log2 Bayes factors
    weight_histogram: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def score_pairs(model: MatchModel, fields: list[FieldData], patterns: PatternCodec, left: np.ndarray,
                right: np.ndarray, pattern: np.ndarray, placed: np.ndarray, threshold: float,
                min_probability: float) -> Scored:
    """Return every candidate pair scored a chunk at a time, keeping only what the later steps need."""
    table = pattern_table(model, patterns)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in Scored.__dataclass_fields__ if k != "weight_histogram"}
    histogram = np.zeros(WEIGHT_EDGES.size - 1, dtype=np.int64)
    for start in range(0, left.size, SCORE_CHUNK):
        stop = min(start + SCORE_CHUNK, left.size)
        code = pattern[start:stop]
        weight = match_weights(model, patterns, table, code, partial(left_frequency, fields, left[start:stop]))
        probability = match_probabilities(weight)
        histogram += weight_counts(weight)
        index = np.arange(start, stop)
        accept = probability >= threshold
        keep = probability >= min_probability
        orphan = ~placed[left[start:stop]] | ~placed[right[start:stop]]
        for name, value in (("accepted", index[accept]), ("accepted_weight", weight[accept]),
                            ("accepted_probability", probability[accept]), ("kept", index[keep]),
                            ("kept_weight", weight[keep]), ("kept_probability", probability[keep]),
                            ("kept_accepted", accept[keep]), ("orphan", index[orphan]),
                            ("orphan_bf", weight[orphan] - model.intercept)):
            parts[name].append(value)
    empty = {"accepted": np.int64, "kept": np.int64, "orphan": np.int64, "kept_accepted": bool}
    return Scored(**{k: (np.concatenate(v) if v else np.zeros(0, dtype=empty.get(k, np.float64)))
                      for k, v in parts.items()}, weight_histogram=histogram)


def weight_counts(weight: np.ndarray) -> np.ndarray:
    """Return how many of the match weights fall in each bin of WEIGHT_EDGES (the end bins take the rest)."""
    edges = (WEIGHT_EDGES[0], WEIGHT_EDGES[-1])
    return np.histogram(np.clip(weight, *edges), bins=WEIGHT_EDGES.size - 1, range=edges)[0]


def pattern_table(model: MatchModel, patterns: PatternCodec, limit: int = DENSE_PATTERNS) -> np.ndarray | None:
    """Return the match weight of every possible pattern, by code, when there are at most `limit`."""
    if patterns.space <= limit:  # one weight per possible pattern, looked up by code
        return model.pattern_weights(patterns.decode(np.arange(patterns.space, dtype=np.int64)))
    return None


def match_weights(model: MatchModel, patterns: PatternCodec, table: np.ndarray | None, code: np.ndarray,
                  frequency: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
    """Return the match weight (log2 odds) of each pair from its pattern's code, with the term-frequency
    adjustments; `frequency(j, exact)` gives, for the pairs marked `exact`, the share of nodes holding
    the left node's value of field j. Both engines score every pair through this."""
    if table is not None:
        weight = table[code]
    else:
        uniq, inverse = np.unique(code, return_inverse=True)
        weight = model.pattern_weights(patterns.decode(uniq))[inverse.ravel()]
    return weight + tf_adjustments(model, patterns, code, frequency)


def left_frequency(fields: list[FieldData], left: np.ndarray, j: int, exact: np.ndarray) -> np.ndarray:
    return fields[j].frequency[fields[j].code[left[exact]]]


def match_probabilities(weight: np.ndarray) -> np.ndarray:
    """Return the match probability of each match weight (log2 odds)."""
    return 1.0 / (1.0 + np.exp2(-weight))


def tf_adjustments(model: MatchModel, patterns: PatternCodec, code: np.ndarray,
                    frequency: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
    """Return the term-frequency adjustment of each pair: agreeing on a rare value is stronger
    evidence than the field's average exact agreement, agreeing on a common one weaker."""
    out = np.zeros(code.size)
    if model.u is None:
        return out
    for j, comparison in enumerate(model.comparisons):
        if not comparison.term_frequency:
            continue
        exact = patterns.level(code, j) == 1
        if not exact.any():
            continue
        freq = np.maximum(frequency(j, exact), 1e-12)
        out[exact] = np.log2(model.u[j][1] / freq)
    return out


def pairs_frame(nodes: Nodes, comparisons: list[Comparison], left: np.ndarray, right: np.ndarray, levels: np.ndarray,
                 weight: np.ndarray, probability: np.ndarray, accepted: np.ndarray, passes: np.ndarray,
                 pass_labels: list[str]) -> pl.DataFrame:
    """Return pairs.parquet: per kept pair, the first record of each node, the two nodes, the first
    candidate pass that found the pair (`pass`, by its label), the level per field, the match weight
    and probability, and whether it was accepted."""
    first = nodes.frame.select("node", "source", "first_id")
    lf = pl.DataFrame({"node": left}).join(first, on="node", how="left", maintain_order="left")
    rf = pl.DataFrame({"node": right}).join(first, on="node", how="left", maintain_order="left")
    data = {
        "source_l": lf["source"], "record_id_l": lf["first_id"],
        "source_r": rf["source"], "record_id_r": rf["first_id"],
        "node_l": pl.Series(left, dtype=pl.Int64), "node_r": pl.Series(right, dtype=pl.Int64),
        "pass": pl.Series(pass_labels or [""], dtype=pl.String).gather(passes),
    }
    for j, c in enumerate(comparisons):
        data[f"level_{c.field}"] = pl.Series(levels[:, j], dtype=pl.Int8)
    data["match_weight"] = pl.Series(weight)
    data["match_probability"] = pl.Series(probability)
    data["accepted"] = pl.Series(accepted)
    return pl.DataFrame(data).sort(["source_l", "record_id_l", "source_r", "record_id_r"])


def total_pairs(src: np.ndarray, link_type: str, records: np.ndarray) -> float:
    """Return the number of record pairs the link type allows, given the source (`src`) and the
    records of each node."""
    n = float(records.sum())
    per = np.bincount(src, weights=records.astype(np.float64))
    within = float((per * (per - 1) / 2).sum())
    every = n * (n - 1) / 2
    return {"link_only": every - within, "dedupe_only": within, "link_and_dedupe": every}[link_type]


__all__ = ["SCORE_CHUNK", "WEIGHT_EDGES", "Scored", "match_probabilities", "match_weights", "pairs_frame",
           "pattern_table", "score_pairs", "total_pairs", "weight_counts"]
