"""The gradient-boosting risk model: LightGBM fitted deterministically, kept as its own model file inside the
model JSON, and explained by LightGBM's exact TreeSHAP, once per distinct path."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest

from linkcare.risk.features import Feature
from linkcare.risk.lgbm import Boosted, fit_boosted
from linkcare.risk.model import RiskModel, fit_model

NAMES = ["age", "admissions", "hours", "never_used"]


def _data(n: int = 4000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.uniform(18, 100, n)
    admissions = rng.poisson(0.4, n).astype(float)
    hours = np.where(rng.random(n) < 0.2, rng.uniform(0, 30, n), 0.0)
    hours[rng.random(n) < 0.1] = np.nan  # missing values take the default branch
    x = np.column_stack([age, admissions, hours, np.zeros(n)])
    logit = -3 + 0.04 * (age - 60) + 0.8 * admissions + 0.03 * np.nan_to_num(hours) + 0.5 * (age > 80) * admissions
    return x, rng.random(n) < 1 / (1 + np.exp(-logit))


@pytest.fixture(scope="module")
def boosted() -> Boosted:
    x, y = _data()
    return fit_boosted(x, y, NAMES, seed=5)


def test_baseline_plus_treeshap_is_the_raw_score(boosted: Boosted) -> None:
    x, _ = _data(1500, seed=9)
    base, parts = boosted.parts(x)
    np.testing.assert_allclose(base + parts.sum(axis=1), boosted.raw(x), rtol=0, atol=1e-9)
    assert boosted.n_trees > 5


def test_explaining_once_per_path_equals_lightgbm_on_every_row(boosted: Boosted) -> None:
    x, _ = _data(1500, seed=10)
    x[:10, 0] = boosted.thresholds[0][0]  # values exactly on a threshold go left (x <= threshold)
    first, inverse = boosted.paths(x)
    assert first.size < x.shape[0]  # rows do share paths
    direct = boosted.booster.predict(x, pred_contrib=True)
    np.testing.assert_array_equal(boosted.parts(x)[1], direct[:, :-1])
    assert np.all(direct[:, -1] == boosted.baseline)


def test_a_feature_never_split_on_contributes_exactly_zero(boosted: Boosted) -> None:
    x, _ = _data(500, seed=11)
    assert boosted.thresholds[3].size == 0
    assert np.all(boosted.parts(x)[1][:, 3] == 0.0)


def test_fitting_is_deterministic() -> None:
    x, y = _data()
    assert fit_boosted(x, y, NAMES, seed=5).text == fit_boosted(x, y, NAMES, seed=5).text


def test_the_model_file_is_lightgbms_own_and_round_trips(boosted: Boosted) -> None:
    import lightgbm

    stored = json.loads(json.dumps(boosted.to_json()))
    assert stored["library"] == "lightgbm" and stored["model_file"].startswith("tree\n")
    # Anyone can load the native file in LightGBM itself and get the same scores.
    native = lightgbm.Booster(model_str=stored["model_file"])
    x, _ = _data(300, seed=12)
    np.testing.assert_array_equal(native.predict(x, raw_score=True), boosted.raw(x))
    again = Boosted.from_json(stored, NAMES)
    np.testing.assert_array_equal(again.raw(x), boosted.raw(x))
    np.testing.assert_array_equal(again.parts(x)[1], boosted.parts(x)[1])


def _tamper_text(d: dict[str, Any]) -> None:
    d["model_file"] = d["model_file"].replace("leaf_value=", "leaf_value=1", 1)


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda d: d.update(library="xgboost"), "not a lightgbm model"),
    (lambda d: d.pop("model_file"), "no LightGBM model file"),
    (_tamper_text, "does not match its SHA-256"),
])
def test_a_tampered_model_is_refused(boosted: Boosted, tamper: Any, message: str) -> None:
    stored = copy.deepcopy(boosted.to_json())
    tamper(stored)
    with pytest.raises(ValueError, match=message):
        Boosted.from_json(stored, NAMES)


def test_a_model_of_other_features_is_refused(boosted: Boosted) -> None:
    with pytest.raises(ValueError, match="not the model's list"):
        Boosted.from_json(boosted.to_json(), ["age", "admissions", "hours", "other"])


def test_rows_of_the_wrong_width_are_refused(boosted: Boosted) -> None:
    with pytest.raises(ValueError, match="the trees use 4"):
        boosted.raw(np.zeros((3, 2)))


def test_calibrated_explanations_add_up_for_every_person() -> None:
    x, y = _data(6000)
    features = tuple(Feature(n, n.replace("_", " "), "hospital use") for n in NAMES)
    model = fit_model("gradient_boosting", features, x, y, (365,), 365, seed=2)
    again = RiskModel.from_json(json.loads(json.dumps(model.to_json())))
    test, _ = _data(2000, seed=13)
    base, parts = again.explain(test)
    np.testing.assert_allclose(base + parts.sum(axis=1), model.log_odds(test), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(again.predict(test), model.predict(test))


@pytest.mark.parametrize("kind", ["logistic", "gradient_boosting"])
def test_age_band_lines_keep_explanations_exact(kind: str) -> None:
    rng = np.random.default_rng(21)
    n = 12000
    age = rng.uniform(0, 100, n)
    age[:50] = np.nan  # unknown age: the overall line
    admissions = rng.poisson(0.5, n).astype(float)
    # Admissions matter less among the old, so one line cannot fit every band.
    logit = -2.5 + 0.02 * np.nan_to_num(age, nan=50) + 0.9 * admissions * np.where(np.nan_to_num(age) > 75, 0.4, 1.0)
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    x = np.column_stack([age, admissions])
    features = (Feature("age", "age", "demographics"), Feature("admissions", "emergency admissions", "hospital use"))
    model = fit_model(kind, features, x, y, (365,), 365, seed=4)
    assert len(model.band_lines) >= 3  # the bands with 100 outcomes and 100 without
    again = RiskModel.from_json(json.loads(json.dumps(model.to_json())))
    assert again.band_lines == model.band_lines
    base, parts = again.explain(x)
    np.testing.assert_allclose(base + parts.sum(axis=1), model.log_odds(x), rtol=0, atol=1e-9)
    slopes, _ = model.lines(x)
    assert np.all(slopes[:50] == model.calibration[0])
