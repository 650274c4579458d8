"""The linkage engine, stage by stage on tiny frames, then `linkcare link` end to end.

Blocking completeness, comparison levels (missing values included) and the recordlinkage
reference paths, EM recovering known m and prior, clustering invariants (shuffled input gives the
same people), the pair-count guard, model reuse, and the F1 of the bundled sample site.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import recordlinkage
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkcare.cli import cli
from linkcare.cohort.lineage import person_ids
from linkcare.config import Comparison, FieldSpec
from linkcare.config.methods import METHODS, dice_similarity
from linkcare.errors import ConfigError, DataError
from linkcare.linkage.blocking import (
    allowed,
    candidate_pairs,
    check_pair_counts,
    deterministic_edges,
    encode_fields,
    pairs_polars,
    pairs_recordlinkage,
    plan_pass,
    source_codes,
)
from linkcare.linkage.cluster import components, one_to_one
from linkcare.linkage.compare import (
    compare_pairs,
    compare_pairs_recordlinkage,
    field_data,
    levels_of_values,
)
from linkcare.linkage.evaluate import pairwise_score
from linkcare.linkage.model import MatchModel, PatternCodec, PatternCounts, default_m, fit_m_em
from linkcare.linkage.train import _ecm_weights, fit_recordlinkage
from linkcare.sources.read import field_expr

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CONFIG = ROOT / "configs" / "sample.toml"
SAMPLE_TRUTH = ROOT / "sample_data" / "truth" / "records.parquet"
LINK_TYPES = ("link_only", "dedupe_only", "link_and_dedupe")
PASSES = (("x",), ("y", "z"), ("z",))


def objects(*values: str | None) -> np.ndarray:
    return np.array(values, dtype=object)


# --- blocking ------------------------------------------------------------------------------------


def agreeing_pairs(frame: pl.DataFrame, key: tuple[str, ...], link_type: str) -> set[tuple[int, int]]:
    """Every pair i < j that agrees on the key with no value missing and that the link type allows,
    by brute force over all pairs."""
    rows = frame.to_dicts()
    out = set()
    for i, j in combinations(range(len(rows)), 2):
        a, b = rows[i], rows[j]
        same_source = a["source"] == b["source"]
        if (link_type == "link_only" and same_source) or (link_type == "dedupe_only" and not same_source):
            continue
        if all(a[f] is not None and a[f] == b[f] for f in key):
            out.add((i, j))
    return out


def check_blocking(frame: pl.DataFrame, link_type: str, indexer: str, chunk_pairs: int) -> None:
    codes = encode_fields(frame, ("x", "y", "z"))
    src = source_codes(frame)
    plans = [plan_pass(codes, key, src, link_type) for key in PASSES]
    expected = [agreeing_pairs(frame, key, link_type) for key in PASSES]
    produced: list[list[tuple[int, int]]] = [[] for _ in PASSES]
    new_pairs: list[tuple[int, int]] = []
    for i, left, right, new in candidate_pairs(plans, codes, src, link_type, chunk_pairs, indexer):
        assert (left < right).all()
        pairs = list(zip(left.tolist(), right.tolist(), strict=True))
        produced[i] += pairs
        new_pairs += [p for p, is_new in zip(pairs, new.tolist(), strict=True) if is_new]
        # A pair is new exactly when no earlier pass's key covers it.
        for p, is_new in zip(pairs, new.tolist(), strict=True):
            assert is_new == (not any(p in expected[k] for k in range(i)))
    for i, plan in enumerate(plans):
        assert sorted(produced[i]) == sorted(expected[i]), f"pass {PASSES[i]}"
        assert plan.pairs == len(produced[i]), f"pass {PASSES[i]}: planned count differs from pairs produced"
    # Across passes, each agreeing pair comes out as new exactly once.
    assert len(new_pairs) == len(set(new_pairs))
    assert set(new_pairs) == set().union(*expected)


@pytest.mark.parametrize("link_type", LINK_TYPES)
@pytest.mark.parametrize(("indexer", "chunk_pairs"), [("polars", 5), ("polars", 10**6), ("recordlinkage", 10**6)])
def test_candidate_pairs_give_every_agreeing_pair_once(node_frame: pl.DataFrame, link_type: str, indexer: str,
                                                       chunk_pairs: int) -> None:
    check_blocking(node_frame, link_type, indexer, chunk_pairs)


def test_node_frame_exercises_every_pass(node_frame: pl.DataFrame) -> None:
    # Guards the test above against a fixture that would make it vacuous.
    for link_type in LINK_TYPES:
        sizes = [len(agreeing_pairs(node_frame, key, link_type)) for key in PASSES]
        assert all(s >= 20 for s in sizes), (link_type, sizes)


FRAMES = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([None, "1", "2", "3"]),
              st.sampled_from([None, "p", "q"]), st.sampled_from([None, "k", "l"])),
    min_size=1, max_size=30,
).map(lambda rows: pl.DataFrame(rows, schema={"source": pl.String, "x": pl.String, "y": pl.String,
                                              "z": pl.String}, orient="row"))


@settings(max_examples=60, deadline=None)
@given(frame=FRAMES, link_type=st.sampled_from(LINK_TYPES), chunk_pairs=st.sampled_from([1, 3, 10**6]))
def test_candidate_pairs_complete_on_any_frame(frame: pl.DataFrame, link_type: str, chunk_pairs: int) -> None:
    check_blocking(frame, link_type, "polars", chunk_pairs)


@settings(max_examples=40, deadline=None)
@given(frame=FRAMES, link_type=st.sampled_from(LINK_TYPES))
def test_polars_and_recordlinkage_block_the_same_pairs(frame: pl.DataFrame, link_type: str) -> None:
    codes = encode_fields(frame, ("x", "y", "z"))
    src = source_codes(frame)
    for key in PASSES:
        plan = plan_pass(codes, key, src, link_type)
        if plan.node.size < 2:
            continue  # a pass with fewer than two nodes forms no pair
        fast = set(zip(*(a.tolist() for a in pairs_polars(plan, 0, plan.node.size)), strict=True))
        reference = set(zip(*(a.tolist() for a in pairs_recordlinkage(plan, 0, plan.node.size)), strict=True))
        assert fast == reference


def test_recordlinkage_indexer_handles_a_pass_with_one_node() -> None:
    frame = pl.DataFrame({"source": ["a", "b", "a", "b"], "x": ["5", None, None, None], "y": ["1", "1", "1", "1"]})
    codes = encode_fields(frame, ("x", "y"))
    src = source_codes(frame)
    plans = [plan_pass(codes, ("x",), src, "link_and_dedupe"), plan_pass(codes, ("y",), src, "link_and_dedupe")]
    assert plans[0].node.size == 1 and plans[0].pairs == 0
    fast = sorted((i, a, b) for i, left, right, _ in candidate_pairs(plans, codes, src, "link_and_dedupe", 10**6,
                                                                     "polars")
                  for a, b in zip(left.tolist(), right.tolist(), strict=True))
    reference = sorted((i, a, b) for i, left, right, _ in candidate_pairs(plans, codes, src, "link_and_dedupe",
                                                                          10**6, "recordlinkage")
                       for a, b in zip(left.tolist(), right.tolist(), strict=True))
    assert fast == reference == [(1, 0, 1), (1, 0, 2), (1, 0, 3), (1, 1, 2), (1, 1, 3), (1, 2, 3)]


def test_allowed_follows_the_link_type() -> None:
    left, right = np.array([0, 0, 1]), np.array([0, 1, 1])
    assert allowed("link_only", left, right).tolist() == [False, True, False]
    assert allowed("dedupe_only", left, right).tolist() == [True, False, True]
    assert allowed("link_and_dedupe", left, right).tolist() == [True, True, True]


def test_pair_count_guard_names_the_pass_and_its_count(node_frame: pl.DataFrame) -> None:
    codes = encode_fields(node_frame, ("x", "y", "z"))
    src = source_codes(node_frame)
    plans = [plan_pass(codes, key, src, "link_and_dedupe") for key in PASSES]
    worst = max(range(len(plans)), key=lambda i: plans[i].pairs)
    check_pair_counts(plans, plans[worst].pairs)  # at the limit is allowed
    first_over = next(i for i, p in enumerate(plans) if p.pairs > plans[worst].pairs - 1)
    with pytest.raises(DataError) as info:
        check_pair_counts(plans, plans[worst].pairs - 1)
    message = str(info.value)
    assert message.startswith(f"linkage.blocking[{first_over}] ({', '.join(PASSES[first_over])}) would yield "
                              f"{plans[first_over].pairs:,} candidate pairs")
    assert f"above linkage.max_pairs = {plans[worst].pairs - 1:,}" in message


def rule_partition(frame: pl.DataFrame, rules: tuple[tuple[str, ...], ...], link_type: str) -> list[frozenset[int]]:
    """The groups the rules define: components of the graph of allowed pairs agreeing on a rule."""
    n = frame.height
    edges = set().union(*(agreeing_pairs(frame, rule, link_type) for rule in rules))
    left = np.array([a for a, _ in edges], dtype=np.int64)
    right = np.array([b for _, b in edges], dtype=np.int64)
    return partition(components(n, left, right))


def partition(labels: np.ndarray | list) -> list[frozenset[int]]:
    groups: dict[object, set[int]] = {}
    for i, label in enumerate(list(labels)):
        groups.setdefault(label, set()).add(i)
    return sorted((frozenset(g) for g in groups.values()), key=min)


@pytest.mark.parametrize("link_type", [
    "link_and_dedupe",
    "dedupe_only",
    pytest.param("link_only"),
])
def test_deterministic_edges_join_exactly_the_rule_groups(node_frame: pl.DataFrame, link_type: str) -> None:
    rules = (("x", "y", "z"), ("x", "z"))
    codes = encode_fields(node_frame, ("x", "y", "z"))
    src = source_codes(node_frame)
    left, right = deterministic_edges(codes, rules, src, link_type)
    got = partition(components(node_frame.height, left, right))
    assert got == rule_partition(node_frame, rules, link_type)
    assert sum(len(g) > 1 for g in got) >= 5


# --- comparison levels ---------------------------------------------------------------------------


def bloom(bits: np.ndarray) -> bytes:
    return np.packbits(bits.astype(np.uint8)).tobytes()


def dice_of(a: bytes, b: bytes) -> float:
    x, y = np.unpackbits(np.frombuffer(a, np.uint8)), np.unpackbits(np.frombuffer(b, np.uint8))
    return 2.0 * float((x & y).sum()) / float(x.sum() + y.sum())


RNG = np.random.default_rng(7)
FILTER = RNG.random(256) < 0.3
CLOSE = FILTER.copy()
CLOSE[np.nonzero(FILTER)[0][:8]] = False  # drop 8 of about 77 set bits: Dice about 0.95
FAR = RNG.random(256) < 0.3
F_HEX, CLOSE_HEX, FAR_HEX = bloom(FILTER).hex(), bloom(CLOSE).hex(), bloom(FAR).hex()
F_B64 = base64.b64encode(bloom(FILTER)).decode()
SHORT_HEX = bloom(FILTER[:128]).hex()


def test_dice_of_many_pairs_equals_the_plain_formula() -> None:
    # Bloom filters in hex and base64, of two lengths, one all zero, and text that is neither:
    # the batched bit counts give the formula's value on every pair, and 0 where it cannot apply.
    rng = np.random.default_rng(3)
    raw = [bloom(rng.random(256) < 0.3) for _ in range(40)] + [bloom(rng.random(128) < 0.3) for _ in range(5)]
    raw.append(bytes(32))
    texts = [r.hex() if i % 2 else base64.b64encode(r).decode() for i, r in enumerate(raw)] + ["not a filter"]
    decoded = [*raw, b""]
    i, j = rng.integers(0, len(texts), 5_000), rng.integers(0, len(texts), 5_000)
    expected = np.array([dice_of(decoded[x], decoded[y])
                         if decoded[x] and len(decoded[x]) == len(decoded[y]) and any(decoded[x] + decoded[y]) else 0.0
                         for x, y in zip(i, j, strict=True)])
    a, b = np.array(texts, dtype=object)[i], np.array(texts, dtype=object)[j]
    np.testing.assert_allclose(dice_similarity(a, b), expected, rtol=0, atol=1e-12)
    assert (expected > 0).sum() > 3_000

LEVEL_CASES = [
    # method, levels, a, b, expected level
    ("exact", (), "m", "m", 1),
    ("exact", (), "m", "f", 2),
    ("jaro_winkler", (1.0, 0.9, 0.8), "martha", "martha", 1),
    ("jaro_winkler", (1.0, 0.9, 0.8), "martha", "marhta", 2),  # 0.961
    ("jaro_winkler", (1.0, 0.9, 0.8), "dwayne", "duane", 3),  # 0.840
    ("jaro_winkler", (1.0, 0.9, 0.8), "dixon", "dicksonx", 3),  # 0.813
    ("jaro_winkler", (1.0, 0.9, 0.8), "abc", "xyz", 4),
    ("jaro_winkler", (0.95, 0.8), "martha", "martha", 1),  # identical passes the best cut-off
    ("levenshtein", (0, 1, 2), "kitten", "kitten", 1),
    ("levenshtein", (0, 1, 2), "kitten", "sitten", 2),
    ("levenshtein", (0, 1, 2), "kitten", "sittin", 3),
    ("levenshtein", (0, 1, 2), "kitten", "sitting", 4),
    ("date", (31, 366), "2000-03-04", "2000-03-04", 1),
    ("date", (31, 366), "2000-03-04", "2000-04-03", 2),  # day and month swapped
    ("date", (31, 366), "2000-03-04", "2000-03-20", 3),
    ("date", (31, 366), "1999-12-31", "2000-01-01", 3),  # across a year end: near, not swapped
    ("date", (31, 366), "2000-03-04", "2000-12-25", 4),
    ("date", (31, 366), "2000-03-04", "2001-03-20", 5),
    ("date", (31, 366), "2000-03-04", "2001-04-03", 5),  # swapped only within the same year
    ("numeric", (0, 1, 5), "1950", "1950", 1),
    ("numeric", (0, 1, 5), "1950", "1951", 2),
    ("numeric", (0, 1, 5), "1950", "1945", 3),
    ("numeric", (0, 1, 5), "1950", "1944", 4),
    ("numeric", (0, 1, 5), "1.5", "2", 2),
    ("dice", (0.9, 0.7), F_HEX, F_HEX, 1),
    ("dice", (0.9, 0.7), F_HEX, F_B64, 1),  # hex and base64 of the same filter
    ("dice", (0.9, 0.7), F_HEX, CLOSE_HEX, 1),
    ("dice", (0.99, 0.9), F_HEX, CLOSE_HEX, 2),
    ("dice", (0.9, 0.7), F_HEX, FAR_HEX, 3),
    ("dice", (0.9, 0.7), F_HEX, SHORT_HEX, 3),  # filters of different lengths cannot agree
]


@pytest.mark.parametrize(("method", "levels", "a", "b", "expected"), LEVEL_CASES)
def test_level_of_a_value_pair(method: str, levels: tuple[float, ...], a: str, b: str, expected: int) -> None:
    comparison = Comparison("f", method, tuple(float(x) for x in levels))
    got = levels_of_values(comparison, objects(a, b), objects(b, a))
    assert got.tolist() == [expected, expected]  # symmetric
    assert got.dtype == np.int8
    assert 0 < expected < comparison.n_levels == len(comparison.level_names)


def test_bloom_filter_fixtures_have_the_intended_similarity() -> None:
    assert 0.9 < dice_of(bloom(FILTER), bloom(CLOSE)) < 0.99
    assert dice_of(bloom(FILTER), bloom(FAR)) < 0.7


@pytest.mark.parametrize(("method", "levels", "value"), [
    ("exact", (), "m"), ("jaro_winkler", (0.9,), "anna"), ("levenshtein", (1,), "ab1"),
    ("date", (31,), "2000-03-04"), ("numeric", (1,), "1950"), ("dice", (0.9,), F_HEX),
])
def test_missing_on_either_side_is_level_zero(method: str, levels: tuple[float, ...], value: str) -> None:
    comparison = Comparison("f", method, levels)
    got = levels_of_values(comparison, objects(value, None, None, value), objects(None, value, None, value))
    assert got.tolist() == [0, 0, 0, 1]


def test_unreadable_dates_and_numbers_are_missing_not_disagreement() -> None:
    date = Comparison("f", "date", (31,))
    assert levels_of_values(date, objects("2000-02-30", "2000-03-04"), objects("2000-02-28", "soon")).tolist() == [0, 0]
    number = Comparison("f", "numeric", (1,))
    assert levels_of_values(number, objects("x", "1950"), objects("1950", "")).tolist() == [0, 0]


def test_dates_before_1970_are_compared() -> None:
    date = Comparison("f", "date", (31, 366))
    got = levels_of_values(date, objects("1950-03-04", "1950-03-04", "1969-12-31", "1950-03-04"),
                           objects("1950-03-04", "1950-04-03", "1970-01-01", "1952-01-01"))
    assert got.tolist() == [1, 2, 3, 5]


def standardise(value: str, method: str | None = None) -> str | None:
    spec = METHODS[method] if method is not None else None
    return pl.DataFrame({"c": [value]}).select(field_expr(FieldSpec("c"), spec).alias("c")).item()


@pytest.mark.parametrize(("raw", "method", "expected"), [
    ("  Anne   Marie ", None, "anne marie"),
    ("04", None, "4"),
    ("000", None, "0"),
    ("", None, None),
    ("   ", None, None),
    ("20000304", "date", "2000-03-04"),
    ("2000-03-04", "date", "2000-03-04"),
    ("04/03/2000", "date", None),
])
def test_field_expr_standardises_values(raw: str, method: str | None, expected: str | None) -> None:
    assert standardise(raw, method) == expected


def test_field_expr_reads_dates_and_parts_with_a_format() -> None:
    frame = pl.DataFrame({"d": ["031936", "121952", "", "132000"]})
    for part, expected in [(None, ["1936-03-01", "1952-12-01", None, None]), ("year", ["1936", "1952", None, None]),
                           ("month", ["3", "12", None, None])]:
        got = frame.select(field_expr(FieldSpec("d", "%m%Y", part)).alias("v"))["v"].to_list()
        assert got == expected, part
    sex = FieldSpec("s", values={"1": "M", "2": "F"})
    assert pl.DataFrame({"s": ["1", "2", "9"]}).select(field_expr(sex).alias("v"))["v"].to_list() == ["m", "f", "9"]


def test_standardised_bloom_filters_keep_their_bits() -> None:
    raw = bytes([5]) + bloom(FILTER)[1:]
    for encoded in (raw.hex(), base64.b64encode(raw).decode()):
        value = standardise(encoded, "dice")
        comparison = Comparison("f", "dice", (0.9,))
        assert levels_of_values(comparison, objects(value), objects(value)).tolist() == [1]
        assert value == encoded


COMPARISONS = [
    Comparison("name", "jaro_winkler", (1.0, 0.9, 0.8)),
    Comparison("code", "levenshtein", (0.0, 1.0, 2.0)),
    Comparison("dob", "date", (31.0, 366.0)),
    Comparison("year", "numeric", (0.0, 1.0)),
    Comparison("sex", "exact"),
    Comparison("bf", "dice", (0.9, 0.7)),
]
VALUES = {
    "name": [None, "anna", "ann", "anne", "hannah", "jon", "john", "johnny", "smith", "smyth"],
    "code": [None, "ab12", "ab13", "ba12", "xy99", "a"],
    "dob": [None, "1985-03-04", "1985-04-03", "1985-03-20", "1986-01-01", "2001-12-31", "1950-06-01"],
    "year": [None, "1950", "1951", "1955", "x"],
    "sex": [None, "m", "f"],
    "bf": [None, F_HEX, CLOSE_HEX, FAR_HEX, F_B64, SHORT_HEX],
}
NODES = st.lists(st.fixed_dictionaries({k: st.sampled_from(v) for k, v in VALUES.items()}), min_size=2,
                 max_size=25).map(lambda rows: pl.DataFrame(rows, schema={k: pl.String for k in VALUES}))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=NODES, data=st.data())
def test_compare_pairs_equals_recordlinkage_compare(nodes: pl.DataFrame, data: st.DataObject) -> None:
    n = nodes.height
    pairs = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=60))
    left = np.array([a for a, _ in pairs], dtype=np.int64)
    right = np.array([b for _, b in pairs], dtype=np.int64)
    reference = compare_pairs_recordlinkage(nodes, COMPARISONS, left, right)
    fast = compare_pairs([field_data(nodes, c) for c in COMPARISONS], left, right)
    codes = encode_fields(nodes, tuple(VALUES))
    reused = compare_pairs([field_data(nodes, c, codes[c.field]) for c in COMPARISONS], left, right)
    assert fast.dtype == np.int8
    np.testing.assert_array_equal(fast, reference)
    np.testing.assert_array_equal(reused, reference)
    # And each column is what levels_of_values says about the raw values.
    for j, c in enumerate(COMPARISONS):
        values = np.array(nodes[c.field].to_list(), dtype=object)
        np.testing.assert_array_equal(fast[:, j], levels_of_values(c, values[left], values[right]))


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


# --- clustering ----------------------------------------------------------------------------------


def test_components_on_a_known_graph() -> None:
    # 0-1-2 a path, 3-4 an edge given twice and backwards, 5 alone, 6-7-8 a triangle, 9 a self-loop.
    left = np.array([0, 1, 3, 4, 6, 7, 8, 9])
    right = np.array([1, 2, 4, 3, 7, 8, 6, 9])
    labels = components(10, left, right)
    assert partition(labels) == [frozenset({0, 1, 2}), frozenset({3, 4}), frozenset({5}), frozenset({6, 7, 8}),
                                 frozenset({9})]
    assert labels.dtype == np.int64
    assert components(3, np.array([], dtype=np.int64), np.array([], dtype=np.int64)).tolist() == [0, 1, 2]


def test_one_to_one_keeps_mutual_best_pairs() -> None:
    src = np.array([0, 0, 1, 1, 2, 2])  # nodes 0, 1 in source 0; 2, 3 in source 1; 4, 5 in source 2
    left = np.array([0, 1, 1, 0, 0, 4, 5])
    right = np.array([2, 2, 3, 3, 4, 2, 2])
    weight = np.array([10.0, 9.0, 5.0, 1.0, 3.0, 8.0, 7.0])
    keep = one_to_one(left, right, weight, src, (0, 1))
    # 0-2 is best for both; then 1-3 is all that is left between sources 0 and 1. Pairs touching
    # source 2 are not constrained.
    assert keep.tolist() == [True, False, True, False, True, True, True]
    keep = one_to_one(left, right, weight, src, (1, 2))
    assert keep.tolist() == [True, True, True, True, True, True, False]


def test_person_ids_are_keyed_and_stable() -> None:
    anchors = pl.Series(["gp/P1", "apc/E7", "gp/P1"])
    ids = person_ids(anchors, b"k" * 16)
    assert ids.name == "person_id"
    assert ids[0] == ids[2] != ids[1]
    assert all(re.fullmatch(r"P[0-9a-f]{16}", x) for x in ids.to_list())
    assert person_ids(anchors, b"j" * 16)[0] != ids[0]
    expected = "P" + hashlib.blake2b(b"gp/P1", key=b"k" * 16, digest_size=8).hexdigest()
    assert ids[0] == expected


def test_pairwise_score_counts_record_pairs() -> None:
    frame = pl.DataFrame({"person_id": ["A", "A", "A", "B", "C"], "person": [1, 1, 2, 2, 3],
                          "flag": [True, False, False, False, False]})
    score = pairwise_score(frame)
    assert (score.predicted_pairs, score.true_pairs, score.true_positive_pairs) == (3, 2, 1)
    assert (score.precision, score.recall, score.f1) == pytest.approx((1 / 3, 1 / 2, 0.4))
    focused = pairwise_score(frame, pl.col("flag"))
    assert (focused.records, focused.predicted_pairs, focused.true_pairs, focused.true_positive_pairs) == (1, 2, 1, 1)


# --- `linkcare link` on a small synthetic site ---------------------------------------------------


def link_cli(runner: CliRunner, config: Path, out: Path, *extra: str) -> Result:
    return runner.invoke(cli, ["link", str(config), "--out", str(out), *extra])


def with_linkage_options(site: Path, name: str, options: str) -> Path:
    """Write a copy of the site's config with extra [linkage] keys, beside it."""
    config = site / name
    config.write_text((site / "site.toml").read_text().replace("[linkage]\n", f"[linkage]\n{options}\n", 1),
                      encoding="utf-8")
    return config


def people(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "person_index.parquet").sort(["source", "record_id"])


@pytest.fixture(scope="module")
def small_linked(small_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small_linked") / "out"
    result = link_cli(CliRunner(), small_site / "site.toml", out)
    assert result.exit_code == 0, result.output
    return out


def test_shuffled_sources_give_the_same_people(small_site: Path, small_linked: Path, tmp_path: Path,
                                               runner: CliRunner) -> None:
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for i, csv in enumerate(sorted(small_site.glob("*.csv"))):
        frame = pl.read_csv(csv, infer_schema=False)
        if csv.name == "areas.csv":  # the deprivation lookup, not an extract
            frame.write_csv(shuffled / csv.name)
            continue
        mixed = frame.sample(fraction=1.0, shuffle=True, seed=i)
        assert not mixed.equals(frame)
        mixed.write_csv(shuffled / csv.name)
    (shuffled / "site.toml").write_text((small_site / "site.toml").read_text(), encoding="utf-8")
    result = link_cli(runner, shuffled / "site.toml", tmp_path / "out")
    assert result.exit_code == 0, result.output
    before, after = people(small_linked), people(tmp_path / "out")
    assert before.height == after.height > 5_000
    # The same partition of records, and the same person_id for each record.
    assert before.select("source", "record_id", "person_id").equals(after.select("source", "record_id", "person_id"))
    assert before.equals(after)
    assert pl.read_parquet(small_linked / "persons.parquet").equals(pl.read_parquet(tmp_path / "out/persons.parquet"))


def test_polars_indexer_gives_the_same_links_as_recordlinkage(small_site: Path, small_linked: Path,
                                                               tmp_path: Path, runner: CliRunner) -> None:
    # The small site has far fewer than 200,000 nodes, so small_linked used the recordlinkage path.
    config = with_linkage_options(small_site, "polars.toml", 'indexer = "polars"')
    result = link_cli(runner, config, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert people(small_linked).equals(people(tmp_path / "out"))
    assert pl.read_parquet(small_linked / "pairs.parquet").equals(pl.read_parquet(tmp_path / "out/pairs.parquet"))
    assert (small_linked / "model.json").read_text() == (tmp_path / "out/model.json").read_text()


def test_pair_count_guard_stops_the_run(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    # Count the third pass's node pairs independently: distinct identifier tuples per source,
    # grouped by the pass's key.
    from linkcare.config import load_config
    from linkcare.linkage.prepare import read_records, reduce_records

    nodes = reduce_records(read_records(load_config(small_site / "site.toml"))).frame
    key = ["birth_year", "birth_month", "area"]
    sizes = nodes.drop_nulls(key).group_by(key).len()["len"].cast(pl.Int64)
    expected = int((sizes * (sizes - 1) // 2).sum())
    nhs = nodes.drop_nulls("nhs").group_by("nhs").len()["len"].cast(pl.Int64)
    assert int((nhs * (nhs - 1) // 2).sum()) < 10_000 < expected  # only the third pass is over the limit

    config = with_linkage_options(small_site, "guard.toml", "max_pairs = 10000")
    out = tmp_path / "out"
    result = link_cli(runner, config, out)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: linkage.blocking[2] (birth_year, birth_month, area) would yield {expected:,} "
                      "candidate pairs, above linkage.max_pairs = 10,000; add a field to that blocking pass "
                      "or raise max_pairs"]
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary left behind


def test_model_reuse_gives_the_same_people(small_site: Path, small_linked: Path, tmp_path: Path,
                                           runner: CliRunner) -> None:
    out = tmp_path / "reused"
    result = link_cli(runner, small_site / "site.toml", out, "--model", str(small_linked / "model.json"))
    assert result.exit_code == 0, result.output
    assert "reusing the model" in result.stderr
    first, second = people(small_linked), people(out)
    assert first.drop("match_probability").equals(second.drop("match_probability"))
    diff = (first["match_probability"] - second["match_probability"]).abs().fill_null(0.0)
    assert (diff < 1e-6).all()
    assert first["match_probability"].is_null().equals(second["match_probability"].is_null())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["reused_from"] == "model.json"
    assert json.loads((out / "model.json").read_text())["fields"] == json.loads(
        (small_linked / "model.json").read_text())["fields"]


def test_model_reuse_is_exact(small_site: Path, small_linked: Path, tmp_path: Path, runner: CliRunner) -> None:
    out = tmp_path / "reused"
    result = link_cli(runner, small_site / "site.toml", out, "--model", str(small_linked / "model.json"))
    assert result.exit_code == 0, result.output
    assert people(small_linked).equals(people(out))
    assert pl.read_parquet(small_linked / "pairs.parquet").equals(pl.read_parquet(out / "pairs.parquet"))


def test_model_from_other_comparisons_is_refused(small_site: Path, small_linked: Path, tmp_path: Path,
                                                 runner: CliRunner) -> None:
    # A model trained under a config whose birth_year comparison has levels [0, 2].
    data = json.loads((small_linked / "model.json").read_text())
    year = next(f for f in data["fields"] if f["field"] == "birth_year")
    year["levels"] = [0.0, 2.0]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data), encoding="utf-8")
    result = link_cli(runner, small_site / "site.toml", tmp_path / "out", "--model", str(other))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: {other}: the model was trained on other comparisons than the config's "
        "[[linkage.comparisons]]; retrain without --model")
    assert not (tmp_path / "out").exists()


def test_model_that_is_not_json_is_refused(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    result = link_cli(runner, small_site / "site.toml", tmp_path / "out", "--model", str(small_site / "site.toml"))
    assert result.exit_code == 2
    not_json = small_site / "site.toml"
    assert result.stderr.splitlines()[-1] == f"Error: {not_json}: not a linkcare linkage model (not JSON)"
    assert not (tmp_path / "out").exists()


def all_records_f1(runner: CliRunner, out: Path, truth: Path) -> dict:
    result = runner.invoke(cli, ["evaluate", "links", str(out), "--truth", str(truth), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["all records"]


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


def test_ecm_model_links_a_small_site(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    config = with_linkage_options(small_site, "ecm.toml", 'model = "ecm"')
    result = link_cli(runner, config, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out/model.json").read_text())["trained_by"] == "ecm"
    assert all_records_f1(runner, tmp_path / "out", small_site / "truth/records.parquet")["f1"] > 0.9


def test_logistic_model_links_a_small_site(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    config = with_linkage_options(small_site, "logistic.toml", 'model = "logistic"\nlabels = "truth/records.parquet"')
    result = link_cli(runner, config, tmp_path / "out")
    assert result.exit_code == 0, result.output
    model = json.loads((tmp_path / "out/model.json").read_text())
    assert model["trained_by"] == "logistic"
    assert model["training"]["matches"] > 0
    assert all_records_f1(runner, tmp_path / "out", small_site / "truth/records.parquet")["f1"] > 0.95


# --- two FEBRL-style name-and-address files -----------------------------------------------------

# (given_name, surname, date_of_birth, postcode); the first sixteen of each file are the same people.
FEBRL_A = [
    ("michaela", "neumann", "19751101", "4352"), ("courtney", "painter", "19800427", "4350"),
    ("charles", "green", "19840917", "2074"), ("vanessa", "parr", "19900221", "3150"),
    ("joshua", "fowler", "19710630", "2148"), ("benjamin", "carey", "19880725", "2617"),
    ("kayla", "rees", "19920306", "6061"), ("thomas", "hirst", "19850812", "2560"),
    ("isabella", "mcdonald", "19990114", "4870"), ("jack", "whitfield", "19830503", "3805"),
    ("olivia", "santos", "19761119", "2000"), ("liam", "oconnor", "19781228", "5163"),
    ("grace", "nguyen", "20010709", "3030"), ("samuel", "baxter", "19770102", "2795"),
    ("emily", "harrison", "19950215", "4215"), ("noah", "fitzgerald", "19790330", "7250"),
    ("chloe", "webb", "19860911", "2250"), ("ethan", "mcintyre", "19730424", "6155"),
    ("ruby", "hawkins", "19720808", "3350"), ("lucas", "webb", "19900117", "2250"),
]
FEBRL_B = [
    ("michaela", "neuman", "19751101", "4352"),  # surname typo
    ("courtney", "painter", "19800427", "4305"),  # postcode transposed
    ("charels", "green", "19840917", "2074"),  # given name transposed
    ("vanessa", "parr", "19900122", "3150"),  # day and month swapped
    ("josh", "fowler", "19710630", "2148"),  # short given name
    ("benjamin", "carey", "", "2617"),  # date of birth missing
    ("kayla", "reese", "19920306", "6061"),
    ("thomas", "hirst", "19850812", ""),  # postcode missing
    ("isabela", "mcdonald", "19990114", "4870"),
    ("jack", "whitfeld", "19830503", "3805"),
    ("olivia", "santos", "19761119", "2000"),
    ("liam", "o'connor", "19781228", "5163"),
    ("grace", "nguyen", "20011709", "3030"),  # impossible date: missing
    ("samuel", "baxter", "19770102", "2795"),
    ("emmily", "harrison", "19950215", "4215"),
    ("noha", "fitzgerald", "19790330", "7250"),
    ("harriet", "webb", "19880214", "2250"),  # same surname and postcode as a17 and a20: not them
    ("oscar", "pemberton", "19770605", "2611"),
    ("mia", "kowalski", "20030920", "4551"),
    ("george", "atkinson", "19800710", "3976"),
]
FEBRL_SOURCE = """
[[sources]]
name = "{name}"
path = "{name}.csv"
id = "rec_id"
kind = "other"
[sources.fields]
given_name = "given_name"
surname = "surname"
date_of_birth = {{ column = "date_of_birth", format = "%Y%m%d", invalid = "missing" }}
postcode = "postcode"
"""
FEBRL_CONFIG = 'version = 1\nreference_date = "2026-03-31"\n' + FEBRL_SOURCE.format(name="a") + \
    FEBRL_SOURCE.format(name="b") + """
[linkage]
link_type = "link_only"
blocking = [["surname"], ["date_of_birth"], ["postcode"]]
one_to_one = ["a", "b"]

[[linkage.comparisons]]
field = "given_name"
method = "jaro_winkler"
levels = [1.0, 0.9, 0.8]

[[linkage.comparisons]]
field = "surname"
method = "jaro_winkler"
levels = [1.0, 0.9, 0.8]

[[linkage.comparisons]]
field = "date_of_birth"
method = "date"
levels = [31, 366]

[[linkage.comparisons]]
field = "postcode"
method = "exact"
"""


def write_febrl(folder: Path, rows: list[tuple[str, str, str, str]], prefix: str, years_back: int) -> None:
    def shift(dob: str) -> str:
        return f"{int(dob[:4]) - years_back}{dob[4:]}" if dob else dob

    pl.DataFrame({
        "rec_id": [f"{prefix}{i:02d}" for i in range(1, len(rows) + 1)],
        "given_name": [r[0] for r in rows], "surname": [r[1] for r in rows],
        "date_of_birth": [shift(r[2]) for r in rows], "postcode": [r[3] for r in rows],
    }).write_csv(folder / f"{prefix}.csv")


@pytest.mark.parametrize("years_back", [
    0,
    pytest.param(50),
])
def test_febrl_style_files_link_the_right_records(tmp_path: Path, runner: CliRunner, years_back: int) -> None:
    write_febrl(tmp_path, FEBRL_A, "a", years_back)
    write_febrl(tmp_path, FEBRL_B, "b", years_back)
    (tmp_path / "link.toml").write_text(FEBRL_CONFIG, encoding="utf-8")
    result = link_cli(runner, tmp_path / "link.toml", tmp_path / "out")
    assert result.exit_code == 0, result.output
    index = pl.read_parquet(tmp_path / "out/person_index.parquet")
    assert index.height == 40
    linked = (index.group_by("person_id").agg(pl.col("record_id").sort())
              .filter(pl.col("record_id").list.len() > 1)["record_id"].to_list())
    assert sorted(linked) == [[f"a{i:02d}", f"b{i:02d}"] for i in range(1, 17)]
    assert (tmp_path / "out/events.parquet").exists()
    assert pl.read_parquet(tmp_path / "out/events.parquet").height == 0  # kind "other" has no events


# --- `linkcare link` on the bundled sample site --------------------------------------------------


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("sample") / "out"
    result = CliRunner().invoke(cli, ["-v", "link", str(SAMPLE_CONFIG), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


def test_sample_site_links_accurately(sample_run: tuple[Path, Result]) -> None:
    out, _ = sample_run
    score = all_records_f1(CliRunner(), out, SAMPLE_TRUTH)
    assert score["records"] == 59_268
    assert score["f1"] >= 0.985
    assert score["precision"] >= 0.999


def test_sample_site_outputs_have_the_documented_columns(sample_run: tuple[Path, Result]) -> None:
    out, _ = sample_run
    assert {p.name for p in out.iterdir()} >= {"person_index.parquet", "persons.parquet", "events.parquet",
                                                "pairs.parquet", "model.json", "manifest.json"}
    index = pl.read_parquet(out / "person_index.parquet")
    assert index.columns[:5] == ["source", "record_id", "person_id", "match_probability", "match_stage"]
    assert set(index["match_stage"].unique()) == {"deterministic", "probabilistic", "unlinked"}
    assert index.filter(pl.col("match_stage") == "unlinked")["match_probability"].null_count() == \
        index.filter(pl.col("match_stage") == "unlinked").height
    assert (index.filter(pl.col("match_stage") == "probabilistic")["match_probability"] >= 0.95).all()  # threshold

    fields = ["nhs", "la_id", "birth_year", "birth_month", "sex", "area"]
    pairs = pl.read_parquet(out / "pairs.parquet")
    assert pairs.columns[:4] == ["source_l", "record_id_l", "source_r", "record_id_r"]
    assert [c for c in pairs.columns if c.startswith("level_")] == [f"level_{f}" for f in fields]
    assert {"match_weight", "match_probability"} <= set(pairs.columns)
    assert pairs.height > 10_000
    assert pairs["match_probability"].is_between(0.01, 1.0).all()  # pairs_min_probability

    persons = pl.read_parquet(out / "persons.parquet")
    sources = ["ae", "apc", "gp", "outpatients", "social_care"]
    assert persons.columns[0] == "person_id"
    assert {f"records_{s}" for s in sources} <= set(persons.columns)
    assert persons["person_id"].n_unique() == persons.height == index["person_id"].n_unique()
    for s in sources:
        assert persons[f"records_{s}"].sum() == index.filter(pl.col("source") == s).height

    events = pl.read_parquet(out / "events.parquet")
    assert events.height == index.height
    assert events["person_id"].null_count() == 0
    model = json.loads((out / "model.json").read_text())
    assert model["format"] == "linkcare-linkage-model"
    assert [f["field"] for f in model["fields"]] == fields


def test_sample_site_person_index_has_every_record_once(sample_run: tuple[Path, Result]) -> None:
    """Every record is in the person index once, or in its source's rejects file, never both."""
    out, _ = sample_run
    index = pl.read_parquet(out / "person_index.parquet").select("source", "record_id")
    rejects = pl.concat([pl.read_parquet(p).select(pl.lit(p.stem).alias("source"), "record_id")
                         for p in sorted((out / "rejects").glob("*.parquet"))])
    assert rejects.height == 2  # two birth years mistyped into the future (the synthetic site's errors)
    truth = pl.read_parquet(SAMPLE_TRUTH).select(pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String))
    assert index.is_duplicated().sum() == 0
    assert index.join(rejects, on=["source", "record_id"], how="semi").height == 0
    assert pl.concat([index, rejects]).sort(["source", "record_id"]).equals(truth.sort(["source", "record_id"]))


def test_sample_site_manifest_has_every_input(sample_run: tuple[Path, Result]) -> None:
    out, _ = sample_run
    manifest = json.loads((out / "manifest.json").read_text())
    inputs = {i["source"]: i for i in manifest["inputs"]}
    files = {"gp": "gp_registrations.csv", "apc": "apc.csv", "ae": "ae.csv", "outpatients": "outpatients.csv",
             "social_care": "social_care.csv"}
    assert set(inputs) == set(files)
    for source, name in files.items():
        path = ROOT / "sample_data" / name
        assert inputs[source]["file"] == name
        assert inputs[source]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert inputs[source]["rows"] == pl.read_csv(path, infer_schema=False).height
    assert manifest["config"]["sha256"] == hashlib.sha256(SAMPLE_CONFIG.read_bytes()).hexdigest()
    assert [p["blocking"] for p in manifest["blocking"]] == ["nhs", "la_id", "birth_year+birth_month+area"]


def test_sample_site_log_shows_no_token(sample_run: tuple[Path, Result]) -> None:
    _, result = sample_run
    text = result.output
    assert "DEBUG" in text and "pass nhs:" in text  # the verbose log was captured
    tokens: set[str] = set()
    for name, columns in [("gp_registrations.csv", ["Pseudo_NHS_Number"]), ("apc.csv", ["Pseudo_NHS_Number"]),
                          ("ae.csv", ["Pseudo_NHS_Number"]), ("outpatients.csv", ["Pseudo_NHS_Number"]),
                          ("social_care.csv", ["Der_NHS_Number_Traced_Pseudo",
                                               "Der_LA_Person_Unique_Identifier_Pseudo"])]:
        frame = pl.read_csv(ROOT / "sample_data" / name, columns=columns, infer_schema=False)
        for c in columns:
            tokens |= set(frame[c].drop_nulls().to_list())
    assert len(tokens) > 10_000
    shown = set(re.findall(r"[0-9a-fA-F]{32}", text))
    assert not shown & tokens
    assert not any(t in text for t in list(tokens)[:2_000])


def test_sample_site_deterministic_records_have_probability_one(sample_run: tuple[Path, Result]) -> None:
    out, _ = sample_run
    index = pl.read_parquet(out / "person_index.parquet")
    assert index.filter(pl.col("match_stage") == "deterministic")["match_probability"].min() == 1.0


@pytest.mark.parametrize("link_type", LINK_TYPES)
@pytest.mark.parametrize("block", [(), ("y",)])
def test_sorted_neighbourhood_gives_recordlinkages_pairs(link_type: str, block: tuple[str, ...]) -> None:
    from linkcare.linkage.blocking import plan_sorted

    rng = np.random.default_rng(3)
    n = 80
    frame = pl.DataFrame({
        "source": rng.choice(["a", "b", "c"], n),
        "x": [None if rng.random() < 0.1 else f"{v:02d}" for v in rng.integers(0, 25, n)],
        "y": [None if rng.random() < 0.1 else str(v) for v in rng.integers(0, 3, n)],
    })
    codes = encode_fields(frame, ("x", "y"))
    src = source_codes(frame)
    plan = plan_sorted(codes, "x", 5, block, src, link_type)
    fast = pairs_polars(plan, 0, plan.node.size)
    reference = pairs_recordlinkage(plan, 0, plan.node.size)
    as_set = lambda p: set(zip(p[0].tolist(), p[1].tolist(), strict=True))  # noqa: E731
    assert as_set(fast) == as_set(reference)
    # Brute force: both values present, same block, at most two distinct values apart.
    x, y = codes["x"], codes["y"]
    present = (x >= 0) & ((y >= 0) if block else True)
    rank = {v: i for i, v in enumerate(np.unique(x[present]))}
    expected = {(i, j) for i in range(n) for j in range(i + 1, n)
                if present[i] and present[j] and (not block or y[i] == y[j]) and abs(rank[x[i]] - rank[x[j]]) <= 2}
    assert as_set(fast) == expected
    keep = allowed(link_type, src[fast[0]], src[fast[1]])
    assert int(keep.sum()) == plan.pairs


def test_sorted_neighbourhood_pass_skips_pairs_of_earlier_passes(tmp_path: Path) -> None:
    config_text = (Path(__file__).resolve().parents[1] / "configs" / "sample.toml").read_text()
    config_text = config_text.replace("../sample_data/", str(Path(__file__).resolve().parents[1] / "sample_data") + "/")
    sorted_pass = 'sorted_neighbourhood = [{ field = "birth_year", window = 3, block = ["area", "sex"] }]'
    config_text = config_text.replace("[linkage]\n", f"[linkage]\n{sorted_pass}\n")
    path = tmp_path / "site.toml"
    path.write_text(config_text)
    from linkcare.config import load_config
    from linkcare.linkage.blocking import plan_sorted

    config = load_config(path)
    assert config.linkage.sorted_neighbourhood[0].window == 3
    frame = pl.read_csv(Path(__file__).resolve().parents[1] / "sample_data" / "gp_registrations.csv",
                        infer_schema=False).head(2000)
    nodes = pl.DataFrame({"source": ["gp"] * frame.height, "birth_year": frame["Birth_Year"],
                          "area": frame["LSOA"], "sex": frame["Sex"]})
    codes = encode_fields(nodes, ("birth_year", "area", "sex"))
    src = source_codes(nodes)
    plans = [plan_pass(codes, ("birth_year", "area"), src, "dedupe_only"),
             plan_sorted(codes, "birth_year", 3, ("area", "sex"), src, "dedupe_only")]
    seen: set[tuple[int, int]] = set()
    for _, left, right, new in candidate_pairs(plans, codes, src, "dedupe_only", 500, "polars"):
        for a, b in zip(left[new].tolist(), right[new].tolist(), strict=True):
            assert (a, b) not in seen
            seen.add((a, b))
    every = set()
    for plan in plans:
        a, b = pairs_polars(plan, 0, plan.node.size)
        every |= set(zip(a.tolist(), b.tolist(), strict=True))
    assert seen == every


def test_sorted_neighbourhood_window_must_be_odd(tmp_path: Path, runner) -> None:
    config_text = (Path(__file__).resolve().parents[1] / "configs" / "sample.toml").read_text()
    config_text = config_text.replace("../sample_data/", str(Path(__file__).resolve().parents[1] / "sample_data") + "/")
    sorted_pass = 'sorted_neighbourhood = [{ field = "area", window = 4 }]'
    config_text = config_text.replace("[linkage]\n", f"[linkage]\n{sorted_pass}\n")
    path = tmp_path / "site.toml"
    path.write_text(config_text)
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert (f"Error: {path}: linkage.sorted_neighbourhood[0].window: must be an odd whole number of 3 or more, "
            "e.g. window = 5") in result.output


def test_weighted_mode_takes_the_heaviest_value_and_the_smallest_on_ties() -> None:
    from linkcare.cohort.persons import weighted_mode

    cluster = np.array([0, 0, 0, 1, 1, 2, 3])
    code = np.array([2, 1, 2, 3, 0, -1, 5])
    weight = np.array([1, 3, 1, 2, 2, 9, 1])
    # cluster 0: code 1 weighs 3 against code 2's 2; cluster 1: a tie, the smaller code wins;
    # cluster 2 has only a missing value; cluster 4 has no node at all.
    assert weighted_mode(cluster, code, weight, 5).tolist() == [1, 0, -1, 5, -1]


def test_pairs_within_blocks_are_every_pair_once() -> None:
    from linkcare.linkage.blocking import _pairs_within_blocks

    block = np.array([0, 0, 0, 1, 2, 2, 5, 5, 5, 5])
    node = np.array([9, 3, 7, 1, 4, 8, 0, 2, 5, 6])
    left, right = _pairs_within_blocks(node, block)
    got = sorted(zip(left.tolist(), right.tolist(), strict=True))
    expected = sorted((min(a, b), max(a, b)) for i, a in enumerate(node) for j, b in enumerate(node)
                      if i < j and block[i] == block[j])
    assert got == expected and len(got) == 3 + 0 + 1 + 6
