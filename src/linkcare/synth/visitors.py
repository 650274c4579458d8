"""Hospital patients who are in no other extract: out-of-area patients, visitors from overseas, and
people who live in the site but are registered with none of its practices.

Real APC, outpatient and A&E extracts hold such people; they have no GP registration to link to.
Each is a person of their own in the truth, numbered on from the site's people, with
`resident = false` in truth/persons.parquet.

A visitor resembles the site's own patients of the same extract: each is modelled on one of that
extract's records of a resident (a template), taking its person's sex, long-term conditions and
frailty, an age at the visit within a year of the template's, and (for each admission) whether it
was an emergency and how long it lasted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from linkcare.synth.health import Health, Simulation
from linkcare.synth.options import ErrorRates
from linkcare.synth.population import Population, valid_nhs_numbers
from linkcare.synth.shares import exact_masks

REPEAT_SHARE = 0.2
"""After each of a visitor's records in an extract, the chance of another in the same extract:
records per visitor are 1 + a geometric count, so 80% of visitors have one record, 16% two, 3.2%
three and so on (mean 1.25). An assumption: most come once; some come back on the same stay."""
REPEAT_GAP_DAYS = 30.0
"""Mean days between one visitor's records (exponential): repeat visits come within weeks."""
VIA_AE = 0.75
"""Share of visitors' emergency admissions that come through the site's A&E (an attendance on the
day of admission, with the same person), as for the site's own people (linkcare.synth.health)."""
AGE_JITTER_DAYS = 365
"""A visitor's age at a visit is the template's, give or take up to a year (uniformly)."""
OUTSIDE_PER_SITE = 4
"""Areas (LSOAs) and practices outside the site that visitors come from: four for each of the
site's own, plus twenty."""


@dataclass(frozen=True)
class Visitors:
    """People in the hospital extracts only. Arrays are indexed by visitor; person numbers in the
    truth are `first_person` + index."""

    first_person: int
    origin: np.ndarray  # "out_of_area", "overseas" or "local_unregistered"
    sex: np.ndarray  # 1 male, 2 female
    birth_day: np.ndarray
    conditions: np.ndarray  # (visitors × conditions) bool, as in Health
    frailty: np.ndarray
    nhs_number: np.ndarray  # ten-digit strings, valid and no resident's; "" for none
    area: np.ndarray  # index into the site's areas then `outside_areas`; -1 for none
    practice: np.ndarray  # index into the site's practices then `outside_practices`; -1 for none
    outside_areas: np.ndarray  # LSOA-style codes of areas outside the site
    outside_practices: np.ndarray  # codes of practices outside the site
    apc: pl.DataFrame  # person, day, los, emergency
    ae: pl.DataFrame  # person, day, admitted
    outpatients: pl.DataFrame  # person, day

    @property
    def n(self) -> int:
        """Return the number of visitors."""
        return int(self.sex.size)


def visitor_records(rate: float, resident_records: int) -> int:
    """Return how many visitors' records make them `rate` of an extract with this many residents' records."""
    return int(round(rate * resident_records / (1.0 - rate)))


def _outside_codes(rng: np.random.Generator, pop: Population) -> tuple[np.ndarray, np.ndarray]:
    """Return LSOA-style codes of areas and codes of practices that are not the site's."""
    n_areas, n_practices = pop.area_codes.size, pop.practice_codes.size
    want = min(OUTSIDE_PER_SITE * n_areas + 20, 40_000 - n_areas)
    areas = np.array([f"E0{c:07d}" for c in 1_000_000 + rng.choice(40_000, want + n_areas, replace=False)])
    areas = areas[~np.isin(areas, pop.area_codes)][:want]
    want = min(OUTSIDE_PER_SITE * n_practices + 20, 90_000 - n_practices)
    letters = np.array(list("ABCDEFGHJKLMNPY"))
    numbers = rng.choice(90_000, want + n_practices, replace=False) + 10_000
    practices = np.char.add(letters[rng.integers(0, letters.size, numbers.size)], numbers.astype(str))
    practices = practices[~np.isin(practices, pop.practice_codes)][:want]
    return areas, practices


def _records_per_visitor(rng: np.random.Generator, k: int) -> np.ndarray:
    """Return records per visitor (1 + geometric), for as many visitors as it takes to hold exactly `k`."""
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    counts = rng.geometric(1.0 - REPEAT_SHARE, size=k).astype(np.int64)
    total = np.cumsum(counts)
    m = int(np.searchsorted(total, k)) + 1
    counts = counts[:m]
    counts[-1] -= total[m - 1] - k
    return counts


def _visit_days(rng: np.random.Generator, counts: np.ndarray, history_days: int) -> np.ndarray:
    """Return the day of each record of visitors with these record counts: the first anywhere in the
    history, the others after it at exponential gaps, all before the reference date."""
    k = int(counts.sum())
    starts = np.cumsum(counts) - counts
    gaps = np.ceil(rng.exponential(REPEAT_GAP_DAYS, k)).astype(np.int64)
    gaps[starts] = 0
    total = np.cumsum(gaps)
    offset = np.minimum(total - np.repeat(total[starts], counts), history_days - 1)
    span = offset[starts + counts - 1] if k else np.zeros(0, dtype=np.int64)
    first = -history_days + np.floor(rng.random(counts.size) * (history_days - span)).astype(np.int64)
    return np.repeat(first, counts) + offset


@dataclass
class _Group:
    """Visitors made from one extract's templates: records per visitor, and per record its
    template (a row of the residents' records) and its day."""

    counts: np.ndarray
    template: np.ndarray
    day: np.ndarray

    @property
    def first_record(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts


def _group(rng: np.random.Generator, k: int, templates: int, history_days: int) -> _Group:
    counts = _records_per_visitor(rng, k if templates else 0)
    template = rng.integers(0, max(templates, 1), int(counts.sum()))
    return _Group(counts, template, _visit_days(rng, counts, history_days))


def _resident_records(sim: Simulation, death: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Return the residents' APC, A&E and outpatient records as the extracts hold them (none after death)."""
    def alive(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("day") <= pl.Series(death[frame["person"].to_numpy()]))

    apc = pl.concat([sim.emergency.with_columns(pl.lit(True).alias("emergency")),
                     sim.elective.with_columns(pl.lit(False).alias("emergency"))])
    return alive(apc), alive(sim.ae), alive(sim.outpatients)


def make_visitors(rng: np.random.Generator, pop: Population, health: Health, sim: Simulation,
                  rates: ErrorRates, history_days: int) -> Visitors:
    """Return the visitors of a site: their records make up exactly the documented share of each
    hospital extract (to the nearest record), and where A&E visitors are admitted, the admission
    is in the APC extract under the same person."""
    apc, ae, op = _resident_records(sim, sim.death_day)
    outside_areas, outside_practices = _outside_codes(rng, pop)
    n_ae = visitor_records(rates.visitors_ae, ae.height)

    # Admitted visitors first; most emergency admissions come through A&E the same day.
    g_apc = _group(rng, visitor_records(rates.visitors_apc, apc.height), apc.height, history_days)
    emergency = apc["emergency"].to_numpy()[g_apc.template]
    los = apc["los"].to_numpy()[g_apc.template]
    via = np.flatnonzero(emergency & (rng.random(emergency.size) < VIA_AE))
    if via.size > n_ae:
        via = np.sort(rng.choice(via, n_ae, replace=False))
    # Then visitors who come to A&E and go home, and those referred to outpatients from elsewhere.
    home = ae.filter(~pl.col("admitted"))
    home = home if home.height else ae
    g_ae = _group(rng, n_ae - via.size, home.height, history_days)
    g_op = _group(rng, visitor_records(rates.visitors_outpatients, op.height), op.height, history_days)

    groups = ((g_apc, apc), (g_ae, home), (g_op, op))
    counts = [g.counts for g, _ in groups]
    m = int(sum(c.size for c in counts))
    first = pop.n
    person = [first + off + np.repeat(np.arange(c.size), c)
              for off, c in zip(np.cumsum([0] + [c.size for c in counts[:-1]]), counts, strict=True)]
    # Each visitor's person is modelled on the template of their first record.
    model = np.concatenate([frame["person"].to_numpy()[g.template[g.first_record]] for g, frame in groups])
    model_day = np.concatenate([frame["day"].to_numpy()[g.template[g.first_record]] for g, frame in groups])
    visit_day = np.concatenate([g.day[g.first_record] for g, _ in groups])
    jitter = rng.integers(-AGE_JITTER_DAYS, AGE_JITTER_DAYS + 1, m)
    birth_day = np.minimum(pop.birth_day[model] + (visit_day - model_day) + jitter, visit_day)

    overseas, local = exact_masks(rng, m, rates.visitor_overseas, rates.visitor_local)
    origin = np.where(overseas, "overseas", np.where(local, "local_unregistered", "out_of_area"))
    n_areas, n_practices = pop.area_codes.size, pop.practice_codes.size
    away = origin == "out_of_area"
    area = np.where(away, n_areas + rng.integers(0, max(outside_areas.size, 1), m),
                    np.where(origin == "local_unregistered", rng.integers(0, n_areas, m), -1))
    practice = np.where(away, n_practices + rng.integers(0, max(outside_practices.size, 1), m), -1)
    has_number = origin != "overseas"
    nhs_number = np.full(m, "", dtype="<U10")
    nhs_number[has_number] = _numbers_of_no_resident(rng, int(has_number.sum()), pop.nhs_number)

    admitted_day = g_apc.day[via]
    return Visitors(
        first_person=first, origin=origin, sex=pop.sex[model], birth_day=birth_day,
        conditions=health.conditions[model], frailty=health.frailty[model], nhs_number=nhs_number,
        area=area, practice=practice, outside_areas=outside_areas, outside_practices=outside_practices,
        apc=pl.DataFrame({"person": person[0], "day": g_apc.day, "los": los, "emergency": emergency},
                         schema={"person": pl.Int64, "day": pl.Int64, "los": pl.Int64, "emergency": pl.Boolean}),
        ae=pl.DataFrame({"person": np.concatenate([person[0][via], person[1]]),
                         "day": np.concatenate([admitted_day, g_ae.day]),
                         "admitted": np.concatenate([np.ones(via.size, bool), np.zeros(g_ae.day.size, bool)])},
                        schema={"person": pl.Int64, "day": pl.Int64, "admitted": pl.Boolean}),
        outpatients=pl.DataFrame({"person": person[2], "day": g_op.day},
                                 schema={"person": pl.Int64, "day": pl.Int64}),
    )


def _numbers_of_no_resident(rng: np.random.Generator, n: int, residents: np.ndarray) -> np.ndarray:
    """Return `n` distinct valid NHS numbers that no resident has."""
    if n == 0:
        return np.zeros(0, dtype="<U10")
    numbers = valid_nhs_numbers(rng, n + n // 10 + 16)
    numbers = numbers[~np.isin(numbers, residents)]
    while numbers.size < n:  # only when an unlucky draw is mostly residents' numbers
        more = valid_nhs_numbers(rng, n)
        numbers = np.unique(np.concatenate([numbers, more[~np.isin(more, residents)]]))
    return numbers[:n]


__all__ = ["Visitors", "make_visitors", "visitor_records"]
