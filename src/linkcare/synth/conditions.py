"""Long-term conditions, acute reasons for admission and frailty codes used by the synthetic site.

ICD-10 codes are written as in HES: four characters, no dot, `X` filling a three-character code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Condition:
    """A long-term condition: how common it is, how it raises risk, and how it is coded."""

    name: str
    intercept: float  # log-odds of having it at age 60 with average frailty
    per_decade: float  # change in log-odds per ten years of age
    frailty: float  # change in log-odds per unit of latent frailty
    deprivation: float  # change in log-odds per unit of deprivation (+1 most, -1 least deprived)
    emergency: float  # added to the log-rate of emergency admission
    mortality: float  # added to the log-hazard of death
    codes: tuple[str, ...]
    specialty: str  # outpatient treatment specialty (TRETSPEF)


CONDITIONS: tuple[Condition, ...] = (
    Condition("hypertension", -1.3, 0.55, 0.3, 0.10, 0.05, 0.0, ("I10X",), "320"),
    Condition("diabetes", -2.2, 0.35, 0.5, 0.20, 0.30, 0.2, ("E119", "E109", "E116", "E112"), "307"),
    Condition("copd", -3.8, 0.55, 0.6, 0.35, 0.60, 0.5, ("J449", "J441", "J440"), "340"),
    Condition("asthma", -2.4, -0.05, 0.3, 0.10, 0.20, 0.0, ("J459", "J450"), "340"),
    Condition("heart_failure", -4.8, 0.80, 0.7, 0.15, 0.70, 0.7, ("I500", "I509", "I110"), "320"),
    Condition("atrial_fibrillation", -3.9, 0.75, 0.4, 0.0, 0.30, 0.2, ("I489", "I480"), "320"),
    Condition("ckd", -3.5, 0.75, 0.6, 0.10, 0.40, 0.3, ("N183", "N184", "N185"), "361"),
    Condition("dementia", -6.3, 1.25, 0.6, 0.05, 0.50, 0.9, ("F03X", "G309", "F019", "F001"), "430"),
    Condition("stroke", -4.0, 0.70, 0.5, 0.15, 0.40, 0.4, ("I639", "I64X", "I694"), "328"),
    Condition("cancer", -3.4, 0.50, 0.4, 0.05, 0.50, 0.8, ("C509", "C349", "C189", "C61X", "C679"), "370"),
    Condition("metastatic_cancer", -6.5, 0.45, 0.5, 0.05, 0.90, 1.8, ("C787", "C795", "C780"), "370"),
    Condition("depression", -2.0, -0.05, 0.4, 0.20, 0.20, 0.1, ("F329", "F331"), "710"),
    Condition("liver_disease", -5.2, 0.20, 0.5, 0.30, 0.60, 0.8, ("K703", "K746", "K709"), "306"),
)

CONDITION_INDEX = {c.name: i for i, c in enumerate(CONDITIONS)}

# Acute reasons for an emergency admission that are not a flare of a long-term condition.
ACUTE_CODES = np.array(["J189", "J22X", "N390", "R074", "R104", "S720", "R55X", "L039", "K922",
                        "A419", "R060", "K359", "S525", "T783", "R51X"])
ACUTE_CODES_OLDER = np.array(["J189", "N390", "S720", "R55X", "A419", "F050", "R296", "J690", "E86X",
                              "L031", "I269"])
# Codes that the Hospital Frailty Risk Score counts, recorded for frail older people.
FRAILTY_CODES = np.array(["R54X", "R296", "Z740", "W19X", "R262", "F050", "R410", "N394", "L890", "Z993"])
# Primary reasons for planned admissions.
ELECTIVE_CODES = np.array(["H251", "M171", "M161", "K802", "K409", "N40X", "D126", "I839", "H269",
                           "K573", "N201", "M235"])
GENERAL_SPECIALTIES = np.array(["100", "101", "110", "120", "130", "300", "502", "330", "301", "191"])


def condition_codes() -> tuple[np.ndarray, np.ndarray]:
    """Return a (conditions × max codes) array of codes, padded with '', and the count per row."""
    width = max(len(c.codes) for c in CONDITIONS)
    table = np.full((len(CONDITIONS), width), "", dtype="<U4")
    for i, c in enumerate(CONDITIONS):
        table[i, : len(c.codes)] = c.codes
    return table, np.array([len(c.codes) for c in CONDITIONS])
