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
from linkcare.risk.model import RiskModel, fit_model, fit_scorer
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
    default, rule = choose_default(settings.model, metrics)
    log.info("default model: %s (%s)", default, rule)
    steps = ablation(models[default], (x_fit, y_fit), (x_test, y_test), settings.seed)
    frame = test_set.frame.select(list(SUBGROUPS)).with_columns(
        pl.Series("y", y_test), pl.Series("p", predictions[default]))
    subgroups = {label: subgroup_metrics(frame, by, seed=settings.seed) for by, label in SUBGROUPS.items()}
    summary = _summary(config, (default, rule), (fit_index, test_index, horizon), windows, (y_fit, y_test),
                       metrics, steps, subgroups)
    curves = {kind: evaluation_curves(y_test, predictions[kind], config.disclosure) for kind in RISK_MODELS}
    scored = score_table(models[default], test_set.frame, x_test, settings.tiers)
    return Trained(fit_index, test_index, horizon, windows, default, models, publish_counts(summary, config.disclosure),
                   curves, scored)


#: When the two models' AUROCs on the later period are this close, the logistic regression is the default.
AUROC_TIE = 0.002
#: What each source adds, in the order sources are added: the groups of features each step brings.
ABLATION_STEPS = (("hospital", ("demographics", "hospital use", "comorbidity and frailty")),
                  ("+ social care", ("social care",)),
                  ("+ primary care", ("primary care",)))


def choose_default(configured: str, metrics: dict[str, Any]) -> tuple[str, str]:
    """Return the model stratify scores with, and the rule that chose it in words.

    With `[risk] model = "auto"` (the default): the model with the higher AUROC on the later period;
    if the two are within AUROC_TIE of each other, the logistic regression, because it is the simpler
    to check and explain and the difference is smaller than the evaluation can tell apart.
    A model named in the config is used whatever the evaluation says.
    """
    if configured != "auto":
        return configured, f"named by [risk] model = \"{configured}\""
    gb, lr = metrics["gradient_boosting"]["auroc"], metrics["logistic"]["auroc"]
    if gb - lr > AUROC_TIE:
        return "gradient_boosting", (f"higher AUROC on the later period ({gb:.4f} against {lr:.4f} for logistic "
                                     f"regression, a lead above {AUROC_TIE})")
    if lr - gb > AUROC_TIE:
        return "logistic", (f"higher AUROC on the later period ({lr:.4f} against {gb:.4f} for gradient "
                            f"boosting, a lead above {AUROC_TIE})")
    return "logistic", (f"AUROCs on the later period within {AUROC_TIE} of each other ({lr:.4f} logistic, "
                        f"{gb:.4f} gradient boosting): the simpler model")


def ablation(model: RiskModel, fit: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
             seed: int) -> list[dict[str, Any]]:
    # No bootstrap interval per step: at 1,000,000 people the three cost about 8 s of train's 120; the
    # models' own intervals in metrics.json give the evaluation's precision.
    """Return what each source is worth: the default model's kind refitted on hospital data alone, then
    with social care, then with primary care, each step's raw scores evaluated by AUROC on the later
    period (the last step is the default model's own raw scores). A step whose source the site does not
    have is left out. Raw scores are compared so that no step gains or loses by its calibration."""
    (x_fit, y_fit), (x_test, y_test) = fit, test
    kind, features = model.kind, model.features
    present = {f.group for f in features}
    steps: list[dict[str, Any]] = []
    groups: set[str] = set()
    for label, adds in ABLATION_STEPS:
        if steps and not present & set(adds):
            continue
        groups |= set(adds)
        cols = [j for j, f in enumerate(features) if f.group in groups]
        if len(cols) == len(features):
            p = model.raw(x_test)
        else:
            p = fit_scorer(kind, tuple(features[j] for j in cols), x_fit[:, cols], y_fit, seed).raw(x_test[:, cols])
        value = auroc(y_test, p)
        steps.append({"sources": label, "features": len(cols), "auroc": value,
                      "auroc_gain": None if not steps else value - steps[-1]["auroc"]})
    return steps


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


def _summary(config: Config, chosen: tuple[str, str], dates: tuple[dt.date, dt.date, int],
             windows: tuple[int, ...], outcomes: tuple[np.ndarray, np.ndarray], metrics: dict[str, Any],
             steps: list[dict[str, Any]], subgroups: dict[str, Any]) -> dict[str, Any]:
    """Return metrics.json before its counts are published."""
    (default, rule), (fit_index, test_index, horizon) = chosen, dates
    social = next((i for i, s in enumerate(steps) if s["sources"] == "+ social care"), None)
    with_sc = steps[social]["auroc"] if social is not None else None
    without_sc = steps[social - 1]["auroc"] if social is not None else None
    y_fit, y_test = outcomes
    return {
        "linkcare_version": __version__,
        "default_model": default,
        "default_model_rule": rule,
        "fitting": {"index_date": fit_index.isoformat(),
                    "outcome_window": f"{fit_index.isoformat()} to {test_index}",
                    "people": int(y_fit.size), "outcomes": int(y_fit.sum())},
        "evaluation": {"index_date": test_index.isoformat(),
                       "outcome_window": f"{test_index.isoformat()} to {test_index + dt.timedelta(days=horizon)}",
                       "people": int(y_test.size)},
        "horizon_days": horizon,
        "lookback_days": list(windows),
        "models": metrics,
        "ablation": {"model": default, "steps": steps},
        "social_care": {"model": default, "auroc_with": with_sc, "auroc_without": without_sc,
                        "auroc_gain": None if with_sc is None or without_sc is None else with_sc - without_sc},
        "subgroups": subgroups,
        "disclosure": {"threshold": config.disclosure.threshold, "rounding": config.disclosure.rounding,
                       "note": "counts of people are rounded; null means suppressed (fewer than the threshold)"},
    }


__all__ = ["SUBGROUPS", "Trained", "fit_models", "publish_counts"]
