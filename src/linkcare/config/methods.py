"""The comparison methods, one object each, holding everything linkcare knows about a method.

A method says which `levels` it takes and how to check them (with an example for messages), the
names of its levels, how a field compared with it is standardised, how its distinct values are
parsed once, and its comparator. Level 0 is always "missing" (a value absent on either side, no
evidence), levels 1… are the method's agreement levels, best first, and the last is "disagree".
Comparators are vectorised: strings go through rapidfuzz, dates and numbers through numpy, Bloom
filters through bit counts.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import polars as pl

from linkcare.config.toml import is_number

MISSING = 0
#: Bits set in each byte value, for counting the bits of Bloom filters.
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int32)
#: Pairs of Bloom filters counted at once (bounds the memory of one step of `dice_similarity`).
DICE_BATCH = 65_536

Parsed = dict[str, np.ndarray]


def standard_text(raw: pl.Expr) -> pl.Expr:
    """Return the standardised text of a field's trimmed value: lower-cased, runs of spaces collapsed,
    leading zeros of an all-digit value dropped (so "04" and "4" agree)."""
    text = raw.str.to_lowercase().str.replace_all(r"\s+", " ")
    return pl.when(text.str.contains(r"^\d+$")).then(text.str.replace(r"^0+(\d)", "$1")).otherwise(text)


def _level_at_most(value: np.ndarray, cuts: np.ndarray, offset: int = 1) -> np.ndarray:
    """Return the first level whose cut-off (increasing, best first) the value is at or below,
    counting from `offset`; past the last cut-off, the disagree level."""
    return (np.searchsorted(cuts, value, side="left") + offset).astype(np.int8)


def _level_at_least(score: np.ndarray, cuts: np.ndarray, offset: int = 1) -> np.ndarray:
    """Return the first level whose cut-off (decreasing, best first) the score reaches, counting
    from `offset`; below the last cut-off, the disagree level."""
    ascending = cuts[::-1] - 1e-9
    return (cuts.size - np.searchsorted(ascending, score, side="right") + offset).astype(np.int8)


class ComparisonMethod:
    """A comparison method. Subclasses fill in what differs; the defaults suit a method whose levels
    are cut-offs compared on standardised text."""

    name = ""
    #: levels in TOML, for messages; empty for a method that takes no levels
    example = ""
    #: what each level must be, in words
    rule = "a number 0 or above"
    #: levels best first are decreasing (similarities) rather than increasing (distances)
    decreasing = False
    #: two identical values are always at the first level, so the comparator need not see them
    identical_is_best = False
    #: the comparator needs the values; False: agreement of the values' codes is enough
    needs_values = True

    def valid_level(self, value: Any) -> bool:
        """Return True if `value` may be one of this method's levels."""
        return is_number(value) and value >= 0

    def n_levels(self, levels: Sequence[float]) -> int:
        """Return how many levels a comparison with these cut-offs has, the missing level included."""
        return 1 + len(levels) + 1

    def inner_names(self, levels: Sequence[float]) -> list[str]:
        """Return a readable name for each agreement level, best first."""
        raise NotImplementedError

    def level_names(self, levels: Sequence[float]) -> list[str]:
        """Return a readable name for every level, for models and reports."""
        return ["missing", *self.inner_names(levels), "disagree"]

    def standardise(self, raw: pl.Expr) -> pl.Expr:
        """Return a field's standardised value from its trimmed, recoded raw value."""
        return standard_text(raw)

    def parse(self, values: np.ndarray) -> Parsed:
        """Return what the comparator compares, parsed once per distinct value."""
        return {"text": values}

    def compare(self, levels: np.ndarray, x: Parsed, y: Parsed, threads: int) -> np.ndarray:
        """Return the level of each pair of present, parsed values (0 where a value cannot be read);
        `threads` is how many threads rapidfuzz may use (-1: one per core)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<comparison method {self.name}>"


class Exact(ComparisonMethod):
    name = "exact"
    needs_values = False

    def n_levels(self, levels: Sequence[float]) -> int:
        return 3

    def inner_names(self, levels: Sequence[float]) -> list[str]:
        return ["exact"]

    def compare(self, levels: np.ndarray, x: Parsed, y: Parsed, threads: int) -> np.ndarray:
        return np.where(x["text"] == y["text"], 1, 2)


class JaroWinkler(ComparisonMethod):
    name = "jaro_winkler"
    example = "[0.95, 0.88]"
    rule = "a similarity above 0 and at most 1"
    decreasing = True
    identical_is_best = True

    def valid_level(self, value: Any) -> bool:
        return is_number(value) and 0 < value <= 1

    def inner_names(self, levels: Sequence[float]) -> list[str]:
        return [f"similarity >= {x:g}" for x in levels]

    def compare(self, levels: np.ndarray, x: Parsed, y: Parsed, threads: int) -> np.ndarray:
        from rapidfuzz.distance import JaroWinkler as Scorer
        from rapidfuzz.process import cpdist

        # The cut-off lets rapidfuzz stop early on pairs below the lowest level (they score 0).
        score = cpdist(x["text"].tolist(), y["text"].tolist(), scorer=Scorer.normalized_similarity, workers=threads,
                       score_cutoff=float(levels.min()) - 1e-9)
        return _level_at_least(score, levels)


class Levenshtein(ComparisonMethod):
    name = "levenshtein"
    example = "[0, 1, 2]"
    identical_is_best = True

    def inner_names(self, levels: Sequence[float]) -> list[str]:
        return [f"edits <= {x:g}" for x in levels]

    def compare(self, levels: np.ndarray, x: Parsed, y: Parsed, threads: int) -> np.ndarray:
        from rapidfuzz.distance import Levenshtein as Scorer
        from rapidfuzz.process import cpdist

        dist = cpdist(x["text"].tolist(), y["text"].tolist(), scorer=Scorer.distance, dtype=np.int32, workers=threads,
                      score_cutoff=int(levels.max()))
        return _level_at_most(dist, levels)


class Date(ComparisonMethod):
    name = "date"
    example = "[31, 366]"
    rule = "a whole number of days above 0"

    def valid_level(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    def n_levels(self, levels: Sequence[float]) -> int:
        return 1 + 2 + len(levels) + 1

    def inner_names(self, levels: Sequence[float]) -> list[str]:
        return ["exact", "day and month swapped", *[f"within {x:g} days" for x in levels]]

    def standardise(self, raw: pl.Expr) -> pl.Expr:
        parsed = raw.str.to_date("%Y-%m-%d", strict=False).fill_null(raw.str.to_date("%Y%m%d", strict=False))
        return parsed.dt.strftime("%Y-%m-%d")

    def parse(self, values: np.ndarray) -> Parsed:
        d = pl.Series(values.tolist(), dtype=pl.String).str.to_date("%Y-%m-%d", strict=False)
        return {"day": d.cast(pl.Int64).fill_null(0).to_numpy(), "month": d.dt.month().fill_null(0).to_numpy(),
                "dom": d.dt.day().fill_null(0).to_numpy(), "year": d.dt.year().fill_null(0).to_numpy(),
                "bad": d.is_null().to_numpy()}

    def compare(self, levels: np.ndarray, x: Parsed, y: Parsed, threads: int) -> np.ndarray:
        same = x["day"] == y["day"]
        swapped = (~same) & (x["year"] == y["year"]) & (x["month"] == y["dom"]) & (x["dom"] == y["month"])
        within = _level_at_most(np.abs(x["day"] - y["day"]), levels, 3)
        return np.where(x["bad"] | y["bad"], MISSING, np.where(same, 1, np.where(swapped, 2, within)))


class Numeric(ComparisonMethod):
    name = "numeric"
    example = "[0, 1, 5]"

    def inner_names(self, levels: Sequence[float]) -> list[str]:
        return [f"difference <= {x:g}" for x in levels]

    def parse(self, values: np.ndarray) -> Parsed:
        num = pl.Series(values.tolist(), dtype=pl.String).cast(pl.Float64, strict=False).to_numpy()
        return {"num": num, "bad": np.isnan(num)}

    def compare(self, levels: np.ndarray, x: Parsed, y: Parsed, threads: int) -> np.ndarray:
        diff = np.abs(x["num"] - y["num"])
        return np.where(x["bad"] | y["bad"], MISSING, _level_at_most(diff, levels))


class Dice(ComparisonMethod):
    name = "dice"
    example = "[0.95, 0.85]"
    rule = "a similarity above 0 and at most 1"
    decreasing = True

    def valid_level(self, value: Any) -> bool:
        return is_number(value) and 0 < value <= 1

    def inner_names(self, levels: Sequence[float]) -> list[str]:
        return [f"similarity >= {x:g}" for x in levels]

    def standardise(self, raw: pl.Expr) -> pl.Expr:
        return raw  # Bloom-filter encodings (hex or base64) are kept bit for bit

    def compare(self, levels: np.ndarray, x: Parsed, y: Parsed, threads: int) -> np.ndarray:
        return _level_at_least(dice_similarity(x["text"], y["text"]), levels)


def _bits(value: str) -> np.ndarray:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    return np.frombuffer(raw, dtype=np.uint8)


def dice_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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


#: Every comparison method by name, in the order the documentation lists them.
METHODS: Mapping[str, ComparisonMethod] = MappingProxyType(
    {m.name: m for m in (Exact(), JaroWinkler(), Levenshtein(), Date(), Numeric(), Dice())})
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

__all__ = ["METHODS", "METHOD_NAMES", "MISSING", "ComparisonMethod", "dice_similarity", "standard_text"]
