"""Fit the match model from comparison-pattern counts: u from random pairs, m by EM per blocking
pass, the prior from the candidate pairs; or recordlinkage's ECM or logistic classifiers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from linkcare.config import Comparison
from linkcare.errors import DataError
from linkcare.linkage.blocking import allowed
from linkcare.linkage.compare import FieldData, compare_pairs
from linkcare.linkage.model import MatchModel, PatternCounts, default_m, fit_m_em, log_likelihoods

U_SAMPLE_PAIRS = 1_000_000


def estimate_u(rng: np.random.Generator, fields: list[FieldData], src: np.ndarray, cluster: np.ndarray,
               link_type: str, records: np.ndarray, sample: int = U_SAMPLE_PAIRS) -> tuple[list[np.ndarray], int]:
    """Return u per field from a seeded sample of random record pairs, and the pairs used.

    Records are drawn uniformly (a node in proportion to the records it stands for). Pairs within
    one deterministic cluster are the same person and are left out. A level never seen among
    random pairs gets half a pair's worth of probability, not zero.
    """
    draws = u_draws(rng, float(records.sum()), sample)
    # The node of each record, in record order: a draw at position x falls on record floor(x), the
    # same node a search of the cumulative record counts finds, without a search per draw.
    owner = np.repeat(np.arange(records.size, dtype=np.int32), records.astype(np.int64))
    left, right = owner[draws[0].astype(np.int64)], owner[draws[1].astype(np.int64)]
    ok = (left != right) & allowed(link_type, src[left], src[right]) & (cluster[left] != cluster[right])
    left, right = left[ok][:sample], right[ok][:sample]
    levels = compare_pairs(fields, left, right)
    return u_from_levels(levels, [f.comparison for f in fields]), int(left.size)


def u_draws(rng: np.random.Generator, records: float, sample: int = U_SAMPLE_PAIRS) -> np.ndarray:
    """Return 2 × (2 `sample`) uniform positions among the records, in record order: each picks the
    record (and so the node) it falls on; twice the sample, as some pairs will be left out."""
    return rng.random((2, sample * 2)) * records


def u_from_levels(levels: np.ndarray, comparisons: list[Comparison]) -> list[np.ndarray]:
    """Return u per field from the levels (pairs × fields) of random pairs: over each part of the
    field's levels (linkcare.config.Comparison.parts), each level's share of the pairs in that part,
    at least half a pair's worth (a part no pair fell in: the same share for each level)."""
    u = []
    for j, c in enumerate(comparisons):
        counts = np.bincount(levels[:, j], minlength=c.n_levels).astype(np.float64)
        s = np.zeros(c.n_levels)
        for start, stop in c.parts:
            present = float(counts[start:stop].sum())
            share = counts[start:stop] / present if present else np.full(stop - start, 1.0 / (stop - start))
            share = np.maximum(share, 0.5 / max(present, 1.0))
            s[start:stop] = share / share.sum()
        u.append(s)
    return u


@dataclass
class Sessions:
    """Pattern counts of each blocking pass's (sampled) pairs, for EM."""

    keys: list[tuple[str, ...]]
    counts: list[PatternCounts]


def fit_fellegi_sunter(comparisons: list[Comparison], u: list[np.ndarray], sessions: Sessions,
                       candidate_counts: PatternCounts, known_match_pairs: float, total_pairs: float,
                       ) -> MatchModel:
    """Return the Fellegi-Sunter model: m by EM per pass, averaged over the passes weighted by the
    matches each found; the prior by a fixed point."""
    sizes = [c.n_levels for c in comparisons]
    names = [c.field for c in comparisons]
    m_sum = [np.zeros(k) for k in sizes]
    m_n = np.zeros(len(sizes))
    report = []
    for key, counts in zip(sessions.keys, sessions.counts, strict=True):
        levels, c = counts.arrays()
        if c.sum() == 0:
            continue
        # A comparison is left out of the passes whose key holds its field, or the field its levels
        # are split by: every pair of such a pass agrees on it, so it says nothing there.
        use = np.array([c.field not in key and c.given not in key for c in comparisons])
        m, lam, iterations = fit_m_em(levels, c, u, use, [default_m(cmp.n_levels, cmp.parts) for cmp in comparisons],
                                      parts=[cmp.parts for cmp in comparisons])
        matches = lam * float(c.sum())
        for j in np.nonzero(use)[0]:
            m_sum[j] += matches * m[j]
            m_n[j] += matches
        report.append({"blocking": list(key), "pairs": int(c.sum()), "match_share": lam, "iterations": iterations})
    m = [m_sum[j] / m_n[j] if m_n[j] else default_m(k, comparisons[j].parts) for j, k in enumerate(sizes)]
    prior = estimate_prior(candidate_counts, m, u, known_match_pairs, total_pairs)
    return MatchModel.from_m_u(comparisons, m, u, prior, training={
        "sessions": report, "u_from": "random record pairs", "prior": prior,
        "fields_without_m": [names[j] for j in range(len(names)) if not m_n[j]],
    })


def estimate_prior(candidates: PatternCounts, m: list[np.ndarray], u: list[np.ndarray], known_match_pairs: float,
                   total_pairs: float, max_iter: int = 100) -> float:
    """Return the chance that two random nodes match: known matches (deterministic) plus the
    expected matches among the other candidate pairs, over all pairs, found as a fixed point."""
    levels, c = candidates.arrays()
    use = np.ones(len(m), dtype=bool)
    log_bf = log_likelihoods(levels, m, use) - log_likelihoods(levels, u, use)
    lam = max(known_match_pairs, 1.0) / total_pairs
    for _ in range(max_iter):
        odds = lam / (1 - lam) * np.exp(np.clip(log_bf, -700, 700))
        expected = known_match_pairs + float((c * odds / (1 + odds)).sum())
        new = min(max(expected, 1.0) / total_pairs, 0.5)
        if abs(new - lam) <= 1e-9 * lam:
            lam = new
            break
        lam = new
    return lam


ECM_FLOOR = 1e-9  # the smallest probability an ECM estimate is taken to be


def _ecm_weights(kernel: Any, n_columns: int) -> tuple[float, np.ndarray]:
    """Return the log2-odds of the all-zero pattern and the weight of switching each one-hot column
    on, read off a fitted recordlinkage ECM kernel (naive Bayes on binarised columns).

    ECM's EM lets a probability reach exactly 0 (a level never seen among non-matches), and its own
    predictions then turn to NaN (0 × log 0). Here every estimate is floored at ECM_FLOOR instead,
    so such a level carries a large but finite weight. A column that never varied in training
    carries no weight.
    """
    log_prob = np.asarray(kernel.feature_log_prob_, dtype=float)  # (2 classes, binarised columns)
    log_prior = np.asarray(kernel.class_log_prior_, dtype=float)
    match, non_match = 1, 0  # recordlinkage's ECMClassifier puts matches in class 1
    if not np.all(np.isfinite(log_prior)):
        raise DataError("linkage.model = \"ecm\": recordlinkage's ECM put every candidate pair in one class, "
                        "so it found no matches to learn from; use model = \"fellegi_sunter\"")
    prior = np.clip(np.exp(log_prior), ECM_FLOOR, 1.0)
    baseline = float(np.log2(prior[match] / prior[non_match]))
    weights = np.zeros(n_columns)
    pos = 0
    for i, binarizer in enumerate(kernel._binarizers):  # noqa: SLF001 - the layout of the binarised columns
        width = len(binarizer.classes_)  # a column per value seen
        if width == 2:  # columns for value 0, then value 1
            p1 = np.clip(np.exp(log_prob[:, pos + 1]), ECM_FLOOR, 1.0 - ECM_FLOOR)
            on = np.log2(p1[match] / p1[non_match])
            off = np.log2((1.0 - p1[match]) / (1.0 - p1[non_match]))
            baseline += float(off)
            weights[i] = on - off
        pos += width
    return baseline, weights


def fit_recordlinkage(kind: str, comparisons: list[Comparison], levels: np.ndarray, labels: np.ndarray | None,
                      ) -> MatchModel:
    """Return a model from recordlinkage's ECM (unsupervised) or logistic (labelled) classifier,
    fitted on one-hot comparison levels and expressed as additive log2-odds weights."""
    import pandas as pd
    import recordlinkage

    sizes = [c.n_levels for c in comparisons]
    columns = [f"{c.field}={lv}" for c, k in zip(comparisons, sizes, strict=True) for lv in range(1, k)]
    onehot = np.concatenate([(levels[:, [j]] == np.arange(1, k)[None, :]).astype(np.int8)
                             for j, k in enumerate(sizes)], axis=1)
    frame = pd.DataFrame(onehot, columns=columns)
    weights = [np.zeros(k) for k in sizes]
    if kind == "ecm":
        clf = recordlinkage.ECMClassifier(binarize=None)
        clf.fit(frame)
        baseline, per_column = _ecm_weights(clf.kernel, len(columns))
        pos = 0
        for j, k in enumerate(sizes):
            weights[j][1:] = per_column[pos: pos + k - 1]
            pos += k - 1
        return MatchModel(list(comparisons), baseline, weights, trained_by="ecm",
                          training={"pairs": int(levels.shape[0]), "classifier": "recordlinkage.ECMClassifier"})
    if labels is None:
        raise ValueError("the logistic model needs labels")
    clf = recordlinkage.LogisticRegressionClassifier()
    match_index = frame.index[labels.astype(bool)]
    clf.fit(frame, match_index)
    coef = np.asarray(clf.kernel.coef_).ravel() / np.log(2)
    pos = 0
    for j, k in enumerate(sizes):
        weights[j][1:] = coef[pos: pos + k - 1]
        pos += k - 1
    intercept = float(np.asarray(clf.kernel.intercept_).ravel()[0] / np.log(2))
    return MatchModel(list(comparisons), intercept, weights, trained_by="logistic",
                      training={"pairs": int(levels.shape[0]), "matches": int(labels.sum()),
                                "classifier": "recordlinkage.LogisticRegressionClassifier"})


__all__ = ["Sessions", "estimate_prior", "estimate_u", "fit_fellegi_sunter", "fit_recordlinkage", "u_draws",
           "u_from_levels"]
