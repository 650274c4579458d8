"""monitor's counting on hand-built cohorts: person-months at risk with deaths, deregistration and late
registration; events on the first and last day of a month; spells and services across months; costs
against a hand computation; the months each source covers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from linkcare.cohort.dataset import open_cohort
from linkcare.cohort.events import EVENT_COLUMNS
from linkcare.config.monitor import MonitorSettings
from linkcare.errors import ConfigError, DataError
from linkcare.monitor.activity import at_risk, person_activity, person_months
from linkcare.monitor.costs import load_unit_costs
from linkcare.monitor.window import Window, last_complete_month, monitor_window

D = dt.date
JAN, FEB, MAR = D(2025, 1, 1), D(2025, 2, 1), D(2025, 3, 1)
WINDOW = Window((JAN, FEB, MAR), {"apc": frozenset(), "ae": frozenset(), "sc": frozenset(), "op": frozenset()},
                "config")


def _event(person: str, source: str, kind: str, start: dt.date | None, end: dt.date | None = None,
           **attrs: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(EVENT_COLUMNS)
    row.update(person_id=person, source=source, record_id=f"{source}-{person}-{start}-{kind}-{len(attrs)}",
               event_type=kind, start_date=start, end_date=end, **attrs)
    return row


def _cohort(folder: Path, events: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(events, schema=EVENT_COLUMNS).write_parquet(folder / "events.parquet")
    people = sorted({str(e["person_id"]) for e in events})
    pl.DataFrame({"person_id": people}).write_parquet(folder / "persons.parquet")
    return open_cohort(folder)


def _amounts(activity: pl.DataFrame, person: str, measure: str) -> dict[dt.date, float]:
    rows = activity.filter((pl.col("person_id") == person) & (pl.col("measure") == measure)).sort("month")
    return dict(zip(rows["month"].to_list(), rows["amount"].to_list(), strict=True))


def _costs(activity: pl.DataFrame, person: str, measure: str) -> dict[dt.date, float]:
    rows = activity.filter((pl.col("person_id") == person) & (pl.col("measure") == measure)).sort("month")
    return dict(zip(rows["month"].to_list(), rows["cost"].to_list(), strict=True))


@pytest.fixture
def people(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A: registered throughout; B: dies 10 Feb; C: registers late, 16 Feb; E: leaves (deregisters) 31 Jan;
    V: a visitor with hospital activity and no registration."""
    events = [
        _event("A", "gp", "registration", D(2010, 1, 1)),
        _event("B", "gp", "registration", D(2010, 1, 1), D(2025, 2, 10)),
        _event("C", "gp", "registration", D(2025, 2, 16)),
        _event("E", "gp", "registration", D(2010, 1, 1), deregistration_date=D(2025, 1, 31)),
        # A: A&E on the first and the last day of January, and on 1 February.
        _event("A", "ae", "ae_attendance", D(2025, 1, 1)),
        _event("A", "ae", "ae_attendance", D(2025, 1, 31)),
        _event("A", "ae", "ae_attendance", D(2025, 2, 1)),
        # A: an emergency spell of 1 night (short stay) in January, one of 5 nights across Jan/Feb (long stay).
        _event("A", "apc", "emergency_admission", D(2025, 1, 10), D(2025, 1, 11)),
        _event("A", "apc", "emergency_admission", D(2025, 1, 29), D(2025, 2, 3)),
        # A: an elective day case and an elective inpatient spell with its own tariff in March.
        _event("A", "apc", "elective_admission", D(2025, 3, 5), D(2025, 3, 5)),
        _event("A", "apc", "elective_admission", D(2025, 3, 10), D(2025, 3, 12), cost=4000.0),
        # A: outpatients: a first attended, a follow-up attended, a DNA (not counted).
        _event("A", "op", "outpatient_appointment", D(2025, 2, 3), attended="5", first_attendance="1"),
        _event("A", "op", "outpatient_appointment", D(2025, 2, 4), attended="6", first_attendance="2"),
        _event("A", "op", "outpatient_appointment", D(2025, 2, 5), attended="3", first_attendance="2"),
        # B: A&E on the day of death (counted) and a spell admitted the day before death, dying in it.
        _event("B", "ae", "ae_attendance", D(2025, 2, 10)),
        _event("B", "apc", "emergency_admission", D(2025, 2, 9), D(2025, 2, 10)),
        # B: home care, 10 planned hours a week, from 15 January, open; ends with B's death.
        _event("B", "sc", "social_care_service", D(2025, 1, 15), service_type="Long Term Support: Community",
               planned_units=10.0),
        # C: A&E before registering (not counted) and on the day of registration (counted).
        _event("C", "ae", "ae_attendance", D(2025, 2, 1)),
        _event("C", "ae", "ae_attendance", D(2025, 2, 16)),
        # C: nursing care from 1 March to 14 March with CLD's own weekly cost; a reablement episode.
        _event("C", "sc", "social_care_service", D(2025, 3, 1), D(2025, 3, 14),
               service_type="Long Term Support: Nursing Care", unit_cost=700.0, cost_frequency="Weekly"),
        _event("C", "sc", "social_care_service", D(2025, 2, 20), D(2025, 3, 5),
               service_type="Short Term Support: ST-Max"),
        # E: A&E after leaving (not counted).
        _event("E", "ae", "ae_attendance", D(2025, 2, 2)),
        # V: a visitor: no registration, no denominator, not counted.
        _event("V", "ae", "ae_attendance", D(2025, 1, 5)),
    ]
    return _cohort(tmp_path / "cohort", events)


def test_person_months_follow_death_deregistration_and_late_registration(people) -> None:  # type: ignore[no-untyped-def]
    risk = at_risk(people, "gp")
    frame = risk.frame
    assert frame["person_id"].to_list() == ["A", "B", "C", "E"]  # the visitor is not on the spine
    by = {r["person_id"]: r for r in frame.to_dicts()}
    assert by["B"]["died"] and by["B"]["exit"] == D(2025, 2, 10)
    assert not by["E"]["died"] and by["E"]["exit"] == D(2025, 1, 31)
    assert by["C"]["entry"] == D(2025, 2, 16)
    counted, months = person_months(frame, WINDOW)
    # January: A, B, E whole (E leaves on its last day, counted that day); February: A whole, B 10 of 28 days,
    # C 13 of 28 days (16th to 28th); March: A and C whole.
    assert counted.tolist() == [3, 3, 2]
    assert months.tolist() == pytest.approx([3.0, 1 + 10 / 28 + 13 / 28, 2.0])


def test_events_count_only_while_at_risk_and_in_their_month(people) -> None:  # type: ignore[no-untyped-def]
    risk = at_risk(people, "gp")
    activity = person_activity(people, risk, WINDOW, load_unit_costs(None))
    assert _amounts(activity, "A", "ae_attendances") == {JAN: 2.0, FEB: 1.0}  # 1 and 31 Jan in January
    assert _amounts(activity, "B", "ae_attendances") == {FEB: 1.0}  # the day of death counts
    assert _amounts(activity, "C", "ae_attendances") == {FEB: 1.0}  # before registration does not
    assert _amounts(activity, "E", "ae_attendances") == {}  # after leaving does not
    assert activity.filter(pl.col("person_id") == "V").height == 0
    assert _amounts(activity, "A", "emergency_admissions") == {JAN: 2.0}
    # Nights: 10 Jan (1), 29-31 Jan (3) and 1-2 Feb (2); B's night of 9 Feb.
    assert _amounts(activity, "A", "emergency_bed_days") == {JAN: 4.0, FEB: 2.0}
    assert _amounts(activity, "B", "emergency_bed_days") == {FEB: 1.0}
    assert _amounts(activity, "A", "elective_admissions") == {MAR: 2.0}
    assert _amounts(activity, "A", "day_cases") == {MAR: 1.0}
    assert _amounts(activity, "A", "outpatient_attendances") == {FEB: 2.0}  # the DNA is not an attendance
    assert _amounts(activity, "A", "outpatient_first") == {FEB: 1.0}
    assert _amounts(activity, "A", "outpatient_follow_up") == {FEB: 1.0}
    assert _amounts(activity, "B", "deaths") == {FEB: 1.0}
    assert _amounts(activity, "E", "deaths") == {}  # leaving is not dying
    # B's home care: 15-31 Jan (17 days) and 1-10 Feb (10 days, ended by death) at 10 hours a week.
    assert _amounts(activity, "B", "home_care_hours") == pytest.approx({JAN: 170 / 7, FEB: 100 / 7})
    assert _amounts(activity, "B", "social_care_people_community") == {JAN: 1.0, FEB: 1.0}
    assert _amounts(activity, "C", "nursing_weeks") == pytest.approx({MAR: 2.0})
    assert _amounts(activity, "C", "social_care_people_nursing") == {MAR: 1.0}
    assert _amounts(activity, "C", "reablement_episodes") == {FEB: 1.0}


def test_costs_match_a_hand_computation(people) -> None:  # type: ignore[no-untyped-def]
    risk = at_risk(people, "gp")
    activity = person_activity(people, risk, WINDOW, load_unit_costs(None))
    # A&E £273 each; a short stay (1 night) £791 and a long stay (5 nights) £5,132.
    assert _costs(activity, "A", "ae_attendances") == {JAN: 546.0, FEB: 273.0}
    assert _costs(activity, "A", "emergency_admissions") == {JAN: 791.0 + 5132.0}
    # B's admission on 9 Feb, discharged (dead) on 10 Feb: 1 day, a short stay.
    assert _costs(activity, "B", "emergency_admissions") == {FEB: 791.0}
    # A day case £1,031 and a spell priced by its own tariff column (£4,000), not the table's £6,214.
    assert _costs(activity, "A", "elective_admissions") == {MAR: 1031.0 + 4000.0}
    assert _costs(activity, "A", "outpatient_attendances") == {FEB: 232.0 + 192.0}
    assert _costs(activity, "B", "home_care_hours") == pytest.approx({JAN: 170 / 7 * 27, FEB: 100 / 7 * 27})
    # C's nursing care at CLD's own £700 a week, not the table's £1,567; reablement £1,945 an episode.
    assert _costs(activity, "C", "nursing_weeks") == pytest.approx({MAR: 1400.0})
    assert _costs(activity, "C", "reablement_episodes") == {FEB: 1945.0}


def test_site_costs_replace_rows_and_uplift_with_the_price_index(tmp_path: Path) -> None:
    table = tmp_path / "costs.csv"
    table.write_text("item,cost,price_year\nae_attendance,300,2024/25\n")
    costs = load_unit_costs(MonitorSettings(costs=table, price_year="2024/25",
                                            price_index={"2023/24": 100.0, "2024/25": 110.0}))
    assert costs["ae_attendance"] == 300.0  # the site's own row, already at 2024/25 prices
    assert costs["day_case"] == pytest.approx(1031 * 1.1)  # the bundled 2023/24 row uplifted
    row = costs.table.filter(pl.col("item") == "ae_attendance").row(0, named=True)
    assert row["origin"] == "site" and row["activity"] == "A&E attendance"
    with pytest.raises(ConfigError, match=r"monitor.price_index: has no index for '2023/24'"):
        load_unit_costs(MonitorSettings(price_year="2024/25"))


@pytest.mark.parametrize(("text", "message"), [
    ("item,cost\nae_attendance,300\n", r"missing column\(s\) price_year"),
    ("item,cost,price_year\nae,300,2024/25\n", r"column item: 1 row\(s\) name no item"),
    ("item,cost,price_year\nae_attendance,-3,2024/25\nday_case,x,2024/25\n", r"column cost: 2 row\(s\)"),
    ("item,cost,price_year\nae_attendance,3,2024\n", r"column price_year: 1 row\(s\)"),
])
def test_a_bad_site_cost_table_names_the_file_column_and_rows(tmp_path: Path, text: str, message: str) -> None:
    table = tmp_path / "costs.csv"
    table.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        load_unit_costs(MonitorSettings(costs=table))
    assert str(table) in str(err.value)


def test_the_window_ends_at_the_last_complete_month_and_flags_a_gap(tmp_path: Path) -> None:
    assert last_complete_month(D(2025, 3, 31)) == MAR
    assert last_complete_month(D(2025, 3, 30)) == FEB
    events = [_event("A", "gp", "registration", D(2010, 1, 1))]
    # 20 attendances a month from 2024-01 to 2025-06, none in 2024-09; one old row in 2020.
    for month in range(18):
        year, m = 2024 + month // 12, month % 12 + 1
        if (year, m) == (2024, 9):
            continue
        events += [_event("A", "ae", "ae_attendance", D(year, m, 1 + k)) for k in range(20)]
    events.append(_event("A", "ae", "ae_attendance", D(2020, 5, 5)))
    cohort = _cohort(tmp_path / "cohort", events)
    window = monitor_window(cohort.events, ["ae"], D(2025, 6, 30), None, "events.parquet")
    assert window.first == D(2024, 1, 1) and window.last == D(2025, 6, 1)  # the 2020 row does not pull it back
    assert window.uncovered["ae"] == frozenset({D(2024, 9, 1)})
    given = monitor_window(cohort.events, ["ae"], D(2025, 6, 30), D(2023, 11, 1), "events.parquet")
    assert {D(2023, 11, 1), D(2023, 12, 1), D(2024, 9, 1)} == set(given.uncovered["ae"])
    with pytest.raises(DataError, match=r"no source has events"):
        monitor_window(cohort.events, ["ae"], D(2027, 6, 30), None, "events.parquet")
