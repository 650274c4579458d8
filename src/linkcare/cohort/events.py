"""The events of the cohort dataset: what each kind of extract's rows mean as events, read with
the columns the config maps, and written with their person attached (events.parquet).

Both engines shape events with these functions (the Spark engine a batch at a time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from linkcare.config import Config, Source
from linkcare.config.kinds import DATE_EVENT_KEYS, NUMBER_EVENT_KEYS, match_columns
from linkcare.io.parquet import parquet_writer
from linkcare.sources.dates import read_date, read_types
from linkcare.sources.read import scan_source

#: HES/SUS admission methods (ADMIMETH) of emergency and of elective admissions (NHS Data Dictionary).
EMERGENCY_METHODS = ("21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28")
ELECTIVE_METHODS = ("11", "12", "13")
#: The event types of admissions.
EMERGENCY_ADMISSION, ELECTIVE_ADMISSION = "emergency_admission", "elective_admission"
#: The columns of events.parquet and their types.
EVENT_COLUMNS: dict[str, pl.DataType] = {
    "person_id": pl.String(), "source": pl.String(), "record_id": pl.String(), "event_type": pl.String(),
    "start_date": pl.Date(), "end_date": pl.Date(), "admission_method": pl.String(),
    "admission_source": pl.String(), "discharge_destination": pl.String(), "diagnoses": pl.List(pl.String()),
    "arrival_mode": pl.String(), "attended": pl.String(), "first_attendance": pl.String(),
    "specialty": pl.String(), "practice": pl.String(), "ethnicity": pl.String(),
    "route_of_access": pl.String(), "service_type": pl.String(), "service_component": pl.String(),
    "support_reason": pl.String(), "planned_units": pl.Float64(), "outcome": pl.String(),
    "deregistration_date": pl.Date(), "cost": pl.Float64(), "unit_cost": pl.Float64(),
    "cost_frequency": pl.String(), "code": pl.String(), "issue_type": pl.String(),
}
#: The event types of a GP clinical extract (kind gp_events), from its record types.
GP_CONDITION, GP_FRAILTY_DEFICIT = "gp_condition", "gp_frailty_deficit"
GP_MEDICATION, GP_CONSULTATION = "gp_medication", "gp_consultation"
GP_EVENT_TYPES = (GP_CONDITION, GP_FRAILTY_DEFICIT, GP_MEDICATION, GP_CONSULTATION)
DATE_KEYS = set(DATE_EVENT_KEYS)


def event_exprs(source: Source, header: Mapping[str, pl.DataType] | Sequence[str]) -> list[pl.Expr]:
    """Return the expressions reading a source's record_id and the event attributes its header has;
    `header` is the extract's schema as scan_source reads it, or its column names (all text)."""
    types = read_types(header)
    exprs: list[pl.Expr] = [pl.col(source.id).cast(pl.String).alias("record_id")]
    present: dict[str, list[str]] = {}
    for key, configured in source.events.items():
        wanted = (configured,) if isinstance(configured, str) else configured
        cols = [c for pattern in wanted for c in match_columns(pattern, types)]
        if cols:
            present[key] = cols
    for key, cols in present.items():
        if key == "diagnoses":
            exprs.append(pl.concat_list([pl.col(c).cast(pl.String) for c in cols]).list.drop_nulls()
                         .list.eval(pl.element().filter(pl.element().str.strip_chars() != "")).alias(key))
        elif key in DATE_KEYS:
            exprs.append(read_date(cols[0], source.event_formats.get(key), types.get(cols[0])).alias(key))
        elif key in NUMBER_EVENT_KEYS:
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
            pl.when(method.is_in(EMERGENCY_METHODS)).then(pl.lit(EMERGENCY_ADMISSION))
            .when(method.is_in(ELECTIVE_METHODS)).then(pl.lit(ELECTIVE_ADMISSION))
            .otherwise(pl.lit("other_admission")).alias("event_type"))
    elif source.kind == "ae":
        frame = frame.with_columns(pl.lit("ae_attendance").alias("event_type"))
    elif source.kind == "outpatients":
        frame = frame.with_columns(pl.lit("outpatient_appointment").alias("event_type"))
    elif source.kind == "social_care":
        etype = pl.col("event_type").str.to_lowercase().str.replace_all(r"[^a-z]+", "_")
        frame = frame.with_columns(pl.concat_str([pl.lit("social_care_"), etype]).alias("event_type"))
    elif source.kind == "gp_events":
        # "Frailty deficit" -> gp_frailty_deficit; a record type of another name reads as gp_<its words>.
        rtype = pl.col("record_type").str.to_lowercase().str.replace_all(r"[^a-z]+", "_").str.strip_chars("_")
        frame = frame.with_columns(pl.concat_str([pl.lit("gp_"), rtype]).alias("event_type"))
    return frame.with_columns(pl.lit(source.name).alias("source"))


def service_kind() -> pl.Expr:
    """Return a social-care event's Service_Type in lower case ("" where none)."""
    return pl.col("service_type").str.to_lowercase().fill_null("")


def long_term_support() -> pl.Expr:
    """Return True for an event of long-term support (CLD Service_Type "Long Term Support: ...")."""
    return service_kind().str.starts_with("long term support")


def reablement() -> pl.Expr:
    """Return True for an event of reablement: short-term support to maximise independence (ST-Max), or a
    service or component named reablement."""
    return (service_kind().str.contains("st-max") | service_kind().str.contains("reablement")
            | pl.col("service_component").str.to_lowercase().fill_null("").str.contains("reablement"))


def source_events(source: Source, index: pl.DataFrame) -> pl.DataFrame | None:
    """Return a source's events with their person (from the person index), in EVENT_COLUMNS; None
    for a source of kind other."""
    if source.kind == "other":
        return None
    lf = scan_source(source)  # checks the file; its schema is the header
    frame = shape_events(source, lf.select(event_exprs(source, lf.collect_schema())).collect())
    ids = index.filter(pl.col("source") == source.name).select("record_id", "person_id")
    frame = frame.join(ids, on="record_id", how="inner")  # rejected rows have no person
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c)
                         for c, t in EVENT_COLUMNS.items()])


def write_events(config: Config, index: pl.DataFrame, path: Path) -> int:
    """Write every event to one Parquet file, a source at a time so memory follows the largest
    source; within a source, events are in order of person and date. Returns the rows written."""
    schema = pl.DataFrame(schema=EVENT_COLUMNS).to_arrow().schema
    rows = 0
    with parquet_writer(path, schema) as writer:
        for source in config.sources:
            frame = source_events(source, index)
            if frame is None or frame.height == 0:
                continue
            frame = frame.sort(["person_id", "start_date", "record_id"], nulls_last=True)
            writer.write_table(frame.to_arrow().cast(schema))
            rows += frame.height
            del frame
    return rows


__all__ = ["DATE_KEYS", "ELECTIVE_ADMISSION", "EMERGENCY_ADMISSION", "EVENT_COLUMNS", "GP_CONDITION",
           "GP_CONSULTATION", "GP_EVENT_TYPES", "GP_FRAILTY_DEFICIT", "GP_MEDICATION", "event_exprs",
           "long_term_support", "reablement", "service_kind", "shape_events", "source_events", "write_events"]
