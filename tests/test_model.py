"""The match model: EM recovering known m and prior, pattern counts, the model's JSON round trip and
the files it refuses, and recordlinkage's ECM read into weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import recordlinkage

from linkcare.config import Comparison
from linkcare.errors import ConfigError
from linkcare.linkage.model import MatchModel, PatternCodec, PatternCounts, default_m, fit_m_em
from linkcare.linkage.train import _ecm_weights, fit_recordlinkage

# --- the model -----------------------------------------------------------------------------------

M_TRUE = [np.array([0, 0.9, 0.1]), np.array([0, 0.7, 0.2, 0.1]), np.array([0, 0.6, 0.25, 0.1, 0.05]),
          np.array([0, 0.85, 0.1, 0.05])]
U_TRUE = [np.array([0, 0.1, 0.9]), np.array([0, 0.05, 0.15, 0.8]), np.array([0, 0.02, 0.08, 0.2, 0.7]),
          np.array([0, 0.3, 0.2, 0.5])]
MISSING_SHARE = [0.05, 0.1, 0.0, 0.2]
PRIOR = 0.15


def simulate_patterns(n: int, seed: int) -> PatternCounts:
    rng = np.random.default_rng(seed)
    is_match = rng.random(n) < PRIOR
    columns = []
    for m, u, missing in zip(M_TRUE, U_TRUE, MISSING_SHARE, strict=True):
        level = np.where(is_match, rng.choice(m.size, size=n, p=m), rng.choice(u.size, size=n, p=u))
        level[rng.random(n) < missing] = 0
        columns.append(level)
    counts = PatternCounts(PatternCodec([m.size for m in M_TRUE]))
    counts.add(np.stack(columns, axis=1).astype(np.int8))
    return counts


def test_em_recovers_known_m_and_prior() -> None:
    counts = simulate_patterns(300_000, seed=11)
    levels, c = counts.arrays()
    assert c.sum() == 300_000 and levels.shape[0] < 300  # EM runs on distinct patterns, not pairs
    m, prior, iterations = fit_m_em(levels, c, U_TRUE, np.ones(4, dtype=bool), [default_m(x.size) for x in M_TRUE])
    assert iterations < 200
    assert prior == pytest.approx(PRIOR, abs=0.01)
    for j, (got, true) in enumerate(zip(m, M_TRUE, strict=True)):
        assert got.sum() == pytest.approx(1.0)
        assert got[0] == 0.0
        np.testing.assert_allclose(got, true, atol=0.02, err_msg=f"field {j}")


def test_em_leaves_fields_out_of_use_alone() -> None:
    levels, c = simulate_patterns(100_000, seed=3).arrays()
    start = [default_m(x.size) for x in M_TRUE]
    use = np.array([True, True, False, True])
    m, prior, _ = fit_m_em(levels, c, U_TRUE, use, start)
    np.testing.assert_array_equal(m[2], start[2])
    assert prior == pytest.approx(PRIOR, abs=0.02)
    np.testing.assert_allclose(m[1], M_TRUE[1], atol=0.03)


def test_pattern_counts_add_up_weights() -> None:
    counts = PatternCounts(PatternCodec([2, 3]))
    counts.add(np.array([[1, 2], [1, 2], [0, 1]], dtype=np.int8), np.array([1.0, 3.0, 2.0]))
    counts.add(np.array([[1, 2]], dtype=np.int8))
    levels, c = counts.arrays()
    assert levels.tolist() == [[0, 1], [1, 2]]
    assert c.tolist() == [2.0, 5.0]
    assert counts.total == 7.0
    codec = PatternCodec([3, 4, 2])
    rows = np.array([[0, 0, 0], [2, 3, 1], [1, 2, 0]], dtype=np.int8)
    np.testing.assert_array_equal(codec.decode(codec.encode(rows)), rows)


MODEL_COMPARISONS = [Comparison("sex", "exact"), Comparison("year", "numeric", (0.0, 1.0))]


def small_model() -> MatchModel:
    m = [np.array([0, 0.98, 0.02]), np.array([0, 0.9, 0.08, 0.02])]
    u = [np.array([0, 0.5, 0.5]), np.array([0, 0.01, 0.02, 0.97])]
    return MatchModel.from_m_u(MODEL_COMPARISONS, m, u, prior=0.001)


def test_match_model_weights_and_json_round_trip(tmp_path: Path) -> None:
    model = small_model()
    assert model.prior == pytest.approx(0.001)
    assert model.weights[0].tolist() == pytest.approx([0.0, np.log2(0.98 / 0.5), np.log2(0.02 / 0.5)])
    levels = np.array([[1, 1], [0, 0], [2, 3]], dtype=np.int8)
    expected = model.intercept + np.array([model.weights[0][1] + model.weights[1][1], 0.0,
                                           model.weights[0][2] + model.weights[1][3]])
    np.testing.assert_allclose(model.pattern_weights(levels), expected)
    model.save(tmp_path / "model.json")
    write_link_manifest(tmp_path / "model.json")
    loaded = MatchModel.load(tmp_path / "model.json", MODEL_COMPARISONS)
    assert loaded.intercept == model.intercept
    for a, b in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert loaded.m is not None and loaded.u is not None and model.u is not None
    np.testing.assert_array_equal(loaded.u[1], model.u[1])


def write_link_manifest(model_path: Path) -> None:
    """Write the manifest.json that `linkcare link` writes beside a model, with the model's checksum."""
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    (model_path.parent / "manifest.json").write_text(json.dumps({"model": {"sha256": digest}}))


def test_match_model_load_refuses_a_model_without_its_manifest_or_changed_since(tmp_path: Path) -> None:
    small_model().save(tmp_path / "model.json")
    with pytest.raises(ConfigError, match="no manifest.json of `linkcare link` beside it lists this model"):
        MatchModel.load(tmp_path / "model.json", MODEL_COMPARISONS)
    write_link_manifest(tmp_path / "model.json")
    data = json.loads((tmp_path / "model.json").read_text())
    data["intercept"] += 1.0
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="its checksum does not match"):
        MatchModel.load(tmp_path / "model.json", MODEL_COMPARISONS)


@pytest.mark.parametrize(("content", "message"), [
    ("not json {", "not a linkcare linkage model (not JSON)"),
    ('{"format": "splink"}', "not a linkcare linkage model (no format 'linkcare-linkage-model')"),
    ("[]", "not a linkcare linkage model"),
])
def test_match_model_load_refuses_other_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "model.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        MatchModel.load(path, MODEL_COMPARISONS)
    assert str(info.value).startswith(f"{path}: {message}")


def test_match_model_load_refuses_other_comparisons(tmp_path: Path) -> None:
    small_model().save(tmp_path / "model.json")
    for other in ([Comparison("sex", "exact"), Comparison("year", "numeric", (0.0, 2.0))],
                  [Comparison("sex", "exact")],
                  [Comparison("year", "numeric", (0.0, 1.0)), Comparison("sex", "exact")]):
        with pytest.raises(ConfigError, match=r"trained on other comparisons than the config's"):
            MatchModel.load(tmp_path / "model.json", other)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # recordlinkage's ECM takes logs of zeros
def _ecm_frame(levels: np.ndarray, sizes: list[int]) -> pd.DataFrame:
    columns = [f"f{j}={lv}" for j, k in enumerate(sizes) for lv in range(1, k)]
    onehot = np.concatenate([(levels[:, [j]] == np.arange(1, k)[None, :]).astype(np.int8)
                             for j, k in enumerate(sizes)], axis=1)
    return pd.DataFrame(onehot, columns=columns)


def test_ecm_weights_equal_recordlinkage_own_log_odds() -> None:
    # The weights are read off the fitted kernel's probabilities. Where none of them is 0 (here
    # the fitted ones are moved off 0 and 1), they must give exactly the log-odds recordlinkage
    # itself predicts for every pattern.
    counts = simulate_patterns(20_000, seed=5)
    levels, c = counts.arrays()
    levels = np.repeat(levels, c.astype(np.int64), axis=0)
    sizes = [m.size for m in M_TRUE]
    clf = recordlinkage.ECMClassifier(binarize=None)
    clf.fit(_ecm_frame(levels, sizes))
    kernel = clf.kernel
    p_on = np.clip(np.exp(kernel.feature_log_prob_[:, 1::2]), 0.02, 0.98)  # every column has values 0 and 1
    prob = np.empty_like(kernel.feature_log_prob_)
    prob[:, 0::2], prob[:, 1::2] = 1 - p_on, p_on
    kernel.feature_log_prob_ = np.log(prob)
    baseline, weights = _ecm_weights(kernel, sum(sizes) - len(sizes))
    distinct = np.unique(levels, axis=0)
    onehot = _ecm_frame(distinct, sizes).to_numpy()
    log_proba = kernel.predict_log_proba(onehot)
    expected = (log_proba[:, 1] - log_proba[:, 0]) / np.log(2)
    np.testing.assert_allclose(baseline + onehot @ weights, expected, atol=1e-9)


def test_ecm_weights_stay_finite_when_a_level_is_never_seen_among_non_matches() -> None:
    # The first field agrees only on matches: ECM's own estimate of u for that level reaches 0,
    # and recordlinkage's predictions turn to NaN. The model floors it instead.
    rng = np.random.default_rng(3)
    n = 20_000
    is_match = rng.random(n) < 0.2
    first = np.where(is_match, 1, 2)
    second = np.where(is_match, rng.choice(3, size=n, p=[0.05, 0.9, 0.05]), rng.choice(3, size=n, p=[0.05, 0.2, 0.75]))
    levels = np.stack([first, second], axis=1).astype(np.int8)
    comparisons = [Comparison(field="a", method="exact"), Comparison(field="b", method="exact")]
    model = fit_recordlinkage("ecm", comparisons, levels, None)
    assert all(np.isfinite(w).all() for w in model.weights) and np.isfinite(model.intercept)
    # recordlinkage labels ECM's classes without looking at which one agrees (class 1 is "matches"),
    # and on these one-hot levels it finds them either way round; the weights must separate them.
    weight = model.pattern_weights(levels)
    separated = (weight[is_match].min() > weight[~is_match].max()) or (weight[is_match].max() < weight[~is_match].min())
    assert separated


# --- a comparison split by a given field ---------------------------------------------------------


def test_levels_split_by_a_given_field_keep_missing_and_shift_where_it_does_not_agree() -> None:
    from linkcare.linkage.compare import condition_levels

    area = Comparison("area", "exact")
    practice = Comparison("practice", "exact", given="area")
    assert practice.n_levels == 5 and practice.parts == [(1, 3), (3, 5)]
    assert practice.level_names == ["missing", "exact, area agrees", "disagree, area agrees",
                                    "exact, area does not", "disagree, area does not"]
    # columns: area, practice (the methods' own levels: 0 missing, 1 exact, 2 disagree)
    levels = np.array([[1, 1], [1, 2], [2, 1], [2, 2], [0, 1], [1, 0], [0, 0]], dtype=np.int8)
    got = condition_levels(levels.copy(), [area, practice])
    assert got[:, 0].tolist() == levels[:, 0].tolist()
    assert got[:, 1].tolist() == [1, 2, 3, 4, 3, 0, 0]
    assert practice.is_best(got[:, 1]).tolist() == [True, False, True, False, True, False, False]


def test_u_of_a_field_given_another_is_its_share_among_pairs_where_the_other_agrees_or_not() -> None:
    """Two correlated fields: most people of an area share its practice. Random pairs agree on the
    area 2% of the time; given that, they agree on the practice 70% of the time, else 5%."""
    from linkcare.linkage.compare import condition_levels
    from linkcare.linkage.train import u_from_levels

    rng = np.random.default_rng(7)
    n = 400_000
    area_agrees = rng.random(n) < 0.02
    practice_agrees = rng.random(n) < np.where(area_agrees, 0.7, 0.05)
    raw = np.stack([np.where(area_agrees, 1, 2), np.where(practice_agrees, 1, 2)], axis=1).astype(np.int8)
    split = [Comparison("area", "exact"), Comparison("practice", "exact", given="area")]
    independent = [Comparison("area", "exact"), Comparison("practice", "exact")]
    u_split = u_from_levels(condition_levels(raw.copy(), split), split)[1]
    u_indep = u_from_levels(raw.copy(), independent)[1]
    assert u_split[1] == pytest.approx(0.7, abs=0.01) and u_split[3] == pytest.approx(0.05, abs=0.002)
    assert u_split[1] + u_split[2] == pytest.approx(1.0) and u_split[3] + u_split[4] == pytest.approx(1.0)
    # With m 0.95 for agreement in either part, a pair agreeing on both fields gets from the practice
    # log2(0.95 / 0.7) (a weak confirmation) given the area, where counted as independent it would get
    # log2(0.95 / 0.064), about 3.5 bits more: the area's evidence counted twice.
    m = [np.array([0.0, 0.95, 0.05]), np.array([0.0, 0.95, 0.05, 0.95, 0.05])]
    model = MatchModel.from_m_u(split, m, [u_from_levels(raw.copy(), split)[0], u_split], 0.01)
    assert model.weights[1][1] == pytest.approx(np.log2(0.95 / 0.7), abs=0.03)
    naive = MatchModel.from_m_u(independent, [m[0], m[1][:3]], [u_from_levels(raw.copy(), independent)[0], u_indep],
                                0.01)
    assert naive.weights[1][1] - model.weights[1][1] > 3.0


def test_em_gives_m_as_a_distribution_over_each_part() -> None:
    from linkcare.linkage.compare import condition_levels

    rng = np.random.default_rng(3)
    n = 20_000
    match = rng.random(n) < 0.3
    area = np.where(match, np.where(rng.random(n) < 0.9, 1, 2), np.where(rng.random(n) < 0.05, 1, 2))
    practice = np.where(match, np.where(rng.random(n) < 0.9, 1, 2),
                        np.where(rng.random(n) < np.where(area == 1, 0.7, 0.05), 1, 2))
    sex = np.where(match, 1, np.where(rng.random(n) < 0.5, 1, 2))
    comparisons = [Comparison("area", "exact"), Comparison("practice", "exact", given="area"),
                   Comparison("sex", "exact")]
    levels = condition_levels(np.stack([area, practice, sex], axis=1).astype(np.int8), comparisons)
    patterns, counts = np.unique(levels, axis=0, return_counts=True)
    u = [np.array([0, 0.05, 0.95]), np.array([0, 0.7, 0.3, 0.05, 0.95]), np.array([0, 0.5, 0.5])]
    m, share, _ = fit_m_em(patterns, counts.astype(float), u, np.ones(3, dtype=bool),
                           [default_m(c.n_levels, c.parts) for c in comparisons],
                           parts=[c.parts for c in comparisons])
    assert m[1][1] + m[1][2] == pytest.approx(1.0) and m[1][3] + m[1][4] == pytest.approx(1.0)
    assert m[1][1] == pytest.approx(0.9, abs=0.03)
    assert share == pytest.approx(0.3, abs=0.02)
