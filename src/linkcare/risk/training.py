"""Fit the risk models on one period and evaluate them on the next (the work of `linkcare train`).

With index date T (`--as-of`, default the reference date minus the horizon), the models are fitted
on the people living at T - horizon, with outcomes from T - horizon up to T, and evaluated on the
people living at T, with outcomes from T up to T + horizon. The evaluation period is wholly later
than the fitting period, as it will be when the model scores people at the reference date.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from linkcare import __version__
from linkcare.cohort.dataset import Cohort, open_cohort
from linkcare.config import RISK_MODELS, Config, RiskSettings
from linkcare.disclosure import Disclosure
from linkcare.errors import ConfigError, DataError
from linkcare.log import get_logger
from linkcare.risk.curves import evaluation_curves
from linkcare.risk.features import Feature, FeatureSet, build_features, history_start, usable_windows
from linkcare.risk.metrics import auroc, risk_metrics, subgroup_metrics
from linkcare.risk.model import RiskModel, fit_model
from linkcare.risk.scoring import score_table

log = get_logger("risk")
SUBGROUPS = {"age_band": "age band", "sex": "sex", "ethnic_group": "ethnicity",
             "deprivation_quintile": "deprivation quintile (1 = most deprived)"}
COUNT_KEYS = ("people", "outcomes", "flagged_with_outcome")


def _dates(config: Config, as_of: dt.date | None, horizon: int | None) -> tuple[dt.date, dt.date, int]:
    horizon = horizon or config.risk.horizon_days
    test_index = as_of or config.reference_date - dt.timedelta(days=horizon)
    if test_index + dt.timedelta(days=horizon) > config.reference_date:
        raise ConfigError(f"--as-of {test_index.isoformat()} plus the {horizon}-day horizon passes the config's "
                          f"reference_date {config.reference_date.isoformat()}, so its outcomes are not yet known; "
                          f"give --as-of {(config.reference_date - dt.timedelta(days=horizon)).isoformat()} or earlier")
    return test_index - dt.timedelta(days=horizon), test_index, horizon


def _xy(fs: FeatureSet, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return fs.matrix(names), fs.frame["outcome"].to_numpy().astype(bool)


def _check_outcomes(fs: FeatureSet, what: str) -> None:
    y = fs.frame["outcome"]
    if fs.frame.height == 0:
        raise DataError(f"no living registered people at the {what} index date {fs.index_date.isoformat()}")
    if y.all() or not y.any():
        raise DataError(f"at the {what} index date {fs.index_date.isoformat()} every person has the same outcome "
                        f"({int(y.sum())} emergency admission(s) among {fs.frame.height} people); a model needs both")


def publish_counts(value: Any, disclosure: Disclosure) -> Any:
    """Return metrics with every count of people passed through the disclosure rule (None = suppressed)."""
    if isinstance(value, dict):
        return {k: (disclosure.value(int(v)) if k in COUNT_KEYS and v is not None else publish_counts(v, disclosure))
                for k, v in value.items()}
    if isinstance(value, list):
        return [publish_counts(v, disclosure) for v in value]
    return value


@dataclass(frozen=True)
class Trained:
    """Both risk models fitted on one period and evaluated on the next, ready to be written."""

    fit_index: dt.date
    test_index: dt.date
    horizon_days: int
    windows: tuple[int, ...]
    default_model: str
    models: dict[str, RiskModel]
    #: metrics.json: the evaluation, with every count of people passed through the disclosure rule
    metrics: dict[str, Any]
    #: curves.json's curves per model kind
    curves: dict[str, dict[str, Any]]
    #: the evaluation period's people scored by the default model, for the report
    scored: pl.DataFrame


def fit_models(config: Config, cohort_dir: Path, as_of: dt.date | None = None, horizon: int | None = None) -> Trained:
    """Return both risk models fitted on the cohort in `cohort_dir` at the index date minus the horizon
    and evaluated at the index date (`as_of`, default the reference date minus the horizon), with
    their published metrics."""
    settings = config.risk
    fit_index, test_index, horizon = _dates(config, as_of, horizon)
    cohort = open_cohort(cohort_dir)
    windows = _windows(settings, cohort, fit_index)
    log.info("features as of %s (fitting) and %s (evaluation), horizon %d days", fit_index, test_index, horizon)
    fit_set = build_features(config, cohort, fit_index, windows, horizon)
    test_set = build_features(config, cohort, test_index, windows, horizon)
    _check_outcomes(fit_set, "fitting")
    _check_outcomes(test_set, "evaluation")
    features = fit_set.features
    names = [f.name for f in features]
    x_fit, y_fit = _xy(fit_set, names)
    x_test, y_test = _xy(test_set, names)
    log.info("fitting on %s people (%.1f%% admitted), evaluating on %s people", f"{y_fit.size:,}",
             100 * y_fit.mean(), f"{y_test.size:,}")
    fitted = {"index_date": fit_index.isoformat(), "outcomes_until": test_index.isoformat(),
              "evaluated_at": test_index.isoformat()}
    models, metrics, predictions = _fit_each(features, x_fit, y_fit, x_test, y_test, windows, horizon,
                                             settings.seed, fitted)
    default = settings.model
    # What linking social care is worth: the same model without the social-care features.
    kept = tuple(f for f in features if f.group != "social care")
    without = [j for j, f in enumerate(features) if f.group != "social care"]
    ablation = fit_model(default, kept, x_fit[:, without], y_fit, windows, horizon, settings.seed, fitted)
    auroc_without = auroc(y_test, ablation.predict(x_test[:, without]))
    frame = test_set.frame.select(list(SUBGROUPS)).with_columns(
        pl.Series("y", y_test), pl.Series("p", predictions[default]))
    subgroups = {label: subgroup_metrics(frame, by, seed=settings.seed) for by, label in SUBGROUPS.items()}
    summary = _summary(config, default, (fit_index, test_index, horizon), windows, (y_fit, y_test), metrics,
                       auroc_without, subgroups)
    curves = {kind: evaluation_curves(y_test, predictions[kind], config.disclosure) for kind in RISK_MODELS}
    scored = score_table(models[default], test_set.frame, x_test, settings.tiers)
    return Trained(fit_index, test_index, horizon, windows, default, models, publish_counts(summary, config.disclosure),
                   curves, scored)


def _windows(settings: RiskSettings, cohort: Cohort, fit_index: dt.date) -> tuple[int, ...]:
    """Return the look-back windows the recorded history covers at the fitting date, saying which are left out."""
    start = history_start(cohort)
    windows = usable_windows(settings, fit_index, start)
    if windows != settings.lookback_days:
        log.warning("the events start on %s, %d days before the fitting date %s: look-back windows of %s days "
                    "are left out, so that the model sees the same history when fitted and when scoring",
                    start, (fit_index - start).days if start else 0, fit_index,
                    ", ".join(str(w) for w in settings.lookback_days if w not in windows))
    return windows


def _fit_each(features: tuple[Feature, ...], x_fit: np.ndarray, y_fit: np.ndarray, x_test: np.ndarray,
              y_test: np.ndarray, windows: tuple[int, ...], horizon: int, seed: int, fitted: dict[str, Any],
              ) -> tuple[dict[str, RiskModel], dict[str, Any], dict[str, np.ndarray]]:
    """Return each kind of model, its metrics on the evaluation period and its predictions there."""
    models: dict[str, RiskModel] = {}
    metrics: dict[str, Any] = {}
    predictions: dict[str, np.ndarray] = {}
    for kind in RISK_MODELS:
        t0 = time.perf_counter()
        models[kind] = fit_model(kind, features, x_fit, y_fit, windows, horizon, seed, fitted)
        predictions[kind] = models[kind].predict(x_test)
        metrics[kind] = risk_metrics(y_test, predictions[kind], seed=seed)
        metrics[kind]["fit_seconds"] = round(time.perf_counter() - t0, 1)
        log.info("%s: AUROC %.3f on the later period (fitted in %.0f s)", kind, metrics[kind]["auroc"],
                 time.perf_counter() - t0)
    return models, metrics, predictions


def _summary(config: Config, default: str, dates: tuple[dt.date, dt.date, int], windows: tuple[int, ...],
             outcomes: tuple[np.ndarray, np.ndarray], metrics: dict[str, Any], auroc_without: float,
             subgroups: dict[str, Any]) -> dict[str, Any]:
    """Return metrics.json before its counts are published."""
    fit_index, test_index, horizon = dates
    y_fit, y_test = outcomes
    return {
        "linkcare_version": __version__,
        "default_model": default,
        "fitting": {"index_date": fit_index.isoformat(),
                    "outcome_window": f"{fit_index.isoformat()} to {test_index}",
                    "people": int(y_fit.size), "outcomes": int(y_fit.sum())},
        "evaluation": {"index_date": test_index.isoformat(),
                       "outcome_window": f"{test_index.isoformat()} to {test_index + dt.timedelta(days=horizon)}",
                       "people": int(y_test.size)},
        "horizon_days": horizon,
        "lookback_days": list(windows),
        "models": metrics,
        "social_care": {"model": default, "auroc_with": metrics[default]["auroc"], "auroc_without": auroc_without,
                        "auroc_gain": metrics[default]["auroc"] - auroc_without},
        "subgroups": subgroups,
        "disclosure": {"threshold": config.disclosure.threshold, "rounding": config.disclosure.rounding,
                       "note": "counts of people are rounded; null means suppressed (fewer than the threshold)"},
    }


__all__ = ["SUBGROUPS", "Trained", "fit_models", "publish_counts"]
