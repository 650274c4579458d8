"""The people of a synthetic site: ages, sexes, areas, practices, ethnicity, moves and twins.

All quantities are numpy arrays indexed by person; days are integer offsets from the reference
date (0 is the reference date, negative is before it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linkcare.sources.pseudonymise import nhs_check_digit

# England and Wales, Census 2021: share of the population in each five-year age band (0-4 … 90+).
AGE_BANDS = np.array(
    [5.4, 5.9, 6.0, 5.6, 6.0, 6.6, 6.9, 6.6, 6.2, 6.3, 6.8, 6.6, 5.7, 4.9, 5.0, 3.6, 2.5, 1.5, 0.9]
)
# Share female by the same bands: even until 65, then women outlive men.
FEMALE_SHARE = np.array([0.49] * 4 + [0.50] * 9 + [0.51, 0.52, 0.54, 0.57, 0.62, 0.69])

# NHS ethnic category codes with their approximate shares in England (Census 2021).
ETHNIC_CODES = np.array(list("ABCDEFGHJKLMNPRSZ"))
ETHNIC_SHARES = np.array(
    [73.5, 0.9, 6.2, 0.5, 0.2, 0.8, 0.6, 3.1, 2.7, 1.1, 1.6, 1.1, 2.5, 0.5, 0.7, 1.6, 2.4]
)

PEOPLE_PER_AREA = 1600
PATIENTS_PER_PRACTICE = 8000
DAYS_PER_YEAR = 365.25


@dataclass
class Population:
    """Arrays describing each person; `n` people in all."""

    n: int
    sex: np.ndarray  # 1 male, 2 female
    birth_day: np.ndarray  # day offset of the date of birth
    area: np.ndarray  # current area index
    previous_area: np.ndarray  # area before a move (equal to `area` for people who never moved)
    move_day: np.ndarray  # day of the move; a large negative number for non-movers
    practice: np.ndarray  # current practice index (changes of practice: linkcare.synth.practices)
    ethnicity: np.ndarray  # NHS ethnic category code
    arrival_day: np.ndarray  # first day the person lived in the site
    registration_day: np.ndarray  # GP registration date
    nhs_number: np.ndarray  # ten-digit strings, valid modulus 11
    area_codes: np.ndarray  # LSOA-style code of each area
    area_decile: np.ndarray  # deprivation decile of each area, 1 = most deprived
    practice_codes: np.ndarray
    area_practice: np.ndarray  # index of the practice that serves each area
    twin_of: np.ndarray  # index of the person's twin, or -1

    def age_at(self, day: np.ndarray | float) -> np.ndarray:
        """Return each person's age in years on the given day offset."""
        return (day - self.birth_day) / DAYS_PER_YEAR

    def area_on(self, who: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Return the area index a person lived in on a given day."""
        return np.where(day < self.move_day[who], self.previous_area[who], self.area[who])


def valid_nhs_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    """Return `n` distinct valid NHS numbers (ten-digit strings starting 4, 6 or 7, modulus 11)."""
    out: list[np.ndarray] = []
    seen = 0
    while seen < n:
        want = int((n - seen) * 1.15) + 16
        lead = rng.choice(np.array([4, 6, 7]), size=want)
        rest = rng.integers(0, 10**8, size=want)
        base = lead * 10**8 + rest
        digits = (base[:, None] // 10 ** np.arange(8, -1, -1)) % 10
        check = nhs_check_digit(digits)
        ok = check != 10
        numbers = base[ok] * 10 + check[ok]
        out.append(numbers)
        merged = np.unique(np.concatenate(out))
        out = [merged]
        seen = merged.size
    numbers = rng.permutation(out[0])[:n]
    return np.char.zfill(numbers.astype(str), 10)


def make_population(rng: np.random.Generator, n: int, history_days: int, twin_share: float) -> Population:
    """Return a population of `n` people registered with the site's practices at some time."""
    band = rng.choice(AGE_BANDS.size, size=n, p=AGE_BANDS / AGE_BANDS.sum())
    width = np.where(band == AGE_BANDS.size - 1, 14.0, 5.0)
    # Within the 90+ band ages thin out quickly; a squared uniform skews towards 90.
    frac = np.where(band == AGE_BANDS.size - 1, rng.random(n) ** 2, rng.random(n))
    age_ref = band * 5.0 + frac * width
    sex = np.where(rng.random(n) < FEMALE_SHARE[band], 2, 1).astype(np.int8)
    birth_day = -np.floor(age_ref * DAYS_PER_YEAR).astype(np.int64)

    n_areas = max(1, round(n / PEOPLE_PER_AREA))
    area_codes = np.array([f"E0{c:07d}" for c in 1_000_000 + rng.choice(40_000, n_areas, replace=False)])
    area_decile = (rng.permutation(n_areas) * 10 // n_areas + 1).astype(np.int8)
    area = rng.integers(0, n_areas, size=n)

    n_practices = max(1, round(n / PATIENTS_PER_PRACTICE))
    letters = np.array(list("ABCDEFGHJKLMNPY"))
    practice_numbers = rng.choice(90_000, n_practices, replace=False) + 10_000
    practice_codes = np.array([f"{letters[i % letters.size]}{c:05d}" for i, c in enumerate(practice_numbers)])
    # Most people register with the practice that serves their area; some choose another nearby.
    home_practice = rng.permutation(n_areas) * n_practices // n_areas
    practice = np.where(
        rng.random(n) < 0.85,
        home_practice[area],
        (home_practice[area] + rng.integers(1, 3, size=n)) % n_practices,
    )

    # Older generations are less ethnically diverse than younger ones.
    older = age_ref >= 65
    p_old = ETHNIC_SHARES.copy()
    p_old[0] *= 2.2
    ethnicity = np.empty(n, dtype="<U1")
    ethnicity[~older] = rng.choice(ETHNIC_CODES, size=int((~older).sum()), p=ETHNIC_SHARES / ETHNIC_SHARES.sum())
    ethnicity[older] = rng.choice(ETHNIC_CODES, size=int(older.sum()), p=p_old / p_old.sum())

    # Arrivals: babies born during the history, and people who moved into the site.
    start = -history_days
    born_in_window = birth_day > start
    mover_in = (~born_in_window) & (rng.random(n) < 0.10)
    arrival_day = np.full(n, start - 1, dtype=np.int64)
    arrival_day[born_in_window] = birth_day[born_in_window]
    arrival_day[mover_in] = rng.integers(start, 0, size=int(mover_in.sum()))
    # Registration: long-standing residents registered years ago; newcomers on arrival, a fifth late.
    earliest = np.maximum(birth_day + 42, start - 20 * 365)
    registration_day = (earliest + rng.random(n) * np.maximum(start - 1 - earliest, 0)).astype(np.int64)
    registration_day[born_in_window] = birth_day[born_in_window] + rng.integers(14, 70, int(born_in_window.sum()))
    late = mover_in & (rng.random(n) < 0.2)
    delay = np.where(late, rng.exponential(150.0, n), rng.integers(0, 14, n)).astype(np.int64)
    registration_day[mover_in] = arrival_day[mover_in] + delay[mover_in]
    registration_day = np.minimum(registration_day, 0)

    # Moves within the site: the previous area holds for records before the move.
    moved = rng.random(n) < 0.08
    move_day = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)
    move_day[moved] = np.maximum(rng.integers(start, 0, size=int(moved.sum())), arrival_day[moved] + 1)
    previous_area = area.copy()
    previous_area[moved] = (area[moved] + rng.integers(1, max(n_areas, 2), int(moved.sum()))) % n_areas

    nhs_number = valid_nhs_numbers(rng, n)

    pop = Population(
        n=n, sex=sex, birth_day=birth_day, area=area, previous_area=previous_area, move_day=move_day,
        practice=practice, ethnicity=ethnicity, arrival_day=arrival_day,
        registration_day=registration_day, nhs_number=nhs_number, area_codes=area_codes,
        area_decile=area_decile, practice_codes=practice_codes, area_practice=home_practice,
        twin_of=np.full(n, -1, dtype=np.int64),
    )
    _make_twins(rng, pop, twin_share)
    return pop


def _make_twins(rng: np.random.Generator, pop: Population, twin_share: float) -> None:
    """Turn pairs of people into same-sex twins: same birth date, sex, areas, practice, history."""
    pairs = int(round(pop.n * twin_share / 2))
    if pairs == 0:
        return
    chosen = rng.choice(pop.n, size=2 * pairs, replace=False)
    first, second = chosen[:pairs], chosen[pairs:]
    for name in ("sex", "birth_day", "area", "previous_area", "move_day", "practice", "ethnicity",
                 "arrival_day"):
        arr = getattr(pop, name)
        arr[second] = arr[first]
    pop.twin_of[first], pop.twin_of[second] = second, first
    pop.registration_day[second] = np.minimum(pop.registration_day[first] + rng.integers(0, 5, pairs), 0)
