"""From pairs to people: connected components, one-to-one, keyed person IDs, the persons' consolidated
values and pairwise scores.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import polars as pl
import pytest

from conftest import partition
from linkcare.cohort.lineage import person_ids
from linkcare.linkage.cluster import components, one_to_one
from linkcare.linkage.evaluate import pairwise_score

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


def test_weighted_mode_takes_the_heaviest_value_and_the_smallest_on_ties() -> None:
    from linkcare.cohort.persons import weighted_mode

    cluster = np.array([0, 0, 0, 1, 1, 2, 3])
    code = np.array([2, 1, 2, 3, 0, -1, 5])
    weight = np.array([1, 3, 1, 2, 2, 9, 1])
    # cluster 0: code 1 weighs 3 against code 2's 2; cluster 1: a tie, the smaller code wins;
    # cluster 2 has only a missing value; cluster 4 has no node at all.
    assert weighted_mode(cluster, code, weight, 5).tolist() == [1, 0, -1, 5, -1]
