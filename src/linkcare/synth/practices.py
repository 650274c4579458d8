"""Each person's registered GP practice over the history, and the practice a hospital records.

The GP registrations extract holds one record per person with the practice they are registered
with now. Hospital records (APC, outpatients, A&E) carry the practice the person was registered
with on the day of the event, except that some records after a change of practice still carry the
old one, and some carry none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linkcare.synth.options import ErrorRates
from linkcare.synth.population import Population
from linkcare.synth.shares import exact_masks_within, exact_weighted_subset

NO_DAY = np.iinfo(np.int64).min // 2
RE_REGISTRATION_DAYS = 28
"""A person who moves and changes practice registers with the new one up to four weeks after the
move (uniformly): until then hospital records still show the old practice, rightly."""
STALE_HALF_LIFE_DAYS = 180.0
"""The chance that a record after a change of practice still shows the old one halves every 180
days after the change: hospital systems catch up with the NHS Spine over months."""


@dataclass(frozen=True)
class PracticeHistory:
    """Registered practices of everyone a record can belong to: the site's people (0 … n-1), then
    the visitors. A practice is an index into `codes` (the site's practices, then practices
    outside the site); -1 is none."""

    codes: np.ndarray
    current: np.ndarray  # the practice now (the GP registrations extract's)
    previous: np.ndarray  # the practice before a change (equal to `current` for people who never changed)
    change_day: np.ndarray  # day the person registered with the current practice after a change; NO_DAY if none
    registration_day: np.ndarray  # first registration with a site practice; NO_DAY for visitors
    before_registration: np.ndarray  # practice before registering with the site's (-1: none, as for newborns)

    @property
    def changed(self) -> np.ndarray:
        """Return whether each person changed practice during the history."""
        return self.previous != self.current

    def on(self, who: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Return the practice each record's person was registered with on the record's day (-1: none)."""
        return np.where(day < self.registration_day[who], self.before_registration[who],
                        np.where(day < self.change_day[who], self.previous[who], self.current[who]))


def practice_history(rng: np.random.Generator, pop: Population, rates: ErrorRates, history_days: int,
                     outside_codes: np.ndarray, visitor_practice: np.ndarray) -> PracticeHistory:
    """Return everyone's practices over the history, with changes of practice for the documented
    shares of movers and of others.

    `outside_codes` are practices outside the site: people who moved into the site during the
    history were registered with one of them until they registered here. `visitor_practice` is each
    visitor's practice as an index into the site's practices followed by `outside_codes` (-1: none).
    A site with one practice has no changes of practice."""
    n, n_site = pop.n, pop.practice_codes.size
    start = -history_days
    # Every draw is made for everyone, so the draws do not depend on who turns out to be eligible.
    delay = rng.integers(0, RE_REGISTRATION_DAYS + 1, n)
    when = rng.random(n)
    another = (pop.practice + rng.integers(1, max(n_site, 2), n)) % n_site
    came_from = rng.integers(0, max(outside_codes.size, 1), n)
    moved = pop.move_day >= start
    lo = np.maximum(start, pop.registration_day + 1)
    if n_site > 1:
        (on_move,) = exact_masks_within(rng, moved & (pop.move_day > pop.registration_day),
                                        rates.practice_change_on_move)
        (other,) = exact_masks_within(rng, ~moved & (lo < 0), rates.practice_change_other)
    else:
        on_move = other = np.zeros(n, dtype=bool)
    # A mover who changes practice leaves the practice that serves the old area (or, where that is
    # the new practice too, a neighbouring one).
    home_before = pop.area_practice[pop.previous_area]
    previous = np.where(on_move, np.where(home_before != pop.practice, home_before, another), pop.practice)
    previous = np.where(other, another, previous)
    change_day = np.full(n, NO_DAY, dtype=np.int64)
    change_day[on_move] = np.minimum(pop.move_day[on_move] + delay[on_move], 0)
    change_day[other] = lo[other] + (when[other] * -lo[other]).astype(np.int64)
    # People who arrived during the history (not born in it) were registered elsewhere until then.
    arrived = (pop.arrival_day >= start) & (pop.arrival_day != pop.birth_day) & (outside_codes.size > 0)
    before = np.where(arrived, n_site + came_from, -1)
    m = visitor_practice.size
    return PracticeHistory(
        codes=np.concatenate([pop.practice_codes, outside_codes]),
        current=np.concatenate([pop.practice, visitor_practice]),
        previous=np.concatenate([previous, visitor_practice]),
        change_day=np.concatenate([change_day, np.full(m, NO_DAY, dtype=np.int64)]),
        registration_day=np.concatenate([pop.registration_day, np.full(m, NO_DAY, dtype=np.int64)]),
        before_registration=np.concatenate([before, np.full(m, -1, dtype=np.int64)]),
    )


def recorded_practices(rng: np.random.Generator, history: PracticeHistory, who: np.ndarray, day: np.ndarray,
                       rates: ErrorRates) -> np.ndarray:
    """Return the practice each hospital record carries (an index into `history.codes`, -1 blank).

    It is the practice on the record's day, blank for exactly the documented share of records that
    have one, and the old practice for exactly the documented share of the rest made after a change
    (the earlier after the change, the likelier)."""
    practice = history.on(who, day)
    (blank,) = exact_masks_within(rng, practice >= 0, rates.practice_missing_hospital)
    after_change = history.changed[who] & (day >= history.change_day[who]) & ~blank
    since = np.maximum(day - history.change_day[who], 0).astype(np.float64)
    stale = exact_weighted_subset(rng, after_change, rates.practice_stale_hospital,
                                  0.5 ** (since / STALE_HALF_LIFE_DAYS))
    practice = np.where(stale, history.previous[who], practice)
    return np.where(blank, -1, practice)


__all__ = ["NO_DAY", "PracticeHistory", "practice_history", "recorded_practices"]
