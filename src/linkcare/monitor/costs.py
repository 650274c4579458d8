"""Unit costs: the bundled, versioned table (data/unit_costs.csv), a site's own rows replacing its rows,
and every cost uplifted to one price year with the site's price index.

The bundled figures are those of NHS England's National Cost Collection 2023/24 (activity-weighted
averages of the National Schedule of NHS Costs) and PSSRU's *Unit Costs of Health and Social Care 2024*,
both at 2023/24 prices; each row carries its source and licence note. They were taken from the figures
the linkcare issue 16 quotes and could not be re-checked against the published workbooks where this
table was built (no internet); a site should check them, or replace them with its own.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import polars as pl

from linkcare.config.monitor import PRICE_YEAR, MonitorSettings
from linkcare.errors import ConfigError, DataError

#: The version of the bundled table: bump it whenever a row changes.
UNIT_COSTS_VERSION = "2026.12 (NCC 2023/24, PSSRU 2024)"
BUNDLED_PRICE_YEAR = "2023/24"
TABLE_COLUMNS = ("item", "activity", "unit", "cost", "price_year", "source", "licence")
SITE_REQUIRED = ("item", "cost", "price_year")


@dataclass(frozen=True)
class UnitCosts:
    """The unit costs a run uses: £ per unit of each item at `price_year`, and the table as used
    (each row's own cost and year, its cost at `price_year`, its source, licence and origin)."""

    costs: Mapping[str, float]
    price_year: str
    table: pl.DataFrame
    version: str
    bundled_sha256: str

    def __getitem__(self, item: str) -> float:
        return self.costs[item]


def bundled_table() -> tuple[pl.DataFrame, str]:
    """Return the bundled unit-cost table and the SHA-256 of its bytes."""
    raw = resources.files("linkcare.monitor").joinpath("data/unit_costs.csv").read_bytes()
    table = pl.read_csv(raw, schema_overrides={"cost": pl.Float64, "price_year": pl.String})
    return table.select(TABLE_COLUMNS), hashlib.sha256(raw).hexdigest()


def load_unit_costs(settings: MonitorSettings | None) -> UnitCosts:
    """Return the unit costs: the bundled table, with the rows of the site's `costs` file in place of its own,
    each uplifted to `price_year` (default 2023/24) by `price_index`."""
    table, sha = bundled_table()
    table = table.with_columns(pl.lit("bundled").alias("origin"))
    if settings is not None and settings.costs is not None:
        site = _site_table(settings.costs, set(table["item"].to_list()))
        kept = table.join(site.select("item"), on="item", how="anti")
        named = site.join(table.select("item", pl.col("activity").alias("_a"), pl.col("unit").alias("_u")),
                          on="item", how="left").with_columns(pl.col("activity").fill_null(pl.col("_a")),
                                                              pl.col("unit").fill_null(pl.col("_u")))
        table = pl.concat([kept, named.drop("_a", "_u")], how="diagonal_relaxed")
    target = (settings.price_year if settings is not None else None) or BUNDLED_PRICE_YEAR
    index = dict(settings.price_index) if settings is not None else {}
    factors = {year: _uplift(year, target, index) for year in table["price_year"].unique().to_list()}
    table = table.with_columns(
        pl.col("price_year").replace_strict(factors, return_dtype=pl.Float64).mul(pl.col("cost"))
        .alias("cost_at_price_year"))
    order = {item: i for i, item in enumerate(bundled_table()[0]["item"].to_list())}
    table = table.sort(pl.col("item").replace_strict(order, default=len(order), return_dtype=pl.Int64), "item")
    costs = dict(zip(table["item"].to_list(), table["cost_at_price_year"].to_list(), strict=True))
    return UnitCosts(costs, target, table, UNIT_COSTS_VERSION, sha)


def _uplift(year: str, target: str, index: Mapping[str, float]) -> float:
    if year == target:
        return 1.0
    missing = [y for y in (year, target) if y not in index]
    if missing:
        raise ConfigError(f"monitor.price_index: has no index for {', '.join(map(repr, missing))}, needed to move "
                          f"costs priced in {year} to price_year {target}; add it, e.g. price_index = "
                          f'{{ "{year}" = 100.0, "{target}" = 103.1 }} (an index such as the NHS Cost Inflation '
                          "Index)")
    return index[target] / index[year]


def _site_table(path: Path, known: set[str]) -> pl.DataFrame:
    """Return a site's unit-cost rows; raise DataError naming the file and column for a bad row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        frame = pl.read_csv(path, infer_schema=False)
    except FileNotFoundError:
        raise DataError(f"{path}: unit-cost file not found; check monitor.costs in the config") from None
    except (OSError, UnicodeDecodeError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"{path}: cannot be read as a UTF-8 CSV ({type(exc).__name__}); "
                        "save the unit-cost table as CSV with columns item,cost,price_year") from None
    missing = [c for c in SITE_REQUIRED if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; a unit-cost table needs item, cost and "
                        "price_year (and may give activity, unit, source, licence)")
    unknown = frame.filter(~pl.col("item").is_in(sorted(known)) | pl.col("item").is_null()).height
    if unknown:
        raise DataError(f"{path}: column item: {unknown} row(s) name no item of the bundled table; items are: "
                        f"{', '.join(sorted(known))}")
    twice = frame.height - frame["item"].n_unique()
    if twice:
        raise DataError(f"{path}: column item: {twice} item(s) are given more than once; give each once")
    cost = pl.col("cost").str.strip_chars().str.replace_all(",", "").cast(pl.Float64, strict=False)
    bad = frame.filter(cost.is_null() | (cost < 0)).height
    if bad:
        raise DataError(f"{path}: column cost: {bad} row(s) are not a number of pounds of 0 or more")
    years = frame.filter(~pl.col("price_year").fill_null("").str.contains(PRICE_YEAR.pattern)).height
    if years:
        raise DataError(f'{path}: column price_year: {years} row(s) are not a financial year such as "2024/25"')
    out = frame.with_columns(cost.alias("cost"), pl.lit("site").alias("origin"))
    for column in TABLE_COLUMNS:
        if column not in out.columns:
            out = out.with_columns(pl.lit(None, pl.String).alias(column))
    source = pl.col("source").fill_null(f"the site's table {path.name}")
    return out.select(*[source.alias(c) if c == "source" else pl.col(c) for c in TABLE_COLUMNS], "origin")


__all__ = ["BUNDLED_PRICE_YEAR", "UNIT_COSTS_VERSION", "UnitCosts", "bundled_table", "load_unit_costs"]
