"""What the demographic fields of the cohort mean: Census ethnic groups from NHS ethnic category
codes, age bands, and deprivation deciles looked up by area. Risk features and the link report's
groups share them, so both read a person the same way."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from linkcare.config import DeprivationLookup
from linkcare.errors import DataError

# NHS ethnic category codes grouped as in the Census: A-C White, D-G Mixed, H-L Asian, M-P Black, R-S Other.
ETHNIC_GROUPS = {**dict.fromkeys("ABC", "White"), **dict.fromkeys("DEFG", "Mixed"), **dict.fromkeys("HJKL", "Asian"),
                 **dict.fromkeys("MNP", "Black"), **dict.fromkeys("RS", "Other")}
AGE_BANDS = ((0, "0-17"), (18, "18-44"), (45, "45-64"), (65, "65-74"), (75, "75-84"), (85, "85+"))


def deprivation_decile(lookup: DeprivationLookup | None, roles: Mapping[str, str]) -> pl.Expr:
    """Return the `deprivation_decile` column of an `_area` column: each area looked up in [risk]
    deprivation (null where there is no lookup, no area field among `roles`, or the area is not in it)."""
    if lookup is None or "area" not in roles:
        return pl.lit(None, pl.Float64).alias("deprivation_decile")
    try:
        if lookup.format == "parquet":
            table = pl.read_parquet(lookup.path, columns=[lookup.area, lookup.decile])
        else:
            table = pl.read_csv(lookup.path, separator=lookup.delimiter, infer_schema=False,
                                columns=[lookup.area, lookup.decile])
    except (OSError, pl.exceptions.PolarsError):
        raise DataError(f"{lookup.path}: cannot read columns {lookup.area} and {lookup.decile} "
                        "(risk.deprivation)") from None
    table = table.select(
        pl.col(lookup.area).cast(pl.String).str.strip_chars().str.to_lowercase().alias("_key"),
        pl.col(lookup.decile).cast(pl.Float64, strict=False).alias("_decile"))
    bad = table.filter(pl.col("_decile").is_null() | (pl.col("_decile") < 1) | (pl.col("_decile") > 10)).height
    if bad:
        raise DataError(f"{lookup.path}: column {lookup.decile}: {bad} row(s) are not a decile from 1 to 10")
    mapping = dict(zip(table["_key"].to_list(), table["_decile"].to_list(), strict=True))
    return (pl.col("_area").str.strip_chars().str.to_lowercase()
            .replace_strict(mapping, default=None, return_dtype=pl.Float64).alias("deprivation_decile"))


__all__ = ["AGE_BANDS", "ETHNIC_GROUPS", "deprivation_decile"]
