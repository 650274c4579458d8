"""Fit the match model from comparison-pattern counts: u from random pairs, m by EM per blocking
pass, the prior from the candidate pairs; or recordlinkage's ECM or logistic classifiers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linkcare.config import Comparison
from linkcare.linkage.blocking import allowed
from linkcare.linkage.compare import FieldData, compare_pairs, n_levels
from linkcare.linkage.model import MatchModel, PatternCounts, _default_m, fit_m_em, level_shares

U_SAMPLE_PAIRS = 1_000_000


def estimate_u(rng: np.random.Generator, fields: list[FieldData], src: np.ndarray, cluster: np.ndarray,
               link_type: str, records: np.ndarray, sample: int = U_SAMPLE_PAIRS) -> tuple[list[np.ndarray], int]:
    """Return u per field from a seeded sample of random record pairs, and the pairs used.

    Records are drawn uniformly (a node in proportion to the records it stands for). Pairs within
    one deterministic cluster are the same person and are left out. A level never seen among
    random pairs gets half a pair's worth of probability, not zero.
    """
    sizes = [n_levels(f.comparison) for f in fields]
    cumulative = np.cumsum(records.astype(np.float64))
    draws = u_draws(rng, float(cumulative[-1]), sample)
    left = np.searchsorted(cumulative, draws[0], side="right")
    right = np.searchsorted(cumulative, draws[1], side="right")
    ok = (left != right) & allowed(link_type, src[left], src[right]) & (cluster[left] != cluster[right])
    left, right = left[ok][:sample], right[ok][:sample]
    levels = compare_pairs(fields, left, right)
    return u_from_levels(levels, sizes), int(left.size)


def u_draws(rng: np.random.Generator, records: float, sample: int = U_SAMPLE_PAIRS) -> np.ndarray:
    """Return 2 × (2 `sample`) uniform positions among the records, in record order: each picks the
    record (and so the node) it falls on; twice the sample, as some pairs will be left out."""
    return rng.random((2, sample * 2)) * records


def u_from_levels(levels: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Return u per field from the levels (pairs × fields) of random pairs: each level's share of
    the pairs with both values present, at least half a pair's worth."""
    shares = level_shares(levels, sizes)
    u = []
    for j, share in enumerate(shares):
        present = int((levels[:, j] > 0).sum())
        floor = 0.5 / max(present, 1)
        s = np.where(np.isnan(share), 1.0 / (sizes[j] - 1), share)
        s = np.maximum(s, floor)
        s[0] = 0.0
        u.append(s / s.sum())
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
    sizes = [n_levels(c) for c in comparisons]
    names = [c.field for c in comparisons]
    m_sum = [np.zeros(k) for k in sizes]
    m_n = np.zeros(len(sizes))
    report = []
    for key, counts in zip(sessions.keys, sessions.counts, strict=True):
        levels, c = counts.arrays()
        if c.sum() == 0:
            continue
        use = np.array([name not in key for name in names])
        m, lam, iterations = fit_m_em(levels, c, u, use, [_default_m(k) for k in sizes])
        matches = lam * float(c.sum())
        for j in np.nonzero(use)[0]:
            m_sum[j] += matches * m[j]
            m_n[j] += matches
        report.append({"blocking": list(key), "pairs": int(c.sum()), "match_share": lam, "iterations": iterations})
    m = [m_sum[j] / m_n[j] if m_n[j] else _default_m(k) for j, k in enumerate(sizes)]
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
    from linkcare.linkage.model import _log_likelihoods

    log_bf = _log_likelihoods(levels, m, use) - _log_likelihoods(levels, u, use)
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


def fit_recordlinkage(kind: str, comparisons: list[Comparison], levels: np.ndarray, labels: np.ndarray | None,
                      ) -> MatchModel:
    """Return a model from recordlinkage's ECM (unsupervised) or logistic (labelled) classifier,
    fitted on one-hot comparison levels and expressed as additive log2-odds weights."""
    import pandas as pd
    import recordlinkage

    sizes = [n_levels(c) for c in comparisons]
    columns = [f"{c.field}={lv}" for c, k in zip(comparisons, sizes, strict=True) for lv in range(1, k)]
    onehot = np.concatenate([(levels[:, [j]] == np.arange(1, k)[None, :]).astype(np.int8)
                             for j, k in enumerate(sizes)], axis=1)
    frame = pd.DataFrame(onehot, columns=columns)
    weights = [np.zeros(k) for k in sizes]
    if kind == "ecm":
        clf = recordlinkage.ECMClassifier(binarize=None)
        clf.fit(frame)
        # ECM is naive Bayes on binary features, so its log-odds are additive: read each level's
        # weight off the classifier by probing it, one level switched on at a time.
        probes = np.zeros((1 + len(columns), len(columns)), dtype=np.int8)
        probes[np.arange(1, len(columns) + 1), np.arange(len(columns))] = 1
        log_proba = clf.kernel.predict_log_proba(pd.DataFrame(probes, columns=columns))
        match = clf._match_class_pos()  # noqa: SLF001 - recordlinkage exposes no public accessor
        logit = (log_proba[:, match] - log_proba[:, 1 - match]) / np.log(2)
        pos = 1
        for j, k in enumerate(sizes):
            weights[j][1:] = logit[pos: pos + k - 1] - logit[0]
            pos += k - 1
        return MatchModel(list(comparisons), float(logit[0]), weights, trained_by="ecm",
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
