"""The kinds of extract linkcare understands, and the default column of each of their events.

The defaults are the real field names of each national dataset (HES/SUS admitted patient care,
ECDS A&E, outpatients, adult social care client-level data, GP registrations; for the GP clinical
extract, the column names of linkcare synth's, as no national dataset fixes them); `linkcare synth`
writes extracts with exactly these names. A source's `events` table in the config overrides them.
A column may be a glob such as `DIAG_4_*`, which stands for every header column it matches.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class EventColumn:
    """One event attribute of a kind: its key, its default column (or glob), whether it must be
    present in the extract, and whether `validate` notes its default column's absence (not for the
    columns few extracts carry, such as a tariff)."""

    key: str
    column: str
    required: bool
    noted: bool = True


_REQ, _OPT = True, False

KINDS: Mapping[str, tuple[EventColumn, ...]] = MappingProxyType(
    {
        "gp_registrations": (
            EventColumn("registration_date", "Registration_Date", _REQ),
            EventColumn("death_date", "Date_Of_Death", _OPT),
            # The date the person left the practice's list (moved away, or registered elsewhere).
            EventColumn("deregistration_date", "Deregistration_Date", _OPT, noted=False),
            EventColumn("practice", "Practice_Code", _REQ),
            EventColumn("ethnicity", "Ethnic_Category", _OPT),
        ),
        "apc": (
            EventColumn("start_date", "ADMIDATE", _REQ),
            EventColumn("end_date", "DISDATE", _OPT),
            EventColumn("admission_method", "ADMIMETH", _REQ),
            EventColumn("admission_source", "ADMISORC", _OPT),
            EventColumn("discharge_destination", "DISDEST", _OPT),
            EventColumn("diagnoses", "DIAG_4_*", _OPT),
            # The spell's own price where the extract carries one (a SUS PbR tariff column); monitor
            # uses it instead of the unit-cost table.
            EventColumn("cost", "Tariff_Total_Payment", _OPT, noted=False),
        ),
        "ae": (
            EventColumn("start_date", "Arrival_Date", _REQ),
            EventColumn("arrival_mode", "Arrival_Mode", _OPT),
            EventColumn("discharge_destination", "Discharge_Destination", _OPT),
            EventColumn("cost", "Tariff_Total_Payment", _OPT, noted=False),
        ),
        "outpatients": (
            EventColumn("start_date", "APPTDATE", _REQ),
            EventColumn("attended", "ATTENDED", _OPT),
            EventColumn("first_attendance", "FIRSTATT", _OPT),
            EventColumn("specialty", "TRETSPEF", _OPT),
            EventColumn("cost", "Tariff_Total_Payment", _OPT, noted=False),
        ),
        "social_care": (
            EventColumn("event_type", "Event_Type", _REQ),
            EventColumn("start_date", "Event_Start_Date", _REQ),
            EventColumn("end_date", "Event_End_Date", _OPT),
            EventColumn("route_of_access", "Request_Route_Of_Access", _OPT),
            EventColumn("service_type", "Service_Type", _OPT),
            EventColumn("service_component", "Service_Component", _OPT),
            EventColumn("support_reason", "Primary_Support_Reason", _OPT),
            EventColumn("planned_units", "Planned_units_per_week", _OPT),
            EventColumn("outcome", "Event_Outcome", _OPT),
            # CLD's planned unit cost of a service and what one unit is (hour, week, ...).
            EventColumn("unit_cost", "Unit_Cost", _OPT, noted=False),
            EventColumn("cost_frequency", "Cost_Frequency_Unit_Type", _OPT, noted=False),
        ),
        # A GP clinical extract of derived flags (docs/gp_events.md): one row per coded condition, frailty
        # deficit, medication issue or consultation, with what it is (the record type) and which (its code).
        "gp_events": (
            EventColumn("record_type", "Record_Type", _REQ),
            EventColumn("code", "Code", _REQ),
            EventColumn("start_date", "Event_Date", _REQ),
            EventColumn("end_date", "End_Date", _OPT),
            EventColumn("issue_type", "Issue_Type", _OPT),
        ),
        "other": (),
    }
)

KIND_NAMES: tuple[str, ...] = tuple(KINDS)
#: The event keys that hold a date, and so may give the date's `format`.
DATE_EVENT_KEYS: tuple[str, ...] = ("start_date", "end_date", "registration_date", "death_date",
                                    "deregistration_date")
#: The event keys that hold a number.
NUMBER_EVENT_KEYS: tuple[str, ...] = ("planned_units", "cost", "unit_cost")
DEFAULT_KIND = "other"


def event_keys(kind: str) -> tuple[str, ...]:
    """Return the event keys a kind understands, in their documented order."""
    return tuple(c.key for c in KINDS[kind])


def default_events(kind: str) -> dict[str, str]:
    """Return the default column (or glob) of each event key of a kind."""
    return {c.key: c.column for c in KINDS[kind]}


def required_events(kind: str) -> frozenset[str]:
    """Return the event keys whose column must be present in an extract of this kind."""
    return frozenset(c.key for c in KINDS[kind] if c.required)


def quiet_events(kind: str) -> frozenset[str]:
    """Return the event keys whose default column may be absent without a note."""
    return frozenset(c.key for c in KINDS[kind] if not c.noted)


def is_glob(column: str) -> bool:
    """Return True if a configured column is a glob pattern rather than one column name."""
    return any(ch in column for ch in "*?[")


def match_columns(pattern: str, columns: Iterable[str]) -> list[str]:
    """Return the header columns a configured column names: itself if present, else the glob's
    matches in header order (case-sensitive)."""
    columns = list(columns)
    if not is_glob(pattern):
        return [pattern] if pattern in columns else []
    return [c for c in columns if fnmatch.fnmatchcase(c, pattern)]


__all__ = [
    "DATE_EVENT_KEYS",
    "NUMBER_EVENT_KEYS",
    "DEFAULT_KIND",
    "KINDS",
    "KIND_NAMES",
    "EventColumn",
    "default_events",
    "event_keys",
    "is_glob",
    "match_columns",
    "quiet_events",
    "required_events",
]
