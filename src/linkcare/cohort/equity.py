"""The groups linkage quality is reported by: each node's and each person's age band, sex,
deprivation quintile and ethnic group, and the records per source, stage and group.

A field comes from the node's own value where it has one, else from its person's consolidated
value; ethnicity from the person's latest registration in a gp_registrations source. Groups are
worked out per person and per node as small enums, so the join between them is cheap. Both engines
run these functions (the Spark engine on each partition), and the link report draws from what they
give. Groups are fixed labels computed from the values, never the values themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from linkcare.cohort.demographics import AGE_BANDS, ETHNIC_GROUPS, deprivation_decile
from linkcare.config import Config
from linkcare.errors import LinkcareError

STAGES = ("deterministic", "probabilistic", "unlinked")
SEX_LABELS = {"f": "female", "female": "female", "2": "female", "m": "male", "male": "male", "1": "male"}
ETHNIC_ORDER = ("White", "Mixed", "Asian", "Black", "Other", "not stated", "not recorded")
#: The dimensions of the equity section: column -> label.
DIMENSIONS = {"source": "source", "age_band": "age band", "sex": "sex", "ethnic_group": "ethnicity",
              "deprivation": "deprivation quintile"}


def report_persons(config: Config, people: pl.DataFrame, per_node: pl.DataFrame) -> pl.DataFrame:
    """Return per cluster (person) its person_id and the demographic fields the report groups by,
    from the consolidated persons table; small enough to keep while the events are written."""
    roles = {role: name for role, name in config.risk.fields.items() if name in people.columns}
    clusters = per_node.select("cluster", "person_id").unique("cluster")
    demographics = people.select("person_id", *[pl.col(name).alias(f"_{role}") for role, name in roles.items()])
    return clusters.join(demographics, on="person_id", how="left")


def report_deprivation(config: Config, roles: Mapping[str, str]) -> tuple[pl.Expr | None, str]:
    """Return the deprivation decile expression of an `_area` column, or None and why there is none."""
    if config.risk.deprivation is None:
        return None, "no deprivation lookup configured"
    if "area" not in roles:
        return None, "no area field (risk.fields) to look deprivation up by"
    try:
        # The same reader as the risk features, so link and risk agree on every area's decile.
        return deprivation_decile(config.risk.deprivation, {"area": roles["area"]}), ""
    except LinkcareError as exc:  # a report is no reason to fail the link
        return None, f"the deprivation lookup could not be used: {exc}"


def own_groups(config: Config, own: pl.DataFrame, deprivation: pl.Expr | None) -> pl.DataFrame:
    """Return key, source, records, stage and the node's own groups, from its `_<role>` columns."""
    return own.select("key", "source", "records", "stage", *row_groups(config, own, deprivation))


def person_groups(config: Config, persons: pl.DataFrame, ethnicity: pl.DataFrame,
                  deprivation: pl.Expr | None) -> pl.DataFrame:
    """Return per person (`key`, with `person_id` and `_<role>` columns) their groups, `person_`-prefixed,
    and their ethnic group; `ethnicity` holds person_id and ethnicity."""
    code = pl.col("ethnicity").str.strip_chars().str.to_uppercase()
    return (persons.join(ethnicity, on="person_id", how="left")
            .select("key", *row_groups(config, persons, deprivation),
                    pl.when(code.is_null()).then(pl.lit("not recorded"))
                    .when(code == "Z").then(pl.lit("not stated"))
                    .otherwise(code.replace_strict(ETHNIC_GROUPS, default="not stated"))
                    .cast(pl.Enum(ETHNIC_ORDER)).alias("ethnic_group"))
            .rename({d: f"person_{d}" for d in GROUP_TYPES}))


def combine_groups(own: pl.DataFrame, persons: pl.DataFrame, with_deprivation: bool) -> pl.DataFrame:
    """Return per node source, records, stage, linked and its group in each equity dimension."""
    nodes = own.join(persons, on="key", how="left").select(
        "source", "records", "stage", (pl.col("stage") < 2).alias("linked"),
        *[pl.coalesce(d, f"person_{d}").fill_null("unknown").alias(d) for d in GROUP_TYPES],
        pl.col("ethnic_group").fill_null("not recorded"))
    dims = [d for d in DIMENSIONS if d != "source" and (d != "deprivation" or with_deprivation)]
    return nodes.select("source", "records", "stage", "linked", *dims)


#: Age band labels, in order, and "unknown" (a birth date after the reference date).
AGE_LABELS = (*[label for _, label in AGE_BANDS], "unknown")
#: The groups worked out per node and per person, as small enums.
GROUP_TYPES = {"age_band": pl.Enum(AGE_LABELS), "sex": pl.Enum(["female", "male", "unknown"]),
           "deprivation": pl.Enum(["1", "2", "3", "4", "5", "unknown"])}


def row_groups(config: Config, frame: pl.DataFrame, deprivation: pl.Expr | None) -> list[pl.Expr]:
    """Return the age band, sex and deprivation quintile (enums) of each row from its `_birth_year`,
    `_birth_month`, `_sex` and `_area` columns; null where the field itself is missing."""
    def column(name: str) -> pl.Expr:
        return pl.col(name) if name in frame.columns else pl.lit(None, pl.String)

    ref = config.reference_date
    year = column("_birth_year").cast(pl.Int64, strict=False)
    month = column("_birth_month").cast(pl.Int64, strict=False)
    age = pl.lit(ref.year) - year - pl.when(month > ref.month).then(1).otherwise(0)
    band = pl.lit(AGE_BANDS[0][1])
    for low, label in AGE_BANDS[1:]:
        band = pl.when(age >= low).then(pl.lit(label)).otherwise(band)
    sex = column("_sex")
    out = [pl.when(year.is_null()).then(None).when(age < 0).then(pl.lit("unknown")).otherwise(band).alias("age_band"),
           pl.when(sex.is_null()).then(None).otherwise(
               sex.str.strip_chars().str.to_lowercase().replace_strict(SEX_LABELS, default="unknown")).alias("sex")]
    if deprivation is None:
        out.append(pl.lit(None, pl.String).alias("deprivation"))
    else:
        out.append(pl.when(column("_area").is_null()).then(None).when(deprivation.is_null()).then(pl.lit("unknown"))
                   .otherwise(((deprivation + 1) // 2).cast(pl.Int64).cast(pl.String)).alias("deprivation"))
    return [e.cast(GROUP_TYPES[name]) for e, name in zip(out, GROUP_TYPES, strict=True)]


def ethnicity_of(config: Config, events: Path) -> pl.DataFrame:
    """Return person_id and the ethnic category of their latest registration that records one."""
    return latest_ethnicity(config, pl.scan_parquet(events)).collect()


def latest_ethnicity(config: Config, events: pl.LazyFrame) -> pl.LazyFrame:
    """Return person_id and the ethnic category of their latest registration that records one."""
    spines = [s.name for s in config.sources if s.kind == "gp_registrations"]
    return (events
            .filter(pl.col("source").is_in(spines) & (pl.col("event_type") == "registration")
                    & pl.col("ethnicity").is_not_null() & (pl.col("ethnicity").str.strip_chars() != ""))
            .group_by("person_id")
            .agg(pl.col("ethnicity").sort_by("start_date", "ethnicity").last()))


__all__ = [
    "AGE_LABELS",
    "DIMENSIONS",
    "ETHNIC_ORDER",
    "GROUP_TYPES",
    "STAGES",
    "combine_groups",
    "ethnicity_of",
    "latest_ethnicity",
    "own_groups",
    "person_groups",
    "report_deprivation",
    "report_persons",
    "row_groups",
]
