"""How alike two values are: the level of a value pair for every comparison method (missing values
included), Bloom-filter Dice, the standardisation of fields, and the same levels as recordlinkage's Compare.
"""

from __future__ import annotations

import base64

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkcare.config import Comparison, FieldSpec
from linkcare.config.methods import METHODS, dice_similarity
from linkcare.linkage.blocking import (
    encode_fields,
)
from linkcare.linkage.compare import (
    compare_pairs,
    compare_pairs_recordlinkage,
    field_data,
    levels_of_values,
)
from linkcare.sources.read import field_expr


def objects(*values: str | None) -> np.ndarray:
    return np.array(values, dtype=object)


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
