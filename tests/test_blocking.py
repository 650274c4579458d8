"""Which pairs are compared: deterministic rules, blocking passes and sorted neighbourhood, on tiny
frames: every agreeing pair once, the same pairs as recordlinkage's Index, the pair-count guard.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import partition, write_config
from linkcare.config import LINK_TYPES
from linkcare.errors import DataError
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
from linkcare.linkage.cluster import components

SAMPLE = Path(__file__).resolve().parents[1]
SAMPLE_CONFIG = SAMPLE / "configs" / "sample.toml"
PASSES = (("x",), ("y", "z"), ("z",))


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


@pytest.mark.parametrize("link_type", [
    "link_and_dedupe",
    "dedupe_only",
    pytest.param("link_only"),
])
def test_deterministic_edges_join_exactly_the_rule_groups(node_frame: pl.DataFrame, link_type: str) -> None:
    rules = (("x", "y", "z"), ("x", "z"))
    codes = encode_fields(node_frame, ("x", "y", "z"))
    src = source_codes(node_frame)
    left, right, rule = deterministic_edges(codes, rules, src, link_type)
    got = partition(components(node_frame.height, left, right))
    assert got == rule_partition(node_frame, rules, link_type)
    # Each edge names a rule whose fields its two nodes share, none missing.
    for a, b, r in zip(left.tolist(), right.tolist(), rule.tolist(), strict=True):
        assert all(codes[f][a] == codes[f][b] >= 0 for f in rules[r])
    assert sum(len(g) > 1 for g in got) >= 5


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
    sorted_pass = 'sorted_neighbourhood = [{ field = "birth_year", window = 3, block = ["area", "sex"] }]'
    path = write_config(SAMPLE_CONFIG, tmp_path / "site.toml", linkage=sorted_pass)
    from linkcare.config import load_config
    from linkcare.linkage.blocking import plan_sorted

    config = load_config(path)
    assert config.linkage.sorted_neighbourhood[0].window == 3
    frame = pl.read_csv(SAMPLE / "sample_data" / "gp_registrations.csv",
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


def test_pairs_within_blocks_are_every_pair_once() -> None:
    from linkcare.linkage.blocking import _pairs_within_blocks

    block = np.array([0, 0, 0, 1, 2, 2, 5, 5, 5, 5])
    node = np.array([9, 3, 7, 1, 4, 8, 0, 2, 5, 6])
    left, right = _pairs_within_blocks(node, block)
    got = sorted(zip(left.tolist(), right.tolist(), strict=True))
    expected = sorted((min(a, b), max(a, b)) for i, a in enumerate(node) for j, b in enumerate(node)
                      if i < j and block[i] == block[j])
    assert got == expected and len(got) == 3 + 0 + 1 + 6
