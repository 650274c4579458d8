"""The first stages of the local engine: read every source and standardise its linkage fields
(linkcare.sources.read), set aside the rows failing the row checks, and reduce the records to
distinct identifier tuples (nodes); the check that two extracts share a pseudonymisation key; and
the dense integer codes of a field's values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from linkcare.config import Config
from linkcare.errors import DataError
from linkcare.sources.checks import SourceRejects
from linkcare.sources.read import FORM_PREFIX, choose_forms, form_counts, read_source, record_fields, report_rejects


@dataclass(frozen=True)
class Records:
    """Standardised linkage fields of every record of every source that passed the row checks."""

    frame: pl.DataFrame  # source, record_id, one String column per field
    fields: tuple[str, ...]
    rows: dict[str, int]  # rows read per source, rejected ones included
    rejects: dict[str, SourceRejects] = field(default_factory=dict)
    #: per field and standardised value, the form the extracts wrote it in (sources.read.choose_forms)
    forms: pl.DataFrame | None = None


def standardised_records(config: Config) -> pl.DataFrame:
    """Return source, record_id and one standardised String column per config field, for all sources."""
    return read_records(config).frame


def read_records(config: Config, strict: bool = False) -> Records:
    """Return the standardised records of every source in the config, rows failing the row checks
    set aside as rejects; raise DataError if a source rejects too many (any, if `strict`)."""
    fields, _ = record_fields(config)
    frames, counts = [], []
    rows: dict[str, int] = {}
    rejects: dict[str, SourceRejects] = {}
    for source in config.sources:
        read = read_source(source, config, forms=True)
        report_rejects(source, read.rejects, config.validation.max_reject_share, strict)
        rows[source.name] = read.rejects.rows
        rejects[source.name] = read.rejects
        counts.append(form_counts(read.frame, fields))
        frames.append(read.frame.drop("row", *[c for c in read.frame.columns if c.startswith(FORM_PREFIX)]))
    return Records(pl.concat(frames), fields, rows, rejects, choose_forms(pl.concat(counts)))


@dataclass(frozen=True)
class Nodes:
    """Distinct identifier tuples (nodes) and the map from records to them.

    Event tables repeat the same identifiers on every row; linking distinct tuples per source and
    mapping back saves most of the work.
    """

    frame: pl.DataFrame  # node (0..n-1), source, the field columns, records (count), first_id
    record_node: pl.DataFrame  # source, record_id, node
    fields: tuple[str, ...]
    forms: pl.DataFrame | None = None  # field, value, form: as Records.forms

    @property
    def n(self) -> int:
        return self.frame.height


def reduce_records(records: Records, rules: tuple[tuple[str, ...], ...]) -> Nodes:
    """Return the distinct (source, fields…) tuples as numbered nodes, and each record's node.

    Only records that hold every field of an exact rule share a node with their identical records:
    the rule says such records are one person. Records identical in fields that do not identify
    anyone (sex and birth year, say) are not evidence of one person, so each is a node of its own,
    compared and decided like any other record. Nodes are numbered in order of (source, smallest
    record id), so the numbering does not depend on the order of rows in the extracts.
    """
    keys = ["source", *records.fields, SINGLE]
    grouped = (records.frame.with_columns(single_key(rules))
               .group_by(keys)
               .agg(pl.len().alias("records"), pl.col("record_id").min().alias("first_id"),
                    pl.col("record_id").alias("record_ids"))
               .sort(["source", "first_id"]).with_row_index("node").with_columns(pl.col("node").cast(pl.Int64)))
    record_node = (grouped.select("node", "source", pl.col("record_ids").alias("record_id"))
                   .explode("record_id").select("source", "record_id", "node"))
    return Nodes(grouped.drop("record_ids", SINGLE), record_node, records.fields, records.forms)


#: The column that keeps a record that holds no exact rule's fields a node of its own.
SINGLE = "_single"


def distinct_tuples(frame: pl.DataFrame, fields: tuple[str, ...], rules: tuple[tuple[str, ...], ...]) -> pl.DataFrame:
    """Return the nodes reduce_records would make of these records, unnumbered and without their
    record ids: source, the fields and `records`, one row per node."""
    return (frame.with_columns(single_key(rules)).group_by(["source", *fields, SINGLE])
            .agg(pl.len().alias("records")).drop(SINGLE))


def single_key(rules: tuple[tuple[str, ...], ...]) -> pl.Expr:
    """Return the SINGLE column: null for a record holding every field of some exact rule (it may
    share a node), else its record id (a node of its own)."""
    placed = pl.any_horizontal([pl.all_horizontal([pl.col(f).is_not_null() for f in rule]) for rule in rules]) \
        if rules else pl.lit(False)
    return pl.when(placed).then(pl.lit(None, pl.String)).otherwise(pl.col("record_id")).alias(SINGLE)


#: Two sources whose NHS tokens overlap less than this while their other identifiers overlap more than
#: KEY_CHECK_DEMOGRAPHIC_OVERLAP were almost surely pseudonymised with different keys.
KEY_CHECK_TOKEN_OVERLAP = 0.05
KEY_CHECK_DEMOGRAPHIC_OVERLAP = 0.5
KEY_CHECK_MIN_TOKENS = 100


def check_pseudonymisation_keys(nodes: Nodes, token: str = "nhs") -> None:
    """Raise DataError if two sources share almost no NHS tokens while the other identifiers they both
    hold overlap heavily: their extracts were probably pseudonymised with different keys."""
    check_tuple_keys(nodes.frame, nodes.fields, token)


def check_tuple_keys(frame: pl.DataFrame, fields: tuple[str, ...], token: str = "nhs") -> None:
    """Raise DataError as check_pseudonymisation_keys does, from any frame of nodes (source and the fields)."""
    if token not in fields:
        return
    parts = frame.partition_by("source", as_dict=True)
    by_source = {str(key[0]): part for key, part in sorted(parts.items(), key=lambda kv: str(kv[0][0]))}
    tokens = {s: part[token].drop_nulls().unique() for s, part in by_source.items()}
    held = {s: [f for f in fields if f != token and part[f].null_count() < part.height]
            for s, part in by_source.items()}

    def shared_tokens(a: str, b: str) -> int:
        return int(tokens[b].is_in(tokens[a].implode()).sum())

    def demographic_overlap(a: str, b: str, shared: list[str]) -> float:
        demo_a = by_source[a].select(shared).drop_nulls().unique()
        demo_b = by_source[b].select(shared).drop_nulls().unique()
        return demo_b.join(demo_a, on=shared, how="semi").height / max(min(demo_a.height, demo_b.height), 1)

    check_key_overlaps(list(by_source), {s: t.len() for s, t in tokens.items()}, held, shared_tokens,
                       demographic_overlap, token)


def check_key_overlaps(names: list[str], tokens: dict[str, int], held: dict[str, list[str]],
                       shared_tokens: Callable[[str, str], int],
                       demographic_overlap: Callable[[str, str, list[str]], float], token: str) -> None:
    """Raise DataError for the first two sources (in name order) that share almost no tokens while
    their other identifiers overlap heavily. `tokens` holds each source's distinct tokens, `held`
    the other fields it fills; the overlaps are computed only for pairs that need them."""
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            smaller = min(tokens[a], tokens[b])
            shared = [f for f in held[a] if f in held[b]]
            if smaller < KEY_CHECK_MIN_TOKENS or len(shared) < 2:
                continue
            token_overlap = shared_tokens(a, b) / smaller
            if token_overlap >= KEY_CHECK_TOKEN_OVERLAP:
                continue
            demo_overlap = demographic_overlap(a, b, shared)
            if demo_overlap > KEY_CHECK_DEMOGRAPHIC_OVERLAP:
                raise DataError(
                    f"sources {a!r} and {b!r} share {token_overlap:.1%} of their {token} tokens while "
                    f"{demo_overlap:.0%} of their {', '.join(shared)} combinations match: the extracts were "
                    "probably pseudonymised with different keys; pseudonymise both with the same key")


def dense_codes(values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return a code per row (the rank of its value among the sorted distinct values; -1 where
    missing) and the distinct values themselves."""
    distinct = values.drop_nulls().unique().sort()
    table = pl.DataFrame({"v": distinct, "code": np.arange(distinct.len(), dtype=np.int64)})
    coded = pl.DataFrame({"v": values}).join(table, on="v", how="left", maintain_order="left")["code"]
    return coded.fill_null(-1).to_numpy(), distinct.to_numpy()
