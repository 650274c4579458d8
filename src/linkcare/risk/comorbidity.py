"""Comorbidity and frailty scores per person from ICD-10 diagnoses: Charlson, Elixhauser and the Hospital
Frailty Risk Score.

The code lists, weights and hierarchy rules are pycomorb's; this module cleans codes written as in English
HES, hands pycomorb only the rows that can count, and shapes the result. The definitions used:

- charlson: Quan et al. 2005 ICD-10 coding with Charlson et al. 1987 weights, without age points. The more
  severe tier supersedes the milder: diabetes with chronic complication over diabetes without, moderate or
  severe liver disease over mild, metastatic solid tumour over any malignancy.
- elixhauser: Quan et al. 2005 ICD-10 coding with van Walraven et al. 2009 weights, so it can be negative.
  Complicated diabetes and hypertension supersede uncomplicated, metastatic cancer supersedes solid tumour.
- hfrs: Gilbert et al. 2018, 109 three-character ICD-10 groups with their weights, rounded to one decimal.

A condition counts once per person, however often and under however many of its codes it is recorded.
"""

from __future__ import annotations

import polars as pl
from pycomorb import comorbidity

from linkcare.errors import DataError

SCORE_COLUMNS = ("charlson", "elixhauser", "hfrs")
# A WHO ICD-10 code is a letter, two digits and an optional fourth digit. What HES writes after those (an `X`
# filling a three-character code, a `-`, a dagger `D` or asterisk `A`, a fifth character) is in none of the
# three code lists, whose longest entries have four characters, so it is dropped.
_ICD10_STEM = r"^([A-Z][0-9]{2}[0-9]?)"
# pycomorb's name for each score's column (for Charlson, the index without age points).
_PYCOMORB_COLUMN = {
    "charlson": "Charlson Comorbidity Index", "elixhauser": "Elixhauser Comorbidity Index", "hfrs": "HFRS Score",
}


def normalise_icd10(code: pl.Expr) -> pl.Expr:
    """Return ICD-10 codes as letter, two digits and an optional fourth digit, or null where there is no code.

    `I10X`, ` i10 `, `I10-` and `I10XD` give `I10`; `I50.9` and `I509D` give `I509`; `X59X` gives `X59`.
    """
    return code.str.to_uppercase().str.replace_all(r"[^A-Z0-9]", "").str.extract(_ICD10_STEM, 1)


def comorbidity_scores(diagnoses: pl.DataFrame) -> pl.DataFrame:
    """Return one row per person_id found in `diagnoses` with columns person_id (String), charlson (Float64),
    elixhauser (Float64) and hfrs (Float64).

    `diagnoses` has one ICD-10 code per row, in columns `person_id` and `code` (String), spelt as in HES (see
    `normalise_icd10`). Empty, null and unreadable codes are ignored; a person with no code in a list scores 0
    on it. Rows with a null person_id are dropped. The result is sorted by person_id.
    """
    _check_columns(diagnoses)
    rows = diagnoses.lazy().filter(pl.col("person_id").is_not_null()).select(
        "person_id", pl.col("code").cast(pl.String)
    )
    persons, spellings = pl.collect_all([rows.select("person_id").unique(), rows.select("code").unique()])
    persons = persons.sort("person_id").with_row_index("pid")

    # Clean and look up each of the few thousand distinct spellings once, not each of millions of rows, and
    # keep only those in some score's code list: the others cannot change any score.
    spellings = spellings.with_columns(normalise_icd10(pl.col("code")).alias("icd10")).drop_nulls("icd10")
    if not spellings.is_empty():
        spellings = spellings.join(_listed_codes(spellings.get_column("icd10").unique()), on="icd10")
    if spellings.is_empty():
        return _zero_scores(persons)

    # Repeated codes cannot change a score, so they go before pycomorb sees them; integer person keys make
    # its joins and group-bys cheaper than the long pseudonymised IDs would.
    coded = (
        rows.join(spellings.lazy(), on="code")
        .join(persons.lazy(), on="person_id")
        .select("pid", pl.col("icd10").alias("code"), *SCORE_COLUMNS)
        .unique()
        .collect()
    )
    scores = persons.lazy()
    for score in _score_people(coded):
        scores = scores.join(score.lazy(), on="pid", how="left")
    return (
        scores.sort("pid")
        .select("person_id", *(pl.col(c).cast(pl.Float64).fill_null(0.0) for c in SCORE_COLUMNS))
        .collect()
    )


def charlson_conditions(diagnoses: pl.DataFrame) -> pl.DataFrame:
    """Return person_id and `conditions`, the number of the 17 Charlson conditions (Quan et al. 2005
    ICD-10 coding) among a person's codes, for each person_id in `diagnoses` (columns person_id, code)."""
    _check_columns(diagnoses)
    rows = diagnoses.filter(pl.col("person_id").is_not_null()).select(
        "person_id", normalise_icd10(pl.col("code").cast(pl.String)).alias("code")).drop_nulls("code").unique()
    persons = diagnoses.select("person_id").drop_nulls().unique().sort("person_id")
    if rows.is_empty():
        return persons.with_columns(pl.lit(0, pl.Int64).alias("conditions"))
    keyed = persons.with_row_index("pid")
    coded = rows.join(keyed, on="person_id").select("pid", "code")
    result = _pycomorb_score("charlson", coded, "pid", categories=True)
    scores = {"pid", "Age", "Charlson Comorbidity Index", "Age Score", "Charlson Age-Comorbidity Score"}
    flags = [c for c in result.columns if c not in scores]
    counts = result.select("pid", pl.sum_horizontal([(pl.col(c) != 0).cast(pl.Int64) for c in flags])
                           .alias("conditions")).with_columns(pl.col("pid").cast(pl.UInt32))
    return (keyed.join(counts, on="pid", how="left").select("person_id", pl.col("conditions").fill_null(0))
            .sort("person_id"))


def _score_people(coded: pl.DataFrame) -> list[pl.DataFrame]:
    """Return for each score in SCORE_COLUMNS a frame of pid and that score, for people with a code in its list.

    `coded` has one row per person key `pid` and cleaned code, with a Boolean column per score that says
    whether the code is in that score's list.
    """
    scores = []
    for name in SCORE_COLUMNS:
        rows = coded.filter(pl.col(name)).select("pid", "code")
        result = _pycomorb_score(name, rows, "pid")
        scores.append(result.select("pid", pl.col(_PYCOMORB_COLUMN[name]).alias(name)))
    return scores


def _pycomorb_score(name: str, rows: pl.DataFrame, id_col: str, categories: bool = False) -> pl.DataFrame:
    """Return pycomorb's result for score `name` (charlson, elixhauser or hfrs) over `rows` of `id_col` and code,
    with its category indicators too when `categories`."""
    if name == "charlson":
        # pycomorb's Charlson wants an age column for its age-adjusted score; we read the unadjusted index
        # from its result, so the ages play no part.
        return comorbidity(
            "charlson", rows.with_columns(age=pl.lit(0, dtype=pl.Int8)), id_col=id_col, code_col="code",
            age_col="age", icd_version="icd10", implementation="quan", weights="charlson",
            return_categories=categories,
        )
    if name == "elixhauser":
        return comorbidity(
            "elixhauser", rows, id_col=id_col, code_col="code", icd_version="icd10", implementation="quan",
            weights="van_walraven", return_categories=categories,
        )
    return comorbidity("hfrs", rows, id_col=id_col, code_col="code", icd_version="icd10",
                       return_categories=categories)


def _listed_codes(icd10: pl.Series) -> pl.DataFrame:
    """Return the distinct cleaned codes that are in at least one score's code list, with a Boolean column per
    score that says whether the code is in its list.

    pycomorb scores each code as if it were a person: a code is in a list when any of its category indicators
    (or its score) is not zero. Asking pycomorb keeps its code lists the only ones.
    """
    codes = pl.DataFrame({"icd10": icd10, "code": icd10})
    flags = codes.select("icd10")
    for name in SCORE_COLUMNS:
        result = _pycomorb_score(name, codes, "icd10", categories=True)
        in_list = result.select("icd10", pl.any_horizontal(pl.exclude("icd10") != 0).alias(name))
        flags = flags.join(in_list, on="icd10", how="left")
    return flags.with_columns(pl.col(SCORE_COLUMNS).fill_null(False)).filter(pl.any_horizontal(SCORE_COLUMNS))


def _zero_scores(persons: pl.DataFrame) -> pl.DataFrame:
    """Return each person in `persons` (already in person_id order) with 0 for every score."""
    return persons.select("person_id", *(pl.lit(0.0, dtype=pl.Float64).alias(c) for c in SCORE_COLUMNS))


def _check_columns(diagnoses: pl.DataFrame) -> None:
    """Raise DataError naming every missing or mistyped column of `diagnoses` at once."""
    allowed: dict[str, tuple[type[pl.DataType], ...]] = {
        "person_id": (pl.String,),
        "code": (pl.String, pl.Categorical, pl.Enum, pl.Null),
    }
    problems = []
    for name, types in allowed.items():
        if name not in diagnoses.columns:
            problems.append(f"column '{name}' is missing")
        elif not isinstance(diagnoses.schema[name], types):
            problems.append(f"column '{name}' is {diagnoses.schema[name]}, expected String")
    if problems:
        raise DataError(f"diagnoses for comorbidity scores: {'; '.join(problems)}; give person_id and code as text.")
