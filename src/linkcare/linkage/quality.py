"""What the link report's quality sections are drawn from: which records cannot reach the threshold
even against an identical record, precision and recall against the threshold estimated from the
match probabilities without labels, and the sizes of the people found, with unusually large ones
flagged. Both engines run these functions (the Spark engine on each partition, then sums); what
they give is small: counts per source, per threshold and per size, never a record value.

**Unlinkable records.** A node's best possible match weight is its weight against an identical
record: the model's intercept, plus for each compared field it has a value for the weight of level
1 (identical, the best agreement level), plus for a term-frequency field the adjustment for agreeing
on its own value (linkcare.linkage.scoring.tf_adjustments: log2(u1 / the share of nodes holding
that value)); a missing field adds 0. It is the node's pattern (level 1 where it has a value,
level 0 where not) scored by `match_weights`, as every candidate pair is. A node whose best possible
probability is below the threshold can be placed only by an exact rule, if it has every field of
one, and otherwise cannot be linked at all.

**Precision and recall against a threshold t, without labels.** Among the scored pairs with match
probability p >= t, the expected true matches are the sum of p and the expected false ones the sum
of 1 - p; recall is the expected true matches as a share of all expected matches, the sum of p over
every scored pair. The sums run over the kept pairs (pairs.parquet: p >= pairs_min_probability),
exactly, in fixed point so that every engine and partitioning gives the same figures; the pairs
below pairs_min_probability (counted only in the weight histogram) add to the expected matches the
mean probability of their bin, taking their weights as spread evenly across it. Pairs joined by
exact rules are not scored and not included; the estimate is as good as the model's calibration.

**Unusually large people.** A person is flagged by either of two rules:

- *a merged registration*: more than one record from one source of kind gp_registrations. A
  registration list holds each registered person once, so two of its records in one person are two
  registered people merged (or one person registered twice, which the practice should resolve);
- *far out in the tail*: a modified z-score of log(records), 0.6745 (x - median) / MAD, above 3.5
  (Iglewicz and Hoaglin, 1993, "How to Detect and Handle Outliers", ASQC Basic References in
  Quality Control 16), over every person found, and more than twice the median person's records.
  Records per person are skewed (one admission against a long outpatient series), hence the log.
  Where the MAD is 0 (more than half of the people one size), the mean absolute deviation times
  1.2533 (sqrt(pi/2), which gives the standard deviation of a normal distribution) stands in; with
  so little spread the z-score alone would flag people one record above the rest, hence the floor
  of twice the median. A large person is often a heavy user of services, so the tail flag asks for
  a look, not a correction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from linkcare.config import Comparison, Config
from linkcare.linkage.compare import condition_levels
from linkcare.linkage.model import MatchModel, PatternCodec
from linkcare.linkage.scoring import WEIGHT_EDGES, match_probabilities, match_weights, weight_counts

#: What a node can reach, by code: its best possible weight reaches the threshold; it does not, but
#: it has every field of an exact rule; neither.
REACH = ("reaches the threshold", "an exact rule only", "cannot link")
#: Thresholds the report's table shows, beside the configured one.
TABLE_THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
#: The thresholds of the curve, as match weights: 0 to 17 (probability 0.5 to 0.99999) by 0.25.
CURVE_WEIGHTS = np.arange(0.0, 17.25, 0.25)
#: Probabilities are summed as integers in units of 2^-32, so sums do not depend on their order;
#: two billion pairs of probability 1 sum to 8.6e18, still below the int64 limit of 9.2e18.
FIXED_POINT = float(1 << 32)
#: The modified z-score above which a person's log(records) is far out in the tail (Iglewicz and Hoaglin, 1993).
TAIL_Z = 3.5
#: ...and more than this many times the median person's records.
TAIL_FLOOR = 2.0
#: z = 0.6745 (x - median) / MAD: 0.6745 is the normal distribution's MAD in standard deviations.
MAD_SCALE = 0.6745
#: The standard deviation of a normal distribution in mean absolute deviations, sqrt(pi/2).
MEAN_AD_SCALE = math.sqrt(math.pi / 2.0)


# --- unlinkable records ------------------------------------------------------------------------------------

def reach_fields(config: Config) -> list[str]:
    """Return the fields whose absence the report counts: the compared fields, then any other field of a rule."""
    out = [c.field for c in config.linkage.comparisons]
    for rule in config.linkage.deterministic:
        out += [f for f in rule if f not in out]
    return out


def with_value_counts(frame: pl.DataFrame, comparisons: Sequence[Comparison],
                      ) -> tuple[pl.DataFrame, dict[int, tuple[str, float]]]:
    """Return the nodes with, per term-frequency field j, a column `tfc<j>` counting the nodes that
    hold each node's value, and per such field that column and the number of nodes holding any value
    (the Spark engine's nodes carry the same columns)."""
    totals: dict[int, tuple[str, float]] = {}
    columns = []
    for j, c in enumerate(comparisons):
        if c.term_frequency:
            totals[j] = (f"tfc{j}", float(max(frame[c.field].count(), 1)))
            columns.append(pl.col(c.field).count().over(c.field).cast(pl.Int64).alias(f"tfc{j}"))
    return (frame.with_columns(columns) if columns else frame), totals


def best_weights(model: MatchModel, nodes: pl.DataFrame, tf_totals: Mapping[int, tuple[str, float]]) -> np.ndarray:
    """Return each node's best possible match weight: its weight against an identical record (level 1
    on every field it has, level 0 on the others), with the term-frequency adjustment of its own values.

    `tf_totals` holds per term-frequency field the column counting the nodes with each node's value and
    the number of nodes with any value (see `with_value_counts`)."""
    comparisons = model.comparisons
    patterns = PatternCodec([c.n_levels for c in comparisons])
    levels = condition_levels(np.column_stack([nodes[c.field].is_not_null().to_numpy() for c in comparisons])
                              .astype(np.int8), comparisons)

    def frequency(j: int, exact: np.ndarray) -> np.ndarray:
        column, total = tf_totals[j]
        return nodes[column].to_numpy()[exact].astype(np.float64) / total

    return match_weights(model, patterns, None, patterns.encode(levels), frequency)


def reach_counts(model: MatchModel, rules: Sequence[Sequence[str]], threshold: float, fields: Sequence[str],
                 nodes: pl.DataFrame, tf_totals: Mapping[int, tuple[str, float]]) -> pl.DataFrame:
    """Return, per source and reach (the position in REACH), the records of `nodes` (source, records,
    the fields, the `tfc<j>` columns) and, per field of `fields`, the records missing it."""
    reaches = match_probabilities(best_weights(model, nodes, tf_totals)) >= threshold
    by_rule = np.zeros(nodes.height, dtype=bool)
    for rule in rules:
        by_rule |= np.logical_and.reduce([nodes[f].is_not_null().to_numpy() for f in rule])
    reach = np.where(reaches, 0, np.where(by_rule, 1, 2)).astype(np.int8)
    frame = nodes.select("source", pl.col("records").cast(pl.Int64), *[pl.col(f).is_null().alias(f"_m{i}")
                                                                        for i, f in enumerate(fields)])
    return (frame.with_columns(pl.Series("reach", reach))
            .group_by("source", "reach")
            .agg(pl.col("records").sum(),
                 *[pl.col("records").filter(pl.col(f"_m{i}")).sum().alias(f"missing_{f}")
                   for i, f in enumerate(fields)])
            .sort("source", "reach"))


# --- precision and recall against the threshold ------------------------------------------------------------

def threshold_grid(threshold: float, min_probability: float) -> np.ndarray:
    """Return the thresholds the curve and the table are worked out at (ascending): the curve's, the
    table's and the configured one, leaving out those below `min_probability` (pairs below it are not kept)."""
    grid = np.unique(np.concatenate([match_probabilities(CURVE_WEIGHTS), TABLE_THRESHOLDS, [threshold]]))
    return grid[grid >= min_probability]


def pair_sums(weight: np.ndarray, probability: np.ndarray, grid: np.ndarray) -> pl.DataFrame:
    """Return the sums over some kept pairs that `threshold_curve` adds up: per interval k of `grid`
    (kind 0; k = 0 is below grid[0], k = i + 1 starts at grid[i]), the pairs and their probabilities
    summed in fixed point (units of 2^-32); per bin of WEIGHT_EDGES (kind 1), the pairs."""
    interval = np.searchsorted(grid, probability, side="right").astype(np.int64)
    fixed = np.rint(probability * FIXED_POINT).astype(np.int64)
    intervals = (pl.DataFrame({"index": interval, "p": fixed}).group_by("index")
                 .agg(pl.len().cast(pl.Int64).alias("pairs"), pl.col("p").sum())
                 .select(pl.lit(0, pl.Int8).alias("kind"), "index", "pairs", "p"))
    counts = weight_counts(weight)
    bins = np.nonzero(counts)[0]
    weights = pl.DataFrame({"kind": pl.Series(np.ones(bins.size, dtype=np.int8)), "index": bins.astype(np.int64),
                            "pairs": counts[bins].astype(np.int64), "p": np.zeros(bins.size, dtype=np.int64)})
    return pl.concat([intervals, weights]).sort("kind", "index")


@dataclass(frozen=True)
class ThresholdCurve:
    """Expected true and false matches among the scored pairs at or above each threshold."""

    thresholds: np.ndarray  # ascending match probabilities
    pairs: np.ndarray  # scored pairs with probability at or above each threshold
    expected_true: np.ndarray  # their summed probabilities
    expected_matches: float  # summed probability of every scored pair
    estimated: float  # the part of expected_matches from pairs not kept, estimated from their weight bins
    not_kept: int  # scored pairs below pairs_min_probability

    @property
    def expected_false(self) -> np.ndarray:
        return self.pairs - self.expected_true

    @property
    def precision(self) -> np.ndarray:
        """Return the expected precision at each threshold (NaN where no pair reaches it)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.pairs > 0, self.expected_true / np.maximum(self.pairs, 1), np.nan)

    @property
    def recall(self) -> np.ndarray:
        """Return the expected recall at each threshold (NaN when no match is expected at all)."""
        if self.expected_matches <= 0:
            return np.full(self.thresholds.size, np.nan)
        return self.expected_true / self.expected_matches


def threshold_curve(sums: pl.DataFrame, histogram: np.ndarray, grid: np.ndarray,
                    min_probability: float) -> ThresholdCurve:
    """Return the curve from the kept pairs' `pair_sums` (added up over every batch: kind, index,
    pairs, p) and the weight histogram of every scored pair."""
    intervals = sums.filter(pl.col("kind") == 0)
    n = np.zeros(grid.size + 1, dtype=np.int64)
    p = np.zeros(grid.size + 1, dtype=np.int64)
    n[intervals["index"].to_numpy()] = intervals["pairs"].to_numpy()
    p[intervals["index"].to_numpy()] = intervals["p"].to_numpy()
    # Pairs at or above grid[i] are those in intervals i + 1 onwards.
    at_least = np.cumsum(n[::-1])[::-1][1:]
    true = np.cumsum(p[::-1])[::-1][1:] / FIXED_POINT
    kept_bins = sums.filter(pl.col("kind") == 1)
    kept = np.zeros(WEIGHT_EDGES.size - 1, dtype=np.int64)
    kept[kept_bins["index"].to_numpy()] = kept_bins["pairs"].to_numpy()
    not_kept = np.maximum(np.asarray(histogram, dtype=np.int64) - kept, 0)
    low = WEIGHT_EDGES[:-1]
    high = np.minimum(WEIGHT_EDGES[1:], math.log2(min_probability / (1.0 - min_probability))
                      if min_probability > 0 else -math.inf)
    estimated = float((not_kept * _mean_probability(low, np.maximum(high, low))).sum()) if not_kept.any() else 0.0
    return ThresholdCurve(grid, at_least, true, int(p.sum()) / FIXED_POINT + estimated, estimated,
                          int(not_kept.sum()))


def _mean_probability(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Return the mean match probability of weights spread evenly from `low` to `high` (log2 odds):
    the integral of 1 / (1 + 2^-w) is log2(1 + 2^w)."""
    width = high - low
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (np.logaddexp2(0.0, high) - np.logaddexp2(0.0, low)) / width
    return np.where(width > 1e-12, mean, match_probabilities(low))


# --- cluster sizes ------------------------------------------------------------------------------------------

def size_counts(nodes: pl.DataFrame, spines: Sequence[str]) -> pl.DataFrame:
    """Return the people of `nodes` (key: the person, source, records; every node of a person among
    them) counted by records, sources and `merged` (more than one record from one of the `spines`)."""
    per_source = nodes.group_by("key", "source").agg(pl.col("records").cast(pl.Int64).sum())
    spine = pl.col("records").filter(pl.col("source").is_in(list(spines))).max().fill_null(0)
    people = per_source.group_by("key").agg(pl.col("records").sum(), pl.len().cast(pl.Int64).alias("sources"),
                                            (spine > 1).alias("merged"))
    return (people.group_by("records", "sources", "merged").agg(pl.len().cast(pl.Int64).alias("people"))
            .sort("records", "sources", "merged"))


@dataclass(frozen=True)
class LargePeople:
    """The people flagged as unusually large, by rule, with their records."""

    cut: float  # records per person above which a person is far out in the tail (inf: nobody)
    merged_people: int
    merged_records: int
    tail_people: int
    tail_records: int
    flagged_people: int
    flagged_records: int


def large_people(sizes: pl.DataFrame) -> LargePeople:
    """Return the people `size_counts` (summed over every batch) flags, by the rules of this module."""
    records = sizes["records"].to_numpy().astype(np.float64)
    people = sizes["people"].to_numpy().astype(np.int64)
    cut = tail_cut(records, people)
    tail = records > cut
    merged = sizes["merged"].to_numpy()

    def total(mask: np.ndarray) -> tuple[int, int]:
        return int(people[mask].sum()), int((people[mask] * records[mask].astype(np.int64)).sum())

    return LargePeople(cut, *total(merged), *total(tail), *total(merged | tail))


def tail_cut(records: np.ndarray, people: np.ndarray) -> float:
    """Return the records per person above which a person is far out in the tail (the modified z-score of
    log(records) above TAIL_Z, and more than twice the median), given how many `people` have each
    number of `records`; inf when there are no people."""
    if people.sum() == 0:
        return math.inf
    x = np.log(records)
    centre = weighted_median(x, people)
    spread = weighted_median(np.abs(x - centre), people) / MAD_SCALE
    if spread == 0:
        spread = MEAN_AD_SCALE * float((np.abs(x - centre) * people).sum() / people.sum())
    return max(math.exp(centre + TAIL_Z * spread), TAIL_FLOOR * math.exp(centre))


def weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """Return the median of `values` each repeated `counts` times (as numpy's median of the repeated
    values: the mean of the two middle ones when there is an even number)."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], np.cumsum(counts[order])
    n = int(c[-1])
    lower = v[np.searchsorted(c, (n - 1) // 2, side="right")]
    upper = v[np.searchsorted(c, n // 2, side="right")]
    return float((lower + upper) / 2.0)


__all__ = ["REACH", "TABLE_THRESHOLDS", "LargePeople", "ThresholdCurve", "best_weights", "large_people",
           "pair_sums", "reach_counts", "reach_fields", "size_counts", "tail_cut", "threshold_curve",
           "threshold_grid", "weighted_median", "with_value_counts"]
