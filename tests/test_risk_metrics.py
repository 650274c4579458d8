"""Risk metrics against sklearn and hand-worked examples, and disclosure control of published counts.

AUROC, average precision and Brier match sklearn to 1e-12 with and without ties; frequency weights act as
repeated rows; the bootstrap interval is the documented resampling; calibration recovers the slope and
intercept of simulated data; top_share and the subgroup small-group rule on tiny hand-worked inputs.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from linkcare.disclosure import Disclosure
from linkcare.risk.metrics import (
    auroc,
    auroc_interval,
    average_precision,
    brier,
    calibration,
    risk_metrics,
    subgroup_metrics,
    top_share,
)


def _simulate(n: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (y, p) with y drawn from p; rounding p to `decimals` makes many ties."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(-1.5, 1.2, n)))
    if decimals is not None:
        p = np.round(p, decimals)
    return rng.random(n) < p, p


@pytest.mark.parametrize(("n", "seed", "decimals"), [(20, 1, None), (2_000, 2, None), (2_000, 3, 2),
                                                     (5_000, 4, 1), (300, 5, 0)])
def test_auroc_average_precision_and_brier_match_sklearn(n: int, seed: int, decimals: int | None) -> None:
    y, p = _simulate(n, seed, decimals)
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    # 0/1 integers are the same outcomes as bools.
    assert auroc(y.astype(np.int8), p) == auroc(y, p)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=2, max_size=40))
def test_auroc_and_average_precision_match_sklearn_on_any_ties(rows: list[tuple[bool, int]]) -> None:
    y = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows]) / 4
    if y.all() or not y.any():
        assert math.isnan(auroc(y, p))
        return
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert average_precision(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_auroc_hand_worked_with_a_tie() -> None:
    # Pairs (positive, negative): (0.8, 0.2) 1, (0.8, 0.5) 1, (0.5, 0.2) 1, (0.5, 0.5) 1/2 -> 3.5 / 4.
    assert auroc([1, 0, 1, 0], [0.8, 0.2, 0.5, 0.5]) == 0.875


def test_integer_weights_equal_repeated_rows() -> None:
    y, p = _simulate(500, 6, decimals=2)
    w = np.random.default_rng(7).integers(0, 4, y.size)
    repeated = auroc(np.repeat(y, w), np.repeat(p, w))
    assert auroc(y, p, weights=w) == pytest.approx(repeated, abs=1e-12)
    assert auroc(y, p, weights=w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
    assert auroc(y, p, weights=np.ones(y.size)) == pytest.approx(auroc(y, p), abs=1e-15)
    # Weight 0 leaves a person out.
    assert auroc([1, 0, 1, 0], [0.8, 0.2, 0.5, 0.5], weights=[1, 1, 1, 0]) == 1.0


def test_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="one weight per person"):
        auroc([1, 0], [0.5, 0.2], weights=[1, 1, 1])
    with pytest.raises(ValueError, match="1 negative, missing or infinite"):
        auroc([1, 0], [0.5, 0.2], weights=[1, -1])


def test_interval_is_the_documented_bootstrap() -> None:
    y, p = _simulate(400, 8, decimals=2)
    rng = np.random.default_rng(11)
    replicates = [auroc(y, p, weights=np.bincount(rng.integers(0, y.size, y.size), minlength=y.size))
                  for _ in range(50)]
    expected = np.quantile(replicates, [0.05, 0.95])
    assert auroc_interval(y, p, replicates=50, seed=11, level=0.9) == pytest.approx(tuple(expected), abs=1e-12)


def test_interval_contains_the_estimate_narrows_with_more_data_and_is_seeded() -> None:
    y_small, p_small = _simulate(500, 9)
    y_big, p_big = _simulate(50_000, 9)
    lo_s, hi_s = auroc_interval(y_small, p_small, seed=1)
    lo_b, hi_b = auroc_interval(y_big, p_big, seed=1)
    assert lo_s < auroc(y_small, p_small) < hi_s
    assert lo_b < auroc(y_big, p_big) < hi_b
    # The width shrinks like 1 / sqrt(n): 100 times the people, about a tenth of the width.
    assert (hi_b - lo_b) < 0.2 * (hi_s - lo_s)
    assert auroc_interval(y_small, p_small, seed=1) == (lo_s, hi_s)
    assert auroc_interval(y_small, p_small, seed=2) != (lo_s, hi_s)
    lo_90, hi_90 = auroc_interval(y_small, p_small, seed=1, level=0.9)
    assert lo_s <= lo_90 < hi_90 <= hi_s


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def _expit(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_calibration_recovers_a_known_slope_and_intercept() -> None:
    rng = np.random.default_rng(12)
    n = 200_000
    p = _expit(rng.normal(-1.5, 1.0, n))
    # Miscalibrated: logit P(y=1) = -0.3 + 0.8 logit(p).
    true = _expit(-0.3 + 0.8 * _logit(p))
    y = rng.random(n) < true
    slope, intercept = calibration(y, p)
    assert slope == pytest.approx(0.8, abs=0.03)
    # With the slope fixed at 1 the intercept is the a with sum(expit(a + logit p)) = expected outcomes;
    # bisect for it on the true probabilities.
    lo, hi = -3.0, 3.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _expit(mid + _logit(p)).sum() < true.sum() else (lo, mid)
    assert intercept == pytest.approx(lo, abs=0.03)
    # When the true slope is 1, that intercept is the a of the simulation.
    y1 = rng.random(n) < _expit(-0.3 + _logit(p))
    slope1, intercept1 = calibration(y1, p)
    assert slope1 == pytest.approx(1.0, abs=0.03)
    assert intercept1 == pytest.approx(-0.3, abs=0.03)


def test_calibration_of_a_perfectly_calibrated_model() -> None:
    rng = np.random.default_rng(13)
    p = _expit(rng.normal(-2.0, 1.0, 200_000))
    slope, intercept = calibration(rng.random(p.size) < p, p)
    assert slope == pytest.approx(1.0, abs=0.03)
    assert intercept == pytest.approx(0.0, abs=0.03)


def test_calibration_undefined_cases_are_nan() -> None:
    assert all(math.isnan(v) for v in calibration([1, 1, 1], [0.2, 0.5, 0.7]))
    # All p equal: no slope, but the intercept is logit(1/2) - logit(0.2) = log 4.
    slope, intercept = calibration([0, 1, 0, 1], [0.2] * 4)
    assert math.isnan(slope)
    assert intercept == pytest.approx(math.log(4), abs=1e-9)
    # Perfect separation has no finite slope; p of 0 and 1 are clipped, not infinite.
    assert math.isnan(calibration([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[0])
    assert math.isfinite(calibration([0, 1, 0, 1], [0.0, 1.0, 0.3, 0.6])[1])


def test_top_share_hand_worked() -> None:
    p = [0.9, 0.8, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1]
    y = [1, 0, 1, 1, 0, 1, 0, 0, 1, 0]
    # 3 people: 0.9 and the first two of the three tied at 0.8 (people 1 and 2), so 2 outcomes not 3.
    assert top_share(y, p, shares=(0.1, 0.25, 0.5, 1.0)) == [
        {"share": 0.1, "people": 1, "flagged_with_outcome": 1, "sensitivity": 0.2, "ppv": 1.0},
        {"share": 0.25, "people": 3, "flagged_with_outcome": 2, "sensitivity": 0.4, "ppv": 2 / 3},
        {"share": 0.5, "people": 5, "flagged_with_outcome": 3, "sensitivity": 0.6, "ppv": 0.6},
        {"share": 1.0, "people": 10, "flagged_with_outcome": 5, "sensitivity": 1.0, "ppv": 0.5},
    ]
    # 0.07 * 100 is 7.000000000000001 in floating point; that is 7 people, not 8.
    assert top_share(np.zeros(100, bool), np.linspace(0, 1, 100), shares=(0.07,))[0]["people"] == 7
    with pytest.raises(ValueError, match=r"fractions in \(0, 1\]"):
        top_share(y, p, shares=(0.0,))


def test_top_share_ties_follow_input_order() -> None:
    y, p = _simulate(3_000, 14, decimals=1)
    order = np.argsort(-p, kind="stable")
    for row in top_share(y, p, shares=(0.005, 0.05, 0.2, 0.33)):
        assert row["flagged_with_outcome"] == int(y[order[: row["people"]]].sum())


def test_risk_metrics_gathers_the_metrics() -> None:
    y, p = _simulate(1_000, 15, decimals=2)
    m = risk_metrics(y, p, seed=3, replicates=100)
    assert list(m) == ["people", "outcomes", "outcome_rate", "auroc", "auroc_ci", "auprc", "brier",
                       "calibration_slope", "calibration_intercept", "top"]
    assert (m["people"], m["outcomes"]) == (1_000, int(y.sum()))
    assert m["outcome_rate"] == y.sum() / 1_000
    assert m["auroc"] == auroc(y, p)
    assert m["auroc_ci"] == list(auroc_interval(y, p, replicates=100, seed=3))
    assert m["auprc"] == average_precision(y, p)
    assert m["brier"] == brier(y, p)
    assert (m["calibration_slope"], m["calibration_intercept"]) == calibration(y, p)
    assert m["top"] == top_share(y, p)


def test_one_class_gives_nan_and_empty_input_is_an_error() -> None:
    y, p = np.zeros(5, bool), np.linspace(0.1, 0.5, 5)
    assert math.isnan(auroc(y, p))
    assert math.isnan(average_precision(y, p))
    assert all(math.isnan(v) for v in auroc_interval(y, p))
    assert average_precision(~y, p) == 1.0
    m = risk_metrics(y, p)
    assert math.isnan(m["auroc"]) and m["brier"] == pytest.approx(float(np.mean(p**2)), abs=1e-15)
    with pytest.raises(ValueError, match="empty"):
        auroc([], [])
    with pytest.raises(ValueError, match="empty"):
        risk_metrics(np.array([], bool), np.array([]))


@pytest.mark.parametrize(("y", "p", "message"), [
    ([1, 0, 1], [0.5, 0.5], "y has 3 values but p has 2"),
    ([1, 2, 0], [0.5, 0.5, 0.1], "1 value.* neither 0 nor 1"),
    ([1, 0, 1], [0.5, float("nan"), 0.1], "1 missing or infinite"),
    ([1, 0, 1], [0.5, 1.5, -0.1], r"2 value\(s\) are outside"),
])
def test_bad_inputs_are_named(y: list, p: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        risk_metrics(y, p)


def test_subgroup_small_groups_keep_only_counts() -> None:
    rng = np.random.default_rng(16)
    # c: 200 people, 40 outcomes; a: 30 people; b: 100 people with 5 outcomes; null: 60 people all with outcome.
    groups = ["c"] * 200 + ["a"] * 30 + ["b"] * 100 + [None] * 60
    y = np.r_[np.arange(200) < 40, np.arange(30) < 10, np.arange(100) < 5, np.ones(60, bool)]
    p = np.round(rng.random(y.size), 1)
    frame = pl.DataFrame({"team": groups, "y": y, "p": p}).sample(fraction=1.0, shuffle=True, seed=1)
    out = subgroup_metrics(frame, "team", seed=4, replicates=50)
    assert [(r["group"], r["value"], r["people"], r["outcomes"]) for r in out] == [
        ("team", "a", 30, 10), ("team", "b", 100, 5), ("team", "c", 200, 40), ("team", "unknown", 60, 60)]
    for small in (out[0], out[1], out[3]):
        assert all(small[k] is None for k in ("outcome_rate", "auroc", "auroc_ci", "auprc", "brier",
                                              "calibration_slope", "calibration_intercept", "top"))
    # The large group gets exactly the metrics of its people, in input order (ties in p matter for `top`).
    c = frame.filter(pl.col("team") == "c")
    assert out[2] == {"group": "team", "value": "c"} | risk_metrics(c["y"].to_numpy(), c["p"].to_numpy(),
                                                                     seed=4, replicates=50)
    assert out[2]["outcome_rate"] == 0.2
    # Lower thresholds let group a through.
    assert subgroup_metrics(frame, "team", replicates=10, min_people=20, min_outcomes=5)[0]["auroc"] is not None


def test_subgroup_inputs_are_checked() -> None:
    frame = pl.DataFrame({"team": ["a"], "y": [True], "p": [0.5]})
    with pytest.raises(ValueError, match="no column.* age"):
        subgroup_metrics(frame, "age")
    with pytest.raises(ValueError, match="column p has 1 null"):
        subgroup_metrics(frame.with_columns(pl.lit(None, pl.Float64).alias("p")), "team")


def test_disclosure_show_defaults() -> None:
    d = Disclosure()
    counts = [0, 1, 7, 8, 12, 13, 1234]
    assert [d.show(c) for c in counts] == ["0", "<8", "<8", "10", "10", "15", "1,235"]
    assert [d.value(c) for c in counts] == [0, None, None, 10, 10, 15, 1235]
    assert d.show(np.int64(1_234_567)) == "1,234,565"
    assert d.column(pl.Series("n", counts)).to_list() == ["0", "<8", "<8", "10", "10", "15", "1,235"]


@pytest.mark.parametrize(("threshold", "rounding"), [(8, 5), (10, 10), (0, 1), (1, 1), (3, 2), (5, 3)])
def test_disclosure_column_equals_show(threshold: int, rounding: int) -> None:
    d = Disclosure(threshold, rounding)
    counts = [*range(3_000), 999_999, 1_000_000, 10**15 + 3, 2**62]
    column = d.column(pl.Series("n", counts, dtype=pl.Int64))
    assert column.name == "n" and column.dtype == pl.String
    assert column.to_list() == [d.show(c) for c in counts]
    assert d.column(pl.Series("n", [None, 5], dtype=pl.UInt32)).to_list() == [None, d.show(5)]


def test_disclosure_without_suppression_or_rounding() -> None:
    assert [Disclosure(0, 1).show(c) for c in (0, 1, 7, 1234)] == ["0", "1", "7", "1,234"]
    assert [Disclosure(10, 10).show(c) for c in (9, 10, 14, 15)] == ["<10", "10", "10", "20"]


def test_disclosure_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="threshold must be 0 or more"):
        Disclosure(threshold=-1)
    with pytest.raises(ValueError, match="rounding must be 1 or more"):
        Disclosure(rounding=-5)
    with pytest.raises(ValueError, match="rounding must be 1 or more"):
        Disclosure(rounding=0)
    with pytest.raises(ValueError, match="0 or more, got -1"):
        Disclosure().show(-1)
    with pytest.raises(ValueError, match="1 negative value"):
        Disclosure().column(pl.Series("n", [3, -1]))
    with pytest.raises(ValueError, match="whole numbers"):
        Disclosure().column(pl.Series("n", [3.0]))
