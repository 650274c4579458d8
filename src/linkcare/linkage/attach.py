"""Attach records that no exact rule could place to the most likely existing person, or to no one.

Pairwise Fellegi-Sunter cannot tell two people with the same birth month, sex and area apart, so
a hospital record without an NHS token scores about evens against each of them; and some records
belong to nobody the site knows (out-of-area patients, visitors, people not registered locally).
For each unplaced cluster o with candidate people C (the placed people it has a scored pair
with), the posterior over "o belongs to B" for each B in C and "o belongs to none of them" is

    P(B)    ∝ (1 - v) · r · w(n_B) · 2^(τ · BF_B)
    P(none) ∝ v + (1 - v) · (1 - r)

- BF_B is the best log2 Bayes factor of a pair between o and B (the model's match weight less its
  prior), so 2^BF_B is how much likelier the pair's agreement is for a match than for two random
  records;
- w(n_B) is the chance, before looking at identifiers, that a record of o's source is B's, where
  B already has n_B records of that source: records are not spread evenly over people (someone
  with ten admissions is far likelier to own an eleventh than someone with none), so w(n) is
  measured on the placed records: the share of them whose owner has n other records of the
  source, over the number of people who have n (counts above 5 in a few bands);
- v is the share of records whose owner has no other record (a visitor, or someone seen once), and
  r the chance that the owner, when there is one, is among the candidates (the blocking passes
  this record can take part in found them);
- τ tempers the Bayes factors: fields are compared as if independent, so correlated fields (area
  and practice) overstate the evidence, and τ < 1 undoes that; κ tempers w in the same way
  (w^κ, normalised again over the people), because the activity measured over everyone overstates
  it between people who share every identifier, who are more alike than any two people.

v, r and τ are measured, not assumed: the records the exact rules did place are a labelled sample
of the same problem. Some of them, their NHS token masked as the unplaced records of their source
lack it, are attached by this very formula (linkcare.linkage.attach_check); v and r are counted,
τ and κ are the values that make those trials' outcomes likeliest, and the attachments the trials make at
the threshold are checked against their known owners. A source whose trials do not show, with
95% confidence, that its attachments are right at least as often as the threshold asks is not
attached at all: the attach step never acts where it cannot show that it helps. A source's `attach = false` in the
config switches it off. The cluster joins B when P(B) reaches the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from linkcare.log import get_logger

log = get_logger("link")
#: A source's attach step acts only when its trials attach at least this many records at the
#: threshold, and the lower 95% confidence bound of the share right reaches the threshold: the
#: attach step acts only where it can show that its attachments are right as often as asked.
MIN_CHECKED = 30
#: Trials with fewer records of a (source, passes) pair than this use the source's recall instead.
MIN_RECALL_TRIALS = 20
#: The bins of the posterior in which attachments are checked (the lower edges; the last bin ends at 1).
CALIBRATION_EDGES = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
#: Bands of the count of records a person already has (see activity_band).
ACTIVITY_BANDS = 9
#: The ranges of τ (the exponent of the Bayes factors) and κ (of the activity weights) searched.
TEMPERATURE_RANGE = (0.05, 1.5)
ACTIVITY_RANGE = (0.0, 1.5)


@dataclass(frozen=True)
class AttachPrior:
    """What the attach step measured on its trials, per source (by source code) unless noted."""

    #: per source and band of n (ACTIVITY_BANDS), log2 of w(n): the chance that a record of the source is
    #: the record of one given person who already has n of them
    log_weight: np.ndarray
    none_share: np.ndarray  # v: the share of records whose owner has no other record
    recall: dict[tuple[int, int], float]  # r per (source, passes available)
    source_recall: np.ndarray  # r per source, for passes seen in too few trials
    temperature: float  # τ: the exponent of the Bayes factors
    enabled: np.ndarray  # the attach step acts on this source
    #: per source: trials, attachments at the threshold, right, precision, enabled and why
    checked: list[dict[str, Any]] = field(default_factory=list)
    #: per posterior bin, over every trial: attachments and how many were right
    calibration: list[dict[str, Any]] = field(default_factory=list)
    activity_exponent: float = 1.0  # κ: the exponent of w, already applied to log_weight

    def to_json(self) -> dict[str, Any]:
        return {"bayes_factor_exponent": round(self.temperature, 6),
                "activity_exponent": round(self.activity_exponent, 6), "sources": self.checked,
                "calibration": self.calibration}


def activity_band(n: pl.Expr) -> pl.Expr:
    """Return the band of a count of records (0 to 5 each their own, then 6-9, 10-19, 20 and more)."""
    return (pl.when(n <= 5).then(n).when(n <= 9).then(6).when(n <= 19).then(7).otherwise(8)).cast(pl.Int64)


def activity_weights(cluster: np.ndarray, src: np.ndarray, records: np.ndarray,
                     n_sources: int) -> tuple[np.ndarray, np.ndarray]:
    """Return per source and band of n the log2 of w(n), and the people in each band, measured on
    the given (placed) nodes and the people (`cluster`) they belong to: the share of the source's
    records whose owner has n other records of it, over the number of people with n."""
    nodes = pl.DataFrame({"cluster": cluster, "src": src.astype(np.int64), "records": records.astype(np.int64)})
    people = nodes.select("cluster").unique()
    per = nodes.group_by("cluster", "src").agg(pl.col("records").sum().alias("n"))
    in_band = np.zeros((n_sources, ACTIVITY_BANDS), dtype=np.int64)
    owners = np.zeros((n_sources, ACTIVITY_BANDS), dtype=np.int64)
    for s in range(n_sources):
        counts = people.join(per.filter(pl.col("src") == s), on="cluster", how="left").select(
            activity_band(pl.col("n").fill_null(0)).alias("band"))
        # Each record's owner has the person's other records of the source: identical records share a
        # node, so a node of r records stands for r records, each with n - 1 others.
        shared = (nodes.filter(pl.col("src") == s).join(per.filter(pl.col("src") == s), on=["cluster", "src"])
                  .group_by(activity_band(pl.col("n") - 1).alias("band")).agg(pl.col("records").sum()))
        for band, n_people in counts.group_by("band").len().iter_rows():
            in_band[s, band] = n_people
        for band, f in shared.iter_rows():
            owners[s, band] = f
    return weights_from_counts(in_band, owners)


def weights_from_counts(people: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return activity_weights' log2 w(n) and people per band from counts per source and band of n:
    `people`, the people who hold n records of the source, and `owners`, the source's records whose
    owner has n other records of it (so an engine need only count). Half a record's worth keeps a
    band that no record fell in possible."""
    log_weight = np.full(people.shape, -1e9)
    in_band = np.zeros(people.shape)
    for s in range(people.shape[0]):
        total = float(owners[s].sum())
        if total == 0:
            continue
        for band in np.flatnonzero(people[s] > 0).tolist():
            log_weight[s, band] = math.log2((float(owners[s, band]) + 0.5) / (total + 0.5) / int(people[s, band]))
            in_band[s, band] = int(people[s, band])
    return log_weight, in_band


def tempered_weights(log_weight: np.ndarray, people: np.ndarray, exponent: float) -> np.ndarray:
    """Return log2 w(n)^κ, normalised again over the people: κ = 1 is the measured w, κ = 0 treats
    every person alike, between them the measured differences are shrunk."""
    out = np.full(log_weight.shape, -1e9)
    for s in range(log_weight.shape[0]):
        held = people[s] > 0
        if not held.any():
            continue
        scaled = exponent * log_weight[s, held]
        top = scaled.max()
        out[s, held] = scaled - top - np.log2((people[s, held] * np.exp2(scaled - top)).sum())
    return out


def placed_nodes(codes: dict[str, np.ndarray], rules: tuple[tuple[str, ...], ...]) -> np.ndarray:
    """Return which nodes have every field of at least one deterministic rule."""
    placed = np.zeros(next(iter(codes.values())).size, dtype=bool)
    for rule in rules:
        ok = np.ones(placed.size, dtype=bool)
        for f in rule:
            ok &= codes[f] >= 0
        placed |= ok
    return placed


def pass_masks(present: dict[str, np.ndarray], keys: list[tuple[str, ...]]) -> np.ndarray:
    """Return per row a bit mask of the candidate passes it can take part in (bit k: every field of
    pass k's key present), from a boolean per field."""
    n = next(iter(present.values())).size
    mask = np.zeros(n, dtype=np.int64)
    for k, key in enumerate(keys):
        ok = np.ones(n, dtype=bool)
        for f in key:
            ok &= present[f]
        mask |= ok.astype(np.int64) << k
    return mask


def orphan_candidates(cluster: np.ndarray, placed_cluster: np.ndarray, left: np.ndarray, right: np.ndarray,
                      bf: np.ndarray) -> pl.DataFrame:
    """Return, per unplaced cluster (`orphan`) and placed cluster (`candidate`) joined by a scored
    pair, the best pair between them: orphan_node, other_node and its log2 Bayes factor `bf`."""
    cl, cr = cluster[left], cluster[right]
    # Orient every pair from the unplaced cluster to the placed one; drop the rest.
    l_unplaced = ~placed_cluster[cl] & placed_cluster[cr]
    r_unplaced = ~placed_cluster[cr] & placed_cluster[cl]
    keep = l_unplaced | r_unplaced
    frame = pl.DataFrame({
        "orphan": np.where(l_unplaced, cl, cr)[keep], "candidate": np.where(l_unplaced, cr, cl)[keep],
        "orphan_node": np.where(l_unplaced, left, right)[keep], "other_node": np.where(l_unplaced, right, left)[keep],
        "bf": bf[keep]}, schema={"orphan": pl.Int64, "candidate": pl.Int64, "orphan_node": pl.Int64,
                                "other_node": pl.Int64, "bf": pl.Float64})
    return (frame.sort(["orphan", "candidate", "bf", "orphan_node", "other_node"],
                       descending=[False, False, True, False, False])
            .group_by("orphan", "candidate", maintain_order=True).first())


def orphan_rows(candidates: pl.DataFrame, cluster: np.ndarray, src: np.ndarray, records: np.ndarray,
                mask: np.ndarray) -> pl.DataFrame:
    """Return the orphan rows of `orphan_candidates` with what the prior needs: `src` and `mask` of
    the orphan's reference node (its smallest node: the source and the passes available that its
    prior is taken from), and `activity` (the candidate's records of that source)."""
    n = cluster.size
    nodes = pl.DataFrame({"node": np.arange(n, dtype=np.int64), "cluster": cluster, "src": src.astype(np.int64),
                          "records": records.astype(np.int64), "mask": mask})
    orphans = candidates.select("orphan").unique()
    members = nodes.join(orphans, left_on="cluster", right_on="orphan", how="semi")
    reference = (members.sort("node").group_by("cluster", maintain_order=True)
                 .agg(pl.col("src").first(), pl.col("mask").first()).rename({"cluster": "orphan"}))
    per = nodes.group_by("cluster", "src").agg(pl.col("records").sum().alias("activity"))
    return (candidates.join(reference, on="orphan", how="left")
            .join(per, left_on=["candidate", "src"], right_on=["cluster", "src"], how="left"))


def prior_columns(frame: pl.DataFrame, prior: AttachPrior) -> pl.DataFrame:
    """Return the orphan rows with the prior's columns, from the source (`src`) and passes (`mask`)
    of the orphan's reference node and the candidate's records of that source (`activity`):
    `log_weight` (log2 of w), `log_found` (log2 of (1 - v) r), `log_none` (log2 of
    v + (1 - v)(1 - r)) and `enabled`."""
    n_sources, n_bands = prior.log_weight.shape
    weights = pl.DataFrame({"src": np.repeat(np.arange(n_sources, dtype=np.int64), n_bands),
                            "band": np.tile(np.arange(n_bands, dtype=np.int64), n_sources),
                            "log_weight": prior.log_weight.ravel()})
    recall = pl.DataFrame({"src": [s for s, _ in prior.recall], "mask": [m for _, m in prior.recall],
                           "r": list(prior.recall.values())}, schema={"src": pl.Int64, "mask": pl.Int64,
                                                                     "r": pl.Float64})
    per_source = pl.DataFrame({"src": np.arange(n_sources, dtype=np.int64), "v": prior.none_share,
                               "r_source": prior.source_recall, "enabled": prior.enabled})
    r = pl.coalesce("r", "r_source")
    found = ((1.0 - pl.col("v")) * r).clip(1e-300, None).log(2)
    none = (pl.col("v") + (1.0 - pl.col("v")) * (1.0 - r)).clip(1e-300, None).log(2)
    return (frame.with_columns(activity_band(pl.col("activity").fill_null(0).cast(pl.Int64)).alias("band"))
            .join(weights, on=["src", "band"], how="left")
            .join(per_source, on="src", how="left")
            .join(recall, on=["src", "mask"], how="left")
            .with_columns(found.alias("log_found"), none.alias("log_none"), pl.col("enabled").fill_null(False))
            .drop("v", "r", "r_source", "band"))


def with_posteriors(frame: pl.DataFrame, temperature: float) -> pl.DataFrame:
    """Return the rows with `posterior` (each candidate's) and `none` (the orphan's posterior of
    belonging to none of them). Rows hold orphan, bf, log_weight, log_found and log_none; every
    orphan's rows must be present, so a slice of orphans (a Spark partition) is decided on its own."""
    score = pl.col("log_found") + pl.col("log_weight") + temperature * pl.col("bf")
    frame = frame.with_columns(score.alias("_score"))
    top = pl.max_horizontal(pl.col("_score").max().over("orphan"), pl.col("log_none"))
    frame = frame.with_columns((2.0 ** (pl.col("_score") - top)).alias("_mass"),
                               (2.0 ** (pl.col("log_none") - top)).alias("_none"))
    total = pl.col("_mass").sum().over("orphan") + pl.col("_none")
    return frame.with_columns((pl.col("_mass") / total).alias("posterior"),
                              (pl.col("_none") / total).alias("none")).drop("_score", "_mass", "_none")


def choose_attachments(frame: pl.DataFrame, threshold: float, temperature: float) -> pl.DataFrame:
    """Return the attachments to make (orphan_node, other_node, posterior), at most one per orphan:
    its likeliest candidate, where that reaches the threshold and its source is enabled."""
    scored = with_posteriors(frame, temperature)
    chosen = (scored.filter(pl.col("enabled") & (pl.col("posterior") >= threshold))
              .sort(["orphan", "posterior", "candidate"], descending=[False, True, False])
              .group_by("orphan", maintain_order=True).first())
    return chosen.select("orphan_node", "other_node", "posterior")


def fit_prior(trials: pl.DataFrame, log_weight: np.ndarray, people: np.ndarray, allowed: np.ndarray,
              threshold: float) -> AttachPrior:
    """Return the attach step's prior, measured on trials: placed records whose owner is known,
    made to look unplaced.

    `trials` has a row per trial and candidate: trial, src, mask, candidate (null for a trial with
    no candidate), bf, activity (the candidate's records in the trial's source, the trial's own
    left out), owner (the candidate is the trial's owner) and, per trial, has_owner (its owner has
    another placed record). `log_weight` and `people` are activity_weights'; `allowed` marks the
    sources the config lets attach.
    """
    n_sources = log_weight.shape[0]
    per_trial = trials.group_by("trial").agg(pl.col("src").first(), pl.col("mask").first(),
                                            pl.col("has_owner").first(), pl.col("owner").fill_null(False).any()
                                            .alias("found")).sort("trial")
    none_share = np.zeros(n_sources)
    source_recall = np.zeros(n_sources)
    for row in per_trial.group_by("src").agg((~pl.col("has_owner")).mean().alias("v"),
                                            pl.col("found").filter(pl.col("has_owner")).mean().alias("r")).iter_rows():
        s, v, r = row
        none_share[s] = v
        source_recall[s] = r if r is not None else 0.0
    recall = {(int(s), int(m)): float(r) for s, m, r, n in per_trial.filter(pl.col("has_owner"))
              .group_by("src", "mask").agg(pl.col("found").mean(), pl.len()).iter_rows() if n >= MIN_RECALL_TRIALS}
    prior = AttachPrior(log_weight, none_share, recall, source_recall, 1.0, np.ones(n_sources, dtype=bool))
    rows = prior_columns(trials.rename({"trial": "orphan"}).filter(pl.col("candidate").is_not_null()), prior)
    exponents = _fit_exponents(_Trials.of(rows), log_weight, people)
    tempered = replace(prior, log_weight=tempered_weights(log_weight, people, exponents[1]),
                       activity_exponent=exponents[1])
    rows = prior_columns(rows.drop("log_weight", "log_found", "log_none", "enabled"), tempered)
    return _checked(tempered, rows, per_trial, exponents[0], allowed, threshold)


@dataclass(frozen=True)
class _Trials:
    """The trials' candidate rows as arrays, sorted by trial, for a fast likelihood."""

    starts: np.ndarray  # first row of each trial
    bf: np.ndarray
    src: np.ndarray
    band: np.ndarray
    log_found: np.ndarray
    log_none: np.ndarray  # per trial
    owner_row: np.ndarray  # per trial, the row of its owner, or -1 when its owner is not a candidate

    @classmethod
    def of(cls, rows: pl.DataFrame) -> _Trials:
        rows = rows.sort("orphan", "candidate").with_row_index("_row")
        first = rows.group_by("orphan", maintain_order=True).agg(
            pl.col("_row").first().alias("start"), pl.col("log_none").first(),
            pl.col("_row").filter(pl.col("owner")).first().alias("owner_row"))
        return cls(first["start"].to_numpy().astype(np.int64), rows["bf"].to_numpy(), rows["src"].to_numpy(),
                   rows.select(activity_band(pl.col("activity").fill_null(0).cast(pl.Int64))).to_series().to_numpy(),
                   rows["log_found"].to_numpy(), first["log_none"].to_numpy(),
                   first["owner_row"].fill_null(-1).to_numpy().astype(np.int64))

    def log_likelihood(self, weights: np.ndarray, evidence: float) -> float:
        """Return the log likelihood of the trials' known outcomes (their owner, or none)."""
        if self.starts.size == 0:
            return 0.0
        score = self.log_found + weights[self.src, self.band] + evidence * self.bf
        top = np.maximum(np.maximum.reduceat(score, self.starts), self.log_none)
        per_row_top = np.repeat(top, np.diff(np.r_[self.starts, score.size]))
        total = np.add.reduceat(np.exp2(score - per_row_top), self.starts) + np.exp2(self.log_none - top)
        chosen = np.where(self.owner_row >= 0, score[np.maximum(self.owner_row, 0)], self.log_none)
        return float(((chosen - top) - np.log2(total)).sum())


def _golden(f: Any, low: float, high: float, steps: int = 25) -> float:
    """Return the argument in [low, high] where f (single-peaked) is largest, by golden-section search."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = f(a), f(b)
    for _ in range(steps):
        if fa >= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = f(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = f(b)
    return (low + high) / 2


def _fit_exponents(trials: _Trials, log_weight: np.ndarray, people: np.ndarray) -> tuple[float, float]:
    """Return (τ, κ), the exponents of the Bayes factors and of the activity weights that make the
    trials' outcomes likeliest, by alternating searches."""
    evidence, activity = 1.0, 1.0
    for _ in range(3):
        weights = tempered_weights(log_weight, people, activity)
        evidence = _golden(lambda t, w=weights: trials.log_likelihood(w, t), *TEMPERATURE_RANGE)
        activity = _golden(lambda k, t=evidence: trials.log_likelihood(tempered_weights(log_weight, people, k), t),
                           *ACTIVITY_RANGE)
    return round(evidence, 4), round(activity, 4)


def wilson_lower(right: int, n: int, z: float = 1.6449) -> float:
    """Return the one-sided 95% lower confidence bound of a share right of n (Wilson's score
    interval), 0 for n = 0."""
    if n == 0:
        return 0.0
    p = right / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def _checked(prior: AttachPrior, rows: pl.DataFrame, per_trial: pl.DataFrame, temperature: float,
             allowed: np.ndarray, threshold: float) -> AttachPrior:
    """Return the prior at τ with each source enabled only if its trials' attachments at the
    threshold are right at least that often, and the calibration of the trials' attachments."""
    scored = with_posteriors(rows, temperature)
    best = (scored.sort(["orphan", "posterior", "candidate"], descending=[False, True, False])
            .group_by("orphan", maintain_order=True).first().select("orphan", "posterior", "owner"))
    trials = per_trial.rename({"trial": "orphan"}).join(best, on="orphan", how="left")
    enabled = np.zeros(prior.none_share.size, dtype=bool)
    checked = []
    for s in sorted(trials["src"].unique().to_list()):
        mine = trials.filter(pl.col("src") == s)
        attached = mine.filter(pl.col("posterior") >= threshold)
        right = int(attached["owner"].sum())
        precision = right / attached.height if attached.height else None
        low = wilson_lower(right, attached.height)
        if not allowed[s]:
            why = "switched off in the config (attach = false)"
        elif attached.height < MIN_CHECKED:
            why = f"its trials attached {attached.height} record(s), too few to check (at least {MIN_CHECKED})"
        elif low < threshold:
            why = (f"its trials' attachments were right {right / attached.height:.1%} of the time, which does not "
                   f"show (at 95% confidence, lower bound {low:.1%}) that they are right as often as the threshold")
        else:
            why = (f"its trials' attachments were right at least as often as the threshold (95% confidence, "
                   f"lower bound {low:.1%})")
            enabled[s] = True
        checked.append({"src": int(s), "trials": mine.height, "attached": attached.height, "right": right,
                        "precision": None if precision is None else round(precision, 6),
                        "none_share": round(float(prior.none_share[s]), 6),
                        "recall": round(float(prior.source_recall[s]), 6), "enabled": bool(enabled[s]),
                        "why": why})
    calibration = []
    edges = [*CALIBRATION_EDGES, 1.0 + 1e-12]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = trials.filter((pl.col("posterior") >= lo) & (pl.col("posterior") < hi))
        calibration.append({"from": lo, "to": min(hi, 1.0), "attachments": inside.height,
                            "right": int(inside["owner"].sum())})
    return replace(prior, temperature=temperature, enabled=enabled, checked=checked, calibration=calibration)


def orphan_decisions(rows: pl.DataFrame, chosen: pl.DataFrame, temperature: float) -> pl.DataFrame:
    """Return per unplaced cluster (`orphan`) with a candidate: its likeliest candidate (as a node of
    it, `candidate_node`), that candidate's posterior, the posterior of none, how many candidates it
    had, the node of its best pair (`orphan_node`), whether it was attached, and the next
    ALTERNATIVES candidates (`alternative_nodes`) with their posteriors (`alternative_posteriors`).
    As with_posteriors, every orphan's rows must be present, so a slice of orphans is decided on its own."""
    scored = with_posteriors(rows, temperature)
    best = (scored.sort(["orphan", "posterior", "candidate"], descending=[False, True, False])
            .group_by("orphan", maintain_order=True)
            .agg(pl.col("other_node").first().alias("candidate_node"), pl.col("posterior").first(),
                 pl.col("none").first(), pl.len().alias("candidates"), pl.col("orphan_node").first(),
                 pl.col("other_node").slice(1, ALTERNATIVES).alias("alternative_nodes"),
                 pl.col("posterior").slice(1, ALTERNATIVES).alias("alternative_posteriors")))
    return best.with_columns(pl.col("orphan_node").is_in(chosen["orphan_node"].implode()).alias("attached"))


def attach_decisions(rows: pl.DataFrame, chosen: pl.DataFrame, cluster: np.ndarray, temperature: float) -> pl.DataFrame:
    """Return per node of every unplaced cluster with a candidate: orphan_decisions' columns but the
    orphan and its best pair's node."""
    best = orphan_decisions(rows, chosen, temperature)
    nodes = pl.DataFrame({"node": np.arange(cluster.size, dtype=np.int64), "orphan": cluster})
    return (nodes.join(best, on="orphan", how="inner")
            .select("node", "candidate_node", "posterior", "none", pl.col("candidates").cast(pl.Int64), "attached",
                    pl.col("alternative_nodes").cast(pl.List(pl.Int64)),
                    pl.col("alternative_posteriors").cast(pl.List(pl.Float64)))
            .sort("node"))


#: The runners-up that attachments.parquet names beside each unplaced cluster's likeliest candidate.
ALTERNATIVES = 4


def log_attach_prior(prior: AttachPrior, names: list[str]) -> None:
    """Log what the attach step measured on its trials, per source (counts and shares only)."""
    log.info("attach step: Bayes factors to the power %.3f and activity weights to the power %.3f, measured on its "
             "trials", prior.temperature, prior.activity_exponent)
    for row in prior.checked:
        shown = "-" if row["precision"] is None else f"{row['precision']:.1%}"
        log.info("attach step, source %s: %s trials (owner has no other record: %.1f%%, owner among the "
                 "candidates: %.1f%%), %s attached at the threshold, right %s; %s: %s", names[row["src"]],
                 f"{row['trials']:,}", 100 * row["none_share"], 100 * row["recall"], f"{row['attached']:,}", shown,
                 "attaches" if row["enabled"] else "does not attach", row["why"])
    for row in prior.calibration:
        log.debug("attach step trials with a posterior from %g to %g: %s, right %s", row["from"], row["to"],
                  f"{row['attachments']:,}", f"{row['right']:,}")


def attach_facts(prior: AttachPrior, names: list[str]) -> dict[str, Any]:
    """Return the prior's facts for the manifest, with source names instead of codes."""
    facts = prior.to_json()
    facts["sources"] = [{"source": names[row["src"]], **{k: v for k, v in row.items() if k != "src"}}
                        for row in prior.checked]
    return facts


__all__ = ["ACTIVITY_BANDS", "ALTERNATIVES", "CALIBRATION_EDGES", "MIN_CHECKED", "AttachPrior", "activity_band",
           "activity_weights", "attach_decisions", "attach_facts", "choose_attachments", "fit_prior",
           "log_attach_prior", "orphan_candidates", "orphan_decisions", "orphan_rows", "pass_masks", "placed_nodes",
           "prior_columns", "tempered_weights", "weights_from_counts", "wilson_lower", "with_posteriors"]
