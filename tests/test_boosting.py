"""TreeEnsemble against scikit-learn's HistGradientBoostingClassifier: scores, path attributions, JSON."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from linkcare.risk.boosting import TreeEnsemble

N_FEATURES = 6
CONSTANT = 3  # a column with one value, which no split can use


def make_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (X, y): column 0 signal with 15% NaN, 1 three values, 2 signal without NaN, 3 constant,
    4 weak, 5 whose missingness carries the signal."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 1] = rng.integers(0, 3, size=n)
    X[:, CONSTANT] = 1.0
    missing5 = rng.random(n) < 0.3
    logit = 1.2 * np.nan_to_num(X[:, 0]) - 0.8 * X[:, 1] + np.sin(2 * X[:, 2]) + 0.2 * X[:, 4] + 1.5 * missing5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X[rng.random(n) < 0.15, 0] = np.nan
    X[missing5, 5] = np.nan
    return X, y


def scoring_rows() -> np.ndarray:
    """Return fresh rows plus awkward ones: NaN where training had none, ±inf, all missing, on-threshold values."""
    X, _ = make_rows(500, seed=2)
    awkward = np.array([
        [0.1, 1.0, np.nan, 1.0, 0.0, 0.5],  # column 2 was never missing in training
        [np.inf, np.inf, np.inf, np.inf, np.inf, np.inf],
        [-np.inf, -np.inf, -np.inf, -np.inf, -np.inf, -np.inf],
        [np.nan] * N_FEATURES,
        [0.0, 0.5, 1.5, 1.0, 0.0, 0.0],  # 0.5 and 1.5 are the thresholds on the three-valued column
    ])
    return np.vstack([X, awkward])


def fit(**params: Any) -> HistGradientBoostingClassifier:
    """Return a seeded classifier fitted on 3000 rows of make_rows."""
    X, y = make_rows(3000, seed=1)
    settings: dict[str, Any] = {"max_iter": 30, "max_leaf_nodes": 15, "learning_rate": 0.3,
                                "early_stopping": False, "random_state": 0}
    settings.update(params)
    return HistGradientBoostingClassifier(**settings).fit(X, y)


@pytest.fixture(scope="module")
def model() -> HistGradientBoostingClassifier:
    return fit()


@pytest.fixture(scope="module")
def ensemble(model: HistGradientBoostingClassifier) -> TreeEnsemble:
    return TreeEnsemble.from_sklearn(model)


@pytest.fixture(scope="module")
def stored(ensemble: TreeEnsemble) -> dict[str, Any]:
    """The ensemble as it comes back from a JSON file."""
    return json.loads(json.dumps(ensemble.to_json(), allow_nan=False))


def test_raw_equals_decision_function(model: HistGradientBoostingClassifier, ensemble: TreeEnsemble) -> None:
    X = scoring_rows()
    np.testing.assert_allclose(ensemble.raw(X), model.decision_function(X), rtol=0, atol=1e-9)


def test_awkward_values_follow_sklearn(model: HistGradientBoostingClassifier, ensemble: TreeEnsemble) -> None:
    # NaN in a column never missing in training, ±inf and all-missing rows each take sklearn's branches.
    X = scoring_rows()[-5:]
    np.testing.assert_allclose(ensemble.raw(X), model.decision_function(X), rtol=0, atol=1e-9)
    assert len(set(ensemble.raw(X).round(9))) == 5


def test_probability_equals_predict_proba(model: HistGradientBoostingClassifier, ensemble: TreeEnsemble) -> None:
    X = scoring_rows()
    probability = 1 / (1 + np.exp(-ensemble.raw(X)))
    np.testing.assert_allclose(probability, model.predict_proba(X)[:, 1], rtol=0, atol=1e-12)


def test_baseline_plus_contributions_is_raw(ensemble: TreeEnsemble) -> None:
    X = scoring_rows()
    raw, contributions = ensemble.raw_and_contributions(X)
    assert contributions is not None and contributions.shape == (X.shape[0], N_FEATURES)
    np.testing.assert_allclose(ensemble.baseline + contributions.sum(axis=1), raw, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(ensemble.contributions(X), contributions)
    np.testing.assert_array_equal(ensemble.raw(X), raw)


def reference_contributions(model: HistGradientBoostingClassifier, x: np.ndarray) -> np.ndarray:
    """Return one row's path attributions, walking sklearn's own nodes with recursively computed means."""

    def expected(nodes: np.ndarray, i: int) -> float:
        if nodes["is_leaf"][i]:
            return float(nodes["value"][i])
        left, right = int(nodes["left"][i]), int(nodes["right"][i])
        weights = float(nodes["count"][left]), float(nodes["count"][right])
        return (weights[0] * expected(nodes, left) + weights[1] * expected(nodes, right)) / sum(weights)

    out = np.zeros(x.size)
    for (predictor,) in model._predictors:
        nodes, i = predictor.nodes, 0
        while not nodes["is_leaf"][i]:
            value = x[nodes["feature_idx"][i]]
            go_left = bool(nodes["missing_go_to_left"][i]) if np.isnan(value) else value <= nodes["num_threshold"][i]
            child = int(nodes["left"][i] if go_left else nodes["right"][i])
            out[nodes["feature_idx"][i]] += expected(nodes, child) - expected(nodes, i)
            i = child
    return out


def test_contributions_are_path_attributions(model: HistGradientBoostingClassifier, ensemble: TreeEnsemble) -> None:
    X = scoring_rows()[::25]
    expected = np.array([reference_contributions(model, x) for x in X])
    np.testing.assert_allclose(ensemble.contributions(X), expected, rtol=0, atol=1e-12)


def test_feature_never_split_on_contributes_exactly_zero(ensemble: TreeEnsemble) -> None:
    used = set()
    for tree in ensemble.trees:
        used.update(tree.feature[~tree.is_leaf].tolist())
    assert CONSTANT not in used and {0, 1, 2, 5} <= used
    contributions = ensemble.contributions(scoring_rows())
    assert np.all(contributions[:, CONSTANT] == 0.0)
    assert np.all(np.any(contributions[:, [0, 1, 2, 5]] != 0.0, axis=0))


def test_internal_values_are_count_weighted_means(model: HistGradientBoostingClassifier,
                                                  ensemble: TreeEnsemble) -> None:
    # sklearn's root value is 0 and its internal values are unshrunk, hence the recomputation.
    assert model._predictors[0][0].nodes["value"][0] == 0.0
    for tree, (predictor,) in zip(ensemble.trees, model._predictors, strict=True):
        leaves = tree.is_leaf
        np.testing.assert_array_equal(tree.value[leaves], predictor.nodes["value"][leaves])
        assert tree.value[0] == pytest.approx(np.average(tree.value[leaves], weights=tree.count[leaves]), abs=1e-12)
    root_values = sum(float(tree.value[0]) for tree in ensemble.trees)
    assert ensemble.baseline == pytest.approx(ensemble.intercept + root_values, abs=1e-12)


def test_baseline_is_mean_raw_output_on_training_rows(model: HistGradientBoostingClassifier,
                                                      ensemble: TreeEnsemble) -> None:
    X, _ = make_rows(3000, seed=1)
    assert ensemble.baseline == pytest.approx(model.decision_function(X).mean(), abs=1e-9)


def test_json_round_trip_gives_identical_scores(ensemble: TreeEnsemble, stored: dict[str, Any]) -> None:
    loaded = TreeEnsemble.from_json(stored)
    X = scoring_rows()
    np.testing.assert_array_equal(loaded.raw(X), ensemble.raw(X))
    np.testing.assert_array_equal(loaded.contributions(X), ensemble.contributions(X))
    assert loaded.to_json() == ensemble.to_json()
    assert (loaded.intercept, loaded.baseline, loaded.n_features) == (ensemble.intercept, ensemble.baseline, 6)


def test_split_on_missing_is_stored_as_null_threshold(stored: dict[str, Any]) -> None:
    # sklearn's "missing versus the rest" split has threshold +inf, which strict JSON cannot hold.
    nulls = [(tree["feature"][i], tree["missing_go_to_left"][i]) for tree in stored["trees"]
             for i, t in enumerate(tree["threshold"]) if t is None]
    assert nulls and all(missing_left is False for _, missing_left in nulls)


def test_early_stopping_keeps_the_trees_it_stopped_at() -> None:
    model = fit(max_iter=300, early_stopping=True, n_iter_no_change=3, validation_fraction=0.25, learning_rate=0.5)
    ensemble = TreeEnsemble.from_sklearn(model)
    assert model.n_iter_ < 300
    assert len(ensemble.trees) == model.n_iter_ == len(model._predictors)
    X = scoring_rows()
    np.testing.assert_allclose(ensemble.raw(X), model.decision_function(X), rtol=0, atol=1e-9)


def test_single_leaf_trees_score_their_value_and_explain_nothing() -> None:
    model = fit(max_iter=5, min_samples_leaf=2000)  # 3000 rows cannot make two leaves of 2000
    ensemble = TreeEnsemble.from_sklearn(model)
    assert all(tree.n_nodes == 1 for tree in ensemble.trees)
    X = scoring_rows()
    raw = ensemble.raw(X)
    np.testing.assert_allclose(raw, model.decision_function(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(raw, ensemble.baseline, rtol=0, atol=1e-12)
    assert np.all(ensemble.contributions(X) == 0.0)


def test_single_leaf_tree_among_split_trees(ensemble: TreeEnsemble, stored: dict[str, Any]) -> None:
    data = copy.deepcopy(stored)
    data["trees"].insert(1, {"feature": [0], "threshold": [0.0], "missing_go_to_left": [False], "left": [0],
                             "right": [0], "is_leaf": [True], "value": [0.25], "count": [3000]})
    data["baseline"] += 0.25
    extended = TreeEnsemble.from_json(data)
    X = scoring_rows()
    np.testing.assert_allclose(extended.raw(X), ensemble.raw(X) + 0.25, rtol=0, atol=1e-12)
    np.testing.assert_allclose(extended.contributions(X), ensemble.contributions(X), rtol=0, atol=1e-12)


def test_trees_of_more_than_64_leaves() -> None:
    model = fit(max_iter=4, max_leaf_nodes=150, min_samples_leaf=5, max_depth=None)
    ensemble = TreeEnsemble.from_sklearn(model)
    assert max(tree.n_leaves for tree in ensemble.trees) > 64
    X = scoring_rows()
    raw, contributions = ensemble.raw_and_contributions(X)
    assert contributions is not None
    np.testing.assert_allclose(raw, model.decision_function(X), rtol=0, atol=1e-9)
    np.testing.assert_allclose(ensemble.baseline + contributions.sum(axis=1), raw, rtol=0, atol=1e-9)
    expected = np.array([reference_contributions(model, x) for x in X[::50]])
    np.testing.assert_allclose(contributions[::50], expected, rtol=0, atol=1e-12)


def test_chunk_size_does_not_change_results(ensemble: TreeEnsemble) -> None:
    X = scoring_rows()
    whole = ensemble.raw_and_contributions(X)
    small = ensemble.raw_and_contributions(X, chunk_rows=7)
    np.testing.assert_array_equal(small[0], whole[0])
    np.testing.assert_array_equal(small[1], whole[1])
    assert ensemble.raw(X[:0]).shape == (0,) and ensemble.contributions(X[:0]).shape == (0, N_FEATURES)


def test_rows_of_the_wrong_width_are_refused(ensemble: TreeEnsemble) -> None:
    with pytest.raises(ValueError, match=r"X must have shape \(rows, 6\), got \(4, 5\)"):
        ensemble.raw(np.zeros((4, 5)))


def test_trees_are_read_only(ensemble: TreeEnsemble) -> None:
    with pytest.raises(ValueError, match="read-only"):
        ensemble.trees[0].value[0] = 1.0


def first_split_with_split_child(tree: dict[str, Any]) -> int:
    """Return the first internal node whose right child is internal too."""
    return next(i for i, leaf in enumerate(tree["is_leaf"]) if not leaf and not tree["is_leaf"][tree["right"][i]])


def _set(key: str, index: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def tamper(data: dict[str, Any]) -> None:
        data["trees"][0][key][index] = value
    return tamper


def _cycle(data: dict[str, Any]) -> None:
    tree = data["trees"][0]
    node = tree["right"][first_split_with_split_child(tree)]
    tree["left"][node] = 0  # back to the root


def _shared_child(data: dict[str, Any]) -> None:
    tree = data["trees"][0]
    tree["right"][0] = tree["left"][0]


def _drop_last_value(data: dict[str, Any]) -> None:
    data["trees"][0]["value"].pop()


def _drop_count(data: dict[str, Any]) -> None:
    del data["trees"][0]["count"]


def _nudge_root(data: dict[str, Any]) -> None:
    data["trees"][0]["value"][0] += 0.1


def _nudge_baseline(data: dict[str, Any]) -> None:
    data["baseline"] += 0.1


def _miscount(data: dict[str, Any]) -> None:
    data["trees"][0]["count"][0] += 1


def _no_trees(data: dict[str, Any]) -> None:
    data["trees"] = []


def _other_format(data: dict[str, Any]) -> None:
    data["format"] = "pickle"


@pytest.mark.parametrize(("tamper", "message"), [
    (_set("left", 0, 10_000), r"trees\[0\]\.left: 1 child index\(es\) outside the tree's nodes"),
    (_set("left", 0, -1), r"trees\[0\]\.left: 1 child index\(es\) outside"),
    (_set("left", 0, 0), r"trees\[0\]\.left: 1 child index\(es\) not after their parent, which would allow a cycle"),
    (_cycle, r"trees\[0\]\.left: 1 child index\(es\) not after their parent, which would allow a cycle"),
    (_shared_child, r"trees\[0\]: 1 node\(s\) are the child of more than one node"),
    (_set("value", -1, float("nan")), r"trees\[0\]\.value: 1 value\(s\) not finite"),
    (_set("value", -1, float("inf")), r"trees\[0\]\.value: 1 value\(s\) not finite"),
    (_set("threshold", 0, float("nan")), r"trees\[0\]\.threshold: 1 threshold\(s\) NaN"),
    (_drop_last_value, r"trees\[0\]: the node lists must all have one length"),
    (_drop_count, r"trees\[0\]\.count: expected a list, got null"),
    (_set("feature", 0, N_FEATURES), r"trees\[0\]\.feature: 1 split\(s\) on a feature outside 0\.\.5"),
    (_set("left", 0, True), r"trees\[0\]\.left: 1 item\(s\) are not integers \(first at node 0\)"),
    (_set("is_leaf", 0, 1), r"trees\[0\]\.is_leaf: 1 item\(s\) are not true/false"),
    (_set("value", 0, "0.1"), r"trees\[0\]\.value: 1 item\(s\) are not numbers"),
    (_nudge_root, r"trees\[0\]\.value: 1 internal node value\(s\) are not the count-weighted mean"),
    (_miscount, r"trees\[0\]\.count: 1 internal node\(s\) whose count is not the sum of their children's"),
    (_nudge_baseline, r"baseline: .* is not the intercept plus the trees' root values"),
    (_no_trees, r"trees: an ensemble needs at least one tree"),
    (_other_format, r"format/version: expected 'linkcare.tree_ensemble' version 1"),
])
def test_from_json_refuses_tampered_data(stored: dict[str, Any], tamper: Callable[[dict[str, Any]], None],
                                         message: str) -> None:
    data = copy.deepcopy(stored)
    tamper(data)
    # Through text as a file would be: Python's json writes and reads NaN and Infinity unless told not to.
    data = json.loads(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        TreeEnsemble.from_json(data)


def test_from_json_lists_every_problem_at_once(stored: dict[str, Any]) -> None:
    data = copy.deepcopy(stored)
    data["trees"][0]["left"][0] = 10_000
    data["trees"][2]["value"][0] = float("nan")
    data["n_features"] = "six"
    with pytest.raises(ValueError, match=r"3 problem\(s\)") as caught:
        TreeEnsemble.from_json(data)
    assert "n_features" in str(caught.value) and "trees[0].left" in str(caught.value)
    assert "trees[2].value" in str(caught.value)


@pytest.mark.parametrize("data", [None, [], "trees"])
def test_from_json_refuses_what_is_not_an_object(data: Any) -> None:
    with pytest.raises(ValueError, match="a tree ensemble must be a JSON object"):
        TreeEnsemble.from_json(data)


def test_from_sklearn_refuses_other_models() -> None:
    X, y = make_rows(600, seed=3)
    with pytest.raises(ValueError, match="not fitted"):
        TreeEnsemble.from_sklearn(HistGradientBoostingClassifier())
    with pytest.raises(ValueError, match="only binary classifiers are supported; this one has 3 classes"):
        TreeEnsemble.from_sklearn(HistGradientBoostingClassifier(max_iter=3).fit(X, y + (X[:, 1] == 2)))
    categorical = HistGradientBoostingClassifier(max_iter=3, categorical_features=[1]).fit(X, y)
    with pytest.raises(ValueError, match="categorical_features are not supported"):
        TreeEnsemble.from_sklearn(categorical)
    with pytest.raises(ValueError, match="expected a HistGradientBoostingClassifier, got HistGradientBoostingRegr"):
        TreeEnsemble.from_sklearn(HistGradientBoostingRegressor(max_iter=3).fit(X, y))  # type: ignore[arg-type]
