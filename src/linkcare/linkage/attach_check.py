"""The attach step's trials on this machine: placed records, made to look like the unplaced
records of their source, attached by the attach step's own formula (linkcare.linkage.attach).

For each source with unplaced records, about MAX_TRIALS of its placed nodes are drawn, each with a
chance in proportion to its records (a node of r identical records is r records). Each trial takes
one record out of its node and gives it the fields present in one of its source's unplaced nodes
(drawn in proportion to how often each combination occurs, by a low-discrepancy sequence), every
other field blanked, as a new node. Its candidates are found by the same blocking passes (only
those whose key the trial still has), compared by the same comparators and scored by the same
model as an unplaced record. The other records of its own node are identical copies of it, where
a record of the person made on another day would carry errors of its own: the trial compares
with them at levels drawn from the model's m (the levels of matching pairs), and finds them only
when those levels agree on the key of a pass. Its owner is known: the person its node was placed in, who keeps
the node's other records. A trial that a pair would already have linked at the threshold is left
out, because such a record never reaches the attach step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import polars as pl

from linkcare.linkage.blocking import BlockPlan, allowed
from linkcare.linkage.compare import FieldData, compare_pairs, condition_levels
from linkcare.linkage.model import MatchModel, PatternCodec
from linkcare.linkage.scoring import left_frequency, match_probabilities, match_weights, pattern_table

#: Trials per source, about: enough to check attachments at a threshold of 0.95 to about ±1%.
MAX_TRIALS = 10_000
#: The Park-Miller ("minimal standard") generator: 48271 × x mod 2^31 - 1.
LEHMER_MODULUS = 2_147_483_647
LEHMER_MULTIPLIER = 48_271
#: node_draws' mixing: per round, a Park-Miller step, then x -> x^2 + offset (mod the modulus).
MIX_ROUNDS = (12_345, 678_901)
#: The seed moves every node's state by this many steps per unit (a prime, so seeds do not collide).
SEED_STRIDE = 1_000_003
#: The golden ratio's fractional part: i × this (mod 1) spreads trials evenly over a distribution.
_SPREAD = 0.6180339887498949


def node_draws(node: np.ndarray, seed: int) -> np.ndarray:
    """Return a uniform draw in (0, 1) per node, a function of the node's number and the seed only,
    so that every engine draws the same numbers.

    One Park-Miller step alone is linear in the node's number, so consecutive nodes (one source's
    records in id order) would get nearly equal draws and be chosen or passed over together. Each
    of the MIX_ROUNDS rounds therefore follows the step with a squaring modulo the same prime,
    which is not linear: the draws of neighbouring nodes are then uncorrelated. Every product stays
    below 2^62, so Spark's 64-bit integers compute exactly the same values.
    """
    x = (node.astype(np.int64) + 1 + (seed % LEHMER_MODULUS) * SEED_STRIDE) % LEHMER_MODULUS
    for offset in MIX_ROUNDS:
        x = (x * LEHMER_MULTIPLIER) % LEHMER_MODULUS
        x = (x * x + offset) % LEHMER_MODULUS
    return (x + 0.5) / LEHMER_MODULUS


def trial_rate(placed_records: int) -> float:
    """Return the chance per record that a placed node of a source is drawn as a trial, given the
    records of the source's placed nodes: about MAX_TRIALS records in all."""
    return MAX_TRIALS / float(placed_records)


def trial_nodes(src: np.ndarray, records: np.ndarray, placed_node: np.ndarray, orphan_node: np.ndarray,
                present: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the trials (the placed nodes a record is taken out of, in node order) and the fields
    each keeps (a presence bit mask over the fields): for each source with unplaced nodes, about
    MAX_TRIALS of its placed nodes, each drawn with a chance in proportion to its records (a record
    is equally likely to be any of them), and each given the fields of an unplaced node of its source
    (by how often each combination occurs)."""
    draw = node_draws(np.arange(src.size), seed)
    nodes, masks = [], []
    for s in np.unique(src[orphan_node]).tolist():
        pool = np.flatnonzero(placed_node & (src == s))
        if pool.size == 0:
            continue
        chosen = pool[draw[pool] < np.minimum(1.0, records[pool] * trial_rate(records[pool].sum()))]
        combos, counts = np.unique(present[orphan_node & (src == s)], return_counts=True)
        keep = assign_fields(chosen.size, combos, counts, seed)
        nodes.append(chosen)
        masks.append(keep & present[chosen])
    if not nodes:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(nodes), np.concatenate(masks)


def assign_fields(n: int, combos: np.ndarray, counts: np.ndarray, seed: int) -> np.ndarray:
    """Return, for n trials in order, the combination of fields each keeps: the combinations of
    the unplaced nodes in proportion to their counts, spread evenly by a low-discrepancy sequence."""
    shares = np.cumsum(counts) / counts.sum()
    position = (np.arange(n) * _SPREAD + (seed % 997) / 997.0) % 1.0
    return combos[np.minimum(np.searchsorted(shares, position, side="right"), combos.size - 1)]


def presence(codes: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Return per node a bit mask of the fields (in `names` order) it has a value for."""
    mask = np.zeros(next(iter(codes.values())).size, dtype=np.int64)
    for bit, name in enumerate(names):
        mask |= (codes[name] >= 0).astype(np.int64) << bit
    return mask


def copy_levels(model: MatchModel, kept_fields: np.ndarray, seed: int) -> np.ndarray:
    """Return, per trial and comparison, the level at which the trial compares with the other records
    of its own node, drawn from the model's m (the levels of matching pairs): those records are
    identical copies of the trial's, where a record of the person made on another day would carry
    errors of its own. `kept_fields` marks (trial × comparison) the fields the trial keeps; the
    others are missing (level 0)."""
    rng = np.random.default_rng([seed, 14])
    comparisons = model.comparisons
    if model.m is None:  # a classifier without m: the copies agree exactly, as they do
        return condition_levels(np.where(kept_fields, 1, 0).astype(np.int8), comparisons)
    draws = rng.random((len(comparisons), kept_fields.shape[0]))
    levels = np.zeros(kept_fields.shape, dtype=np.int8)

    def pick(share: np.ndarray, u: np.ndarray) -> np.ndarray:
        cumulative = np.cumsum(share / max(float(share.sum()), 1e-300))
        return np.minimum(np.searchsorted(cumulative, u, side="right"), share.size - 1)

    for j, (c, m) in enumerate(zip(comparisons, model.m, strict=True)):
        if not c.given:
            levels[:, j] = np.where(kept_fields[:, j], 1 + pick(np.asarray(m[1:], dtype=np.float64), draws[j]), 0)
    # A comparison split by a given field draws from the half of its m that the given field's drawn
    # level falls in (it agrees, or not), so the two stay consistent.
    column = {c.field: j for j, c in enumerate(comparisons)}
    for j, (c, m) in enumerate(zip(comparisons, model.m, strict=True)):
        if c.given:
            k = c.base_levels
            agrees = levels[:, column[c.given]] == 1
            first = 1 + pick(np.asarray(m[1:k], dtype=np.float64), draws[j])
            second = k + pick(np.asarray(m[k:], dtype=np.float64), draws[j])
            levels[:, j] = np.where(kept_fields[:, j], np.where(agrees, first, second), 0)
    return levels


def _lookup(table: pl.DataFrame, keys: list[str], values: dict[str, np.ndarray], column: str) -> np.ndarray:
    """Return `column` of the row of `table` whose `keys` equal each trial's values (-1 where none)."""
    wanted = pl.DataFrame({k: values[k] for k in keys}).with_row_index("_t")
    found = wanted.join(table.unique(keys), on=keys, how="left").sort("_t")[column]
    return found.fill_null(-1).to_numpy().astype(np.int64)


def trial_candidates(plans: list[BlockPlan], values: dict[str, np.ndarray], codes: dict[str, np.ndarray],
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Return (trial index, candidate node) for every node sharing a block of a pass with a trial's
    values, for the passes whose key the trial holds (each pair once)."""
    found_t, found_y = [], []
    for plan in plans:
        members = pl.DataFrame({"_block": plan.block, **{f: codes[f][plan.node] for f in plan.key}})
        if plan.window:
            assert plan.rank is not None
            members = members.with_columns(pl.Series("_rank", plan.rank))
            block = _lookup(members, list(plan.key[1:]), values, "_block") if plan.key[1:] else \
                np.where(values[plan.key[0]] >= 0, 0, -1)
            rank = _lookup(members, [plan.key[0]], values, "_rank")
            usable = np.flatnonzero((block >= 0) & (rank >= 0))
            span = int(plan.rank.max()) + 1 if plan.rank.size else 1
            key = plan.block.astype(np.int64) * span + plan.rank
            half = plan.window // 2
            lo = np.searchsorted(key, block[usable] * span + np.maximum(rank[usable] - half, 0), side="left")
            # Ranks run to span - 1 within a block: a window past the last rank stays in the block.
            hi = np.searchsorted(key, block[usable] * span + np.minimum(rank[usable] + half, span - 1), side="right")
        else:
            block = _lookup(members, list(plan.key), values, "_block")
            usable = np.flatnonzero(block >= 0)
            lo = np.searchsorted(plan.block, block[usable], side="left")
            hi = np.searchsorted(plan.block, block[usable], side="right")
        sizes = hi - lo
        offset = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        found_t.append(np.repeat(usable, sizes))
        found_y.append(plan.node[np.repeat(lo, sizes) + offset])
    if not found_t:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    pairs = np.unique(np.stack([np.concatenate(found_t), np.concatenate(found_y)]), axis=1)
    return pairs[0], pairs[1]


def attach_trials(plans: list[BlockPlan], fields: list[FieldData], model: MatchModel, codes: dict[str, np.ndarray],
                  src: np.ndarray, records: np.ndarray, cluster: np.ndarray, placed_node: np.ndarray,
                  link_type: str, threshold: float, seed: int) -> pl.DataFrame:
    """Return the trials as linkcare.linkage.attach.fit_prior takes them: a row per trial and
    candidate (placed person), with its best pair's log2 Bayes factor, and whether it is the owner."""
    n = src.size
    names = sorted(codes)
    present = presence(codes, names)
    placed_count = np.bincount(cluster, weights=placed_node.astype(np.float64))
    orphan = ~(placed_count[cluster] > 0)
    trials, kept = trial_nodes(src, records, placed_node, orphan, present, seed)
    values = {name: np.where((kept >> bit) & 1 == 1, codes[name][trials], -1) for bit, name in enumerate(names)}
    t, y = trial_candidates(plans, values, codes)
    x = trials[t]
    same = cluster[y] == cluster[x]
    ok = (y != x) & allowed(link_type, src[x], src[y]) & (placed_count[cluster[y]] - same * placed_node[x] > 0)
    t, y = t[ok], y[ok]
    # Each trial is a new node (n + i) holding only the fields it keeps, so the comparators and the
    # model see exactly what they see for an unplaced record.
    masked = [replace(f, code=np.concatenate([f.code, values[f.comparison.field]])) for f in fields]
    levels = compare_pairs(masked, n + t, y)
    # A trial taken out of a node of several records compares with the others at levels drawn from
    # the model's m; they are candidates when those levels agree on some pass's key.
    copied, drawn = copy_pairs([p.key for p in plans], model, kept, names, records[trials] > 1, seed)
    t = np.concatenate([t, copied])
    y = np.concatenate([y, trials[copied]])
    left = n + t
    pairs = scored_trial_pairs(model, np.concatenate([levels, drawn]), t, cluster[y], threshold,
                               lambda j, exact: left_frequency(masked, left, j, exact))
    own = cluster[trials]
    info = trial_info(src[trials], kept, [p.key for p in plans], names, own,
                      (records[trials] > 1) | (placed_count[own] - placed_node[trials] > 0))
    activity = pl.DataFrame({"candidate": cluster, "src": src, "r": records}).group_by("candidate", "src").agg(
        pl.col("r").sum().alias("activity"))
    return trial_rows(pairs, info, activity)


def copy_pairs(keys: list[tuple[str, ...]], model: MatchModel, kept: np.ndarray, names: list[str],
               has_copies: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (trial, levels) of the pairs that trials with copies (other records of their node)
    form with them and that some pass would find: levels drawn by copy_levels, in trial order, for
    the trials marked `has_copies`. `kept` is each trial's presence bit mask over `names`; `keys`
    are the passes' keys."""
    copies = np.flatnonzero(has_copies)
    kept_field = {name: (kept[copies] >> bit) & 1 == 1 for bit, name in enumerate(names)}
    kept_fields = np.stack([kept_field[c.field] for c in model.comparisons], axis=1) \
        if copies.size else np.zeros((0, len(model.comparisons)), dtype=bool)
    drawn = copy_levels(model, kept_fields, seed)
    found = _found_by_a_pass(keys, model, drawn, kept_field)
    return copies[found], drawn[found]


def scored_trial_pairs(model: MatchModel, levels: np.ndarray, trial: np.ndarray, candidate: np.ndarray,
                       threshold: float, frequency: Callable[[int, np.ndarray], np.ndarray]) -> pl.DataFrame:
    """Return trial pairs scored as any pair: trial, candidate, `bf` (the log2 Bayes factor) and
    `accepted` (a pair would link them at the threshold); `frequency` is match_weights' (the share
    of nodes holding the trial's value)."""
    patterns = PatternCodec([c.n_levels for c in model.comparisons])
    weight = match_weights(model, patterns, pattern_table(model, patterns), patterns.encode(levels), frequency)
    return pl.DataFrame({"trial": trial, "candidate": candidate, "bf": weight - model.intercept,
                         "accepted": match_probabilities(weight) >= threshold})


def _found_by_a_pass(keys: list[tuple[str, ...]], model: MatchModel, levels: np.ndarray,
                     kept: dict[str, np.ndarray]) -> np.ndarray:
    """Return which drawn pairs some pass would find: every field of the pass's key kept and, for a
    compared field, at the exact level."""
    column = {c.field: j for j, c in enumerate(model.comparisons)}
    found = np.zeros(levels.shape[0], dtype=bool)
    for key in keys:
        ok = np.ones(levels.shape[0], dtype=bool)
        for f in key:
            ok &= kept[f]
            if f in column:
                ok &= model.comparisons[column[f]].is_best(levels[:, column[f]])
        found |= ok
    return found


def trial_rows(pairs: pl.DataFrame, info: pl.DataFrame, activity: pl.DataFrame) -> pl.DataFrame:
    """Return a row per trial and candidate (its best pair), and a row for each trial with none;
    trials a pair would already have linked at the threshold left out. `pairs` holds trial,
    candidate, bf and accepted (several rows per trial and candidate allowed), `info` trial_info's
    rows and `activity` each (candidate, src)'s records."""
    best = (pairs.sort(["trial", "candidate", "bf"], descending=[False, False, True])
            .group_by("trial", "candidate", maintain_order=True).agg(pl.col("bf").first(),
                                                                      pl.col("accepted").any()))
    linked = best.filter(pl.col("accepted")).select("trial").unique()
    best = best.drop("accepted").join(info, on="trial", how="left")
    rows = (best.join(activity, on=["candidate", "src"], how="left")
            .with_columns((pl.col("candidate") == pl.col("own")).alias("owner"))
            .with_columns((pl.col("activity").fill_null(0) - pl.col("owner").cast(pl.Int64)).alias("activity")))
    alone = info.join(rows.select("trial").unique(), on="trial", how="anti")  # trials with no candidate
    frame = pl.concat([rows, alone.with_columns(pl.lit(None, pl.Int64).alias("candidate"),
                                                pl.lit(None, pl.Float64).alias("bf"),
                                                pl.lit(None, pl.Float64).alias("activity"),
                                                pl.lit(None, pl.Boolean).alias("owner"))], how="diagonal_relaxed")
    return (frame.join(linked, on="trial", how="anti")
            .select("trial", "src", "mask", "candidate", "bf", "activity", "owner", "has_owner")
            .sort("trial", "candidate", nulls_last=True))


def trial_info(src: np.ndarray, kept: np.ndarray, keys: list[tuple[str, ...]], names: list[str], own: np.ndarray,
               has_owner: np.ndarray) -> pl.DataFrame:
    """Return per trial (in order): its source, the passes it keeps (a bit mask over the passes'
    `keys`, from `kept`, its presence bit mask over `names`), its owner (`own`), and whether its
    owner has another placed record once the trial's is taken out."""
    bit = {name: 1 << i for i, name in enumerate(names)}
    mask = np.zeros(kept.size, dtype=np.int64)
    for k, key in enumerate(keys):
        need = sum(bit[f] for f in key)
        mask |= ((kept & need) == need).astype(np.int64) << k
    return pl.DataFrame({"trial": np.arange(kept.size, dtype=np.int64), "src": src.astype(np.int64), "mask": mask,
                         "own": own, "has_owner": has_owner})


__all__ = ["LEHMER_MODULUS", "LEHMER_MULTIPLIER", "MAX_TRIALS", "MIX_ROUNDS", "SEED_STRIDE", "assign_fields",
           "attach_trials", "copy_levels", "copy_pairs", "node_draws", "presence", "scored_trial_pairs",
           "trial_candidates", "trial_info", "trial_nodes", "trial_rate", "trial_rows"]
