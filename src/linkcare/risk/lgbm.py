"""Gradient-boosted trees from LightGBM, kept as LightGBM's own model file and explained by LightGBM's
exact TreeSHAP.

- Fitting is deterministic: a fixed seed, a fixed thread count, LightGBM's `deterministic` mode and
  row-wise histograms, no bagging. The number of trees is found by early stopping on a seeded tenth
  of the fitting people.
- The model is LightGBM's text model file, which is data and not code (never a pickle). It is stored
  whole inside the risk model's JSON, with its SHA-256, so a reviewer can take it out and load it in
  LightGBM itself; the JSON file is in turn checksummed by the model folder's manifest.
- Contributions are LightGBM's `pred_contrib`: exact TreeSHAP (Lundberg et al. 2020), consistent
  and locally accurate, so for every row the expected value plus the contributions is the raw score.

Why LightGBM and not XGBoost: both were measured on linkcare's own features of the same site, with
the same trees (15 leaves, learning rate 0.05, early stopping); the AUROC was the same to 4 decimals
(0.7569 on a 100,000-person site), LightGBM fitted and explained as fast or faster, and its wheel is
3.5 MB against XGBoost's 130 MB (or the separate xgboost-cpu package). docs/risk.md gives the figures.

Why trees of depth 3 (8 leaves) at a learning rate of 0.2: TreeSHAP costs about leaves x depth^2 per
tree and row, and every person at a site is explained. On a 1,000,000-person site, depth 3 reached the
same AUROC as 15 leaves at depth 4 (0.7538 against 0.7534-0.7536) at less than half the cost of
explaining; on a 100,000-person site, 15 leaves with no depth limit reached 0.7571-0.7574 and
depth 3 reached 0.7579. Interactions of up to three features are still modelled.

Explaining is exact and done once per distinct path: people whose every feature falls between the
same two split thresholds of the model go down the same branch of every tree, so their TreeSHAP
values are identical; each such group is explained once (about a third of the rows on a synthetic site).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LIBRARY = "lightgbm"
THREADS = 2
MAX_TREES = 2000
EARLY_STOPPING_ROUNDS = 20
STOPPING_SHARE = 0.1  # of the fitting people, held out to stop adding trees
#: LightGBM's parameters; the seed is added when fitting.
PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.2, "num_leaves": 8, "max_depth": 3, "min_data_in_leaf": 100,
    "lambda_l2": 1.0, "max_bin": 255, "num_threads": THREADS, "deterministic": True, "force_row_wise": True,
    "bagging_fraction": 1.0, "feature_fraction": 1.0, "verbose": -1,
}


def _lightgbm() -> Any:
    import lightgbm

    return lightgbm


@dataclass
class Boosted:
    """A fitted LightGBM booster and its own model file."""

    text: str  # LightGBM's model file (Booster.model_to_string)
    names: list[str]  # the feature of each model column, in order
    params: dict[str, Any] = field(default_factory=dict)
    _booster: Any = field(default=None, repr=False, compare=False)
    _baseline: float | None = field(default=None, repr=False, compare=False)
    _thresholds: list[np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def booster(self) -> Any:
        if self._booster is None:
            self._booster = _lightgbm().Booster(model_str=self.text)
        return self._booster

    @property
    def n_trees(self) -> int:
        return int(self.booster.num_trees())

    @property
    def baseline(self) -> float:
        """Return the expected raw score over the fitting people: TreeSHAP's baseline, the same for every row."""
        if self._baseline is None:
            self._baseline = float(self._contrib(np.full((1, len(self.names)), np.nan))[0, -1])
        return self._baseline

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError(f"rows have {x.shape[-1] if x.ndim else 0} columns; the trees use {len(self.names)}")
        return x

    def _contrib(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, pred_contrib=True, num_threads=THREADS), dtype=np.float64)

    @property
    def thresholds(self) -> list[np.ndarray]:
        """Return the sorted split thresholds of each feature over all the trees (empty: never split on)."""
        if self._thresholds is None:
            found: list[set[float]] = [set() for _ in self.names]
            for tree in self.booster.dump_model()["tree_info"]:
                stack = [tree["tree_structure"]]
                while stack:
                    node = stack.pop()
                    if "split_feature" in node:
                        if node.get("decision_type") != "<=":
                            raise ValueError("the trees have a split that is not numeric (<=)")
                        found[int(node["split_feature"])].add(float(node["threshold"]))
                        stack += [node["left_child"], node["right_child"]]
            self._thresholds = [np.array(sorted(t), dtype=np.float64) for t in found]
        return self._thresholds

    def paths(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (one row index per distinct path, the path of each row): rows with the same interval
        between consecutive thresholds on every feature split on (missing is its own interval) take
        the same branch at every split of every tree."""
        used = [(j, t) for j, t in enumerate(self.thresholds) if t.size]
        codes = np.empty((x.shape[0], len(used)), dtype=np.int16)  # at most max_bin thresholds
        for k, (j, t) in enumerate(used):
            codes[:, k] = np.where(np.isnan(x[:, j]), -1, np.searchsorted(t, x[:, j], side="left"))
        if not used:
            return np.zeros(1, dtype=np.int64), np.zeros(x.shape[0], dtype=np.int64)
        rows = np.ascontiguousarray(codes).view(np.dtype((np.void, codes.dtype.itemsize * codes.shape[1]))).ravel()
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        return first, inverse.ravel()

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Return the raw log-odds of each row."""
        x = self._check(x)
        if x.shape[0] == 0:
            return np.empty(0)
        return np.asarray(self.booster.predict(x, raw_score=True, num_threads=THREADS), dtype=np.float64)

    def parts(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Return (baseline, rows × features TreeSHAP contributions) of the raw log-odds."""
        x = self._check(x)
        if x.shape[0] == 0:
            return self.baseline, np.empty((0, len(self.names)))
        first, inverse = self.paths(x)
        contrib = self._contrib(x[first])[:, :-1]
        return self.baseline, contrib[inverse]

    def to_json(self) -> dict[str, Any]:
        return {"library": LIBRARY, "library_version": _lightgbm().__version__, "params": self.params,
                "trees": self.n_trees, "model_file_sha256": hashlib.sha256(self.text.encode("utf-8")).hexdigest(),
                "model_file": self.text}

    @classmethod
    def from_json(cls, data: Any, names: list[str]) -> Boosted:
        """Return the booster a model JSON's `boosted` entry holds; raise ValueError saying what is wrong."""
        if not isinstance(data, dict) or data.get("library") != LIBRARY:
            raise ValueError(f"the gradient-boosting model is not a {LIBRARY} model")
        text = data.get("model_file")
        if not isinstance(text, str) or not text.startswith("tree\n"):
            raise ValueError("the gradient-boosting model has no LightGBM model file")
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != data.get("model_file_sha256"):
            raise ValueError("the LightGBM model file does not match its SHA-256")
        lightgbm = _lightgbm()
        try:
            booster = lightgbm.Booster(model_str=text)
        except lightgbm.basic.LightGBMError:
            raise ValueError("LightGBM cannot read the model file") from None
        if list(booster.feature_name()) != names:
            raise ValueError(f"the trees use the features {booster.feature_name()[:3]}…, not the model's list")
        params = data.get("params")
        return cls(text, names, dict(params) if isinstance(params, dict) else {}, booster)


def fit_boosted(x: np.ndarray, y: np.ndarray, names: list[str], seed: int, trees: int | None = None) -> Boosted:
    """Return LightGBM trees fitted on rows x with outcomes y, stopped early on a seeded tenth of them; with
    `trees`, exactly that many trees on all the rows (for the folds of a model whose size is known)."""
    lightgbm = _lightgbm()
    stop = np.random.default_rng([seed, 1]).random(y.size) < STOPPING_SHARE
    if trees is not None or y[stop].all() or not y[stop].any():
        stop = np.zeros(y.size, dtype=bool)
    params = {**PARAMS, "seed": int(seed)}
    train = lightgbm.Dataset(x[~stop], y[~stop].astype(np.float64), feature_name=names, free_raw_data=True,
                             params={"max_bin": PARAMS["max_bin"], "verbose": -1})
    valid = [lightgbm.Dataset(x[stop], y[stop].astype(np.float64), reference=train)] if stop.any() else []
    callbacks = [lightgbm.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)] if valid else []
    rounds = trees if trees is not None else (MAX_TREES if valid else 200)
    booster = lightgbm.train(params, train, num_boost_round=max(rounds, 1), valid_sets=valid, callbacks=callbacks)
    best = booster.best_iteration if valid and booster.best_iteration > 0 else booster.current_iteration()
    text = booster.model_to_string(num_iteration=best)
    return Boosted(text, list(names), {**params, "trees_stopped_at": int(best),
                                       "stopping_people": int(stop.sum())})


__all__ = ["LIBRARY", "Boosted", "fit_boosted"]
