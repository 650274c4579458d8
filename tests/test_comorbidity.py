"""Charlson, Elixhauser and HFRS per person: worked examples from the published weights, code spellings,
hierarchy rules, duplicates and the shape of the result.

Weights quoted come from Charlson et al. 1987 (coded as in Quan et al. 2005), van Walraven et al. 2009 and
Gilbert et al. 2018 (Lancet, appendix table of 109 ICD-10 groups).
"""

from __future__ import annotations

import polars as pl
import pytest

from linkcare.errors import DataError
from linkcare.risk.comorbidity import comorbidity_scores, normalise_icd10

SCHEMA = {"person_id": pl.String, "charlson": pl.Float64, "elixhauser": pl.Float64, "hfrs": pl.Float64}


def diagnoses(codes: dict[str, list[str | None]]) -> pl.DataFrame:
    """Return a diagnoses frame with one row per (person, code) listed."""
    pairs = [(person, code) for person, person_codes in codes.items() for code in person_codes]
    return pl.DataFrame(pairs, schema={"person_id": pl.String, "code": pl.String}, orient="row")


def scores_of(codes: dict[str, list[str | None]]) -> dict[str, tuple[float, float, float]]:
    """Return person_id -> (charlson, elixhauser, hfrs) for the listed codes."""
    out = comorbidity_scores(diagnoses(codes))
    return {row[0]: (row[1], row[2], row[3]) for row in out.iter_rows()}


def test_worked_examples_match_published_weights() -> None:
    got = scores_of({
        # Charlson: I21.9 myocardial infarction 1, I50.0 congestive heart failure 1, E11.2 diabetes with chronic
        # complication 2, N18.3 renal disease 2, C78.7 metastatic solid tumour 6 -> 12.
        # Elixhauser: I21 none; I50 congestive heart failure 7, E11.2 diabetes complicated 0, N18 renal failure 5,
        # C78 metastatic cancer 12 -> 24. HFRS: N18 chronic renal failure 1.4; the others are not in the list.
        "charlson": ["I219", "I500", "E112", "N183", "C787"],
        # HFRS: F00 dementia in Alzheimer's 7.1, W19 unspecified fall 3.2, R29 (R29.6 tendency to fall) 3.6
        # -> 13.9. Charlson: F00 dementia 1. Elixhauser: none of the three -> 0.
        "frail": ["F001", "W19X", "R296"],
        # Elixhauser (van Walraven): F32 depression -3, E66 obesity -4, F11 drug abuse -7 -> -14.
        # Charlson: none -> 0. HFRS: F32 depressive episode 0.5.
        "negative": ["F329", "E669", "F112"],
        # Elixhauser: I48 cardiac arrhythmias 5, I35 valvular disease -1, E86 fluid and electrolyte disorders 5,
        # D50.0 blood loss anaemia -2 -> 7. Charlson: none. HFRS: E86 volume depletion 2.3.
        "elixhauser": ["I480", "I350", "E86X", "D500"],
    })
    assert got["charlson"] == pytest.approx((12.0, 24.0, 1.4))
    assert got["frail"] == pytest.approx((1.0, 0.0, 13.9))
    assert got["negative"] == pytest.approx((0.0, -14.0, 0.5))
    assert got["elixhauser"] == pytest.approx((0.0, 7.0, 2.3))


def test_every_charlson_condition_with_hierarchy_scores_29() -> None:
    # One code per Charlson condition. Weight 1: I21 MI, I50 CHF, I70 PVD, I63 cerebrovascular, F00 dementia,
    # J44 chronic pulmonary, M05 rheumatic, K25 peptic ulcer, B18 mild liver, E11.9 diabetes -> 8 counted (mild
    # liver and diabetes without complication are superseded). Weight 2: E11.2 diabetes with complication,
    # G81 hemiplegia, N18 renal, C34 malignancy (superseded by metastasis) -> 6. K72.1 severe liver 3,
    # C78 metastatic 6, B20 HIV/AIDS 6. Total 8 + 6 + 3 + 6 + 6 = 29.
    codes = ["I219", "I509", "I709", "I639", "F009", "J449", "M059", "K259", "B181", "E119", "E112", "G819",
             "N185", "C349", "K721", "C787", "B20X"]
    assert scores_of({"p": codes})["p"][0] == 29.0


@pytest.mark.parametrize(("milder", "severe", "milder_alone", "both"), [
    # diabetes without chronic complication 1, with chronic complication 2: both -> 2, not 3
    ("E119", "E112", 1.0, 2.0),
    # mild liver disease (K70.9) 1, moderate or severe liver disease (K72.1) 3: both -> 3, not 4
    ("K709", "K721", 1.0, 3.0),
    # any malignancy (C34.9) 2, metastatic solid tumour (C78.7) 6: both -> 6, not 8
    ("C349", "C787", 2.0, 6.0),
])
def test_charlson_severe_tier_supersedes_milder(milder: str, severe: str, milder_alone: float, both: float) -> None:
    got = scores_of({"milder": [milder], "both": [milder, severe], "reversed": [severe, milder]})
    assert got["milder"][0] == milder_alone
    assert got["both"][0] == both
    assert got["reversed"][0] == both


def test_elixhauser_metastatic_cancer_supersedes_solid_tumour() -> None:
    # van Walraven: solid tumour without metastasis (C34) 4, metastatic cancer (C78) 12: both -> 12, not 16.
    got = scores_of({"solid": ["C349"], "both": ["C349", "C787"]})
    assert got["solid"][1] == 4.0
    assert got["both"][1] == 12.0


@pytest.mark.parametrize(("raw", "clean"), [
    ("I10X", "I10"), ("i10", "I10"), (" I10 ", "I10"), ("I10-", "I10"), ("I10XD", "I10"), ("I10X-", "I10"),
    ("I10.0", "I100"), ("I50.9", "I509"), ("i509", "I509"), ("I509D", "I509"), ("I509-", "I509"),
    ("X59X", "X59"), ("M8000", "M800"), ("", None), ("  ", None), ("-", None), ("123", None), (None, None),
])
def test_normalise_icd10(raw: str | None, clean: str | None) -> None:
    got = pl.select(normalise_icd10(pl.lit(raw, dtype=pl.String))).item()
    assert got == clean


def test_spellings_of_one_code_score_the_same() -> None:
    # F03 unspecified dementia: Charlson dementia 1, HFRS 2.1, not Elixhauser.
    # I50.9 heart failure: Charlson CHF 1, Elixhauser CHF 7, not HFRS.
    # I10 essential hypertension: Elixhauser uncomplicated hypertension, weight 0, so F03 gives the numbers.
    f03 = ["F03X", "f03", "F03.0", " F03 ", "F03X-", "F03XD"]
    i509 = ["I509", "I50.9", "i509", " I50.9 ", "I509D", "I509-"]
    i10 = ["I10X", "i10", "I10.0", "I10", "I10-"]
    people = {f"f03 {k}": [c, i10[k % len(i10)]] for k, c in enumerate(f03)}
    people |= {f"i509 {k}": [c] for k, c in enumerate(i509)}
    got = scores_of(people)
    for k in range(len(f03)):
        assert got[f"f03 {k}"] == pytest.approx((1.0, 0.0, 2.1))
    for k in range(len(i509)):
        assert got[f"i509 {k}"] == pytest.approx((1.0, 7.0, 0.0))


def test_repeated_codes_and_codes_of_one_group_count_once() -> None:
    got = scores_of({
        # F00 dementia in Alzheimer's: HFRS 7.1 and Charlson dementia 1, however many times and however spelt.
        "repeats": ["F001", "F001", "F00.1", "f001", "F001D"],
        # R29.6 and R29.8 are one HFRS group (R29, 3.6); I50.0 and I11.0 are one Charlson condition (CHF, 1)
        # and one Elixhauser condition (CHF 7; I11 is also complicated hypertension, 0).
        "one group": ["R296", "R298", "I500", "I110"],
    })
    assert got["repeats"] == pytest.approx((1.0, 0.0, 7.1))
    assert got["one group"] == pytest.approx((1.0, 7.0, 3.6))


def test_people_without_listed_codes_score_zero_and_stay() -> None:
    # Z00.0 general examination and S52.5 fracture of lower end of radius are in none of the three lists.
    got = scores_of({"unlisted": ["Z000", "S525"], "blank": ["", "  "], "null": [None], "listed": ["W19X"]})
    assert got["unlisted"] == (0.0, 0.0, 0.0)
    assert got["blank"] == (0.0, 0.0, 0.0)
    assert got["null"] == (0.0, 0.0, 0.0)
    assert got["listed"] == pytest.approx((0.0, 0.0, 3.2))  # HFRS W19 unspecified fall 3.2


def test_no_usable_code_at_all_gives_zeros() -> None:
    got = scores_of({"b": ["", None], "a": ["Z000"]})
    assert got == {"a": (0.0, 0.0, 0.0), "b": (0.0, 0.0, 0.0)}


def test_output_one_row_per_person_sorted_with_documented_schema() -> None:
    frame = diagnoses({"p2": ["I500", "I500", "N390"], "p1": ["J449"], "p3": [None], "p0": ["E119", "Z000"]})
    frame = pl.concat([frame, pl.DataFrame({"person_id": [None], "code": ["C787"]}, schema=frame.schema)])
    out = comorbidity_scores(frame)
    assert out.schema == pl.Schema(SCHEMA)
    assert out["person_id"].to_list() == ["p0", "p1", "p2", "p3"]  # the row with no person_id is dropped
    # p0: E11.9 diabetes, Charlson 1, Elixhauser 0. p1: J44 chronic pulmonary, Charlson 1, Elixhauser 3.
    # p2: I50 CHF, Charlson 1, Elixhauser 7; N39 HFRS 3.2. p3: no code.
    assert out["charlson"].to_list() == [1.0, 1.0, 1.0, 0.0]
    assert out["elixhauser"].to_list() == [0.0, 3.0, 7.0, 0.0]
    assert out["hfrs"].to_list() == pytest.approx([0.0, 0.0, 3.2, 0.0])


def test_shuffled_rows_give_the_same_result() -> None:
    frame = diagnoses({"a": ["I219", "C787", "F001"], "b": ["E112", "E119"], "c": ["W19X", "K721", "K709"]})
    expected = comorbidity_scores(frame)
    assert comorbidity_scores(frame.sample(fraction=1.0, shuffle=True, seed=7)).equals(expected)


def test_empty_input_gives_empty_result_with_schema() -> None:
    out = comorbidity_scores(pl.DataFrame(schema={"person_id": pl.String, "code": pl.String}))
    assert out.height == 0
    assert out.schema == pl.Schema(SCHEMA)


def test_missing_or_mistyped_columns_are_named() -> None:
    with pytest.raises(DataError, match=r"column 'code' is missing"):
        comorbidity_scores(pl.DataFrame({"person_id": ["a"]}))
    with pytest.raises(DataError, match=r"column 'person_id' is Int64, expected String"):
        comorbidity_scores(pl.DataFrame({"person_id": [1], "code": ["I10X"]}))
