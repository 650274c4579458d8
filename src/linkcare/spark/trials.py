"""The attach step's trials on Spark (linkcare.linkage.attach_check): the same placed nodes drawn,
given the same fields, compared with the candidates the same passes find and scored by the same
model, so that linkcare.linkage.attach.fit_prior, run on the driver, measures the same prior.

A node's draw is node_draws' Park-Miller step on its number and the seed, in Spark SQL's long
arithmetic with pmod (no product reaches 2^63), so it does not depend on where the node is. What
reaches the driver is bounded by the trials, not by the site: per source the records of its placed
nodes and the presence combinations of its unplaced nodes with their counts; the drawn nodes
(about MAX_TRIALS per source, each with its source, records, presence bit mask, person, and the
counts behind its term frequencies, never a value); and per trial and candidate person the best
pair's log2 Bayes factor, whether a pair would link them, and the candidate's records of the
trial's source. The levels at which a trial meets its own node's copies are drawn on the driver by
copy_levels, in trial order, as on one machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from linkcare.config import Linkage
from linkcare.linkage.attach_check import (
    LEHMER_MODULUS,
    LEHMER_MULTIPLIER,
    MIX_ROUNDS,
    SEED_STRIDE,
    assign_fields,
    copy_pairs,
    scored_trial_pairs,
    trial_info,
    trial_rate,
    trial_rows,
)
from linkcare.linkage.model import MatchModel
from linkcare.spark.decide import score_pairs
from linkcare.spark.pairs import Pass, allowed, compare_in_partitions

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

#: What trial_rows takes when there is no trial.
_PAIRS = {"trial": pl.Int64, "candidate": pl.Int64, "bf": pl.Float64, "accepted": pl.Boolean}
_ACTIVITY = {"candidate": pl.Int64, "src": pl.Int64, "activity": pl.Int64}


def node_draw(seed: int) -> Column:
    """Return linkcare.linkage.attach_check.node_draws of each row's `node` as a Spark column: the
    same number, from long arithmetic (states stay below 2^31, products below 2^62)."""
    from pyspark.sql import functions as F

    modulus = F.lit(LEHMER_MODULUS)
    state = F.pmod(F.col("node") + F.lit(1 + (seed % LEHMER_MODULUS) * SEED_STRIDE), modulus)
    for offset in MIX_ROUNDS:
        state = F.pmod(state * F.lit(LEHMER_MULTIPLIER), modulus)
        state = F.pmod(state * state + F.lit(offset), modulus)
    return (state + F.lit(0.5)) / F.lit(float(LEHMER_MODULUS))


def presence_mask(names: list[str]) -> Column:
    """Return linkcare.linkage.attach_check.presence as a column: bit b set when names[b] has a value."""
    from pyspark.sql import functions as F

    mask = F.lit(0).cast("long")
    for bit, name in enumerate(names):
        mask = mask + F.when(F.col(name).isNotNull(), F.lit(1 << bit)).otherwise(0)
    return mask


def spark_trials(spark: SparkSession, nodes: DataFrame, passes: list[Pass], model: MatchModel, lk: Linkage,
                 fields: tuple[str, ...], tf_totals: dict[int, tuple[str, float]]) -> pl.DataFrame:
    """Return the trials as linkcare.linkage.attach_check.attach_trials does: a row per trial and
    candidate person, with its best pair's log2 Bayes factor and whether it is the owner.

    `nodes` holds each node's person and `person_placed` (the placed nodes of its person) beside the
    node columns and the term-frequency counts."""
    names = sorted(fields)
    keys = [p.plan.key for p in passes]
    drawn = _drawn(nodes, names, lk.seed, [column for column, _ in tf_totals.values()])
    kept, own = drawn["kept"].to_numpy(), drawn["person"].to_numpy()
    records = drawn["records"].to_numpy()
    info = trial_info(drawn["src"].to_numpy(), kept, keys, names, own,
                      (records > 1) | (drawn["person_placed"].to_numpy() - 1 > 0))
    if drawn.height == 0:
        return trial_rows(pl.DataFrame(schema=_PAIRS), info, pl.DataFrame(schema=_ACTIVITY))
    trials = spark.createDataFrame(drawn.select("trial", pl.col("node").alias("x"), "kept").to_pandas())
    found = _candidate_rows(nodes, passes, trials, model, lk, tf_totals, names)
    copied, levels = copy_pairs(keys, model, kept, names, records > 1, lk.seed)
    counts = {j: (drawn[column].fill_null(0).to_numpy().astype(np.float64)[copied], total)
              for j, (column, total) in tf_totals.items()}

    def frequency(j: int, exact: np.ndarray) -> np.ndarray:
        count, total = counts[j]
        return count[exact] / total

    copies = scored_trial_pairs(model, levels, copied, own[copied], lk.threshold, frequency)
    pairs = pl.concat([found.select(list(_PAIRS)).cast(_PAIRS), copies.cast(_PAIRS)])  # type: ignore[arg-type]
    own_activity = drawn.select(pl.col("person").alias("candidate"), "src", pl.col("own_activity").alias("activity"))
    activity = pl.concat([found.select("candidate", "src", "activity"), own_activity]).unique()
    return trial_rows(pairs, info, activity)


def _drawn(nodes: DataFrame, names: list[str], seed: int, tf_columns: list[str]) -> pl.DataFrame:
    """Return per trial, in order (trial), its node, src, records, person, person_placed, the records of
    its person in its source (own_activity), its term-frequency counts and the fields it keeps (`kept`,
    a presence bit mask): linkcare.linkage.attach_check.trial_nodes's draw, made in Spark."""
    from pyspark.sql import functions as F

    marked = nodes.withColumn("presence", presence_mask(names))
    orphan = F.col("person_placed") == 0
    combos: dict[int, list[tuple[int, int]]] = {}
    for row in marked.where(orphan).groupBy("src", "presence").count().collect():
        combos.setdefault(int(row["src"]), []).append((int(row["presence"]), int(row["count"])))
    totals = {int(r["src"]): int(r["n"]) for r in marked.where(F.col("placed") & F.col("src").isin(list(combos)))
              .groupBy("src").agg(F.sum("records").alias("n")).collect()}
    rates = {s: trial_rate(n) for s, n in totals.items()}
    schema = {"trial": pl.Int64, "node": pl.Int64, "src": pl.Int64, "records": pl.Int64, "person": pl.Int64,
              "person_placed": pl.Int64, "own_activity": pl.Int64, **{c: pl.Int64 for c in tf_columns},
              "kept": pl.Int64}
    if not rates:
        return pl.DataFrame(schema=schema)
    rate = F.create_map(*[x for s, r in sorted(rates.items()) for x in (F.lit(s), F.lit(r))])[F.col("src")]
    chosen = marked.where(F.col("placed") & F.col("src").isin(list(rates))).where(
        node_draw(seed) < F.least(F.lit(1.0), F.col("records") * rate))
    own = nodes.groupBy("person", "src").agg(F.sum("records").alias("own_activity"))
    got = pl.from_arrow(chosen.join(own, ["person", "src"]).select(
        "node", "src", "records", "person", "person_placed", "own_activity", *tf_columns, "presence").toArrow())
    assert isinstance(got, pl.DataFrame)
    parts = []
    for s in sorted(rates):  # as trial_nodes: a source at a time, its nodes in order
        mine = got.filter(pl.col("src") == s).sort("node")
        present, counts = np.array(sorted(combos[s]), dtype=np.int64).T
        keep = assign_fields(mine.height, present, counts, seed)
        parts.append(mine.with_columns(pl.Series("kept", keep & mine["presence"].to_numpy())))
    frame = pl.concat(parts).with_row_index("trial").drop("presence")
    return frame.select(list(schema)).cast(schema)  # type: ignore[arg-type]


def _candidate_rows(nodes: DataFrame, passes: list[Pass], trials: DataFrame, model: MatchModel, lk: Linkage,
                    tf_totals: dict[int, tuple[str, float]], names: list[str]) -> pl.DataFrame:
    """Return per trial and candidate person that the passes find for it (trial, candidate, src,
    bf, accepted, activity): the best pair's log2 Bayes factor, whether a pair reaches the
    threshold, and the candidate's records of the trial's source."""
    from pyspark.sql import functions as F

    comparisons = list(lk.comparisons)
    tf_columns = [column for column, _ in tf_totals.values()]
    bit = {name: 1 << b for b, name in enumerate(names)}
    base = trials.join(nodes.select(F.col("node").alias("x"), F.col("src").alias("src_l"),
                                    F.col("person").alias("own"), *names, *tf_columns), "x")
    found = _found(base, passes, bit).distinct()
    left = base.select("trial", "src_l", "own", *tf_columns, *[
        F.when(F.col("kept").bitwiseAND(F.lit(bit[c.field])) != 0, F.col(c.field)).alias(f"{c.field}__l")
        for c in comparisons])
    right = nodes.select(F.col("node").alias("y"), F.col("src").alias("src_r"), F.col("person").alias("candidate"),
                         F.col("person_placed").alias("placed_y"), *[F.col(c.field).alias(f"{c.field}__r")
                                                                     for c in comparisons])
    owner = F.when(F.col("candidate") == F.col("own"), 1).otherwise(0)
    pairs = (found.join(left, "trial").join(right, "y")
             .where((F.col("y") != F.col("x")) & allowed(lk.link_type) & (F.col("placed_y") - owner > 0)))
    compared = compare_in_partitions(pairs, comparisons, ["trial", "candidate", "src_l", *tf_columns])
    scored = score_pairs(compared, model, tf_totals)
    best = scored.groupBy("trial", "candidate", F.col("src_l").alias("src")).agg(
        F.max(F.col("weight") - F.lit(model.intercept)).alias("bf"),
        F.max(F.col("probability") >= F.lit(lk.threshold)).alias("accepted"))
    activity = nodes.groupBy(F.col("person").alias("candidate"), "src").agg(F.sum("records").alias("activity"))
    got = pl.from_arrow(best.join(activity, ["candidate", "src"], "left").toArrow())
    assert isinstance(got, pl.DataFrame)
    return got.cast({"trial": pl.Int64, "candidate": pl.Int64, "src": pl.Int64, "activity": pl.Int64})


def _found(base: DataFrame, passes: list[Pass], bit: dict[str, int]) -> DataFrame:
    """Return (trial, x, y): every node y sharing a block of a pass with trial x's kept values, for the
    passes whose key the trial keeps (as trial_candidates: a sorted-neighbourhood pass within the
    block, ranks at most window // 2 apart)."""
    from pyspark.sql import functions as F

    found: DataFrame | None = None
    for p in passes:
        need = sum(bit[f] for f in p.plan.key)
        mine = base.where(F.col("kept").bitwiseAND(F.lit(need)) == need)
        members = p.members.select(F.col("node").alias("y"), *p.on)
        if not p.plan.window:
            parts = [mine.select("trial", "x", *p.on).join(members, p.on)]
        else:  # the trial's node is a member: its block and rank are the trial's
            at = mine.select("trial", "x").join(p.members.select(F.col("node").alias("x"), *p.on), "x")
            half = p.plan.window // 2
            parts = [at.withColumn("rank", F.col("rank") + d).join(members, p.on) for d in range(-half, half + 1)]
        for part in parts:
            pairs = part.select("trial", "x", "y")
            found = pairs if found is None else found.unionByName(pairs)
    assert found is not None
    return found


__all__ = ["node_draw", "presence_mask", "spark_trials"]
