"""The risk models: a standardised logistic regression and gradient boosting, both calibrated, both
explained exactly.

Each model gives a raw log-odds, which a calibration line (Platt scaling, fitted on people held
out from fitting) turns into the calibrated log-odds. Because calibration is linear on the
log-odds scale, every explanation stays additive: the calibrated log-odds of a person equals the
baseline plus the sum of their per-factor contributions, exactly.

- Logistic regression: inputs are transformed (log counts, age hinges, missing-value flags) and
  standardised; a column's contribution is its coefficient times its standardised value, so the
  baseline is the log-odds of a person at the fitted means.
- Gradient boosting (LightGBM, linkcare.risk.lgbm): contributions are LightGBM's exact TreeSHAP
  values; the baseline is TreeSHAP's expected value, the mean raw score over the fitting people.

Models are saved as JSON, never pickled, and loaded only after their checks pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from linkcare import __version__
from linkcare.config import RISK_MODELS
from linkcare.log import get_logger
from linkcare.risk.features import Feature
from linkcare.risk.lgbm import Boosted, fit_boosted
from linkcare.risk.metrics import fit_logistic_line

MODEL_FORMAT = "linkcare-risk-model"
FORMAT_VERSION = 2  # 2: gradient boosting is LightGBM's own model file (1 held linkcare's copy of the trees)
CALIBRATION_SHARE = 0.2  # of the fitting people, held out to fit the calibration line
COUNT_GROUPS = ("hospital use", "social care")
AGE_KNOTS = (45.0, 65.0, 80.0)
log = get_logger("risk")


@dataclass(frozen=True)
class Column:
    """One input column of the logistic model: a transform of one feature."""

    feature: str
    transform: str  # identity | log1p | hinge | below | missing
    knot: float = 0.0

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.transform == "log1p":
            return np.log1p(np.maximum(x, 0.0))
        if self.transform == "hinge":
            return np.maximum(x - self.knot, 0.0)
        if self.transform == "below":
            return np.where(np.isnan(x), np.nan, (x < self.knot).astype(np.float64))
        if self.transform == "missing":
            return np.isnan(x).astype(np.float64)
        return x

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "transform": self.transform, "knot": self.knot}


def logistic_columns(features: tuple[Feature, ...], x: np.ndarray) -> list[Column]:
    """Return the logistic model's columns: counts on a log scale, age with hinges and infant flags,
    and a flag wherever a feature has missing values among the fitting people."""
    columns: list[Column] = []
    for j, f in enumerate(features):
        if f.name == "age":
            columns += [Column("age", "identity"), Column("age", "below", 1.0), Column("age", "below", 5.0),
                        *[Column("age", "hinge", k) for k in AGE_KNOTS]]
        elif f.group in COUNT_GROUPS and not f.name.startswith(("long_term", "reablement")):
            columns.append(Column(f.name, "log1p"))
        else:
            columns.append(Column(f.name, "identity"))
        if np.isnan(x[:, j]).any():
            columns.append(Column(f.name, "missing"))
    return columns


@dataclass
class Logistic:
    """A fitted logistic regression on standardised, transformed columns."""

    columns: list[Column]
    impute: np.ndarray  # value put in for a missing transformed value (its mean among the fitting people)
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def standardised(self, x: np.ndarray, names: list[str]) -> np.ndarray:
        position = {n: j for j, n in enumerate(names)}
        z = np.empty((x.shape[0], len(self.columns)))
        for k, c in enumerate(self.columns):
            t = c.apply(x[:, position[c.feature]])
            t = np.where(np.isnan(t), self.impute[k], t)
            z[:, k] = (t - self.mean[k]) / self.scale[k]
        return z

    def column_contributions(self, x: np.ndarray, names: list[str]) -> np.ndarray:
        return self.standardised(x, names) * self.coef[None, :]


@dataclass
class RiskModel:
    """A calibrated, explainable risk model and what it was fitted on."""

    kind: str  # gradient_boosting | logistic
    features: tuple[Feature, ...]
    windows: tuple[int, ...]
    horizon_days: int
    calibration: tuple[float, float]  # (slope, intercept) of the Platt line on the raw log-odds
    logistic: Logistic | None = None
    boosted: Boosted | None = None
    fitted: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def factors(self) -> list[str]:
        """Return the distinct factors, in feature order."""
        return list(dict.fromkeys(f.factor for f in self.features))

    def _raw_parts(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Return (baseline, per-feature contributions) of the raw log-odds."""
        if self.boosted is not None:
            return self.boosted.parts(x)
        assert self.logistic is not None
        per_column = self.logistic.column_contributions(x, self.names)
        per_feature = np.zeros((x.shape[0], len(self.features)))
        position = {n: j for j, n in enumerate(self.names)}
        for k, c in enumerate(self.logistic.columns):
            per_feature[:, position[c.feature]] += per_column[:, k]
        return self.logistic.intercept, per_feature

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Return the uncalibrated log-odds of each row."""
        if self.boosted is not None:
            return self.boosted.raw(x)
        base, parts = self._raw_parts(x)
        return base + parts.sum(axis=1)

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        """Return the calibrated log-odds of each row."""
        slope, intercept = self.calibration
        return intercept + slope * self.raw(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return the calibrated probability of each row."""
        return 1.0 / (1.0 + np.exp(-self.log_odds(x)))

    def explain(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Return (baseline, rows × factors contributions) on the calibrated log-odds scale; for
        each row, baseline + its contributions equals `log_odds`."""
        slope, intercept = self.calibration
        base, parts = self._raw_parts(x)
        factors = self.factors
        where = {name: i for i, name in enumerate(factors)}
        out = np.zeros((x.shape[0], len(factors)))
        for j, f in enumerate(self.features):
            out[:, where[f.factor]] += parts[:, j]
        return intercept + slope * base, slope * out

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "linkcare_version": __version__,
            "kind": self.kind, "horizon_days": self.horizon_days, "windows": list(self.windows),
            "features": [{"name": f.name, "factor": f.factor, "group": f.group} for f in self.features],
            "calibration": {"slope": self.calibration[0], "intercept": self.calibration[1]},
            "fitted": self.fitted,
        }
        if self.logistic is not None:
            lg = self.logistic
            data["logistic"] = {"columns": [c.to_json() for c in lg.columns], "impute": lg.impute.tolist(),
                                "mean": lg.mean.tolist(), "scale": lg.scale.tolist(), "coef": lg.coef.tolist(),
                                "intercept": lg.intercept}
        if self.boosted is not None:
            data["boosted"] = self.boosted.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any) -> RiskModel:
        """Return the model a dict describes; raise ValueError saying what is wrong with it."""
        if not isinstance(data, dict) or data.get("format") != MODEL_FORMAT:
            raise ValueError(f"not a linkcare risk model (no format {MODEL_FORMAT!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {data.get('format_version')!r} is not {FORMAT_VERSION}; retrain it")
        kind = data.get("kind")
        if kind not in RISK_MODELS:
            raise ValueError(f"unknown model kind {kind!r}")
        try:
            features = tuple(Feature(str(f["name"]), str(f["factor"]), str(f["group"])) for f in data["features"])
            windows = tuple(int(w) for w in data["windows"])
            horizon = int(data["horizon_days"])
            calibration = (float(data["calibration"]["slope"]), float(data["calibration"]["intercept"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError("features, windows, horizon_days or calibration are missing or malformed") from None
        if not features or not all(np.isfinite(calibration)):
            raise ValueError("the model has no features or a calibration that is not a number")
        model = cls(kind, features, windows, horizon, calibration, fitted=dict(data.get("fitted") or {}))
        if kind == "logistic":
            model.logistic = _logistic_from_json(data.get("logistic"), [f.name for f in features])
        else:
            model.boosted = Boosted.from_json(data.get("boosted"), [f.name for f in features])
        return model


def _logistic_from_json(data: Any, names: list[str]) -> Logistic:
    if not isinstance(data, dict):
        raise ValueError("the logistic model's parameters are missing")
    try:
        columns = [Column(str(c["feature"]), str(c["transform"]), float(c["knot"])) for c in data["columns"]]
        arrays = [np.asarray(data[k], dtype=np.float64) for k in ("impute", "mean", "scale", "coef")]
        intercept = float(data["intercept"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("the logistic model's parameters are malformed") from None
    if any(a.shape != (len(columns),) for a in arrays):
        raise ValueError("the logistic model's parameters do not have one value per column")
    if not all(np.isfinite(a).all() for a in arrays) or not np.isfinite(intercept) or (arrays[2] <= 0).any():
        raise ValueError("the logistic model's parameters are not all finite numbers")
    unknown = {c.feature for c in columns} - set(names)
    if unknown or any(c.transform not in ("identity", "log1p", "hinge", "below", "missing") for c in columns):
        raise ValueError("the logistic model's columns name unknown features or transforms")
    impute, mean, scale, coef = arrays
    return Logistic(columns, impute, mean, scale, coef, intercept)


def _platt(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Return (slope, intercept) of the logistic regression of y on the raw log-odds; without
    convergence (outcomes that the raw score separates perfectly), the raw score unchanged (1, 0)."""
    intercept, slope = fit_logistic_line(raw.astype(np.float64), y.astype(np.float64), max_iter=100)
    if not (math.isfinite(intercept) and math.isfinite(slope)):
        log.warning("the calibration fit did not converge; the model's scores are left uncalibrated")
        return 1.0, 0.0
    return slope, intercept


def _fit_logistic(features: tuple[Feature, ...], x: np.ndarray, y: np.ndarray) -> Logistic:
    from sklearn.linear_model import LogisticRegression

    names = [f.name for f in features]
    columns = logistic_columns(features, x)
    position = {n: j for j, n in enumerate(names)}
    transformed = np.column_stack([c.apply(x[:, position[c.feature]]) for c in columns])
    impute = np.nan_to_num(np.nanmean(transformed, axis=0), nan=0.0)
    transformed = np.where(np.isnan(transformed), impute[None, :], transformed)
    mean = transformed.mean(axis=0)
    scale = transformed.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (transformed - mean) / scale
    clf = LogisticRegression(C=1.0, max_iter=2000)
    clf.fit(z, y)
    return Logistic(columns, impute, mean, scale, clf.coef_.ravel().astype(np.float64), float(clf.intercept_[0]))


def fit_model(kind: str, features: tuple[Feature, ...], x: np.ndarray, y: np.ndarray, windows: tuple[int, ...],
              horizon_days: int, seed: int, fitted: dict[str, Any] | None = None) -> RiskModel:
    """Return a calibrated model of `kind` fitted on rows x with outcomes y: fitted on a seeded 80%,
    its calibration line on the other 20%."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("the fitting people all have the same outcome; a risk model cannot be fitted")
    rng = np.random.default_rng(seed)
    held = rng.random(y.size) < CALIBRATION_SHARE
    model = RiskModel(kind, features, windows, horizon_days, (1.0, 0.0), fitted=dict(fitted or {}))
    if kind == "logistic":
        model.logistic = _fit_logistic(features, x[~held], y[~held])
    else:
        model.boosted = fit_boosted(x[~held], y[~held], model.names, seed)
    model.calibration = _platt(model.raw(x[held]), y[held].astype(np.float64))
    model.fitted.update({"people": int(y.size), "calibration_people": int(held.sum())})
    return model


__all__ = ["MODEL_FORMAT", "RiskModel", "fit_model"]
