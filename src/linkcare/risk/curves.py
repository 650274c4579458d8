"""The curves `linkcare train` stores for its evaluation on the later period (curves.json): the ROC
and precision-recall curves and the calibration by decile of predicted risk, as aggregates only.

No curve point describes fewer people than the disclosure threshold, and every count is a published
count; the risk report draws its plots from this file, in `train` and again in `stratify`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from linkcare import __version__
from linkcare.disclosure import Disclosure

CURVES_NAME = "curves.json"
CURVES_FORMAT = "linkcare-risk-curves"
CURVE_POINTS = 200  # most points kept of each curve
CALIBRATION_BINS = 10


def evaluation_curves(y: np.ndarray, p: np.ndarray, disclosure: Disclosure, points: int = CURVE_POINTS,
                      bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Return the ROC curve, the precision-recall curve (at most `points` points each) and the calibration
    by decile of predicted risk of outcomes y and probabilities p: aggregates only.

    A curve point is the result of flagging everyone with p at or above a threshold; points that flag, or
    leave out, fewer people than the disclosure threshold are dropped. A decile's people and outcomes are
    published counts, and its observed rate is None when it would reveal a count the rule suppresses.
    """
    yb = np.asarray(y).astype(bool)
    pf = np.asarray(p, dtype=np.float64)
    n = int(yb.size)
    positives = int(np.count_nonzero(yb))
    negatives = n - positives
    curves: dict[str, Any] = {"roc": {"fpr": [], "tpr": []}, "precision_recall": {"recall": [], "precision": []},
                              "calibration": _calibration_bins(yb, pf, disclosure, bins)}
    if positives == 0 or negatives == 0:
        return curves
    order = np.argsort(-pf, kind="stable")
    tp_all = np.cumsum(yb[order])
    # One point per distinct p: everyone at or above it flagged.
    ends = np.flatnonzero(np.r_[pf[order][1:] != pf[order][:-1], True])
    flagged = ends + 1
    tp = tp_all[ends]
    least = max(disclosure.threshold, 1)
    keep = (flagged >= least) & (n - flagged >= least)
    flagged, tp = flagged[keep], tp[keep]
    fpr = np.r_[0.0, (flagged - tp) / negatives, 1.0]
    tpr = np.r_[0.0, tp / positives, 1.0]
    fpr, tpr = _thin(fpr, tpr, points)
    curves["roc"] = {"fpr": _rounded(fpr), "tpr": _rounded(tpr)}
    if flagged.size:
        recall, precision = _thin(tp / positives, tp / flagged, points)
        curves["precision_recall"] = {"recall": _rounded(recall), "precision": _rounded(precision)}
    return curves


def _calibration_bins(y: np.ndarray, p: np.ndarray, disclosure: Disclosure, bins: int) -> list[dict[str, Any]]:
    n = p.size
    if n == 0:
        return []
    order = np.argsort(p, kind="stable")
    edges = np.unique(np.round(np.linspace(0, n, bins + 1)).astype(np.int64))
    starts = edges[:-1]
    people = np.diff(edges)
    outcomes = np.add.reduceat(y[order].astype(np.int64), starts)
    predicted = np.add.reduceat(p[order], starts) / people
    least = max(disclosure.threshold, 1)
    out = []
    for m, k, o in zip(predicted.tolist(), people.tolist(), outcomes.tolist(), strict=True):
        # A rate reveals the outcomes, and its complement the people without, so both must be publishable.
        shown = not (0 < o < least or 0 < k - o < least)
        out.append({"predicted": round(m, 6), "observed": round(o / k, 6) if shown else None,
                    "people": disclosure.value(k), "outcomes": disclosure.value(o)})
    return out


def _thin(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Return at most `points` points of a curve, evenly spaced along its length, first and last kept."""
    if x.size <= points:
        return x, y
    length = np.r_[0.0, np.cumsum(np.hypot(np.diff(x), np.diff(y)))]
    picked = np.unique(np.r_[np.searchsorted(length, np.linspace(0.0, length[-1], points - 1)), x.size - 1])
    picked = np.minimum(picked, x.size - 1)
    return x[picked], y[picked]


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]


def write_curves(folder: Path, curves: Mapping[str, dict[str, Any]], evaluation: Mapping[str, Any]) -> None:
    """Write curves.json (per model kind) into a model folder."""
    data = {"format": CURVES_FORMAT, "linkcare_version": __version__, "evaluation": dict(evaluation),
            "note": "aggregates of the evaluation on the later period; no point describes fewer people than "
                    "the disclosure threshold; counts are published counts",
            "models": dict(curves)}
    (Path(folder) / CURVES_NAME).write_text(json.dumps(data) + "\n", encoding="utf-8")


def read_evaluation(model_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Return (metrics.json, curves.json) of a model folder; None for a file that is absent or unreadable
    (a model folder written before curves.json existed still gives its metrics)."""
    found: list[dict[str, Any] | None] = []
    for name in ("metrics.json", CURVES_NAME):
        try:
            data = json.loads((Path(model_dir) / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        found.append(data if isinstance(data, dict) else None)
    metrics, curves = found
    if metrics is not None and not isinstance(metrics.get("models"), dict):
        metrics = None
    if curves is not None and (curves.get("format") != CURVES_FORMAT or not isinstance(curves.get("models"), dict)):
        curves = None
    return metrics, curves


__all__ = ["CALIBRATION_BINS", "CURVES_NAME", "CURVE_POINTS", "evaluation_curves", "read_evaluation",
           "write_curves"]
