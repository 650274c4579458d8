"""The GP clinical extract of a synthetic site (gp_events.parquet): coded long-term conditions, eFI frailty
deficits, repeat and acute medication issues and consultations, each dated, as a GP data feed of derived
flags holds them (docs/gp_events.md says why flags and not SNOMED CT codes).

Every row carries the patient key and identifiers of the person's GP registration: the two come from the
same clinical system. Visitors (people in no other local extract) have no GP record.

What the records show of a person's latent health, and how well:

- **Long-term conditions** (linkcare.synth.conditions) are on the GP's register with the sensitivity of
  RECORDING below: not everyone with a condition has been diagnosed. Each is dated at diagnosis, before the
  history or, for INCIDENT_SHARE of them, during it.
- **Frailty deficits** are the 36 of the electronic Frailty Index (Clegg et al. 2016, Age and Ageing 45:353,
  table 1). Nine are long-term conditions or derived from other records (a condition on the register is the
  deficit, dated the same day; polypharmacy is the day a fifth repeat medicine was authorised); each other
  one is recorded with a probability that rises with latent frailty (FRAILTY_SLOPE per standard deviation on
  the log-odds) and age (AGE_SLOPE per decade), from its prevalence at 80 (an assumption). The slopes are
  calibrated so that the eFI bands of people aged 65 to 95 carry the hazard ratios of an emergency admission
  within a year that Clegg 2016 reports (bench/bench_efi.py measures it; docs/gp_events.md gives the figures).
- **Repeat medicines** follow the recorded conditions (each condition's usual drug classes) and frailty;
  one row per repeat authorisation, with its end date if it stopped. **Acute issues** and **consultations**
  come at a rate that rises with age, frailty and conditions (about five consultations a person-year on
  average, as in English general practice: Hobbs et al. 2016, Lancet 387:2323).

Everything is drawn from the GP extract's own random stream (the ninth child of the seed), after the rest of
the site is built, so every other extract is the same with or without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from linkcare.synth.conditions import CONDITION_INDEX, CONDITIONS
from linkcare.synth.health import Health, Simulation
from linkcare.synth.population import Population

STREAM = 8  # the ninth child of the seed: 0-5 are make_site's, 6 the monthly plan's, 7 the programme's
FILE = "gp_events.parquet"
SOURCE = "gp_events"  # the extract's name, its source's name in the site config and in truth/records.parquet
RECORD_TYPES = ("Condition", "Frailty deficit", "Medication", "Consultation")
YEAR = 365.25

#: Share of each condition that is on the GP's register: an assumption informed by the gap between QOF
#: register prevalence and modelled prevalence (NHS England's dementia diagnosis rate was about 64% in
#: 2023/24; about a third of hypertension and of COPD is estimated to be undiagnosed, PHE 2017 and BLF
#: 2016); conditions diagnosed in hospital or by screening (cancer, stroke, diabetes) are nearly all coded.
RECORDING: dict[str, float] = {
    "hypertension": 0.65, "diabetes": 0.9, "copd": 0.65, "asthma": 0.85, "heart_failure": 0.8,
    "atrial_fibrillation": 0.75, "ckd": 0.6, "dementia": 0.65, "stroke": 0.9, "cancer": 0.9,
    "metastatic_cancer": 0.9, "depression": 0.7, "liver_disease": 0.6,
}
INCIDENT_SHARE = 0.2  # of recorded conditions, diagnosed during the history (the rest before it)
DIAGNOSED_BEFORE_YEARS = 7.0  # mean years before the history of the other diagnoses (exponential)


@dataclass(frozen=True)
class Deficit:
    """One eFI deficit: its name, its prevalence at 80 at average frailty where it is drawn from frailty,
    the long-term conditions that are it, and how much a need for care beyond frailty adds."""

    name: str
    prevalence: float = 0.0
    conditions: tuple[str, ...] = ()
    dependency: float = 0.0


#: The 36 deficits of the eFI (Clegg et al. 2016, table 1), in its order. Prevalences are assumptions, set
#: (with the slopes) so that the eFI bands have about the shares Clegg reports at ages 65-95.
DEFICITS: tuple[Deficit, ...] = (
    Deficit("Activity limitation", 0.225, dependency=0.5),
    Deficit("Anaemia and haematinic deficiency", 0.25),
    Deficit("Arthritis", 0.7),
    Deficit("Atrial fibrillation", conditions=("atrial_fibrillation",)),
    Deficit("Cerebrovascular disease", conditions=("stroke",)),
    Deficit("Chronic kidney disease", conditions=("ckd",)),
    Deficit("Diabetes", conditions=("diabetes",)),
    Deficit("Dizziness", 0.2),
    Deficit("Dyspnoea", 0.225),
    Deficit("Falls", 0.2, dependency=0.3),
    Deficit("Foot problems", 0.25),
    Deficit("Fragility fracture", 0.125),
    Deficit("Hearing impairment", 0.4),
    Deficit("Heart failure", conditions=("heart_failure",)),
    Deficit("Heart valve disease", 0.125),
    Deficit("Housebound", 0.075, dependency=0.6),
    Deficit("Hypertension", conditions=("hypertension",)),
    Deficit("Hypotension / syncope", 0.125),
    Deficit("Ischaemic heart disease", 0.3),
    Deficit("Memory and cognitive problems", 0.1, conditions=("dementia",)),
    Deficit("Mobility and transfer problems", 0.15, dependency=0.5),
    Deficit("Osteoporosis", 0.2),
    Deficit("Parkinsonism and tremor", 0.075),
    Deficit("Peptic ulcer", 0.1),
    Deficit("Peripheral vascular disease", 0.1),
    Deficit("Polypharmacy"),  # five or more repeat medicines: from the medication records
    Deficit("Requirement for care", 0.1, dependency=0.8),
    Deficit("Respiratory disease", 0.075, conditions=("copd", "asthma")),
    Deficit("Skin ulcer", 0.075),
    Deficit("Sleep disturbance", 0.2),
    Deficit("Social vulnerability", 0.125, dependency=0.3),
    Deficit("Thyroid disease", 0.225),
    Deficit("Urinary incontinence", 0.225),
    Deficit("Urinary system disease", 0.2),
    Deficit("Visual impairment", 0.25),
    Deficit("Weight loss and anorexia", 0.1),
)
POLYPHARMACY = "Polypharmacy"
POLYPHARMACY_MEDICINES = 5  # eFI: five or more medicines on repeat
FRAILTY_SLOPE = 0.4  # log-odds of a frailty deficit per standard deviation of latent frailty (calibrated)
AGE_SLOPE = 0.45  # log-odds of a frailty deficit per decade of age
CODING_SD = 0.6  # standard deviation of a person's coding propensity, on the log-odds of every frailty deficit
DEFICIT_INCIDENT_SHARE = 0.3  # of deficits, first recorded during the history (the rest before it)
DEFICIT_BEFORE_YEARS = 4.0  # mean years before the history of the other deficits (exponential)

#: The usual repeat drug classes of each condition and the share of its recorded patients on each (an
#: assumption after NICE guidance for each condition).
MEDICINES: dict[str, tuple[tuple[str, float], ...]] = {
    "hypertension": (("ACE inhibitor or ARB", 0.6), ("Calcium channel blocker", 0.45), ("Thiazide diuretic", 0.2)),
    "diabetes": (("Metformin", 0.8), ("Statin", 0.7), ("SGLT2 inhibitor", 0.3), ("Sulfonylurea", 0.2),
                 ("Insulin", 0.15)),
    "copd": (("Inhaled bronchodilator", 0.9), ("Inhaled corticosteroid", 0.5)),
    "asthma": (("Inhaled corticosteroid", 0.8), ("Inhaled bronchodilator", 0.8)),
    "heart_failure": (("Loop diuretic", 0.8), ("Beta blocker", 0.7), ("ACE inhibitor or ARB", 0.7),
                      ("Mineralocorticoid receptor antagonist", 0.3)),
    "atrial_fibrillation": (("Anticoagulant", 0.8), ("Beta blocker", 0.6)),
    "ckd": (("ACE inhibitor or ARB", 0.4), ("Statin", 0.5)),
    "dementia": (("Acetylcholinesterase inhibitor", 0.5),),
    "stroke": (("Antiplatelet", 0.7), ("Statin", 0.8)),
    "cancer": (("Analgesic", 0.3),),
    "metastatic_cancer": (("Opioid analgesic", 0.6), ("Laxative", 0.5)),
    "depression": (("Antidepressant", 0.7),),
    "liver_disease": (("Laxative", 0.3), ("Proton pump inhibitor", 0.3)),
}
#: Repeat medicines of frailty and age rather than of one condition.
GENERAL_MEDICINES = np.array(["Proton pump inhibitor", "Analgesic", "Laxative", "Vitamin D and calcium",
                              "Emollient", "Statin", "Antihistamine", "Eye drops", "Bisphosphonate",
                              "Oral nutritional supplement"])
ACUTE_MEDICINES = np.array(["Antibiotic", "Analgesic", "Oral corticosteroid", "Antifungal", "Antiemetic",
                            "Topical corticosteroid"])
MEDICINE_STOPPED = 0.15  # share of repeat authorisations that ended before the reference date
CONSULTATION_TYPES = np.array(["Face to face", "Telephone", "Home visit", "Online"])
#: Consultations a person-year: exp(CONSULT_BASE + CONSULT_AGE·(age-45)/10 + CONSULT_FRAILTY·frailty
#: + CONSULT_CONDITION·conditions) + more for women and young children; calibrated to about 5 on average.
CONSULT_BASE, CONSULT_AGE, CONSULT_FRAILTY, CONSULT_CONDITION = 1.35, 0.14, 0.3, 0.12
ACUTE_BASE = -0.9  # acute issues a person-year: exp(ACUTE_BASE + 0.3·frailty + 0.1·conditions)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _days_before(rng: np.random.Generator, n: int, first_day: int, incident: float, mean_years: float) -> np.ndarray:
    """Return a day for each of `n` records: uniform in the history for a share `incident`, else before it."""
    during = rng.random(n) < incident
    inside = rng.integers(first_day, 1, n)
    before = first_day - np.ceil(rng.exponential(mean_years * YEAR, n)).astype(np.int64)
    return np.where(during, inside, before)


def _frame(person: np.ndarray, record_type: str, code: np.ndarray, day: np.ndarray,
           end: pl.Series | None = None, issue: str | None = None) -> pl.DataFrame:
    """Return records in gp_records' columns; `end` a day or null per record."""
    n = person.size
    return pl.DataFrame({
        "person": pl.Series(person, dtype=pl.Int64),
        "record_type": pl.Series([record_type] * n, dtype=pl.String),
        "code": pl.Series(code.astype(str), dtype=pl.String),
        "day": pl.Series(day, dtype=pl.Int64),
        "end": end.cast(pl.Int64) if end is not None else pl.Series([None] * n, dtype=pl.Int64),
        "issue": pl.Series([issue] * n, dtype=pl.String),
    })


def gp_records(rng: np.random.Generator, pop: Population, health: Health, sim: Simulation,
               history_days: int) -> pl.DataFrame:
    """Return every GP record of the site's people: person, record_type, code, day, end (a day or null) and
    issue ("Repeat" / "Acute" for medicines), days as offsets from the reference date."""
    n, first_day = pop.n, -history_days
    age = pop.age_at(0.0)
    last_day = np.minimum(sim.death_day, 0)  # the last day the person can have a record
    on_list = np.maximum(np.maximum(pop.arrival_day, pop.birth_day), first_day)  # first day in the history

    # Long-term conditions on the register, dated at diagnosis.
    sens = np.array([RECORDING[c.name] for c in CONDITIONS])
    coded = health.conditions & (rng.random(health.conditions.shape) < sens[None, :])
    cp, cc = np.nonzero(coded)
    cday = _days_before(rng, cp.size, first_day, INCIDENT_SHARE, DIAGNOSED_BEFORE_YEARS)
    cday = np.minimum(np.maximum(cday, pop.birth_day[cp] + 365), last_day[cp])
    names = np.array([c.name for c in CONDITIONS])
    conditions = _frame(cp, "Condition", names[cc], cday)
    diagnosed = np.full(health.conditions.shape, 10**6, dtype=np.int64)
    diagnosed[cp, cc] = cday

    # Repeat medicines of the recorded conditions, authorised soon after diagnosis.
    mp: list[np.ndarray] = []
    mcode: list[np.ndarray] = []
    mstart: list[np.ndarray] = []
    for cond, classes in MEDICINES.items():
        j = CONDITION_INDEX[cond]
        who = np.nonzero(coded[:, j])[0]
        for name, share in classes:
            on = who[rng.random(who.size) < share]
            mp.append(on)
            mcode.append(np.full(on.size, name, dtype=object))
            mstart.append(diagnosed[on, j] + rng.integers(0, 90, on.size))
    adult = age >= 18
    general = rng.poisson(np.exp(-1.6 + 0.25 * (age - 70) / 10 + 0.5 * health.frailty) * adult)
    gp_ = np.repeat(np.arange(n), general)
    mp.append(gp_)
    mcode.append(GENERAL_MEDICINES[rng.integers(0, GENERAL_MEDICINES.size, gp_.size)].astype(object))
    mstart.append(_days_before(rng, gp_.size, first_day, 0.3, 3.0))
    repeats = pl.DataFrame({"person": np.concatenate(mp), "code": np.concatenate(mcode).astype(str),
                            "day": np.concatenate(mstart)}, schema={"person": pl.Int64, "code": pl.String,
                                                                    "day": pl.Int64})
    # A drug class is authorised once however many conditions call for it: the earliest authorisation.
    repeats = repeats.group_by("person", "code").agg(pl.col("day").min()).sort("person", "code")
    rperson = repeats["person"].to_numpy()
    rday = np.minimum(repeats["day"].to_numpy(), last_day[rperson])
    rday = np.maximum(rday, pop.birth_day[rperson])
    stopped = rng.random(rperson.size) < MEDICINE_STOPPED
    rend = rday + (rng.random(rperson.size) * (last_day[rperson] - rday)).astype(np.int64)
    ended = pl.Series(rend).zip_with(pl.Series(stopped), pl.Series([None], dtype=pl.Int64))
    medicines = _frame(rperson, "Medication", repeats["code"].to_numpy(), rday, ended, "Repeat")

    # Frailty deficits: the conditions that are deficits, polypharmacy, and the rest drawn from frailty.
    deficit_parts: list[pl.DataFrame] = []
    x_age = (age - 80.0) / 10.0
    # How readily a person's problems get coded (how often they are seen, their practice's habits): it
    # spreads the deficit counts without adding risk.
    coding = CODING_SD * rng.standard_normal(n)
    for d in DEFICITS:
        if d.conditions:
            idx = [CONDITION_INDEX[c] for c in d.conditions]
            first = diagnosed[:, idx].min(axis=1)
            who = np.nonzero(first < 10**6)[0]
            deficit_parts.append(_frame(who, "Frailty deficit", np.full(who.size, d.name), first[who]))
        if d.prevalence > 0:
            logit = (_logit(d.prevalence) + FRAILTY_SLOPE * health.frailty + AGE_SLOPE * x_age
                     + d.dependency * health.dependency + coding)
            who = np.nonzero(adult & (rng.random(n) < _sigmoid(logit)))[0]
            day = _days_before(rng, who.size, first_day, DEFICIT_INCIDENT_SHARE, DEFICIT_BEFORE_YEARS)
            day = np.minimum(np.maximum(day, pop.birth_day[who] + 18 * 365), last_day[who])
            deficit_parts.append(_frame(who, "Frailty deficit", np.full(who.size, d.name), day))
    poly = (medicines.sort("person", "day").group_by("person", maintain_order=True)
            .agg(pl.col("day").get(POLYPHARMACY_MEDICINES - 1, null_on_oob=True))
            .filter(pl.col("day").is_not_null()))
    deficit_parts.append(_frame(poly["person"].to_numpy(), "Frailty deficit",
                                np.full(poly.height, POLYPHARMACY), poly["day"].to_numpy()))
    # A deficit that is two conditions, or a condition and frailty, is recorded once: its first date.
    deficits = (pl.concat(deficit_parts).group_by("person", "record_type", "code")
                .agg(pl.col("day").min(), pl.col("end").first(), pl.col("issue").first()))

    # Consultations and acute issues over each person's time on the list in the history.
    years = np.maximum(last_day - on_list + 1, 0) / YEAR
    n_cond = health.conditions.sum(axis=1)
    female = pop.sex == 2
    rate = np.exp(CONSULT_BASE + CONSULT_AGE * (np.maximum(age, 0.0) - 45.0) / 10.0
                  + CONSULT_FRAILTY * health.frailty + CONSULT_CONDITION * n_cond
                  + 0.25 * female * (age >= 16) + 0.6 * (age < 5))
    count = rng.poisson(rate * years)
    who = np.repeat(np.arange(n), count)
    span = np.maximum(last_day - on_list + 1, 1)[who]
    day = on_list[who] + (rng.random(who.size) * span).astype(np.int64)
    home = 0.01 + 0.25 * _sigmoid(health.frailty[who] + (age[who] - 88.0) / 5.0)
    u = rng.random(who.size)
    kind = np.where(u < home, 2, np.where(u < home + 0.3, 1, np.where(u < home + 0.35, 3, 0)))
    consultations = _frame(who, "Consultation", CONSULTATION_TYPES[kind], day)
    acute = rng.poisson(np.exp(ACUTE_BASE + 0.3 * health.frailty + 0.1 * n_cond) * years)
    who = np.repeat(np.arange(n), acute)
    span = np.maximum(last_day - on_list + 1, 1)[who]
    day = on_list[who] + (rng.random(who.size) * span).astype(np.int64)
    issues = _frame(who, "Medication", ACUTE_MEDICINES[rng.integers(0, ACUTE_MEDICINES.size, who.size)], day,
                    issue="Acute")

    records = pl.concat([conditions, deficits.select(conditions.columns), medicines, issues, consultations])
    return records.sort("person", "day", "record_type", "code", "end", nulls_last=True)


def gp_extract(rng: np.random.Generator, records: pl.DataFrame, registrations: pl.DataFrame,
               truth_records: pl.DataFrame, ref: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return the gp_events extract (each row with its person's registration identifiers) and its truth."""
    epoch = (ref - date(1970, 1, 1)).days
    keys = (truth_records.filter(pl.col("source") == "gp").select(pl.col("record_id").alias("Patient_ID"), "person")
            .join(registrations.select("Patient_ID", "Pseudo_NHS_Number", "Birth_Year", "Birth_Month", "Sex", "LSOA",
                                       "Practice_Code"), on="Patient_ID"))
    # Keys numbered in the order of the patient key and date, as a feed's event sequence is: they tell
    # nothing the patient key beside them does not (patient keys are in no order of person).
    frame = (records.join(keys, on="person", how="left", maintain_order="left")
             .sort("Patient_ID", "day", "record_type", "code", "end", nulls_last=True, maintain_order=True)
             .with_columns(pl.concat_str([pl.lit("GE"), (pl.int_range(pl.len()) + int(rng.integers(10**8, 10**9)))
                                          .cast(pl.String).str.zfill(10)]).alias("Event_ID")))
    extract = frame.select(
        "Event_ID", "Patient_ID", "Pseudo_NHS_Number", "Birth_Year", "Birth_Month", "Sex", "LSOA", "Practice_Code",
        pl.col("record_type").alias("Record_Type"), pl.col("code").alias("Code"),
        (pl.col("day").cast(pl.Int32) + epoch).cast(pl.Date).alias("Event_Date"),
        (pl.col("end").cast(pl.Int32) + epoch).cast(pl.Date).alias("End_Date"),
        pl.col("issue").alias("Issue_Type"),
    ).sort("Patient_ID", "Event_Date", "Event_ID")
    truth = frame.select(pl.lit(SOURCE).alias("source"), pl.col("Event_ID").alias("record_id"),
                         pl.col("person").cast(pl.Int64))
    return extract, truth


__all__ = ["DEFICITS", "FILE", "RECORD_TYPES", "SOURCE", "STREAM", "gp_extract", "gp_records"]
