"""Build the cohort dataset from linkage decisions: the person index, one row per person, and
every event with its person attached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from linkcare.config import Config, Source
from linkcare.linkage.cluster import person_ids
from linkcare.linkage.lineage import carry_over
from linkcare.linkage.pipeline import Linked
from linkcare.linkage.prepare import scan_source
from linkcare.linkage.rejects import parse_date
from linkcare.sources.kinds import match_columns

EMERGENCY_METHODS = ("21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28")
ELECTIVE_METHODS = ("11", "12", "13")
EVENT_COLUMNS: dict[str, pl.DataType] = {
    "person_id": pl.String(), "source": pl.String(), "record_id": pl.String(), "event_type": pl.String(),
    "start_date": pl.Date(), "end_date": pl.Date(), "admission_method": pl.String(),
    "admission_source": pl.String(), "discharge_destination": pl.String(), "diagnoses": pl.List(pl.String()),
    "arrival_mode": pl.String(), "attended": pl.String(), "first_attendance": pl.String(),
    "specialty": pl.String(), "practice": pl.String(), "ethnicity": pl.String(),
    "route_of_access": pl.String(), "service_type": pl.String(), "service_component": pl.String(),
    "support_reason": pl.String(), "planned_units": pl.Float64(), "outcome": pl.String(),
}
DATE_KEYS = {"start_date", "end_date", "registration_date", "death_date"}


def node_persons(linked: Linked, key: bytes,
                 previous: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Return per node its person_id, stage and probability (work done per node, not per record),
    and, given a previous run's person index, the lineage table (else None).

    The person ID is a keyed hash of the person's smallest source/record key; with a previous run,
    people carry their IDs over as linkcare.linkage.lineage describes.
    """
    nodes = linked.nodes
    per_node = pl.DataFrame({
        "node": np.arange(nodes.n), "cluster": linked.node_person, "match_stage": linked.node_stage,
        "match_probability": linked.node_probability,
        "anchor": nodes.frame.select(pl.concat_str([pl.col("source"), pl.lit("/"), pl.col("first_id")])).to_series(),
    })
    anchors = per_node.group_by("cluster").agg(pl.col("anchor").min()).sort("cluster")
    lineage = None
    if previous is None:
        ids = anchors.with_columns(person_ids(anchors["anchor"], key)).select("cluster", "person_id")
    else:
        records = nodes.record_node.join(per_node.select("node", "cluster"), on="node", how="left")
        ids, lineage = carry_over(records.select("source", "record_id", "cluster"), anchors, previous, key)
    per_node = per_node.join(ids, on="cluster", how="left").drop("anchor").sort("node")
    if "nhs" in nodes.fields:
        per_node = per_node.with_columns(has_nhs=nodes.frame["nhs"].is_not_null())
    per_node = per_node.with_columns(
        pl.when(pl.col("match_stage") == "unlinked").then(None).otherwise(pl.col("match_probability"))
        .alias("match_probability"))
    return per_node, lineage


def person_index(linked: Linked, per_node: pl.DataFrame) -> pl.DataFrame:
    """Return one row per source record: its person, match probability and the stage that linked it."""
    index = linked.nodes.record_node.join(per_node, on="node", how="left")
    columns = ["source", "record_id", "person_id", "match_probability", "match_stage"]
    if "has_nhs" in index.columns:
        columns.append("has_nhs")
    return index.select(columns).sort(["source", "record_id"])


def _weighted_mode(cluster: np.ndarray, code: np.ndarray, weight: np.ndarray, n_clusters: int) -> np.ndarray:
    """Return per cluster the code with the largest total weight (ties: the smallest code), -1 if none."""
    ok = code >= 0
    n_codes = int(code.max()) + 1 if ok.any() else 1
    keys, inverse = np.unique(cluster[ok] * n_codes + code[ok], return_inverse=True)
    total = np.bincount(inverse.ravel(), weights=weight[ok].astype(np.float64))
    out = np.full(n_clusters, -1, dtype=np.int64)
    if keys.size == 0:
        return out
    # keys are sorted by cluster, then code: per cluster, the first code with the largest total.
    owner, value = keys // n_codes, keys % n_codes
    bounds = np.r_[0, np.nonzero(np.diff(owner))[0] + 1]
    best = np.repeat(np.maximum.reduceat(total, bounds), np.diff(np.r_[bounds, owner.size]))
    at_best = np.nonzero(total == best)[0]
    first = at_best[np.r_[True, owner[at_best][1:] != owner[at_best][:-1]]]
    out[owner[first]] = value[first]
    return out


def persons(linked: Linked, per_node: pl.DataFrame) -> pl.DataFrame:
    """Return one row per person: records per source and each linkage field's most common value
    over the person's records (ties: the smallest value)."""
    nodes = linked.nodes
    cluster = linked.node_person
    n_clusters = int(cluster.max()) + 1 if cluster.size else 0
    records = nodes.frame["records"].to_numpy()
    source = nodes.frame["source"]
    ids = per_node.select("cluster", "person_id").unique("cluster").sort("cluster")
    data: dict[str, object] = {
        "person_id": ids["person_id"],
        "records": np.bincount(cluster, weights=records, minlength=n_clusters).astype(np.int64),
    }
    for s in sorted(source.unique().to_list()):
        mine = (source == s).to_numpy()
        data[f"records_{s}"] = np.bincount(cluster[mine], weights=records[mine], minlength=n_clusters).astype(np.int64)
    for name in nodes.fields:
        # The link stage's codes are ranks among the sorted distinct values, so these are their values.
        values = nodes.frame[name].drop_nulls().unique().sort()
        mode = _weighted_mode(cluster, linked.codes[name], records, n_clusters)
        data[name] = pl.Series(name, [None] * n_clusters, dtype=values.dtype) if values.len() == 0 else (
            values.gather(np.maximum(mode, 0)).scatter(np.nonzero(mode < 0)[0], None))
    return pl.DataFrame(data).sort("person_id")


def event_exprs(source: Source, header: list[str]) -> list[pl.Expr]:
    """Return the expressions reading a source's record_id and the event attributes its header has."""
    exprs: list[pl.Expr] = [pl.col(source.id).cast(pl.String).alias("record_id")]
    present: dict[str, list[str]] = {}
    for key, configured in source.events.items():
        wanted = (configured,) if isinstance(configured, str) else configured
        cols = [c for pattern in wanted for c in match_columns(pattern, header)]
        if cols:
            present[key] = cols
    for key, cols in present.items():
        if key == "diagnoses":
            exprs.append(pl.concat_list([pl.col(c).cast(pl.String) for c in cols]).list.drop_nulls()
                         .list.eval(pl.element().filter(pl.element().str.strip_chars() != "")).alias(key))
        elif key in DATE_KEYS:
            exprs.append(parse_date(pl.col(cols[0])).alias(key))
        elif key == "planned_units":
            exprs.append(pl.col(cols[0]).cast(pl.Float64, strict=False).alias(key))
        else:
            exprs.append(pl.col(cols[0]).cast(pl.String).str.strip_chars().alias(key))
    return exprs


def shape_events(source: Source, frame: pl.DataFrame) -> pl.DataFrame:
    """Return a source's events (the columns event_exprs read) with their event_type and source; works
    on any slice of rows."""
    if source.kind == "gp_registrations":
        frame = frame.rename({"registration_date": "start_date"} if "registration_date" in frame.columns else {})
        if "death_date" in frame.columns:
            frame = frame.rename({"death_date": "end_date"})
        frame = frame.with_columns(pl.lit("registration").alias("event_type"))
    elif source.kind == "apc":
        method = pl.col("admission_method") if "admission_method" in frame.columns else pl.lit(None, pl.String)
        frame = frame.with_columns(
            pl.when(method.is_in(EMERGENCY_METHODS)).then(pl.lit("emergency_admission"))
            .when(method.is_in(ELECTIVE_METHODS)).then(pl.lit("elective_admission"))
            .otherwise(pl.lit("other_admission")).alias("event_type"))
    elif source.kind == "ae":
        frame = frame.with_columns(pl.lit("ae_attendance").alias("event_type"))
    elif source.kind == "outpatients":
        frame = frame.with_columns(pl.lit("outpatient_appointment").alias("event_type"))
    elif source.kind == "social_care":
        etype = pl.col("event_type").str.to_lowercase().str.replace_all(r"[^a-z]+", "_")
        frame = frame.with_columns(pl.concat_str([pl.lit("social_care_"), etype]).alias("event_type"))
    return frame.with_columns(pl.lit(source.name).alias("source"))


def _source_events(source: Source, index: pl.DataFrame) -> pl.DataFrame | None:
    if source.kind == "other":
        return None
    lf = scan_source(source)  # checks the file; its schema is the header
    frame = shape_events(source, lf.select(event_exprs(source, lf.collect_schema().names())).collect())
    ids = index.filter(pl.col("source") == source.name).select("record_id", "person_id")
    frame = frame.join(ids, on="record_id", how="inner")  # rejected rows have no person
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                         for c, t in EVENT_COLUMNS.items()])


def write_events(config: Config, index: pl.DataFrame, path: Path) -> int:
    """Write every event to one Parquet file, a source at a time so memory follows the largest
    source; within a source, events are in order of person and date. Returns the rows written."""
    import pyarrow.parquet as pq

    schema = pl.DataFrame(schema=EVENT_COLUMNS).to_arrow().schema
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for source in config.sources:
            frame = _source_events(source, index)
            if frame is None or frame.height == 0:
                continue
            frame = frame.sort(["person_id", "start_date", "record_id"], nulls_last=True)
            writer.write_table(frame.to_arrow().cast(schema))
            rows += frame.height
            del frame
    return rows
