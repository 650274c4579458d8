"""Latent health, hospital use, social care and death of each person, month by month.

Emergency admissions follow a Poisson rate that depends on a latent frailty (only partly visible
in the records), age, deprivation, long-term conditions, recent emergency admissions and social
care status. The year after the reference date is simulated too, with social care frozen, so the
true probability of at least one emergency admission in it is known exactly and stored as truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from linkcare.synth.conditions import CONDITIONS
from linkcare.synth.population import Population
from linkcare.synth.programme import ProgrammeRun

STEP = 365.0 / 12.0  # one month
FUTURE_STEPS = 12  # the year after the reference date
# Social-care status: 0 none, 1 long-term community support, 2 residential, 3 nursing.
SC_EMERGENCY_EFFECT = np.array([0.0, 0.35, 0.25, 0.55])
EMERGENCY_INTERCEPT = -3.1
RECENT_ADMISSION_EFFECT = 0.8  # emergency admission in the last three months
REABLEMENT_EFFECT = -0.25  # while receiving reablement after discharge
REABLEMENT_DAYS = 42


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class Health:
    """Static latent health of each person."""

    frailty: np.ndarray  # latent frailty, standard normal
    dependency: np.ndarray  # latent need for care beyond frailty, standard normal
    conditions: np.ndarray  # (people × conditions) bool
    care_need: np.ndarray  # log-odds scale need for social care (-inf for children)
    emergency_static: np.ndarray  # the part of the emergency log-rate that does not change
    mortality_static: np.ndarray


@dataclass
class Simulation:
    """Every event of the history, and the truth about the year after the reference date."""

    emergency: pl.DataFrame  # person, day, los
    elective: pl.DataFrame  # person, day, los
    ae: pl.DataFrame  # person, day, admitted
    outpatients: pl.DataFrame  # person, day
    requests: pl.DataFrame  # person, day, route, outcome
    assessments: pl.DataFrame  # person, day, outcome
    spells: pl.DataFrame  # spell, person, start, end, kind, units
    death_day: np.ndarray  # day of death, or a large number if alive at the end
    care_status: np.ndarray  # social-care status at the reference date
    risk: np.ndarray  # P(at least one emergency admission in the year after the reference date)
    outcome: np.ndarray  # whether it happened


def make_health(rng: np.random.Generator, pop: Population) -> Health:
    """Return latent frailty, dependency and long-term conditions for every person."""
    n = pop.n
    age = pop.age_at(0.0)
    deprivation = (5.5 - pop.area_decile[pop.area]) / 4.5
    # Frailty grows with deprivation; its age gradient comes through conditions and the age terms.
    frailty = rng.standard_normal(n) + 0.25 * deprivation
    dependency = rng.standard_normal(n)
    x_age = (age - 60.0) / 10.0
    conditions = np.zeros((n, len(CONDITIONS)), dtype=bool)
    for j, c in enumerate(CONDITIONS):
        logit = c.intercept + c.per_decade * x_age + c.frailty * frailty + c.deprivation * deprivation
        conditions[:, j] = rng.random(n) < _sigmoid(logit)
    cancer = [i for i, c in enumerate(CONDITIONS) if c.name == "cancer"][0]
    metastatic = [i for i, c in enumerate(CONDITIONS) if c.name == "metastatic_cancer"][0]
    conditions[:, cancer] |= conditions[:, metastatic]
    children = age < 16
    conditions[children] &= np.array([c.name in {"asthma", "diabetes"} for c in CONDITIONS])
    w_em = np.array([c.emergency for c in CONDITIONS])
    w_death = np.array([c.mortality for c in CONDITIONS])
    dementia = conditions[:, [i for i, c in enumerate(CONDITIONS) if c.name == "dementia"][0]]
    stroke = conditions[:, [i for i, c in enumerate(CONDITIONS) if c.name == "stroke"][0]]
    care_need = (-4.4 + 0.85 * x_age + 0.8 * frailty + 1.0 * dependency + 1.6 * dementia + 0.6 * stroke
                 + 0.2 * deprivation)
    care_need = np.where(age >= 18, care_need, -np.inf)
    emergency_static = (EMERGENCY_INTERCEPT + 0.7 * frailty + 0.45 * dependency * (age >= 18)
                        + conditions @ w_em + 0.3 * deprivation)
    mortality_static = 0.4 * frailty + conditions @ w_death
    return Health(frailty, dependency, conditions, care_need, emergency_static, mortality_static)


def _age_term(age: np.ndarray) -> np.ndarray:
    return (0.03 * (age - 50.0) + 0.0012 * np.maximum(age - 70.0, 0.0) ** 2
            + 1.2 * (age < 1.0) + 0.5 * (age < 5.0))


class _Events:
    """Append-only columns of events, turned into a frame at the end."""

    def __init__(self, *names: str):
        self.names = names
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in names}

    def add(self, **cols: np.ndarray) -> None:
        for k in self.names:
            self.parts[k].append(np.asarray(cols[k]))

    def frame(self, dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
        data = {k: (np.concatenate(v) if v else np.array([])) for k, v in self.parts.items()}
        return pl.DataFrame({k: pl.Series(k, data[k]).cast(dtypes[k]) for k in self.names})


def simulate(rng: np.random.Generator, pop: Population, health: Health, history_days: int,
             programme: ProgrammeRun | None = None) -> Simulation:
    """Return the site's events over the history and the truth for the following year; with `programme`,
    an MDT programme enrols people and changes their hazards (linkcare.synth.programme)."""
    n = pop.n
    h = health
    n_steps = int(np.ceil(history_days / STEP))
    first_day = -history_days
    n_cond = h.conditions.sum(axis=1)
    deprivation = (5.5 - pop.area_decile[pop.area]) / 4.5

    alive = np.ones(n, dtype=bool)
    death_day = np.full(n, 10**6, dtype=np.int64)
    last_emergency_step = np.full(n, -10**6, dtype=np.int64)
    reablement_until = np.full(n, -10**6, dtype=np.int64)
    status = np.zeros(n, dtype=np.int8)
    current_spell = np.full(n, -1, dtype=np.int64)
    next_spell = 0

    emergency = _Events("person", "day", "los")
    elective = _Events("person", "day", "los")
    ae = _Events("person", "day", "admitted")
    outpatients = _Events("person", "day")
    requests = _Events("person", "day", "route", "outcome")
    assessments = _Events("person", "day", "outcome")
    spell_starts = _Events("spell", "person", "start", "kind", "units")
    spell_ends = _Events("spell", "end")

    def open_spells(who: np.ndarray, start: np.ndarray, kind: np.ndarray) -> None:
        nonlocal next_spell
        ids = np.arange(next_spell, next_spell + who.size)
        next_spell += who.size
        hours = np.where(kind == 1, np.round(rng.gamma(2.0, 5.0, who.size) + 2.0, 1),
                         np.where(kind == 4, np.round(rng.gamma(2.0, 4.0, who.size) + 3.0, 1), np.nan))
        spell_starts.add(spell=ids, person=who, start=start, kind=kind, units=hours)
        if kind.size and (kind != 4).any():
            lts = kind != 4
            current_spell[who[lts]] = ids[lts]
        if (kind == 4).any():
            spell_ends.add(spell=ids[kind == 4], end=start[kind == 4] + REABLEMENT_DAYS)

    def close_spells(who: np.ndarray, end: np.ndarray) -> None:
        has = current_spell[who] >= 0
        spell_ends.add(spell=current_spell[who[has]], end=end[has])
        current_spell[who[has]] = -1

    def lts_kind(who: np.ndarray) -> np.ndarray:
        need = h.care_need[who]
        u = rng.random(who.size)
        p_nursing = 0.4 * _sigmoid(need - 0.5)
        p_residential = 0.5 * _sigmoid(need)
        return np.where(u < p_nursing, 3, np.where(u < p_nursing + p_residential, 2, 1)).astype(np.int8)

    # People already receiving long-term support when the history starts.
    adults_then = (pop.age_at(float(first_day)) >= 18) & (pop.arrival_day < first_day)
    prevalent = np.nonzero(adults_then & (rng.random(n) < _sigmoid(h.care_need - 1.2)))[0]
    kinds = lts_kind(prevalent)
    open_spells(prevalent, first_day - rng.integers(1, 6 * 365, prevalent.size), kinds)
    status[prevalent] = kinds

    def days_in_step(who: np.ndarray, k: int) -> np.ndarray:
        day = np.floor(k * STEP + rng.random(who.size) * STEP).astype(np.int64)
        day = np.maximum(day, np.maximum(pop.arrival_day[who], pop.birth_day[who]))
        return np.clip(day, first_day, -1)

    for k in range(-n_steps, 0):
        lo, hi = k * STEP, (k + 1) * STEP
        active = alive & (pop.arrival_day < hi) & (pop.birth_day < hi)
        age = pop.age_at(lo + STEP / 2)
        adult = active & (age >= 18)
        eta = (h.emergency_static + _age_term(age) + SC_EMERGENCY_EFFECT[status]
               + RECENT_ADMISSION_EFFECT * (last_emergency_step >= k - 3)
               + REABLEMENT_EFFECT * (reablement_until > lo))
        if programme is not None:
            programme.enrol(k, STEP, active, adult, first_day)
        count = rng.poisson(np.exp(eta) / 12.0 * active)
        who = np.repeat(np.arange(n), count)
        # The programme averts a share of its enrolled people's admissions (linkcare.synth.programme):
        # `kept` are the admissions that happen. Everything else follows the crisis, averted or not, so
        # the rest of the simulation draws exactly what it would without the programme.
        kept = programme.keep(who, lo) if programme is not None else np.ones(who.size, dtype=bool)
        if programme is not None:
            programme.record(k, who[kept])
        day = days_in_step(who, k)
        long_stay = np.ceil(rng.lognormal(np.log(2.5 + np.maximum(age[who] - 50, 0) / 8.0), 0.8))
        los = np.where(rng.random(who.size) < 0.25, 0, np.minimum(long_stay, 120)).astype(np.int64)
        emergency.add(person=who[kept], day=day[kept], los=los[kept])
        via_ae = rng.random(who.size) < 0.75
        ae_kept = via_ae & kept
        ae.add(person=who[ae_kept], day=day[ae_kept], admitted=np.ones(int(ae_kept.sum()), dtype=bool))
        last_emergency_step[who] = k

        # Reablement after discharge for older people without long-term support.
        discharged = who[(age[who] >= 65) & (status[who] == 0)]
        discharge_day = (day + los)[(age[who] >= 65) & (status[who] == 0)]
        discharged, first = np.unique(discharged, return_index=True)
        discharge_day = discharge_day[first]
        reab = rng.random(discharged.size) < 0.08 + 0.4 * _sigmoid(h.care_need[discharged])
        rp, rd = discharged[reab], discharge_day[reab]
        requests.add(person=rp, day=rd - 1, route=np.full(rp.size, 1), outcome=np.full(rp.size, 1))
        assessments.add(person=rp, day=rd - 1, outcome=np.full(rp.size, 2))
        open_spells(rp, rd, np.full(rp.size, 4, dtype=np.int8))
        reablement_until[rp] = rd + REABLEMENT_DAYS
        then_lts = rng.random(rp.size) < 0.6 * _sigmoid(h.care_need[rp] + 0.5)
        lp = rp[then_lts]
        kinds = lts_kind(lp)
        open_spells(lp, rd[then_lts] + REABLEMENT_DAYS + rng.integers(0, 14, lp.size), kinds)
        status[lp] = kinds

        # Long-term support arranged from the community, and requests that lead to none.
        no_support = np.nonzero(adult & (status == 0))[0]
        need = h.care_need[no_support]
        start = rng.random(no_support.size) < np.exp(need - 2.6) / 12.0
        sp = no_support[start]
        sd = days_in_step(sp, k)
        requests.add(person=sp, day=sd - rng.integers(20, 60, sp.size), route=np.full(sp.size, 2),
                     outcome=np.full(sp.size, 1))
        assessments.add(person=sp, day=sd - rng.integers(5, 20, sp.size), outcome=np.full(sp.size, 1))
        kinds = lts_kind(sp)
        open_spells(sp, sd, kinds)
        status[sp] = kinds
        asks = rng.random(no_support.size) < np.minimum(np.exp(need - 0.8), 3.0) / 12.0
        ap = no_support[asks & ~start]
        ad = days_in_step(ap, k)
        assessed = rng.random(ap.size) < 0.5
        requests.add(person=ap, day=ad, route=np.full(ap.size, 2),
                     outcome=np.where(assessed, 1, 2))
        assessments.add(person=ap[assessed], day=ad[assessed] + rng.integers(7, 30, int(assessed.sum())),
                        outcome=np.full(int(assessed.sum()), 3))

        # Moves from home care into a care home.
        at_home = np.nonzero(active & (status == 1))[0]
        moves = at_home[rng.random(at_home.size) < np.exp(h.care_need[at_home] - 3.0) / 12.0]
        md = days_in_step(moves, k)
        close_spells(moves, md)
        kinds = np.where(rng.random(moves.size) < 0.4, 3, 2).astype(np.int8)
        open_spells(moves, md, kinds)
        status[moves] = kinds

        # Planned care, A&E without admission, outpatients.
        live = active & (age >= 1)
        el_count = rng.poisson(np.exp(-2.1 + 0.02 * (age - 50) + 0.25 * n_cond + 0.15 * h.frailty) / 12 * live)
        who = np.repeat(np.arange(n), el_count)
        los = np.where(rng.random(who.size) < 0.7, 0, np.ceil(rng.lognormal(np.log(2.5), 0.6, who.size)))
        elective.add(person=who, day=days_in_step(who, k), los=los.astype(np.int64))
        ae_rate = np.exp(-1.45 + 0.3 * deprivation + 0.3 * h.frailty + 0.5 * (age < 5)
                         + 0.25 * ((age >= 16) & (age < 30)) + 0.02 * np.maximum(age - 70, 0))
        who = np.repeat(np.arange(n), rng.poisson(ae_rate / 12 * active))
        attended = days_in_step(who, k)
        kept = programme.keep(who, lo) if programme is not None else np.ones(who.size, dtype=bool)
        ae.add(person=who[kept], day=attended[kept], admitted=np.zeros(int(kept.sum()), dtype=bool))
        op_rate = np.exp(-0.1 + 0.012 * (age - 50) + 0.3 * n_cond + 0.2 * h.frailty)
        who = np.repeat(np.arange(n), rng.poisson(op_rate / 12 * active))
        outpatients.add(person=who, day=days_in_step(who, k))

        # Deaths close everything.
        q = 1.0 - np.exp(-np.exp(-10.6 + 0.095 * age + h.mortality_static) / 12.0)
        dies = np.nonzero(active & (rng.random(n) < q))[0]
        dd = days_in_step(dies, k)
        death_day[dies] = dd
        alive[dies] = False
        close_spells(dies, dd)

    care_status = np.where(alive, status, 0).astype(np.int8)
    future_effect = programme.effect_term(0.0) if programme is not None else 0.0  # the same share averted
    risk, outcome = _future_year(rng, pop, h, alive, status, last_emergency_step, reablement_until, future_effect)

    i64, i8, f64 = pl.Int64(), pl.Int8(), pl.Float64()
    spells = spell_starts.frame({"spell": i64, "person": i64, "start": i64, "kind": i8, "units": f64})
    ends = spell_ends.frame({"spell": i64, "end": i64}).group_by("spell").agg(pl.col("end").min())
    spells = spells.join(ends, on="spell", how="left").sort("spell")
    return Simulation(
        emergency=emergency.frame({"person": i64, "day": i64, "los": i64}),
        elective=elective.frame({"person": i64, "day": i64, "los": i64}),
        ae=ae.frame({"person": i64, "day": i64, "admitted": pl.Boolean()}),
        outpatients=outpatients.frame({"person": i64, "day": i64}),
        requests=requests.frame({"person": i64, "day": i64, "route": i8, "outcome": i8}),
        assessments=assessments.frame({"person": i64, "day": i64, "outcome": i8}),
        spells=spells,
        death_day=death_day,
        care_status=care_status,
        risk=risk,
        outcome=outcome,
    )


def _future_year(rng: np.random.Generator, pop: Population, h: Health, alive: np.ndarray,
                 status: np.ndarray, last_emergency_step: np.ndarray,
                 reablement_until: np.ndarray, effect: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Return the exact probability of at least one emergency admission in the next 365 days, and a
    draw of the outcome from the same process (admission before death within each month)."""
    n = pop.n
    still_alive = alive.copy()
    survival = np.where(alive, 1.0, 0.0)  # P(alive and not yet admitted)
    risk = np.zeros(n)
    outcome = np.zeros(n, dtype=bool)
    for k in range(FUTURE_STEPS):
        lo = k * STEP
        age = pop.age_at(lo + STEP / 2)
        eta = (h.emergency_static + _age_term(age) + SC_EMERGENCY_EFFECT[status]
               + RECENT_ADMISSION_EFFECT * (last_emergency_step >= k - 3)
               + REABLEMENT_EFFECT * (reablement_until > lo) + effect)
        p_admit = 1.0 - np.exp(-np.exp(eta) / 12.0)
        q = 1.0 - np.exp(-np.exp(-10.6 + 0.095 * age + h.mortality_static) / 12.0)
        risk += survival * p_admit
        survival *= (1.0 - p_admit) * (1.0 - q)
        outcome |= still_alive & (rng.random(n) < p_admit)
        still_alive &= rng.random(n) >= q
    risk = np.where(alive, risk, np.nan)
    return risk, outcome & alive

