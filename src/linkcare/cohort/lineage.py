"""Carry person IDs over from a previous run, and record how each person changed.

Records are matched across runs by (source, record_id). Each new person and each previous person
are joined by the number of records they share. A new person takes a previous person's ID when
each is the other's best match: no other new person holds more of the previous person's records,
and no other previous person gave the new person more records (ties go to the smaller previous
ID, then to the new person with the smaller anchor record). Matched pairs are set aside and the
rule is applied again to what is left, until nothing more matches. Every other new person gets a
fresh keyed ID that no previous run used.

`lineage.parquet` has a row per new person and previous person they share records with:

- kept: the new person holds records of exactly one previous person, and all of that person's
  remaining records; the ID is the same.
- merged: the new person holds records of two or more previous people (one row for each); it
  keeps the ID of the one it matched as above.
- split: the new person holds records of one previous person whose records are now spread over
  several new people; the part that matched keeps the ID, the others get new IDs.
- new: the new person holds no record of the previous run (previous_person_id is empty).
- gone: a previous person none of whose records are in this run (person_id is empty).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import polars as pl

from linkcare.errors import DataError
from linkcare.io.checksum import check_written_by
from linkcare.io.parquet import write_parquet

LINEAGE_SCHEMA = {"person_id": pl.String, "previous_person_id": pl.String, "change": pl.String}


def person_ids(anchor: pl.Series, key: bytes) -> pl.Series:
    """Return a person ID per cluster from its anchor (its smallest source/record key).

    The ID is a keyed hash, so it reveals nothing about the records, and it stays the same for
    as long as the same record anchors the person.
    """
    digest = [hashlib.blake2b(a.encode(), key=key, digest_size=8).hexdigest() for a in anchor.to_list()]
    return pl.Series("person_id", ["P" + d for d in digest], dtype=pl.String)


def write_lineage(folder: Path, lineage: pl.DataFrame | None) -> dict[str, int] | None:
    """Write lineage.parquet into `folder` (given a lineage) and return the people per change."""
    if lineage is None:
        return None
    write_parquet(lineage, folder / "lineage.parquet")
    return {c: int(n) for c, n in lineage.group_by("change").len().sort("change").iter_rows()}


def read_previous(folder: Path, check_only: bool = False) -> pl.DataFrame | None:
    """Return source, record_id and person_id from a previous run's person_index.parquet, after
    checking that the file is the one linkcare wrote there (with `check_only`, just check)."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    index_path = folder / "person_index.parquet"
    if not folder.is_dir():
        raise DataError(f"{folder}: --previous names no folder; give the output folder of an earlier `linkcare link`")
    for path in (manifest_path, index_path):
        if not path.is_file():
            raise DataError(f"{path}: not found; --previous must be the output folder of an earlier `linkcare link`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected = manifest["outputs"]["person_index.parquet"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(f"{manifest_path}: cannot be read as a link manifest; "
                        "--previous must be the output folder of an earlier `linkcare link`") from None
    raw = index_path.read_bytes()
    check_written_by(index_path, raw, expected, manifest_path, "link", "give --previous an untouched output folder")
    if check_only:
        return None
    return pl.read_parquet(io.BytesIO(raw), columns=["source", "record_id", "person_id"])


def _mutual_best(overlap: pl.DataFrame) -> pl.DataFrame:
    """Return the (cluster, previous) pairs that are each other's best match, applied repeatedly."""
    matched = []
    left = overlap
    while left.height:
        by_prev = left.sort(["previous", "n", "anchor"], descending=[False, True, False]).unique(
            "previous", keep="first", maintain_order=True)
        by_cluster = left.sort(["cluster", "n", "previous"], descending=[False, True, False]).unique(
            "cluster", keep="first", maintain_order=True)
        mutual = by_prev.join(by_cluster.select("cluster", "previous"), on=["cluster", "previous"], how="semi")
        if mutual.height == 0:
            break
        matched.append(mutual.select("cluster", "previous"))
        left = (left.join(mutual.select("cluster"), on="cluster", how="anti")
                .join(mutual.select("previous"), on="previous", how="anti"))
    if not matched:
        return pl.DataFrame(schema={"cluster": overlap["cluster"].dtype, "previous": pl.String})
    return pl.concat(matched)


def carry_over(records: pl.DataFrame, anchors: pl.DataFrame, previous: pl.DataFrame,
               key: bytes) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return the person_id of each cluster and the lineage table.

    `records` holds source, record_id and cluster for every record of this run; `anchors` holds
    cluster and anchor (the cluster's smallest source/record key); `previous` is read_previous's.
    """
    prev = previous.select("source", "record_id", pl.col("person_id").alias("previous"))
    overlap = (records.join(prev, on=["source", "record_id"], how="inner")
               .group_by("cluster", "previous").agg(pl.len().alias("n"))
               .join(anchors.select("cluster", "anchor"), on="cluster", how="left"))
    return assign_ids(overlap, anchors, prev["previous"].unique(), key)


def assign_ids(overlap: pl.DataFrame, anchors: pl.DataFrame, previous_ids: pl.Series,
               key: bytes) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return the person_id of each cluster and the lineage table, from what carry_over works out:
    `overlap` (cluster, previous, n records shared, anchor), `anchors` (cluster, anchor) and every
    previous person_id (each once). Each table has a row per person, not per record (the Spark engine builds
    them with joins and brings only them to the driver)."""
    matched = _mutual_best(overlap)
    ids = anchors.select("cluster", "anchor").join(matched, on="cluster", how="left")
    fresh = ids.filter(pl.col("previous").is_null())
    fresh = fresh.with_columns(_unused_ids(fresh["anchor"], previous_ids, key))
    ids = pl.concat([ids.filter(pl.col("previous").is_not_null()).with_columns(pl.col("previous").alias("person_id")),
                     fresh]).select("cluster", "person_id")
    lineage = _lineage(overlap, ids, previous_ids)
    return ids, lineage


def _unused_ids(anchor: pl.Series, used: pl.Series, key: bytes) -> pl.Series:
    """Return a keyed ID per anchor that no previous run gave anyone and no other anchor gets:
    an anchor whose ID is taken is salted (anchor#1, #2, …) until its ID is free."""
    out = person_ids(anchor, key)
    clash = out.is_in(used.implode()) | out.is_duplicated()
    if not clash.any():
        return out
    taken = set(used.to_list()) | set(out.filter(~clash).to_list())
    values = out.to_list()
    for i in clash.arg_true().to_list():  # only the clashing few
        salt = 0
        while values[i] in taken:
            salt += 1
            values[i] = person_ids(pl.Series([f"{anchor[i]}#{salt}"]), key)[0]
        taken.add(values[i])
    return pl.Series("person_id", values, dtype=pl.String)


def _lineage(overlap: pl.DataFrame, ids: pl.DataFrame, previous_ids: pl.Series) -> pl.DataFrame:
    edges = overlap.select("cluster", "previous").with_columns(
        pl.len().over("cluster").alias("sources_of_new"), pl.len().over("previous").alias("parts_of_old"))
    change = (pl.when(pl.col("sources_of_new") > 1).then(pl.lit("merged"))
              .when(pl.col("parts_of_old") > 1).then(pl.lit("split")).otherwise(pl.lit("kept")))
    linked = edges.join(ids, on="cluster", how="left").select(
        "person_id", pl.col("previous").alias("previous_person_id"), change.alias("change"))
    new = ids.join(edges.select("cluster"), on="cluster", how="anti").select(
        "person_id", pl.lit(None, pl.String).alias("previous_person_id"), pl.lit("new").alias("change"))
    gone = (previous_ids.alias("previous").to_frame().join(edges.select("previous"), on="previous", how="anti")
            .select(pl.lit(None, pl.String).alias("person_id"), pl.col("previous").alias("previous_person_id"),
                    pl.lit("gone").alias("change")))
    return (pl.concat([linked, new, gone]).cast(LINEAGE_SCHEMA)  # type: ignore[arg-type]
            .sort(["person_id", "previous_person_id"], nulls_last=True))


__all__ = ["LINEAGE_SCHEMA", "assign_ids", "carry_over", "person_ids", "read_previous", "write_lineage"]
