"""How well predicted probabilities of emergency admission match what happened: discrimination (AUROC with a
bootstrap interval, average precision), accuracy (Brier score), calibration (slope and intercept), and the
yield of flagging the highest-risk share of a population, overall and per subgroup.

Everything is numpy on whole arrays and deterministic for a seed. The rank-based metrics share one layout of
the people (negatives, then positives, each in ascending p), built with two sorts; each bootstrap replicate
then costs O(n) on that layout, so a 200-replicate interval on a million people takes a few seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray

BoolArray = NDArray[np.bool_]
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

# Keys of `risk_metrics` that a subgroup too small to be meaningful gets as None.
_METRIC_KEYS = ("outcome_rate", "auroc", "auroc_ci", "auprc", "brier", "calibration_slope",
                "calibration_intercept", "top")
_CLIP = 1e-12  # p is clipped to [_CLIP, 1 - _CLIP] before taking its logit in `calibration`


def auroc(y: ArrayLike, p: ArrayLike, weights: ArrayLike | None = None) -> float:
    """Return the area under the ROC curve: the chance that a random person with the outcome has a higher p
    than a random person without, ties counted as one half (sklearn's `roc_auc_score`); nan if y is one class.

    `weights` are per-person frequency weights (a weight of 3 counts the person three times, 0 leaves them out).
    """
    yb, pf = _check(y, p)
    layout = _Layout.build(yb, pf)
    if weights is None:
        return layout.auroc_unweighted()
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != pf.shape:
        raise ValueError(f"weights has shape {w.shape} but p has {pf.shape}; give one weight per person")
    bad = int(np.count_nonzero(~np.isfinite(w) | (w < 0)))
    if bad:
        raise ValueError(f"weights has {bad} negative, missing or infinite value(s); weights must be 0 or more")
    return layout.auroc(_cumulative(w[layout.order]))


def auroc_interval(y: ArrayLike, p: ArrayLike, replicates: int = 200, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Return the percentile bootstrap interval (low, high) of the AUROC at `level`; (nan, nan) if y is one class.

    Replicate r resamples the n people with replacement: its frequency weights are
    `np.bincount(rng.integers(0, n, n), minlength=n)` for `rng = np.random.default_rng(seed)`, drawn in turn,
    so the interval is that of `auroc(y, p, weights)` over those weights. Replicates that happen to draw only
    one class are left out.
    """
    yb, pf = _check(y, p)
    _check_bootstrap(replicates, level)
    return _interval(_Layout.build(yb, pf), replicates, seed, level)


def average_precision(y: ArrayLike, p: ArrayLike) -> float:
    """Return the average precision (sklearn's `average_precision_score`): precision at each distinct p that
    some person with the outcome has, weighted by the share of outcomes at that p; nan if nobody has the outcome.
    """
    yb, pf = _check(y, p)
    return _Layout.build(yb, pf).average_precision()


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Return the Brier score: the mean squared difference between p and the outcome (0 is perfect)."""
    yb, pf = _check(y, p, probabilities=True)
    return _brier(yb, pf)


def calibration(y: ArrayLike, p: ArrayLike) -> tuple[float, float]:
    """Return (slope, intercept): b of logit P(y=1) = a + b logit(p), and calibration-in-the-large, a of
    logit P(y=1) = a + logit(p) with the slope fixed at 1; (1, 0) is perfect calibration.

    Both are maximum-likelihood logistic fits by Newton-Raphson, with p clipped to [1e-12, 1 - 1e-12]. A value
    is nan when it is not identifiable: y of one class, all p equal (slope), or no convergence (separation).
    """
    yb, pf = _check(y, p, probabilities=True)
    return _calibration(yb, pf)


def top_share(y: ArrayLike, p: ArrayLike, shares: Sequence[float] = (0.005, 0.05, 0.2)) -> list[dict[str, Any]]:
    """Return, per share s, what flagging the ceil(s n) people with the highest p would find: people flagged,
    those with the outcome, sensitivity (of all outcomes) and PPV.

    People with equal p are taken in their order in the input, so the result is the same on every run.
    """
    yb, pf = _check(y, p)
    _check_shares(shares)
    return _top_share(yb, pf, shares)


def risk_metrics(y: ArrayLike, p: ArrayLike, seed: int = 0, replicates: int = 200) -> dict[str, Any]:
    """Return every metric of this module for one population: people, outcomes, outcome_rate, auroc, auroc_ci
    ([low, high], 95% bootstrap), auprc, brier, calibration_slope, calibration_intercept and top (`top_share`)."""
    yb, pf = _check(y, p, probabilities=True)
    _check_bootstrap(replicates, 0.95)
    layout = _Layout.build(yb, pf)
    slope, intercept = _calibration(yb, pf)
    outcomes = int(np.count_nonzero(yb))
    return {
        "people": int(yb.size),
        "outcomes": outcomes,
        "outcome_rate": outcomes / yb.size,
        "auroc": layout.auroc_unweighted(),
        "auroc_ci": list(_interval(layout, replicates, seed, 0.95)),
        "auprc": layout.average_precision(),
        "brier": _brier(yb, pf),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        "top": _top_share(yb, pf, (0.005, 0.05, 0.2)),
    }


def subgroup_metrics(frame: pl.DataFrame, by: str, seed: int = 0, replicates: int = 200, min_people: int = 50,
                     min_outcomes: int = 10) -> list[dict[str, Any]]:
    """Return `risk_metrics` per value of column `by` of a frame with columns y (outcome) and p (probability),
    as dicts that start with "group" (= by) and "value" (the value as text, "unknown" for null), sorted by value
    with unknown last.

    A group with fewer than `min_people` people, fewer than `min_outcomes` outcomes, or nobody with or without
    the outcome keeps only its people and outcomes counts; its other metrics are None, as too small to mean much.
    """
    missing = [c for c in ("y", "p", by) if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame has no column(s) {', '.join(missing)}; it needs y, p and the `by` column")
    if by in ("y", "p"):
        raise ValueError(f"by={by!r}: subgroups must be defined by a column other than y and p")
    if min_people < 0 or min_outcomes < 0:
        raise ValueError(f"min_people and min_outcomes must be 0 or more, got {min_people} and {min_outcomes}")
    for column in ("y", "p"):
        nulls = frame[column].null_count()
        if nulls:
            raise ValueError(f"column {column} has {nulls} null value(s); drop or fill them before scoring")
    # A stable sort keeps people of a group in input order, which `top_share` uses to break ties in p.
    ordered = frame.select(by, "y", "p").sort(by, nulls_last=True, maintain_order=True)
    groups = ordered.group_by(by, maintain_order=True).agg(pl.len().alias("__people"))
    yb, pf = _check(ordered["y"].to_numpy(), ordered["p"].to_numpy(), probabilities=True)
    ends = np.cumsum(groups["__people"].to_numpy())
    results = []
    for value, start, end in zip(groups[by].to_list(), ends - groups["__people"].to_numpy(), ends, strict=True):
        gy, gp = yb[start:end], pf[start:end]
        people, outcomes = int(end - start), int(np.count_nonzero(gy))
        head = {"group": by, "value": "unknown" if value is None else str(value)}
        if people < min_people or outcomes < max(min_outcomes, 1) or outcomes == people:
            results.append(head | {"people": people, "outcomes": outcomes} | dict.fromkeys(_METRIC_KEYS))
        else:
            results.append(head | risk_metrics(gy, gp, seed=seed, replicates=replicates))
    return results


@dataclass(frozen=True)
class _Layout:
    """The people laid out as all negatives then all positives, each in ascending p, and where each distinct p
    of a positive falls among the negatives: all that the AUROC (weighted or not) and average precision need.

    With C[j] the total weight of the first j people of the layout, the positives at distinct value v (layout
    positions start..end) outrank the negatives before `below` and tie with those from `below` to `upto`, so
    2 x their AUROC numerator is (C[end] - C[start]) (C[below] + C[upto]).
    """

    order: IntArray  # person index at each layout position
    negatives: int
    start: IntArray  # first layout position of each distinct p among positives
    end: IntArray  # one past the last
    below: IntArray  # negatives with p less than that value
    upto: IntArray  # negatives with p at most that value

    @classmethod
    def build(cls, y: BoolArray, p: FloatArray) -> _Layout:
        """Return the layout of validated outcomes and probabilities (two sorts, each of one class)."""
        neg, pos = np.flatnonzero(~y), np.flatnonzero(y)
        neg = neg[np.argsort(p[neg])]
        pos = pos[np.argsort(p[pos])]
        neg_p, pos_p = p[neg], p[pos]
        first = np.flatnonzero(np.diff(pos_p, prepend=-np.inf) != 0)
        values, start = pos_p[first], neg.size + first
        end = np.append(start[1:], y.size) if start.size else start
        return cls(order=np.concatenate([neg, pos]), negatives=int(neg.size), start=start, end=end,
                   below=np.searchsorted(neg_p, values, side="left"),
                   upto=np.searchsorted(neg_p, values, side="right"))

    def auroc_unweighted(self) -> float:
        """Return the AUROC with every person counted once, in exact integer arithmetic."""
        positives = self.order.size - self.negatives
        if positives == 0 or self.negatives == 0:
            return math.nan
        twice = int(np.dot(self.end - self.start, self.below + self.upto))
        return twice / (2 * positives * self.negatives)

    def auroc(self, cumulative: NDArray[Any]) -> float:
        """Return the AUROC for weights whose running total over the layout is `cumulative` (length n + 1)."""
        negatives = cumulative[self.negatives]
        positives = cumulative[-1] - negatives
        if positives == 0 or negatives == 0:
            return math.nan
        twice = np.dot(cumulative[self.end] - cumulative[self.start], cumulative[self.below] + cumulative[self.upto])
        return float(twice) / (2.0 * float(positives) * float(negatives))

    def average_precision(self) -> float:
        """Return the average precision, every person counted once."""
        positives = self.order.size - self.negatives
        if positives == 0:
            return math.nan
        # At threshold v: true positives are the positives from v up, false positives the negatives from v up.
        tp = positives - (self.start - self.negatives)
        fp = self.negatives - self.below
        return float(np.sum((self.end - self.start) * (tp / (tp + fp)))) / positives


def _cumulative(weights: NDArray[Any]) -> NDArray[Any]:
    """Return the running total of weights with a leading 0 (length n + 1)."""
    out = np.zeros(weights.size + 1, dtype=weights.dtype)
    np.cumsum(weights, out=out[1:])
    return out


def _interval(layout: _Layout, replicates: int, seed: int, level: float) -> tuple[float, float]:
    """Return the percentile bootstrap interval of the AUROC (see `auroc_interval`)."""
    n = layout.order.size
    if layout.negatives in (0, n):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    estimates = np.empty(replicates)
    running = np.zeros(n + 1, dtype=np.int64)
    for r in range(replicates):
        weights = np.bincount(rng.integers(0, n, n), minlength=n)
        np.cumsum(weights[layout.order], out=running[1:])
        estimates[r] = layout.auroc(running)
    estimates = estimates[~np.isnan(estimates)]
    if estimates.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(estimates, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _brier(y: BoolArray, p: FloatArray) -> float:
    return float(np.mean(np.square(p - y)))


def _calibration(y: BoolArray, p: FloatArray) -> tuple[float, float]:
    outcomes = int(np.count_nonzero(y))
    if outcomes in (0, y.size):
        return math.nan, math.nan
    q = np.clip(p, _CLIP, 1 - _CLIP)
    x = np.log(q) - np.log1p(-q)
    yf = y.astype(np.float64)
    slope = fit_logistic_line(x, yf, fit_slope=True)[1] if np.ptp(x) > 0 else math.nan
    intercept = fit_logistic_line(x, yf, fit_slope=False)[0]
    return slope, intercept


def fit_logistic_line(x: FloatArray, y: FloatArray, fit_slope: bool = True, max_iter: int = 50,
                  tol: float = 1e-10) -> tuple[float, float]:
    """Return (a, b) maximising the likelihood of logit P(y=1) = a + b x; with fit_slope False, b stays 1.

    Damped Newton-Raphson from (0, 1), the perfectly calibrated model; (nan, nan) without convergence.
    This is linkcare's one logistic fit of a line: the calibration slope and intercept of an
    evaluation, and the Platt calibration of a risk model (linkcare.risk.model).
    """
    theta = np.array([0.0, 1.0])
    eta = x.copy()
    loglik = _loglik(y, eta)
    for _ in range(max_iter):
        with np.errstate(over="ignore"):
            mu = 1.0 / (1.0 + np.exp(-eta))
        resid, w = y - mu, mu * (1.0 - mu)
        if fit_slope:
            wx = w * x
            gradient = np.array([resid.sum(), resid @ x])
            hessian = np.array([[w.sum(), wx.sum()], [wx.sum(), wx @ x]])
            try:
                step = np.linalg.solve(hessian, gradient)
            except np.linalg.LinAlgError:
                return math.nan, math.nan
        else:
            step = np.array([resid.sum() / w.sum(), 0.0])
        if not np.all(np.isfinite(step)):
            return math.nan, math.nan
        newton = float(np.max(np.abs(step)))
        # Halve the step until the likelihood does not fall, so a poor start cannot make Newton diverge;
        # a relative slack absorbs rounding in the sum once the optimum is reached.
        for _halving in range(40):
            candidate = theta + step
            eta_c = candidate[0] + candidate[1] * x
            loglik_c = _loglik(y, eta_c)
            if loglik_c >= loglik - 1e-12 * abs(loglik):
                break
            step = step / 2
        else:
            return math.nan, math.nan
        theta, eta, loglik = candidate, eta_c, loglik_c
        if newton < tol:
            return float(theta[0]), float(theta[1])
    return math.nan, math.nan


def _loglik(y: FloatArray, eta: FloatArray) -> float:
    return float(y @ eta - np.sum(np.logaddexp(0.0, eta)))


def _top_share(y: BoolArray, p: FloatArray, shares: Sequence[float]) -> list[dict[str, Any]]:
    n = p.size
    positives = int(np.count_nonzero(y))
    out = []
    for share in shares:
        # Rounding first stops float noise (0.07 * 100 = 7.000000000000001) from adding a person.
        k = min(n, math.ceil(round(share * n, 9)))
        # The k-th highest p splits everyone into surely flagged (higher), tied and not flagged; of the tied,
        # the first in input order fill the remaining places. np.partition makes this O(n) without a full sort.
        cut = np.partition(p, n - k)[n - k]
        higher = p > cut
        room = k - int(np.count_nonzero(higher))
        tied = np.flatnonzero(p == cut)[:room]
        tp = int(np.count_nonzero(y & higher)) + int(np.count_nonzero(y[tied]))
        out.append({"share": share, "people": k, "flagged_with_outcome": tp,
                    "sensitivity": tp / positives if positives else math.nan, "ppv": tp / k})
    return out


def _check(y: ArrayLike, p: ArrayLike, probabilities: bool = False) -> tuple[BoolArray, FloatArray]:
    """Return y as bools and p as floats, or raise ValueError saying what is wrong with them."""
    ya, pa = np.asarray(y), np.asarray(p)
    if ya.ndim != 1 or pa.ndim != 1:
        raise ValueError(f"y and p must be one-dimensional (one value per person), got shapes {ya.shape} and "
                         f"{pa.shape}")
    if ya.size != pa.size:
        raise ValueError(f"y has {ya.size} values but p has {pa.size}; give one outcome and one p per person")
    if ya.size == 0:
        raise ValueError("y and p are empty: metrics need at least one person")
    if ya.dtype != np.bool_:
        if not (np.issubdtype(ya.dtype, np.number)):
            raise ValueError(f"y must be bool or 0/1, got dtype {ya.dtype}")
        other = int(np.count_nonzero((ya != 0) & (ya != 1)))
        if other:
            raise ValueError(f"y must be bool or 0/1; {other} value(s) are neither 0 nor 1")
        ya = ya == 1
    if not np.issubdtype(pa.dtype, np.number) or np.issubdtype(pa.dtype, np.complexfloating):
        raise ValueError(f"p must be numbers, got dtype {pa.dtype}")
    pf = pa.astype(np.float64, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(pf)))
    if bad:
        raise ValueError(f"p has {bad} missing or infinite value(s); every person needs a predicted probability")
    if probabilities:
        outside = int(np.count_nonzero((pf < 0) | (pf > 1)))
        if outside:
            raise ValueError(f"p must be probabilities in [0, 1]; {outside} value(s) are outside")
    return ya, pf


def _check_bootstrap(replicates: int, level: float) -> None:
    if replicates < 1:
        raise ValueError(f"replicates must be 1 or more, got {replicates}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")


def _check_shares(shares: Sequence[float]) -> None:
    wrong = [s for s in shares if not 0 < s <= 1]
    if wrong:
        raise ValueError(f"shares must be fractions in (0, 1], got {wrong}")
