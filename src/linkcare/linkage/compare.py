"""How alike two records are: a comparison level per field for each pair.

Level 0 means a value is missing on either side (no evidence); levels 1… are the agreement
levels of the method, best first; the last level is disagreement. The comparators are the
methods' own (linkcare.config.methods). Each distinct pair of values is compared once, however
many node pairs share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from linkcare.config import Comparison
from linkcare.linkage.prepare import dense_codes

#: Above this many distinct values a field's value pairs are compared without de-duplication.
DISTINCT_PAIRS_MIN_REPEAT = 20_000
#: Threads rapidfuzz may use per call by default (-1: one per core). Worker processes that already
#: split the pairs between the cores pass 1, so that processes and threads do not compete.
ALL_THREADS = -1


def _take(parsed: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in parsed.items()}


def _levels(comparison: Comparison, x: dict[str, np.ndarray], y: dict[str, np.ndarray], threads: int) -> np.ndarray:
    """Return the level of each pair of present, parsed values (0 where a value cannot be read)."""
    return comparison.spec.compare(np.asarray(comparison.levels, dtype=np.float64), x, y, threads)


def levels_of_values(comparison: Comparison, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the level (int8) of each pair of standardised values; None means missing."""
    a = np.asarray(a, dtype=object)
    b = np.asarray(b, dtype=object)
    missing = pl.Series(a.tolist(), dtype=pl.String).is_null().to_numpy() | pl.Series(
        b.tolist(), dtype=pl.String).is_null().to_numpy()
    out = np.zeros(a.size, dtype=np.int8)
    ok = ~missing
    if ok.any():
        spec = comparison.spec
        out[ok] = _levels(comparison, spec.parse(a[ok]), spec.parse(b[ok]), ALL_THREADS)
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
    distinct: np.ndarray | None = None
    if code is None:
        code, distinct = dense_codes(nodes[comparison.field])
    n_values = int(code.max()) + 1 if code.size else 0
    spec = comparison.spec
    if not spec.needs_values:
        values = np.empty(0, dtype=object)  # exact agreement needs only the codes
    elif distinct is not None:
        values = distinct.astype(object)
    else:
        # The caller's codes are ranks among the sorted distinct values, so these are their values.
        values = nodes[comparison.field].drop_nulls().unique().sort().to_numpy().astype(object)
    present = code >= 0
    counts = np.bincount(code[present], minlength=n_values).astype(np.float64)
    frequency = counts / max(counts.sum(), 1.0)
    parsed = spec.parse(values) if spec.needs_values else {}
    return FieldData(comparison, code, values, frequency, parsed)


def compare_field(data: FieldData, left: np.ndarray, right: np.ndarray, threads: int = ALL_THREADS) -> np.ndarray:
    """Return the level of every node pair for one field; `threads` is how many threads the
    comparator may use (-1: one per core)."""
    cl, cr = data.code[left], data.code[right]
    out = np.zeros(left.size, dtype=np.int8)
    present = (cl >= 0) & (cr >= 0)
    if not present.any():
        return out
    spec = data.comparison.spec
    if not spec.needs_values:
        out[present] = np.where(cl[present] == cr[present], 1, 2)
        return out
    lo, hi = np.minimum(cl[present], cr[present]), np.maximum(cl[present], cr[present])
    if data.values.size > DISTINCT_PAIRS_MIN_REPEAT:
        # Many distinct values (names, addresses): value pairs rarely repeat, so sorting them out
        # would cost more than it saves; compare every pair. Identical strings are the best level
        # without asking the comparator (a blocking pass on the field makes every pair identical).
        levels = np.ones(lo.size, dtype=np.int8)
        differ = lo != hi if spec.identical_is_best else np.ones(lo.size, dtype=bool)
        if differ.any():
            levels[differ] = _levels(data.comparison, _take(data.parsed, lo[differ]), _take(data.parsed, hi[differ]),
                                     threads)
        out[present] = levels
        return out
    key = lo * (data.values.size + 1) + hi
    unique, inverse = np.unique(key, return_inverse=True)
    ua, ub = unique // (data.values.size + 1), unique % (data.values.size + 1)
    levels = _levels(data.comparison, _take(data.parsed, ua), _take(data.parsed, ub), threads).astype(np.int8)
    out[present] = levels[inverse.ravel()]
    return out


def compare_pairs(fields: list[FieldData], left: np.ndarray, right: np.ndarray,
                  threads: int = ALL_THREADS) -> np.ndarray:
    """Return the (pairs × fields) matrix of levels."""
    out = np.empty((left.size, len(fields)), dtype=np.int8)
    for j, data in enumerate(fields):
        out[:, j] = compare_field(data, left, right, threads)
    return condition_levels(out, [f.comparison for f in fields])


def condition_levels(levels: np.ndarray, comparisons: list[Comparison]) -> np.ndarray:
    """Return the levels with each comparison that has a `given` field split by it: the method's
    level l > 0 stays l where the given field agrees (is at its best level, 1) and becomes
    l + (k - 1) where it does not (k: the method's levels, the missing one included). Missing
    stays 0. `levels` holds the methods' own levels and is changed in place."""
    column = {c.field: j for j, c in enumerate(comparisons)}
    for j, c in enumerate(comparisons):
        if c.given:
            own, given = levels[:, j], levels[:, column[c.given]]
            levels[:, j] = np.where((own > 0) & (given != 1), own + (c.base_levels - 1), own)
    return levels


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
    return condition_levels(result.to_numpy(dtype=np.int8), comparisons)
