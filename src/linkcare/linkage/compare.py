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


def _days(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return day number (days since 1970, negative before), month, day of month and whether the
    value is missing or not a YYYY-MM-DD date, for each string."""
    s = pl.Series(values, dtype=pl.String).str.to_date("%Y-%m-%d", strict=False)
    bad = s.is_null().to_numpy()
    day = s.cast(pl.Int64).fill_null(0).to_numpy()
    month = s.dt.month().cast(pl.Int64).fill_null(0).to_numpy()
    return day, month, s.dt.day().cast(pl.Int64).fill_null(0).to_numpy(), bad


def _bits(value: str) -> np.ndarray:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    return np.frombuffer(raw, dtype=np.uint8)


def _dice(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(a.size)
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        bx, by = _bits(x), _bits(y)
        if bx.size == 0 or bx.size != by.size:
            continue
        both = np.unpackbits(bx & by).sum()
        total = np.unpackbits(bx).sum() + np.unpackbits(by).sum()
        out[i] = 2.0 * both / total if total else 0.0
    return out


def levels_of_values(comparison: Comparison, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the level (int8) of each pair of standardised values; None means missing."""
    a = np.asarray(a, dtype=object)
    b = np.asarray(b, dtype=object)
    missing = pl.Series(a.tolist(), dtype=pl.String).is_null().to_numpy() | pl.Series(
        b.tolist(), dtype=pl.String).is_null().to_numpy()
    lv = np.asarray(comparison.levels, dtype=np.float64)
    method = comparison.method
    out = np.zeros(a.size, dtype=np.int8)
    ok = ~missing
    if not ok.any():
        return out
    x, y = a[ok], b[ok]
    if method == "exact":
        res = np.where(x == y, 1, 2)
    elif method in ("jaro_winkler", "levenshtein", "dice", "numeric"):
        if method == "jaro_winkler":
            score = cpdist(x.tolist(), y.tolist(), scorer=JaroWinkler.normalized_similarity, workers=1)
            better = score[:, None] >= lv[None, :] - 1e-9
        elif method == "dice":
            better = _dice(x, y)[:, None] >= lv[None, :] - 1e-9
        elif method == "levenshtein":
            dist = cpdist(x.tolist(), y.tolist(), scorer=Levenshtein.distance, dtype=np.int32, workers=1)
            better = dist[:, None] <= lv[None, :]
        else:
            fx = pl.Series(x.tolist(), dtype=pl.String).cast(pl.Float64, strict=False).to_numpy()
            fy = pl.Series(y.tolist(), dtype=pl.String).cast(pl.Float64, strict=False).to_numpy()
            diff = np.abs(fx - fy)
            better = diff[:, None] <= lv[None, :]
            unparsable = np.isnan(diff)
            better[unparsable] = False
        first = np.where(better.any(axis=1), better.argmax(axis=1) + 1, lv.size + 1)
        res = first
        if method == "numeric":
            res = np.where(np.isnan(diff), MISSING, first)
    else:  # date
        dx, mx, tx, bad_x = _days(x)
        dy, my, ty, bad_y = _days(y)
        bad = bad_x | bad_y
        same = dx == dy
        year_x = pl.Series(x.tolist(), dtype=pl.String).str.slice(0, 4).to_numpy()
        year_y = pl.Series(y.tolist(), dtype=pl.String).str.slice(0, 4).to_numpy()
        swapped = (~same) & (year_x == year_y) & (mx == ty) & (tx == my)
        near = np.abs(dx - dy)[:, None] <= lv[None, :]
        within = np.where(near.any(axis=1), near.argmax(axis=1) + 3, lv.size + 3)
        res = np.where(same, 1, np.where(swapped, 2, within))
        res = np.where(bad, MISSING, res)
    out[ok] = np.asarray(res, dtype=np.int8)
    return out


@dataclass
class FieldData:
    """One field's values over all nodes, coded so that each distinct value pair is compared once."""

    comparison: Comparison
    code: np.ndarray  # per node: index into `values`, or -1 when missing
    values: np.ndarray  # distinct standardised values (object array of str)
    frequency: np.ndarray  # share of nodes holding each distinct value


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
        values = dense_codes(nodes[comparison.field])[1].astype(object)
    present = code >= 0
    counts = np.bincount(code[present], minlength=n_values).astype(np.float64)
    frequency = counts / max(counts.sum(), 1.0)
    return FieldData(comparison, code, values, frequency)


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
    key = lo * (data.values.size + 1) + hi
    unique, inverse = np.unique(key, return_inverse=True)
    ua, ub = unique // (data.values.size + 1), unique % (data.values.size + 1)
    levels = levels_of_values(data.comparison, data.values[ua], data.values[ub])
    out[present] = levels[inverse.ravel()]
    return out


def compare_pairs(fields: list[FieldData], left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Return the (pairs × fields) matrix of levels."""
    out = np.empty((left.size, len(fields)), dtype=np.int8)
    for j, data in enumerate(fields):
        out[:, j] = compare_field(data, left, right)
    return out


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
