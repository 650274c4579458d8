"""The trees of a gradient-boosting model as plain data: one regression tree as flat node arrays, the
expected value of every node, and the checks a stored ensemble must pass before it is used, each
problem named by where it is (linkcare.risk.boosting scores and explains with them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Stored expected values and baseline must agree with their recomputation this closely. Recomputation
# after a JSON round trip is exact, so the tolerance only forgives other implementations' rounding.
CONSISTENCY_RTOL = 1e-9
MAX_FLOAT = float(np.finfo(np.float64).max)
MAX_LISTED = 8  # problems quoted in one error message; the rest are counted


@dataclass(frozen=True, eq=False)
class Tree:
    """One regression tree as flat node arrays; node 0 is the root and children come after their parent.

    An internal node sends a row left when its feature is NaN and `missing_go_to_left` is set, or when the
    feature is not NaN and is <= `threshold` (+inf sends every non-missing value left). For a leaf,
    `value` is its output on the log-odds scale; for an internal node, the `count`-weighted mean of its
    children's values. `count` is the number of training rows that reached the node. The feature,
    threshold, missing_go_to_left, left and right of a leaf mean nothing and are stored as zeros.
    """

    feature: np.ndarray
    threshold: np.ndarray
    missing_go_to_left: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    value: np.ndarray
    count: np.ndarray

    def __post_init__(self) -> None:
        dtypes = {"feature": np.int64, "threshold": np.float64, "missing_go_to_left": np.bool_, "left": np.int64,
                  "right": np.int64, "is_leaf": np.bool_, "value": np.float64, "count": np.int64}
        sizes = set()
        for name, dtype in dtypes.items():
            # Copied, so the caller's array can change without changing a validated tree.
            array: np.ndarray = np.array(getattr(self, name), dtype=dtype)
            if array.ndim != 1:
                raise ValueError(f"Tree.{name} must be one-dimensional, got {array.ndim} dimensions")
            array.setflags(write=False)
            object.__setattr__(self, name, array)
            sizes.add(array.size)
        if len(sizes) != 1:
            raise ValueError(f"the node arrays of a Tree must have one length, got lengths {sorted(sizes)}")

    @property
    def n_nodes(self) -> int:
        """Return the number of nodes, leaves included."""
        return int(self.value.size)

    @property
    def n_leaves(self) -> int:
        """Return the number of leaves."""
        return int(self.is_leaf.sum())


def expected_values(left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray, count: np.ndarray,
                     value: np.ndarray) -> np.ndarray:
    """Return node values with each internal node's replaced by the count-weighted mean of its children's."""
    out = np.array(value, dtype=np.float64)
    weight = count.astype(np.float64)
    # Deepest level first, so both children are final before their parent is computed.
    for level in reversed(tree_levels(left, right, is_leaf)):
        nodes = level[~is_leaf[level]]
        lc, rc = left[nodes], right[nodes]
        out[nodes] = (weight[lc] * out[lc] + weight[rc] * out[rc]) / (weight[lc] + weight[rc])
    return out


def baseline_of(intercept: float, trees: Sequence[Tree]) -> float:
    """Return the intercept plus every tree's root expected value, summed in tree order."""
    total = intercept
    for tree in trees:
        total += float(tree.value[0])
    return total


def tree_levels(left: np.ndarray, right: np.ndarray, is_leaf: np.ndarray) -> list[np.ndarray]:
    """Return the node indices at each depth of a validated tree, root level first."""
    levels = [np.zeros(1, dtype=np.int64)]
    while True:
        internal = levels[-1][~is_leaf[levels[-1]]]
        if internal.size == 0:
            return levels
        levels.append(np.concatenate([left[internal], right[internal]]))


def ensemble_problems(intercept: Any, baseline: Any, n_features: Any,
                       trees: Sequence[Tree | None]) -> list[str]:
    """Return every problem found in the ensemble's scalars and trees, each naming where it is.

    A None tree failed to parse and has been reported already; the baseline is checked only when
    everything else is sound.
    """
    problems = []
    if not is_int(n_features) or int(n_features) < 1:
        problems.append(f"n_features: expected a positive integer, got {n_features!r}")
        n_features = None
    for name, number in (("intercept", intercept), ("baseline", baseline)):
        if not is_finite_number(number):
            problems.append(f"{name}: expected a finite number, got {number!r}")
    if not trees:
        problems.append("trees: an ensemble needs at least one tree")
    sound = not problems
    for i, tree in enumerate(trees):
        if tree is None:
            sound = False
        elif not isinstance(tree, Tree):
            problems.append(f"trees[{i}]: expected a Tree, got {type(tree).__name__}")
            sound = False
        else:
            found = tree_problems(tree, n_features, f"trees[{i}]")
            problems.extend(found)
            sound = sound and not found
    if sound:
        expected = baseline_of(float(intercept), [t for t in trees if t is not None])
        if not close_enough(float(baseline), expected):
            problems.append(f"baseline: {baseline!r} is not the intercept plus the trees' root values ({expected!r})")
    return problems


def tree_problems(tree: Tree, n_features: int | None, where: str) -> list[str]:
    """Return the problems of one tree: structure first, then values only once the structure is sound."""
    k = tree.n_nodes
    if k == 0:
        return [f"{where}: a tree needs at least one node"]
    problems = []
    internal = np.flatnonzero(~tree.is_leaf)
    for side in ("left", "right"):
        child = getattr(tree, side)[internal]
        outside = (child < 0) | (child >= k)
        if outside.any():
            problems.append(f"{where}.{side}: {int(outside.sum())} child index(es) outside the tree's nodes "
                            f"0..{k - 1} (first at node {int(internal[outside][0])})")
        backward = ~outside & (child <= internal)
        if backward.any():
            problems.append(f"{where}.{side}: {int(backward.sum())} child index(es) not after their parent, "
                            f"which would allow a cycle (first at node {int(internal[backward][0])})")
    if problems:
        return problems
    parents = np.bincount(np.concatenate([tree.left[internal], tree.right[internal]]), minlength=k)
    if parents[0] != 0:
        problems.append(f"{where}: the root (node 0) is the child of another node")
    shared, orphan = np.flatnonzero(parents[1:] > 1) + 1, np.flatnonzero(parents[1:] == 0) + 1
    if shared.size:
        problems.append(f"{where}: {shared.size} node(s) are the child of more than one node "
                        f"(first node {int(shared[0])})")
    if orphan.size:
        problems.append(f"{where}: {orphan.size} node(s) are not reachable from the root (first node {int(orphan[0])})")
    if problems:
        return problems

    if n_features is not None:
        feature = tree.feature[internal]
        bad = (feature < 0) | (feature >= n_features)
        if bad.any():
            problems.append(f"{where}.feature: {int(bad.sum())} split(s) on a feature outside 0..{n_features - 1} "
                            f"(first at node {int(internal[bad][0])})")
    threshold = tree.threshold[internal]
    # +inf is scikit-learn's "every non-missing value goes left"; scoring maps a +inf input onto the largest
    # float, so a finite threshold there would be ambiguous.
    bad = ~((threshold < MAX_FLOAT) | (threshold == math.inf))
    if bad.any():
        problems.append(f"{where}.threshold: {int(bad.sum())} threshold(s) NaN, -inf or the largest float "
                        f"(first at node {int(internal[bad][0])})")
    bad = ~np.isfinite(tree.value)
    if bad.any():
        problems.append(f"{where}.value: {int(bad.sum())} value(s) not finite "
                        f"(first at node {int(np.flatnonzero(bad)[0])})")
    bad = tree.count < 1
    if bad.any():
        problems.append(f"{where}.count: {int(bad.sum())} count(s) below 1 "
                        f"(first at node {int(np.flatnonzero(bad)[0])})")
    elif internal.size:
        bad = tree.count[internal] != tree.count[tree.left[internal]] + tree.count[tree.right[internal]]
        if bad.any():
            problems.append(f"{where}.count: {int(bad.sum())} internal node(s) whose count is not the sum of "
                            f"their children's (first at node {int(internal[bad][0])})")
    if problems:
        return problems

    expected = expected_values(tree.left, tree.right, tree.is_leaf, tree.count, tree.value)
    off = ~close_array(tree.value[internal], expected[internal])
    if off.any():
        problems.append(f"{where}.value: {int(off.sum())} internal node value(s) are not the count-weighted mean "
                        f"of their children's (first at node {int(internal[off][0])})")
    return problems


def parse_tree(raw: Any, where: str, problems: list[str]) -> Tree | None:
    """Return a Tree from its JSON object, or None after adding to `problems` what is wrong with it."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected an object, got {json_type(raw)}")
        return None
    kinds = {"feature": "int", "threshold": "threshold", "missing_go_to_left": "bool", "left": "int",
             "right": "int", "is_leaf": "bool", "value": "number", "count": "int"}
    arrays: dict[str, np.ndarray] = {}
    before = len(problems)
    for key, kind in kinds.items():
        items = raw.get(key)
        if not isinstance(items, list):
            problems.append(f"{where}.{key}: expected a list, got {json_type(items)}")
            continue
        check = {"int": is_int, "bool": lambda v: isinstance(v, bool), "number": is_number,
                 "threshold": lambda v: v is None or is_number(v)}[kind]
        bad = [i for i, item in enumerate(items) if not check(item)]
        if bad:
            expected = {"int": "integers", "bool": "true/false", "number": "numbers",
                        "threshold": "numbers or null"}[kind]
            problems.append(f"{where}.{key}: {len(bad)} item(s) are not {expected} (first at node {bad[0]})")
            continue
        if kind == "threshold":
            items = [math.inf if item is None else item for item in items]
        dtype = {"int": np.int64, "bool": np.bool_, "number": np.float64, "threshold": np.float64}[kind]
        try:
            arrays[key] = np.array(items, dtype=dtype)
        except OverflowError:
            problems.append(f"{where}.{key}: an integer is too large")
    if len(problems) > before:
        return None
    lengths = {key: array.size for key, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        listed = ", ".join(f"{key} {size}" for key, size in lengths.items())
        problems.append(f"{where}: the node lists must all have one length, got {listed}")
        return None
    return Tree(**arrays)


def is_int(value: Any) -> bool:
    """Return whether value is an integer and not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Return whether value is an int or float and not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """Return whether value is a number, not a bool, that converts to a finite float."""
    try:
        return is_number(value) and math.isfinite(float(value))
    except OverflowError:  # an integer beyond the float range
        return False


def json_type(value: Any) -> str:
    """Return the JSON name of value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def close_enough(a: float, b: float) -> bool:
    """Return whether a and b agree to the consistency tolerance."""
    return abs(a - b) <= CONSISTENCY_RTOL * max(1.0, abs(a), abs(b))


def close_array(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return elementwise whether a and b agree to the consistency tolerance."""
    return np.abs(a - b) <= CONSISTENCY_RTOL * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))


def problem_message(title: str, problems: list[str]) -> str:
    """Return one error message listing the first problems and counting the rest."""
    listed = "; ".join(problems[:MAX_LISTED])
    more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{title}: {len(problems)} problem(s): {listed}{more}"


__all__ = ["Tree", "baseline_of", "close_array", "close_enough", "ensemble_problems", "expected_values", "json_type",
           "parse_tree", "problem_message", "tree_levels"]
