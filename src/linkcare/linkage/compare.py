"""How alike two records are: a comparison level per field for each pair.

Level 0 means a value is missing on either side (no evidence); levels 1… are the agreement
levels of the method, best first; the last level is disagreement. Comparators are vectorised:
strings go through rapidfuzz, dates and numbers through numpy, Bloom filters through bit counts.
Each distinct pair of values is compared once, however many node pairs share it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np
import polars as pl
from rapidfuzz.distance import JaroWinkler, Levenshtein
from rapidfuzz.process import cpdist

from linkcare.config import Comparison

MISSING = 0
#: Above this many distinct values a field's value pairs are compared without de-duplication.
DISTINCT_PAIRS_MIN_REPEAT = 20_000
#: Methods for which two identical values are always at the first level (other methods can find an
#: identical value unreadable, which is the missing level).
SIMILARITY_METHODS = ("jaro_winkler", "levenshtein")
#: Threads rapidfuzz may use per call (-1: one per core). Worker processes that already split the
#: pairs between the cores set it to 1, so that processes and threads do not compete.
THREADS = -1


def n_levels(comparison: Comparison) -> int:
    """Return how many levels a comparison has, the missing level included."""
    if comparison.method == "exact":
        return 3
    if comparison.method == "date":
        return 1 + 2 + len(comparison.levels) + 1
    return 1 + len(comparison.levels) + 1


def level_names(comparison: Comparison) -> list[str]:
    """Return a readable name for each level of a comparison, for models and reports."""
    m, lv = comparison.method, comparison.levels
    if m == "exact":
        inner = ["exact"]
    elif m in ("jaro_winkler", "dice"):
        inner = [f"similarity >= {x:g}" for x in lv]
    elif m == "levenshtein":
        inner = [f"edits <= {x:g}" for x in lv]
    elif m == "numeric":
        inner = [f"difference <= {x:g}" for x in lv]
    else:
        inner = ["exact", "day and month swapped", *[f"within {x:g} days" for x in lv]]
    return ["missing", *inner, "disagree"]


def _parse(method: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """Return what a method compares, parsed once per value: day numbers and date parts for
    `date`, numbers for `numeric`, the text itself otherwise."""
    if method == "date":
        text = pl.Series(values.tolist(), dtype=pl.String)
        d = text.str.to_date("%Y-%m-%d", strict=False)
        return {"day": d.cast(pl.Int64).fill_null(0).to_numpy(), "month": d.dt.month().fill_null(0).to_numpy(),
                "dom": d.dt.day().fill_null(0).to_numpy(), "year": d.dt.year().fill_null(0).to_numpy(),
                "bad": d.is_null().to_numpy()}
    if method == "numeric":
        num = pl.Series(values.tolist(), dtype=pl.String).cast(pl.Float64, strict=False).to_numpy()
        return {"num": num, "bad": np.isnan(num)}
    return {"text": values}


def _take(parsed: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in parsed.items()}


def _level_at_most(value: np.ndarray, cuts: np.ndarray, offset: int = 1) -> np.ndarray:
    """Return the first level whose cut-off (increasing, best first) the value is at or below,
    counting from `offset`; past the last cut-off, the disagree level."""
    return (np.searchsorted(cuts, value, side="left") + offset).astype(np.int8)


def _level_at_least(score: np.ndarray, cuts: np.ndarray, offset: int = 1) -> np.ndarray:
    """Return the first level whose cut-off (decreasing, best first) the score reaches, counting
    from `offset`; below the last cut-off, the disagree level."""
    ascending = cuts[::-1] - 1e-9
    return (cuts.size - np.searchsorted(ascending, score, side="right") + offset).astype(np.int8)


def _levels(comparison: Comparison, x: dict[str, np.ndarray], y: dict[str, np.ndarray]) -> np.ndarray:
    """Return the level of each pair of present, parsed values (0 where a value cannot be read)."""
    lv = np.asarray(comparison.levels, dtype=np.float64)
    method = comparison.method
    if method == "exact":
        return np.where(x["text"] == y["text"], 1, 2)
    if method == "date":
        same = x["day"] == y["day"]
        swapped = (~same) & (x["year"] == y["year"]) & (x["month"] == y["dom"]) & (x["dom"] == y["month"])
        within = _level_at_most(np.abs(x["day"] - y["day"]), lv, 3)
        return np.where(x["bad"] | y["bad"], MISSING, np.where(same, 1, np.where(swapped, 2, within)))
    if method == "numeric":
        diff = np.abs(x["num"] - y["num"])
        return np.where(x["bad"] | y["bad"], MISSING, _level_at_most(diff, lv))
    a, b = x["text"].tolist(), y["text"].tolist()
    if method == "jaro_winkler":
        # The cut-off lets rapidfuzz stop early on pairs below the lowest level (they score 0).
        score = cpdist(a, b, scorer=JaroWinkler.normalized_similarity, workers=THREADS,
                       score_cutoff=float(lv.min()) - 1e-9)
        return _level_at_least(score, lv)
    if method == "levenshtein":
        dist = cpdist(a, b, scorer=Levenshtein.distance, dtype=np.int32, workers=THREADS, score_cutoff=int(lv.max()))
        return _level_at_most(dist, lv)
    return _level_at_least(_dice(x["text"], y["text"]), lv)


def _bits(value: str) -> np.ndarray:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    return np.frombuffer(raw, dtype=np.uint8)


#: Bits set in each byte value, for counting the bits of Bloom filters.
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)
#: Pairs of Bloom filters counted at once (bounds the memory of one step of `_dice`).
DICE_BATCH = 65_536


def _dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the Dice coefficient of each pair of Bloom filters (hex or base64 text): 2|A∩B| / (|A|+|B|).

    Each distinct filter is decoded once; the pairs are then counted with array operations in
    batches. Filters that cannot be decoded, or of different lengths, score 0.
    """
    out = np.zeros(a.size)
    if a.size == 0:
        return out
    values, inverse = np.unique(np.concatenate([a, b]).astype(str), return_inverse=True)
    decoded = [_bits(v) for v in values.tolist()]  # once per distinct filter
    nbytes = np.array([d.size for d in decoded], dtype=np.int64)
    bits = np.zeros((values.size, int(nbytes.max())), dtype=np.uint8)
    for i, d in enumerate(decoded):
        bits[i, : d.size] = d
    ones = POPCOUNT[bits].sum(axis=1)
    ia, ib = inverse[: a.size], inverse[a.size:]
    total = ones[ia] + ones[ib]
    usable = np.flatnonzero((nbytes[ia] > 0) & (nbytes[ia] == nbytes[ib]) & (total > 0))
    for lo in range(0, usable.size, DICE_BATCH):
        rows = usable[lo: lo + DICE_BATCH]
        both = POPCOUNT[bits[ia[rows]] & bits[ib[rows]]].sum(axis=1)
        out[rows] = 2.0 * both / total[rows]
    return out


def levels_of_values(comparison: Comparison, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the level (int8) of each pair of standardised values; None means missing."""
    a = np.asarray(a, dtype=object)
    b = np.asarray(b, dtype=object)
    missing = pl.Series(a.tolist(), dtype=pl.String).is_null().to_numpy() | pl.Series(
        b.tolist(), dtype=pl.String).is_null().to_numpy()
    out = np.zeros(a.size, dtype=np.int8)
    ok = ~missing
    if ok.any():
        method = comparison.method
        out[ok] = _levels(comparison, _parse(method, a[ok]), _parse(method, b[ok]))
    return out


@dataclass
class FieldData:
    """One field's values over all nodes, coded so that each distinct value pair is compared once."""

    comparison: Comparison
    code: np.ndarray  # per node: index into `values`, or -1 when missing
    values: np.ndarray  # distinct standardised values (object array of str)
    frequency: np.ndarray  # share of nodes holding each distinct value
    parsed: dict[str, np.ndarray]  # the distinct values as the method compares them


def field_data(nodes: pl.DataFrame, comparison: Comparison, code: np.ndarray | None = None) -> FieldData:
    """Return the coded values of a comparison's field across all nodes (reusing `code`, the
    field's dense codes, when the caller has them)."""
    from linkcare.linkage.prepare import dense_codes

    distinct: np.ndarray | None = None
    if code is None:
        code, distinct = dense_codes(nodes[comparison.field])
    n_values = int(code.max()) + 1 if code.size else 0
    if comparison.method == "exact":
        values = np.empty(0, dtype=object)  # exact agreement needs only the codes
    elif distinct is not None:
        values = distinct.astype(object)
    else:
        # The caller's codes are ranks among the sorted distinct values, so these are their values.
        values = nodes[comparison.field].drop_nulls().unique().sort().to_numpy().astype(object)
    present = code >= 0
    counts = np.bincount(code[present], minlength=n_values).astype(np.float64)
    frequency = counts / max(counts.sum(), 1.0)
    parsed = _parse(comparison.method, values) if comparison.method != "exact" else {}
    return FieldData(comparison, code, values, frequency, parsed)


def compare_field(data: FieldData, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Return the level of every node pair for one field."""
    cl, cr = data.code[left], data.code[right]
    out = np.zeros(left.size, dtype=np.int8)
    present = (cl >= 0) & (cr >= 0)
    if not present.any():
        return out
    if data.comparison.method == "exact":
        out[present] = np.where(cl[present] == cr[present], 1, 2)
        return out
    lo, hi = np.minimum(cl[present], cr[present]), np.maximum(cl[present], cr[present])
    if data.values.size > DISTINCT_PAIRS_MIN_REPEAT:
        # Many distinct values (names, addresses): value pairs rarely repeat, so sorting them out
        # would cost more than it saves; compare every pair. Identical strings are the best level
        # without asking the comparator (a blocking pass on the field makes every pair identical).
        levels = np.ones(lo.size, dtype=np.int8)
        differ = lo != hi if data.comparison.method in SIMILARITY_METHODS else np.ones(lo.size, dtype=bool)
        if differ.any():
            levels[differ] = _levels(data.comparison, _take(data.parsed, lo[differ]), _take(data.parsed, hi[differ]))
        out[present] = levels
        return out
    key = lo * (data.values.size + 1) + hi
    unique, inverse = np.unique(key, return_inverse=True)
    ua, ub = unique // (data.values.size + 1), unique % (data.values.size + 1)
    levels = _levels(data.comparison, _take(data.parsed, ua), _take(data.parsed, ub)).astype(np.int8)
    out[present] = levels[inverse.ravel()]
    return out


def compare_pairs(fields: list[FieldData], left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Return the (pairs × fields) matrix of levels."""
    out = np.empty((left.size, len(fields)), dtype=np.int8)
    for j, data in enumerate(fields):
        out[:, j] = compare_field(data, left, right)
    return out


def compare_values(comparisons: list[Comparison], left: pl.DataFrame, right: pl.DataFrame) -> np.ndarray:
    """Return the (pairs × fields) matrix of levels of value pairs given side by side: row i of
    `left` against row i of `right`, one column per compared field (standardised strings).

    The values are coded as `compare_pairs` codes all nodes, over just these rows, so a slice of
    pairs (a Spark partition) is compared by the same comparators, each distinct value pair once.
    """
    k = left.height
    names = [c.field for c in comparisons]
    both = pl.concat([left.select(names), right.select(names)])
    fields = [field_data(both, c) for c in comparisons]
    return compare_pairs(fields, np.arange(k), np.arange(k, 2 * k))


def compare_pairs_recordlinkage(nodes: pl.DataFrame, comparisons: list[Comparison], left: np.ndarray,
                                right: np.ndarray) -> np.ndarray:
    """Return the same levels as `compare_pairs`, computed through recordlinkage's `Compare`.

    This is the reference path: recordlinkage selects the values of each pair and calls our
    comparator on them, value pair by value pair, without the de-duplication of `compare_field`.
    """
    import pandas as pd
    import recordlinkage
    from recordlinkage.base import BaseCompareFeature

    class LevelFeature(BaseCompareFeature):
        def __init__(self, comparison: Comparison):
            super().__init__(comparison.field, comparison.field, label=comparison.field)
            self.comparison = comparison

        def _compute_vectorized(self, s1: pd.Series, s2: pd.Series) -> np.ndarray:
            a = s1.astype(object).where(s1.notna(), None).to_numpy(dtype=object)
            b = s2.astype(object).where(s2.notna(), None).to_numpy(dtype=object)
            return levels_of_values(self.comparison, a, b)

    frame = nodes.select([c.field for c in comparisons]).to_pandas()
    compare = recordlinkage.Compare(n_jobs=1)
    for c in comparisons:
        compare.add(LevelFeature(c))
    index = pd.MultiIndex.from_arrays([left, right])
    result = compare.compute(index, frame)
    return result.to_numpy(dtype=np.int8)
