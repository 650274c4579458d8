"""An MDT programme with a known effect, so that `linkcare monitor`'s matched comparison can be checked
against the truth.

From the programme's start, at a share of the site's practices, adults who meet a case-finding rule
sites use, two or more emergency admissions in the past twelve months, are enrolled over the
programme's enrolment months: each month a share of those eligible and not yet enrolled (the MDT's
capacity) join the caseload on a day of that month. From the month after enrolment, each emergency
admission and each A&E attendance of an enrolled person happens with probability `effect` (default
0.85; 1.0 means the programme does nothing) and is otherwise averted: the crisis is managed at home.
Thinning a Poisson process multiplies its rate by the keeping probability, so the enrolled's hazards of
admission and of attendance are multiplied by the effect, exactly. An averted admission changes nothing
else (the crisis happened: it still raises the next months' risk, and may still lead to reablement, now
arranged from home), so the true effect on the enrolled's rate of admissions is the effect itself, with
no knock-on through the simulation's other states. The year after the reference date has the same
effect on the hazard, so the true risk stays exact.

The programme draws from its own random stream (the eighth child of the seed), and the simulation draws
exactly what it draws without a programme, so a site without one is the same as before the programme
existed, and a site with one differs only by the averted admissions and attendances (with an effect of
1.0, by nothing but the caseload and its truth).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
import polars as pl

#: The rule, in the words the site and the truth file give it.
RULE = ("aged 18 or over, registered at a programme practice, with 2 or more emergency admissions in the 12 months "
        "before")
ELIGIBLE_ADMISSIONS = 2
CASELOAD_FILE = "mdt_caseload.csv"
PROGRAMME_TRUTH = "truth/programme.json"
STREAM = 7  # the eighth child of the seed


@dataclass(frozen=True)
class Programme:
    """The options of an MDT programme."""

    start: date
    practices: float = 0.5  # the share of practices in the programme
    effect: float = 0.85  # multiplies the enrolled's emergency admission and A&E hazards
    enrolment_months: int = 12
    uptake: float = 0.25  # the share of the eligible not yet enrolled who join in a month

    def __post_init__(self) -> None:
        if not 0 < self.practices <= 1:
            raise ValueError("programme practices must be a share above 0 and at most 1")
        if not 0 < self.effect <= 3:
            raise ValueError("programme effect must be above 0 (1.0: no effect) and at most 3")
        if not 1 <= self.enrolment_months <= 60:
            raise ValueError("programme enrolment months must be from 1 to 60")
        if not 0 < self.uptake <= 1:
            raise ValueError("programme uptake must be a share above 0 and at most 1")


class ProgrammeRun:
    """The programme as the simulation runs it: who is at a programme practice, each person's recent
    emergency admissions (twelve monthly steps), and their enrolment day (a large number: never)."""

    NEVER = 10**6

    def __init__(self, programme: Programme, seed: int, practice: np.ndarray, n_practices: int, start_day: int):
        self.programme = programme
        self.rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(STREAM + 1)[STREAM])
        chosen = self.rng.permutation(n_practices)[:max(1, round(programme.practices * n_practices))]
        self.practices = np.sort(chosen)
        self.at_practice = np.isin(practice, self.practices)
        self.start_day = start_day
        self.enrolled_day = np.full(practice.size, self.NEVER, dtype=np.int64)
        self.recent = np.zeros((12, practice.size), dtype=np.int16)
        self.log_effect = float(np.log(programme.effect))

    def keep(self, who: np.ndarray, step_start: float) -> np.ndarray:
        """Return which of a step's admissions or attendances (a person each) happen: an enrolled person's,
        from the step after enrolment, happens with probability `effect` (the rest are averted)."""
        draws = self.rng.random(who.size)
        enrolled = self.enrolled_day[who] < step_start
        return ~enrolled | (draws < self.programme.effect)

    def effect_term(self, step_start: float) -> np.ndarray:
        """Return the log-hazard term of each person in the step starting at `step_start`: the effect from
        the first step after the one they were enrolled in."""
        return np.where(self.enrolled_day < step_start, self.log_effect, 0.0)

    def enrol(self, k: int, step: float, active: np.ndarray, adult: np.ndarray, first_day: int) -> None:
        """Enrol, in step `k`, a share of the eligible not yet enrolled, each on a day of the step."""
        lo = k * step
        first_step = int(np.floor(self.start_day / step))
        if not first_step <= k < first_step + self.programme.enrolment_months:
            return
        eligible = (active & adult & self.at_practice & (self.enrolled_day == self.NEVER)
                    & (self.recent.sum(axis=0) >= ELIGIBLE_ADMISSIONS))
        who = np.nonzero(eligible)[0]
        joins = who[self.rng.random(who.size) < self.programme.uptake]
        days = np.floor(lo + self.rng.random(joins.size) * step).astype(np.int64)
        self.enrolled_day[joins] = np.clip(days, max(first_day, self.start_day), -1)

    def record(self, k: int, admitted: np.ndarray) -> None:
        """Record the emergency admissions of step `k` (a person per admission)."""
        self.recent[k % 12] = np.bincount(admitted, minlength=self.recent.shape[1]).astype(np.int16)


def caseload(run: ProgrammeRun, gp: pl.DataFrame, truth_records: pl.DataFrame, ref: date) -> pl.DataFrame:
    """Return the caseload as an MDT keeps it: the spine record key, practice and enrolment date of each
    person enrolled, in order of enrolment."""
    enrolled = np.nonzero(run.enrolled_day < run.NEVER)[0]
    epoch = (ref - date(1970, 1, 1)).days
    people = pl.DataFrame({"person": enrolled.astype(np.int64),
                           "Enrolment_Date": pl.Series(run.enrolled_day[enrolled] + epoch).cast(pl.Int32)
                           .cast(pl.Date)})
    keys = (truth_records.filter(pl.col("source").is_in(["gp", "gp_registrations"]))
            .select(pl.col("record_id").alias("Patient_ID"), pl.col("person").cast(pl.Int64))
            .join(gp.select("Patient_ID", "Practice_Code"), on="Patient_ID")
            .sort("Patient_ID").unique("person", keep="first"))
    out = people.join(keys, on="person", how="inner").sort("Enrolment_Date", "Patient_ID")
    return out.select("Patient_ID", "Practice_Code", pl.col("Enrolment_Date").dt.strftime("%Y-%m-%d"))


def programme_truth(run: ProgrammeRun, load: pl.DataFrame, practice_codes: np.ndarray) -> dict[str, object]:
    """Return truth/programme.json: the programme's options, its rule, the true effect and its practices."""
    return {**asdict(run.programme), "start": run.programme.start.isoformat(), "rule": RULE,
            "true_effect": {"emergency_admissions": run.programme.effect, "ae_attendances": run.programme.effect},
            "effect_from": "the first month after the month of enrolment",
            "practices_in_programme": [str(practice_codes[i]) for i in run.practices],
            "enrolled": load.height}


__all__ = ["CASELOAD_FILE", "PROGRAMME_TRUTH", "RULE", "Programme", "ProgrammeRun", "caseload", "programme_truth"]
