"""The risk models: a standardised logistic regression and gradient boosting, both calibrated, both
explained exactly.

Each model gives a raw log-odds, which a calibration line (Platt scaling) turns into the calibrated
log-odds. The line is fitted on out-of-fold raw scores: the model is fitted CV_FOLDS times, each time
without one fold of the fitting people, and scores that fold; the model kept is then fitted on them
all. Every fitting person so informs both the model and its calibration.

A model calibrated overall can still be miscalibrated within an age group: on synthetic sites, the
spread of risk among people over 85 was too wide by a fifth (calibration slope about 0.8 within the
band, 1.0 overall). So each age band (linkcare.cohort.demographics.AGE_BANDS) with at least
BAND_MIN_OUTCOMES outcomes among the fitting people gets its own line, fitted on its own people's
out-of-fold scores; a smaller band, and anyone whose age is unknown, uses the overall line.

Because calibration is linear on the log-odds scale, every explanation stays additive: the
calibrated log-odds of a person equals the baseline plus the sum of their per-factor contributions,
exactly. With band lines, a person's calibrated log-odds is a_band + b_band x (base + parts): the
baseline is the overall line's a + b x base, each part is scaled by b_band, and what the band's
line adds at the baseline, (a_band - a) + (b_band - b) x base, is part of the factor age.

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
from linkcare.cohort.demographics import AGE_BANDS
from linkcare.config import RISK_MODELS
from linkcare.log import get_logger
from linkcare.risk.features import Feature
from linkcare.risk.lgbm import Boosted, fit_boosted
from linkcare.risk.metrics import fit_logistic_line

MODEL_FORMAT = "linkcare-risk-model"
FORMAT_VERSION = 2  # 2: gradient boosting is LightGBM's own model file (1 held linkcare's copy of the trees)
CV_FOLDS = 3  # the folds whose out-of-fold scores the calibration lines are fitted on
BAND_MIN_OUTCOMES = 100  # an age band with fewer outcomes among the fitting people uses the overall line
BAND_STARTS = [float(start) for start, _ in AGE_BANDS]


def age_band_index(age: np.ndarray) -> np.ndarray:
    """Return the index in AGE_BANDS of each age's band, -1 where the age is unknown."""
    band = np.searchsorted(BAND_STARTS, np.nan_to_num(age, nan=-1.0), side="right") - 1
    return np.where(np.isnan(age), -1, band)
COUNT_GROUPS = ("hospital use", "social care", "primary care")
#: Features of those groups that are flags, indices or bands rather than counts, used as they are.
NOT_COUNTS = ("long_term", "reablement", "efi")
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
        elif f.group in COUNT_GROUPS and not f.name.startswith(NOT_COUNTS):
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
    #: (from_age, slope, intercept) of each age band with its own line; the others use `calibration`
    band_lines: tuple[tuple[float, float, float], ...] = ()
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

    def lines(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the calibration (slope, intercept) of each row: its age band's line, else the overall line."""
        slope, intercept = self.calibration
        slopes, intercepts = np.full(x.shape[0], slope), np.full(x.shape[0], intercept)
        if self.band_lines:
            band = age_band_index(x[:, self.names.index("age")])
            for start, b, a in self.band_lines:
                rows = band == BAND_STARTS.index(start)
                slopes[rows], intercepts[rows] = b, a
        return slopes, intercepts

    def log_odds(self, x: np.ndarray) -> np.ndarray:
        """Return the calibrated log-odds of each row."""
        slopes, intercepts = self.lines(x)
        return intercepts + slopes * self.raw(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return the calibrated probability of each row."""
        return 1.0 / (1.0 + np.exp(-self.log_odds(x)))

    def explain(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Return (baseline, rows × factors contributions) on the calibrated log-odds scale; for
        each row, baseline + its contributions equals `log_odds`."""
        slope, intercept = self.calibration
        slopes, intercepts = self.lines(x)
        base, parts = self._raw_parts(x)
        factors = self.factors
        where = {name: i for i, name in enumerate(factors)}
        out = np.zeros((x.shape[0], len(factors)))
        for j, f in enumerate(self.features):
            out[:, where[f.factor]] += parts[:, j]
        out *= slopes[:, None]
        if self.band_lines:
            out[:, where[self.features[self.names.index("age")].factor]] += (
                (intercepts - intercept) + (slopes - slope) * base)
        return intercept + slope * base, out

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "linkcare_version": __version__,
            "kind": self.kind, "horizon_days": self.horizon_days, "windows": list(self.windows),
            "features": [{"name": f.name, "factor": f.factor, "group": f.group} for f in self.features],
            "calibration": {"slope": self.calibration[0], "intercept": self.calibration[1],
                            "age_bands": [{"from_age": a, "slope": b, "intercept": c} for a, b, c in self.band_lines]},
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
        model = cls(kind, features, windows, horizon, calibration, _band_lines_from_json(data["calibration"], features),
                    fitted=dict(data.get("fitted") or {}))
        if kind == "logistic":
            model.logistic = _logistic_from_json(data.get("logistic"), [f.name for f in features])
        else:
            model.boosted = Boosted.from_json(data.get("boosted"), [f.name for f in features])
        return model


def _band_lines_from_json(data: Any, features: tuple[Feature, ...]) -> tuple[tuple[float, float, float], ...]:
    raw = data.get("age_bands", []) if isinstance(data, dict) else None
    try:
        lines = tuple((float(b["from_age"]), float(b["slope"]), float(b["intercept"])) for b in raw or [])
    except (KeyError, TypeError, ValueError):
        raise ValueError("the calibration's age bands are malformed") from None
    if lines and "age" not in [f.name for f in features]:
        raise ValueError("the calibration has age bands but the model has no age feature")
    if any(a not in BAND_STARTS or not (math.isfinite(b) and math.isfinite(c)) for a, b, c in lines):
        raise ValueError("the calibration's age bands are not linkcare's bands or not numbers")
    return lines


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


def _fit_logistic(features: tuple[Feature, ...], x: np.ndarray, y: np.ndarray,
                  start: Logistic | None = None) -> Logistic:
    """Return a logistic model fitted on rows x; with `start` (a model of the same columns fitted on more of the
    same people), its solution is where the fit starts, which changes how fast it converges, not where."""
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
    clf = LogisticRegression(C=1.0, max_iter=2000, warm_start=start is not None)
    if start is not None and start.columns == columns:
        clf.coef_, clf.intercept_ = start.coef[None, :].copy(), np.array([start.intercept])
    clf.fit(z, y)
    return Logistic(columns, impute, mean, scale, clf.coef_.ravel().astype(np.float64), float(clf.intercept_[0]))


def _fit_scorer(kind: str, features: tuple[Feature, ...], x: np.ndarray, y: np.ndarray, windows: tuple[int, ...],
                horizon_days: int, seed: int, fitted: dict[str, Any] | None = None,
                like: RiskModel | None = None) -> RiskModel:
    """Return an uncalibrated model of `kind` fitted on all of rows x (calibration (1, 0)). With `like`, a
    model fitted on all the fitting people, a fold's model takes its shape: the same number of trees (found
    by early stopping on all of them), or the logistic fit started from its solution."""
    model = RiskModel(kind, features, windows, horizon_days, (1.0, 0.0), fitted=dict(fitted or {}))
    if kind == "logistic":
        model.logistic = _fit_logistic(features, x, y, like.logistic if like is not None else None)
    else:
        trees = like.boosted.n_trees if like is not None and like.boosted is not None else None
        model.boosted = fit_boosted(x, y, model.names, seed, trees)
    return model


def _band_lines(raw: np.ndarray, y: np.ndarray, age: np.ndarray | None) -> tuple[tuple[float, float, float], ...]:
    """Return the calibration line of each age band with at least BAND_MIN_OUTCOMES outcomes (and people
    without one); a band whose line does not converge uses the overall line."""
    if age is None:
        return ()
    band = age_band_index(age)
    lines = []
    for k, start in enumerate(BAND_STARTS):
        rows = band == k
        outcomes = int(y[rows].sum())
        if outcomes < BAND_MIN_OUTCOMES or rows.sum() - outcomes < BAND_MIN_OUTCOMES:
            continue
        intercept, slope = fit_logistic_line(raw[rows], y[rows].astype(np.float64), max_iter=100)
        if math.isfinite(intercept) and math.isfinite(slope):
            lines.append((float(start), float(slope), float(intercept)))
    return tuple(lines)


def fit_model(kind: str, features: tuple[Feature, ...], x: np.ndarray, y: np.ndarray, windows: tuple[int, ...],
              horizon_days: int, seed: int, fitted: dict[str, Any] | None = None) -> RiskModel:
    """Return a calibrated model of `kind` fitted on rows x with outcomes y, its calibration lines (overall
    and per age band) fitted on out-of-fold scores of CV_FOLDS seeded folds."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("the fitting people all have the same outcome; a risk model cannot be fitted")
    model = _fit_scorer(kind, features, x, y, windows, horizon_days, seed, fitted)
    fold = np.random.default_rng(seed).integers(0, CV_FOLDS, y.size)
    out_of_fold = np.empty(y.size)
    for k in range(CV_FOLDS):
        rest = fold != k
        if y[rest].all() or not y[rest].any():
            raise ValueError("too few people with each outcome to cross-fit the calibration; a risk model "
                             "needs more people")
        part = _fit_scorer(kind, features, x[rest], y[rest], windows, horizon_days, seed + k, like=model)
        out_of_fold[~rest] = part.raw(x[~rest])
    model.calibration = _platt(out_of_fold, y.astype(np.float64))
    names = model.names
    model.band_lines = _band_lines(out_of_fold, y, x[:, names.index("age")] if "age" in names else None)
    model.fitted.update({"people": int(y.size), "calibration": f"out-of-fold scores of {CV_FOLDS} folds",
                         "calibration_age_bands": [f"{a:g}+" for a, _, _ in model.band_lines]})
    return model


def fit_scorer(kind: str, features: tuple[Feature, ...], x: np.ndarray, y: np.ndarray, seed: int) -> RiskModel:
    """Return a model of `kind` fitted on all of x without calibration: for comparisons by AUROC, which a
    single calibration line does not change (linkcare.risk.training's ablation)."""
    return _fit_scorer(kind, features, x, np.asarray(y, dtype=bool), (), 0, seed)


__all__ = ["CV_FOLDS", "MODEL_FORMAT", "RiskModel", "fit_model", "fit_scorer"]
