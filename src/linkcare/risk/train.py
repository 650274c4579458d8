"""`linkcare train`: fit the risk models on one period and evaluate them on the next.

With index date T (`--as-of`, default the reference date minus the horizon), the models are fitted
on the people living at T - horizon, with outcomes from T - horizon up to T, and evaluated on the
people living at T, with outcomes from T up to T + horizon. The evaluation period is wholly later
than the fitting period, as it will be when the model scores people at the reference date.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from linkcare import __version__
from linkcare.config import Config, config_hash
from linkcare.disclosure import Disclosure
from linkcare.errors import ConfigError, DataError
from linkcare.io.atomic import atomic_dir, output_lock
from linkcare.io.checksum import check_written_by, file_sha256
from linkcare.log import get_logger
from linkcare.report.risk_report import REPORT_NAME, Inputs, evaluation_curves, write_curves, write_train_report
from linkcare.risk.card import model_card
from linkcare.risk.features import (
    GROUPS,
    FeatureSet,
    build_features,
    history_start,
    open_cohort,
    usable_windows,
)
from linkcare.risk.metrics import auroc, risk_metrics, subgroup_metrics
from linkcare.risk.model import RiskModel, fit_model
from linkcare.risk.scoring import score_table

log = get_logger("risk")
MODEL_KINDS = ("gradient_boosting", "logistic")
SUBGROUPS = {"age_band": "age band", "sex": "sex", "ethnic_group": "ethnicity",
             "deprivation_quintile": "deprivation quintile (1 = most deprived)"}
COUNT_KEYS = ("people", "outcomes", "flagged_with_outcome")


@dataclass(frozen=True)
class TrainResult:
    """What `linkcare train` did; holds no record values."""

    out: Path
    fit_index: dt.date
    test_index: dt.date
    horizon_days: int
    windows: tuple[int, ...]
    default_model: str
    metrics: dict[str, Any]
    seconds: float
    peak_mib: float


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


def train_models(config: Config, cohort_dir: Path, out: Path, as_of: dt.date | None = None,
                 horizon: int | None = None) -> TrainResult:
    """Fit both risk models, evaluate them on the later period, and write them with their metrics
    and model card into `out`, whole or not at all."""
    with output_lock(Path(out)), atomic_dir(Path(out)) as tmp:
        result = fit_and_write(config, cohort_dir, tmp, as_of, horizon)
    return dataclasses.replace(result, out=Path(out))


def fit_and_write(config: Config, cohort_dir: Path, folder: Path, as_of: dt.date | None = None,
                  horizon: int | None = None) -> TrainResult:
    """Fit and evaluate the models and write them into an existing (temporary) `folder`."""
    started = time.perf_counter()
    settings = config.risk
    fit_index, test_index, horizon = _dates(config, as_of, horizon)
    cohort = open_cohort(cohort_dir)
    start = history_start(cohort)
    windows = usable_windows(settings, fit_index, start)
    if windows != settings.lookback_days:
        log.warning("the events start on %s, %d days before the fitting date %s: look-back windows of %s days "
                    "are left out, so that the model sees the same history when fitted and when scoring",
                    start, (fit_index - start).days if start else 0, fit_index,
                    ", ".join(str(w) for w in settings.lookback_days if w not in windows))
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
    models: dict[str, RiskModel] = {}
    metrics: dict[str, Any] = {}
    predictions: dict[str, np.ndarray] = {}
    for kind in MODEL_KINDS:
        t0 = time.perf_counter()
        models[kind] = fit_model(kind, features, x_fit, y_fit, windows, horizon, settings.seed, fitted)
        predictions[kind] = models[kind].predict(x_test)
        metrics[kind] = risk_metrics(y_test, predictions[kind], seed=settings.seed)
        metrics[kind]["fit_seconds"] = round(time.perf_counter() - t0, 1)
        log.info("%s: AUROC %.3f on the later period (fitted in %.0f s)", kind, metrics[kind]["auroc"],
                 time.perf_counter() - t0)
    default = settings.model
    # What linking social care is worth: the same model without the social-care features.
    kept = tuple(f for f in features if f.group != "social care")
    without = [j for j, f in enumerate(features) if f.group != "social care"]
    ablation = fit_model(default, kept, x_fit[:, without], y_fit, windows, horizon, settings.seed, fitted)
    p_without = ablation.predict(x_test[:, without])
    auroc_without = auroc(y_test, p_without)
    frame = test_set.frame.select(list(SUBGROUPS)).with_columns(
        pl.Series("y", y_test), pl.Series("p", predictions[default]))
    subgroups = {label: subgroup_metrics(frame, by, seed=settings.seed) for by, label in SUBGROUPS.items()}
    summary = {
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
    published = publish_counts(summary, config.disclosure)
    curves = {kind: evaluation_curves(y_test, predictions[kind], config.disclosure) for kind in MODEL_KINDS}
    for kind, model in models.items():
        (folder / f"{kind}.json").write_text(json.dumps(model.to_json()) + "\n", encoding="utf-8")
    (folder / "metrics.json").write_text(json.dumps(published, indent=2) + "\n", encoding="utf-8")
    write_curves(folder, curves, published["evaluation"])
    (folder / "model_card.md").write_text(model_card(config, published, models[default]), encoding="utf-8")
    inputs = Inputs(config, Path(cohort_dir).name, file_sha256(Path(cohort_dir) / "events.parquet"))
    log.info("writing %s…", REPORT_NAME)
    scored = score_table(models[default], test_set.frame, x_test, settings.tiers)
    write_train_report(folder / REPORT_NAME, inputs, scored, published, curves)
    manifest = {
        "linkcare_version": __version__, "command": "train",
        "config": {"path": config.path.name, "sha256": config_hash(config.path)},
        "cohort": {"folder": inputs.cohort_folder, "events_sha256": inputs.events_sha256},
        "default_model": default,
        "models": {kind: {"file": f"{kind}.json", "sha256": file_sha256(folder / f"{kind}.json")} for kind in models},
        "feature_groups": list(GROUPS),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return TrainResult(folder, fit_index, test_index, horizon, windows, default, published,
                       time.perf_counter() - started, peak)


def load_model(folder: Path, kind: str | None = None) -> RiskModel:
    """Return a risk model that `linkcare train` wrote into `folder`, refusing any file whose checksum
    does not match the folder's manifest or that is not a well-formed linkcare model."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{manifest_path}: not found; --model must be a folder written by `linkcare train`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{manifest_path}: cannot be read as a linkcare model manifest") from None
    models = manifest.get("models") if isinstance(manifest, dict) else None
    if not isinstance(models, dict) or manifest.get("command") != "train":
        raise ConfigError(f"{manifest_path}: not the manifest of a model folder written by `linkcare train`")
    kind = kind or str(manifest.get("default_model"))
    entry = models.get(kind)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or "/" in entry["file"]:
        raise ConfigError(f"{manifest_path}: lists no {kind} model; retrain with `linkcare train`")
    path = folder / entry["file"]
    try:
        raw = path.read_bytes()
    except OSError:
        raise ConfigError(f"{path}: cannot be read; retrain with `linkcare train`") from None
    check_written_by(path, raw, entry.get("sha256"), manifest_path, "train", "retrain")
    try:
        return RiskModel.from_json(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path}: not JSON; retrain with `linkcare train`") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: refused: {exc}") from None


__all__ = ["TrainResult", "load_model", "train_models"]
