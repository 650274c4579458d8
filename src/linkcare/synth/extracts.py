"""Turn the simulated people and events into extracts with real field names and realistic
identifier errors, and the truth tables that say whose each record is.

The hospital extracts (APC, A&E, outpatients) also hold the visitors of linkcare.synth.visitors,
people in no other extract, and carry the registered GP practice of linkcare.synth.practices."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from linkcare.sources.pseudonymise import tokenise
from linkcare.synth.conditions import (
    ACUTE_CODES,
    ACUTE_CODES_OLDER,
    CONDITIONS,
    ELECTIVE_CODES,
    FRAILTY_CODES,
    GENERAL_SPECIALTIES,
    condition_codes,
)
from linkcare.synth.health import Health, Simulation
from linkcare.synth.options import ErrorRates
from linkcare.synth.population import Population, valid_nhs_numbers
from linkcare.synth.practices import PracticeHistory, practice_history, recorded_practices
from linkcare.synth.shares import exact_masks, exact_masks_within
from linkcare.synth.visitors import Visitors

N_DIAG = 6
EMERGENCY_METHODS = (["21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28"],
                     [0.74, 0.05, 0.02, 0.02, 0.01, 0.04, 0.04, 0.01, 0.03, 0.04])
ELECTIVE_METHODS = (["11", "12", "13"], [0.6, 0.25, 0.15])
SERVICE_TYPES = {1: "Long Term Support: Community", 2: "Long Term Support: Residential",
                 3: "Long Term Support: Nursing Care", 4: "Short Term Support: ST-Max"}
SERVICE_COMPONENTS = {2: "Residential Care", 3: "Nursing Care", 4: "Reablement"}
ROUTES = {1: "Discharge from Hospital", 2: "Community / Other route"}
REQUEST_OUTCOMES = {1: "Progress to Assessment", 2: "No services provided - universal services/signposted"}
ASSESSMENT_OUTCOMES = {1: "Progress to Long Term Support", 2: "Progress to Reablement/ST-Max",
                       3: "No services provided - needs identified but not eligible"}
REVIEW_OUTCOMES = ["No change in package", "Change in package", "Change in setting"]
SUPPORT_REASONS = np.array(["Physical Support: Personal Care Support",
                            "Physical Support: Access and Mobility Only", "Mental Health Support",
                            "Learning Disability Support", "Social Support: Substance Misuse Support",
                            "Sensory Support: Support for Visual Impairment"])
SUPPORT_SHARES = np.array([0.68, 0.14, 0.08, 0.05, 0.02, 0.03])
SOURCES = ("gp_registrations", "apc", "ae", "outpatients", "social_care")
#: The name each extract's source has in the site config, and in truth/records.parquet.
SOURCE_NAMES = {"gp_registrations": "gp", "apc": "apc", "ae": "ae", "outpatients": "outpatients",
                "social_care": "social_care", "gp_events": "gp_events"}


@dataclass(frozen=True)
class _Patients:
    """Per-person arrays of everyone a hospital record can belong to: the site's people (0 … n-1),
    then the visitors (n …)."""

    sex: np.ndarray
    birth_day: np.ndarray
    conditions: np.ndarray
    frailty: np.ndarray
    death_day: np.ndarray
    visitor_area: np.ndarray  # a visitor's area (see Visitors.area); -1 for the site's people

    @classmethod
    def of(cls, pop: Population, health: Health, death_day: np.ndarray, visitors: Visitors) -> _Patients:
        """Return the arrays of the site's people followed by the visitors'."""
        return cls(
            sex=np.concatenate([pop.sex, visitors.sex]),
            birth_day=np.concatenate([pop.birth_day, visitors.birth_day]),
            conditions=np.concatenate([health.conditions, visitors.conditions]),
            frailty=np.concatenate([health.frailty, visitors.frailty]),
            death_day=np.concatenate([death_day, np.full(visitors.n, 10**6, dtype=death_day.dtype)]),
            visitor_area=np.concatenate([np.full(pop.n, -1, dtype=np.int64), visitors.area]),
        )


@dataclass
class Site:
    """The extracts, keyed by source name, and the truth tables."""

    extracts: dict[str, pl.DataFrame]
    truth_records: pl.DataFrame
    truth_persons: pl.DataFrame
    areas: pl.DataFrame  # the public lookup of each area's deprivation decile (not personal data)
    caseload: pl.DataFrame | None = None  # an MDT programme's caseload (linkcare.synth.programme)
    programme_truth: dict[str, object] | None = None  # its truth/programme.json


def _dates(days: np.ndarray | pl.Series, ref: date) -> pl.Series:
    """Return day offsets from the reference date as a polars Date series (nulls kept)."""
    epoch = (ref - date(1970, 1, 1)).days
    return (pl.Series(days).cast(pl.Int32) + epoch).cast(pl.Date)


def _dates_where(days: np.ndarray | pl.Series, keep: np.ndarray | pl.Series, ref: date) -> pl.Series:
    """Return the dates of `days` where `keep` is true, and null elsewhere."""
    keep = pl.Series(keep).fill_null(False)
    kept_days = pl.Series(days).cast(pl.Int64).zip_with(keep, pl.Series([0], dtype=pl.Int64)).fill_null(0)
    return _dates(kept_days, ref).zip_with(keep, pl.Series([None], dtype=pl.Date))


def _strings_where(values: np.ndarray, keep: np.ndarray) -> pl.Series:
    """Return `values` as strings where `keep` is true, and null elsewhere."""
    return pl.Series(values).cast(pl.String).zip_with(pl.Series(keep), pl.Series([None], dtype=pl.String))


def _pick(rng: np.random.Generator, options: tuple[list[str], list[float]], n: int) -> np.ndarray:
    values, p = options
    return rng.choice(np.array(values), size=n, p=np.array(p) / np.sum(p))


def _record_ids(rng: np.random.Generator, prefix: str, n: int, width: int) -> np.ndarray:
    """Return `n` distinct record keys that reveal nothing about the person or the order of events."""
    numbers = rng.permutation(n) + rng.integers(10 ** (width - 2), 10 ** (width - 1))
    return np.char.add(prefix, np.char.zfill(numbers.astype(str), width))


class _Identifiers:
    """Recorded identifiers of records: the truth with the configured errors applied. Person
    numbers from pop.n on are visitors."""

    def __init__(self, rng: np.random.Generator, pop: Population, rates: ErrorRates, key: bytes,
                 visitors: Visitors, sex: np.ndarray):
        self.rng, self.pop, self.rates, self.sex = rng, pop, rates, sex
        self.token = tokenise(pl.Series(pop.nhs_number), key).to_numpy()
        # Valid NHS numbers that belong to no one in the site, for mistyped numbers.
        extra = valid_nhs_numbers(rng, max(64, pop.n // 50))
        extra = extra[~np.isin(extra, pop.nhs_number) & ~np.isin(extra, visitors.nhs_number)]
        self.stranger_token = tokenise(pl.Series(extra), key).to_numpy()
        has_number = visitors.nhs_number != ""
        numbers = pl.Series(visitors.nhs_number.tolist(), dtype=pl.String)
        self.visitor_token = tokenise(numbers.zip_with(pl.Series(has_number), pl.Series([None], dtype=pl.String)),
                                      key).to_numpy()
        self.every_token = np.concatenate([self.token.astype(object), self.visitor_token.astype(object)])
        self.has_number = np.concatenate([np.ones(pop.n, dtype=bool), has_number])

    def nhs(self, who: np.ndarray, missing: float, wrong: float) -> pl.Series:
        """Return the recorded NHS token of each record (None where missing). The shares missing and
        wrong are of the records of people who have an NHS number; the others have none."""
        rng = self.rng
        token = self.every_token[who]
        is_missing, is_wrong = exact_masks_within(rng, self.has_number[who], missing, wrong)
        someone_else = rng.random(who.size) < 0.5
        other = (who + rng.integers(1, self.pop.n, who.size)) % self.pop.n
        token[is_wrong & someone_else] = self.token[other[is_wrong & someone_else]]
        n_stranger = int((is_wrong & ~someone_else).sum())
        token[is_wrong & ~someone_else] = self.stranger_token[rng.integers(0, self.stranger_token.size, n_stranger)]
        token[is_missing] = None
        return pl.Series(token.tolist(), dtype=pl.String)

    def demographics(self, who: np.ndarray, birth_year: np.ndarray,
                     birth_month: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return recorded birth year, birth month and sex (1 male, 2 female) of each record."""
        rng, r = self.rng, self.rates
        year = birth_year[who].copy()
        month = birth_month[who].copy()
        sex = self.sex[who].copy()
        (bad_month,) = exact_masks(rng, who.size, r.birth_month_wrong)
        month[bad_month] = (month[bad_month] - 1 + rng.integers(1, 12, int(bad_month.sum()))) % 12 + 1
        (bad_year,) = exact_masks(rng, who.size, r.birth_year_wrong)
        step = np.where(rng.random(who.size) < 0.7, 1, 10) * np.where(rng.random(who.size) < 0.5, -1, 1)
        year[bad_year] += step[bad_year]
        (bad_sex,) = exact_masks(rng, who.size, r.sex_wrong)
        sex[bad_sex] = 3 - sex[bad_sex]
        return year, month, sex


def build_site(rng: np.random.Generator, pop: Population, health: Health, sim: Simulation,
               rates: ErrorRates, key: bytes, ref: date, history_days: int, visitors: Visitors,
               practice_rng: np.random.Generator) -> Site:
    """Return the five extracts and the truth for a simulated site.

    `rng` draws everything a site without visitors or practices would have drawn, in the same
    order; `practice_rng` draws the changes of practice and what hospitals record of them."""
    patients = _Patients.of(pop, health, sim.death_day, visitors)
    birth = _dates(patients.birth_day, ref)
    birth_year = birth.dt.year().to_numpy().astype(np.int64)
    birth_month = birth.dt.month().to_numpy().astype(np.int64)
    ids = _Identifiers(rng, pop, rates, key, visitors, patients.sex)
    first_day = -history_days
    death = sim.death_day

    social_care = _social_care_events(rng, pop, sim, first_day)
    stale = _move_for_stale_areas(rng, pop, social_care, rates.stale_area_social_care, first_day)
    # After the moves made for stale social-care areas, so that those movers may change practice too.
    practices = practice_history(practice_rng, pop, rates, history_days, visitors.outside_practices,
                                 visitors.practice)

    extracts: dict[str, pl.DataFrame] = {}
    truth: list[pl.DataFrame] = []
    area_table = np.concatenate([pop.area_codes, visitors.outside_areas])

    def area_codes(who: np.ndarray, day: np.ndarray, missing: float) -> pl.Series:
        resident = who < pop.n
        area = np.where(resident, pop.area_on(np.where(resident, who, 0), day), patients.visitor_area[who])
        (blank,) = exact_masks_within(rng, area >= 0, missing)
        return _strings_where(area_table[np.maximum(area, 0)], (area >= 0) & ~blank)

    def practice_codes(who: np.ndarray, day: np.ndarray) -> pl.Series:
        practice = recorded_practices(practice_rng, practices, who, day, rates)
        return _strings_where(practices.codes[np.maximum(practice, 0)], practice >= 0)

    def keep_truth(source: str, record_ids: np.ndarray, who: np.ndarray) -> None:
        truth.append(pl.DataFrame({"source": SOURCE_NAMES[source], "record_id": record_ids, "person": who},
                                  schema={"source": pl.String, "record_id": pl.String, "person": pl.Int64}))

    # GP registrations: the population spine, one record per person ever registered.
    who = np.arange(pop.n)
    year, month, sex = ids.demographics(who, birth_year, birth_month)
    record_id = _record_ids(rng, "P", pop.n, 9)
    died = death <= 0
    extracts["gp_registrations"] = pl.DataFrame({
        "Patient_ID": record_id,
        "Pseudo_NHS_Number": ids.token,
        "Birth_Year": year,
        "Birth_Month": month,
        "Sex": np.where(sex == 1, "M", "F"),
        "LSOA": pop.area_codes[pop.area],
        "Practice_Code": pop.practice_codes[pop.practice],
        "Registration_Date": _dates(pop.registration_day, ref),
        "Ethnic_Category": pop.ethnicity,
        "Date_Of_Death": _dates_where(death, died, ref),
    }).sort("Patient_ID")
    keep_truth("gp_registrations", record_id, who)

    # Admitted patient care: emergency and planned spells, cut at death and at the reference date;
    # the visitors' spells after the residents'.
    emergency = sim.emergency.with_columns(pl.lit(True).alias("emergency"))
    elective = sim.elective.with_columns(pl.lit(False).alias("emergency"))
    apc = pl.concat([emergency, elective, visitors.apc])
    apc = apc.with_columns(pl.Series("death", patients.death_day[apc["person"].to_numpy()]))
    apc = apc.filter(pl.col("day") <= pl.col("death")).with_columns(
        (pl.col("day") + pl.col("los")).alias("discharge"))
    died_in = pl.col("discharge") >= pl.col("death")
    apc = apc.with_columns(pl.when(died_in).then(pl.col("death")).otherwise(pl.col("discharge")).alias("discharge"),
                           died_in.alias("died"))
    who, day = apc["person"].to_numpy(), apc["day"].to_numpy()
    n = who.size
    year, month, sex = ids.demographics(who, birth_year, birth_month)
    record_id = _record_ids(rng, "", n, 12)
    is_em = apc["emergency"].to_numpy()
    method = np.where(is_em, _pick(rng, EMERGENCY_METHODS, n), _pick(rng, ELECTIVE_METHODS, n))
    discharge = apc["discharge"].to_numpy()
    disdest = np.where(apc["died"].to_numpy(), "79", rng.choice(np.array(["19", "51", "54"]), n, p=[0.95, 0.03, 0.02]))
    diagnoses = _diagnoses(rng, patients, who, day, is_em)
    frame = pl.DataFrame({
        "EPIKEY": record_id,
        "Pseudo_NHS_Number": ids.nhs(who, rates.nhs_missing_hospital, rates.nhs_wrong_hospital),
        "MYDOB": np.char.add(np.char.zfill(month.astype(str), 2), year.astype(str)),
        "SEX": sex.astype(str),
        "LSOA11": area_codes(who, day, rates.area_missing_hospital),
        "GPPRAC": practice_codes(who, day),
        "ADMIDATE": _dates(day, ref),
        "DISDATE": _dates_where(discharge, discharge <= 0, ref),
        "ADMIMETH": method,
        "ADMISORC": rng.choice(np.array(["19", "51"]), n, p=[0.97, 0.03]),
        "DISDEST": _strings_where(disdest, discharge <= 0),
    })
    frame = pl.concat([frame, diagnoses], how="horizontal")
    extracts["apc"] = frame.sort(["ADMIDATE", "EPIKEY"])
    keep_truth("apc", record_id, who)

    # A&E attendances.
    ae = pl.concat([sim.ae.filter(pl.col("day") <= pl.Series(death[sim.ae["person"].to_numpy()])), visitors.ae])
    who, day, admitted = ae["person"].to_numpy(), ae["day"].to_numpy(), ae["admitted"].to_numpy()
    n = who.size
    year, month, sex = ids.demographics(who, birth_year, birth_month)
    record_id = _record_ids(rng, "EC", n, 10)
    older = (day - patients.birth_day[who]) / 365.25 >= 75
    ambulance = rng.random(n) < np.where(admitted, np.where(older, 0.8, 0.5), 0.15)
    outcome = np.where(admitted, "Admitted", rng.choice(np.array(["Home", "Referred"]), n, p=[0.85, 0.15]))
    extracts["ae"] = pl.DataFrame({
        "EC_Ident": record_id,
        "Pseudo_NHS_Number": ids.nhs(who, rates.nhs_missing_hospital, rates.nhs_wrong_hospital),
        "Birth_Month_Year": np.char.add(np.char.add(year.astype(str), "-"), np.char.zfill(month.astype(str), 2)),
        "Sex": sex.astype(str),
        "LSOA": area_codes(who, day, rates.area_missing_hospital),
        # ECDS's GENERAL MEDICAL PRACTICE CODE (PATIENT REGISTRATION), as SUS+ ECDS extracts name it.
        "GP_Practice_Code": practice_codes(who, day),
        "Arrival_Date": _dates(day, ref),
        "Arrival_Mode": np.where(ambulance, "Ambulance", "Other"),
        "Discharge_Destination": outcome,
    }).sort(["Arrival_Date", "EC_Ident"])
    keep_truth("ae", record_id, who)

    # Outpatient appointments.
    op = pl.concat([sim.outpatients.filter(pl.col("day") <= pl.Series(death[sim.outpatients["person"].to_numpy()])),
                    visitors.outpatients])
    who, day = op["person"].to_numpy(), op["day"].to_numpy()
    n = who.size
    year, month, sex = ids.demographics(who, birth_year, birth_month)
    record_id = _record_ids(rng, "", n, 12)
    extracts["outpatients"] = pl.DataFrame({
        "ATTENDKEY": record_id,
        "Pseudo_NHS_Number": ids.nhs(who, rates.nhs_missing_hospital, rates.nhs_wrong_hospital),
        "MYDOB": np.char.add(np.char.zfill(month.astype(str), 2), year.astype(str)),
        "SEX": sex.astype(str),
        "LSOA11": area_codes(who, day, rates.area_missing_hospital),
        "GPPRAC": practice_codes(who, day),
        "APPTDATE": _dates(day, ref),
        "ATTENDED": rng.choice(np.array(["5", "3", "2"]), n, p=[0.88, 0.08, 0.04]),
        "FIRSTATT": rng.choice(np.array(["1", "2"]), n, p=[0.3, 0.7]),
        "TRETSPEF": _specialties(rng, patients.conditions, who),
    }).sort(["APPTDATE", "ATTENDKEY"])
    keep_truth("outpatients", record_id, who)

    # Adult social care client-level data.
    extracts["social_care"], sc_truth = _social_care_extract(
        rng, pop, health, ids, social_care, stale, birth_year, birth_month, rates, key, ref)
    truth.append(sc_truth)

    truth_records = pl.concat(truth).sort(["source", "record_id"])
    truth_persons = _truth_persons(pop, health, sim, ids, practices, visitors, birth_year, birth_month,
                                   first_day, ref)
    # Like the English Indices of Deprivation by LSOA: every area of the site with its decile.
    areas = pl.DataFrame({"LSOA11CD": pop.area_codes, "IMD_Decile": pop.area_decile.astype(np.int64)}).sort("LSOA11CD")
    return Site(extracts, truth_records, truth_persons, areas)


def _truth_persons(pop: Population, health: Health, sim: Simulation, ids: _Identifiers, practices: PracticeHistory,
                   visitors: Visitors, birth_year: np.ndarray, birth_month: np.ndarray, first_day: int,
                   ref: date) -> pl.DataFrame:
    """Return truth/persons.parquet: one row per person of the site (`resident`), then one per visitor.

    A visitor has no risk, outcome or life status (they are not followed up: null), and the
    practice, area and NHS token they have, if any."""
    n, death = pop.n, sim.death_day
    alive = death > 0
    moved_in_window = pop.move_day >= first_day
    changed = practices.changed[:n]
    before = practices.before_registration[:n]
    residents = pl.DataFrame({
        "person": np.arange(n),
        "risk": sim.risk,
        "outcome": sim.outcome,
        "alive_at_reference": alive,
        "death_date": _dates_where(death, ~alive, ref),
        "nhs_token": ids.token,
        "birth_year": birth_year[:n],
        "birth_month": birth_month[:n],
        "sex": pop.sex,
        "lsoa": pop.area_codes[pop.area],
        "previous_lsoa": _strings_where(pop.area_codes[pop.previous_area], moved_in_window),
        "move_date": _dates_where(pop.move_day, moved_in_window, ref),
        "deprivation_decile": pop.area_decile[pop.area],
        "ethnicity": pop.ethnicity,
        "practice": pop.practice_codes[pop.practice],
        "twin_of": pl.Series(pop.twin_of).replace(-1, None),
        "frailty": health.frailty,
        "conditions": health.conditions.sum(axis=1),
        "care_status": sim.care_status,
        "previous_practice": _strings_where(practices.codes[practices.previous[:n]], changed),
        "practice_change_date": _dates_where(practices.change_day[:n], changed, ref),
        "practice_before_registration": _strings_where(practices.codes[np.maximum(before, 0)], before >= 0),
        "resident": np.ones(n, dtype=bool),
    }).with_columns(pl.col("risk").fill_nan(None),
                    pl.when(pl.col("alive_at_reference")).then(pl.col("outcome")).alias("outcome"))
    m = visitors.n
    area_table = np.concatenate([pop.area_codes, visitors.outside_areas])
    decile = np.concatenate([pop.area_decile, np.zeros(visitors.outside_areas.size, dtype=pop.area_decile.dtype)])
    local = (visitors.area >= 0) & (visitors.area < pop.area_codes.size)
    none = pl.Series([None] * m)
    guests = pl.DataFrame({
        "person": visitors.first_person + np.arange(m),
        "risk": none, "outcome": none, "alive_at_reference": none, "death_date": none,
        "nhs_token": pl.Series(ids.visitor_token.tolist(), dtype=pl.String),
        "birth_year": birth_year[n:],
        "birth_month": birth_month[n:],
        "sex": visitors.sex,
        "lsoa": _strings_where(area_table[np.maximum(visitors.area, 0)], visitors.area >= 0),
        "previous_lsoa": none, "move_date": none,
        "deprivation_decile": pl.Series(decile[np.maximum(visitors.area, 0)]).zip_with(pl.Series(local), none),
        "ethnicity": none,
        "practice": _strings_where(practices.codes[np.maximum(visitors.practice, 0)], visitors.practice >= 0),
        "twin_of": none,
        "frailty": visitors.frailty,
        "conditions": visitors.conditions.sum(axis=1),
        "care_status": none,
        "previous_practice": none, "practice_change_date": none, "practice_before_registration": none,
        "resident": np.zeros(m, dtype=bool),
    })
    return pl.concat([residents, guests.cast(residents.schema)])


def _diagnoses(rng: np.random.Generator, patients: _Patients, who: np.ndarray, day: np.ndarray,
               emergency: np.ndarray) -> pl.DataFrame:
    """Return DIAG_4_01… columns: a primary reason, then recorded conditions and frailty codes."""
    n = who.size
    table, counts = condition_codes()
    cond = patients.conditions[who]
    n_cond = len(CONDITIONS)
    # Each condition a person has is coded with one of its codes, the same one every time.
    code_pick = (who[:, None] * 7 + np.arange(n_cond)[None, :]) % counts[None, :]
    codes = table[np.arange(n_cond)[None, :], code_pick]
    age = (day - patients.birth_day[who]) / 365.25
    weights = np.array([c.emergency for c in CONDITIONS]) + 0.05
    score = np.where(cond, rng.random((n, n_cond)) * weights, -1.0)
    flare = score.argmax(axis=1)
    has_cond = cond.any(axis=1)
    use_flare = has_cond & (rng.random(n) < np.where(emergency, 0.55, 0.3))
    acute = np.where(age >= 70, rng.choice(ACUTE_CODES_OLDER, n), rng.choice(ACUTE_CODES, n))
    planned = rng.choice(ELECTIVE_CODES, n)
    cancer = cond[:, [i for i, c in enumerate(CONDITIONS) if c.name == "cancer"][0]]
    planned = np.where(cancer & (rng.random(n) < 0.5), "Z511", planned)
    primary = np.where(use_flare, codes[np.arange(n), flare], np.where(emergency, acute, planned))
    recorded = cond & (rng.random((n, n_cond)) < 0.7)
    recorded[np.arange(n), flare] &= ~use_flare
    secondary = np.where(recorded, codes, "")
    frail_p = 0.5 / (1 + np.exp(-(patients.frailty[who] + (age - 80) / 8 - 1.0)))
    frail = (age >= 65)[:, None] & (rng.random((n, FRAILTY_CODES.size)) < frail_p[:, None] * 0.5)
    frailty = np.where(frail, FRAILTY_CODES[None, :], "")
    everything = np.concatenate([primary[:, None], secondary, frailty], axis=1)
    # Move the non-empty codes of each row to the front, keeping their order.
    order = np.argsort(everything == "", axis=1, kind="stable")
    packed = np.take_along_axis(everything, order, axis=1)[:, :N_DIAG]
    return pl.DataFrame({f"DIAG_4_{i + 1:02d}": pl.Series(packed[:, i]).replace("", None) for i in range(N_DIAG)})


def _specialties(rng: np.random.Generator, conditions: np.ndarray, who: np.ndarray) -> np.ndarray:
    """Return a treatment specialty per appointment: mostly that of one of the person's conditions."""
    cond = conditions[who]
    spec = np.array([c.specialty for c in CONDITIONS])
    pick = np.where(cond, rng.random(cond.shape), -1.0).argmax(axis=1)
    use = cond.any(axis=1) & (rng.random(who.size) < 0.7)
    return np.where(use, spec[pick], rng.choice(GENERAL_SPECIALTIES, who.size))


def _social_care_events(rng: np.random.Generator, pop: Population, sim: Simulation, first_day: int) -> pl.DataFrame:
    """Return every social-care event in the extract window: person, day, type and attributes."""
    death = pl.Series(sim.death_day)
    req = sim.requests.select("person", "day", pl.lit("Request").alias("event_type"), "route",
                              pl.col("outcome").cast(pl.Int8).alias("outcome"))
    ass = sim.assessments.select("person", "day", pl.lit("Assessment").alias("event_type"),
                                 pl.lit(None, pl.Int8).alias("route"), pl.col("outcome").cast(pl.Int8))
    spells = sim.spells.with_columns(
        pl.min_horizontal("end", pl.Series(sim.death_day[sim.spells["person"].to_numpy()])).alias("end"))
    services = spells.select("person", pl.col("start").alias("day"), pl.lit("Service").alias("event_type"),
                             pl.lit(None, pl.Int8).alias("route"), pl.lit(None, pl.Int8).alias("outcome"),
                             "end", "kind", "units")
    services = services.filter((pl.col("day") <= 0) & (pl.col("end").is_null() | (pl.col("end") >= first_day)))
    # Reviews of long-term support, roughly yearly after it starts.
    lts = spells.filter(pl.col("kind") != 4)
    k = np.arange(1, 12)
    starts = lts["start"].to_numpy()
    ends = lts["end"].fill_null(10**6).to_numpy()
    review = starts[:, None] + k[None, :] * 365 + rng.integers(-40, 40, (starts.size, k.size))
    ok = (review >= first_day) & (review <= np.minimum(ends[:, None], -1))
    row, _ = np.nonzero(ok)
    reviews = pl.DataFrame({
        "person": lts["person"].to_numpy()[row], "day": review[ok], "event_type": "Review",
        "route": pl.Series([None] * row.size, dtype=pl.Int8),
        "outcome": pl.Series(rng.integers(1, 4, row.size), dtype=pl.Int8),
        "end": pl.Series([None] * row.size, dtype=pl.Int64),
        "kind": lts["kind"].to_numpy()[row], "units": pl.Series([None] * row.size, dtype=pl.Float64),
    })
    events = pl.concat([req, ass], how="diagonal_relaxed")
    events = pl.concat([events, services, reviews], how="diagonal_relaxed")
    events = events.with_columns(death[events["person"].to_numpy()].alias("death"))
    return events.filter((pl.col("day") >= first_day) & (pl.col("day") <= 0) & (pl.col("day") <= pl.col("death")))


def _move_for_stale_areas(rng: np.random.Generator, pop: Population, events: pl.DataFrame, rate: float,
                           first_day: int) -> np.ndarray:
    """Return a mask of the `rate` share of social-care records that carry an out-of-date area.

    Each chosen record's person moved before it (people who had not moved are given a move, which
    their other records then follow), and the record keeps the area from before the move."""
    n = events.height
    k = int(round(rate * n))
    chosen = rng.choice(n, size=k, replace=False) if k else np.array([], dtype=np.int64)
    who = events["person"].to_numpy()[chosen]
    day = events["day"].to_numpy()[chosen]
    # People who never moved carry a move day long ago and no other area; they need a real move.
    needs_move = (day < pop.move_day[who]) | (pop.previous_area[who] == pop.area[who])
    # The earliest chosen record of each person sets the latest day the move can have happened.
    latest = pl.DataFrame({"p": who[needs_move], "d": day[needs_move]}).group_by("p").agg(pl.col("d").min()).sort("p")
    p, d = latest["p"].to_numpy(), latest["d"].to_numpy()
    low = np.maximum(first_day, pop.arrival_day[p] + 1)
    pop.move_day[p] = np.where(d > low, low + (rng.random(p.size) * (d - low)).astype(np.int64), d)
    never_moved = pop.previous_area[p] == pop.area[p]
    n_areas = pop.area_codes.size
    shift = rng.integers(1, max(n_areas, 2), int(never_moved.sum()))
    pop.previous_area[p[never_moved]] = (pop.area[p[never_moved]] + shift) % n_areas
    stale = np.zeros(n, dtype=bool)
    stale[chosen] = True
    return stale


def _social_care_extract(rng: np.random.Generator, pop: Population, health: Health, ids: _Identifiers,
                         events: pl.DataFrame, stale: np.ndarray,
                         birth_year: np.ndarray, birth_month: np.ndarray, rates: ErrorRates, key: bytes,
                         ref: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return the CLD-style extract and its truth records."""
    who = events["person"].to_numpy()
    day = events["day"].to_numpy()
    n = who.size
    area_index = np.where(stale & (day >= pop.move_day[who]), pop.previous_area[who], pop.area_on(who, day))
    year, month, sex = ids.demographics(who, birth_year, birth_month)
    # Council person IDs: one per client, and a second one for some clients known twice.
    clients = np.unique(who)
    la_numbers = rng.permutation(clients.size * 2) + 1_000_000
    la_first = np.zeros(pop.n, dtype=np.int64)
    la_first[clients] = la_numbers[: clients.size]
    la_id = la_first[who]
    counts = np.bincount(who, minlength=pop.n)
    twice = clients[counts[clients] >= 2]
    k = min(twice.size, int(np.ceil(rates.second_council_id * clients.size)))
    known_twice = rng.choice(twice, size=k, replace=False) if k else np.array([], dtype=np.int64)
    la_second = np.zeros(pop.n, dtype=np.int64)
    la_second[known_twice] = la_numbers[clients.size: clients.size + k]
    split_at = np.zeros(pop.n, dtype=np.int64)
    split_at[known_twice] = rng.integers(1, counts[known_twice]) if k else 0
    # Records from a random point of each such client's history on carry the second ID.
    order = np.lexsort((day, who))
    sorted_who = who[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_who))[0] + 1] if n else np.array([], dtype=np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    use_second = (la_second[who] > 0) & (rank >= split_at[who])
    la_id = np.where(use_second, la_second[who], la_id)
    dementia = health.conditions[:, [i for i, c in enumerate(CONDITIONS) if c.name == "dementia"][0]]
    reason = np.where(dementia, "Memory and Cognition Support",
                      SUPPORT_REASONS[rng.choice(SUPPORT_REASONS.size, pop.n, p=SUPPORT_SHARES)])
    kind = events["kind"]
    event_type = events["event_type"].to_numpy()
    record_id = _record_ids(rng, "CLD", n, 10)
    end = events["end"]
    service_type = kind.replace_strict(SERVICE_TYPES, default=None, return_dtype=pl.String)
    component = kind.replace_strict(SERVICE_COMPONENTS, default=None, return_dtype=pl.String)
    community = (event_type == "Service") & (kind == 1).fill_null(False).to_numpy()
    direct = community & (rng.random(n) < 0.12)
    component = component.to_frame("c").select(
        pl.when(pl.Series(direct)).then(pl.lit("Direct Payment"))
        .when(pl.Series(community)).then(pl.lit("Home Support")).otherwise(pl.col("c"))).to_series()
    outcome = events["outcome"]
    def outcome_text(mapping: dict[int, str]) -> pl.Expr:
        return pl.col("o").replace_strict(mapping, default=None, return_dtype=pl.String)

    event_outcome = pl.DataFrame({"t": event_type, "o": outcome}).select(
        pl.when(pl.col("t") == "Request").then(outcome_text(REQUEST_OUTCOMES))
        .when(pl.col("t") == "Assessment").then(outcome_text(ASSESSMENT_OUTCOMES))
        .when(pl.col("t") == "Review").then(outcome_text(dict(enumerate(REVIEW_OUTCOMES, 1))))
    ).to_series()
    route = events["route"].replace_strict(ROUTES, default=None, return_dtype=pl.String)
    frame = pl.DataFrame({
        "Der_Unique_Record_ID": record_id,
        "Der_LA_Person_Unique_Identifier_Pseudo": tokenise(pl.Series(la_id.astype(str)), key + b"/la"),
        "Der_NHS_Number_Traced_Pseudo": ids.nhs(who, rates.nhs_missing_social_care, rates.nhs_wrong_social_care),
        "Der_Birth_Year": year,
        "Der_Birth_Month": month,
        "Gender": np.where(sex == 1, "Male", "Female"),
        "LSOA": pop.area_codes[area_index],
        "Event_Type": event_type,
        "Event_Start_Date": _dates(day, ref),
        "Event_End_Date": _dates_where(end, (end <= 0), ref),
        "Request_Route_Of_Access": route,
        "Service_Type": service_type,
        "Service_Component": component,
        "Primary_Support_Reason": reason[who],
        "Planned_units_per_week": events["units"],
        "Event_Outcome": event_outcome,
    }).sort(["Event_Start_Date", "Der_Unique_Record_ID"])
    truth = pl.DataFrame({"source": "social_care", "record_id": record_id, "person": who},
                         schema={"source": pl.String, "record_id": pl.String, "person": pl.Int64})
    return frame, truth


__all__ = ["SOURCES", "Site", "build_site"]
