"""Options of `linkcare synth`: the size of the site, its seed and the identifier error rates."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date


@dataclass(frozen=True)
class ErrorRates:
    """Shares of records (or of social-care clients) whose identifiers are wrong on purpose.

    The defaults are no kinder than what real extracts show; each is a `linkcare synth` option.
    """

    nhs_missing_hospital: float = 0.015
    """NHS token blank in APC, outpatient and A&E records."""
    nhs_missing_social_care: float = 0.12
    """NHS token blank in social-care records (tracing fails for many council records)."""
    nhs_wrong_hospital: float = 0.001
    """A valid NHS number of someone else, or of no one, in APC, outpatient and A&E records."""
    nhs_wrong_social_care: float = 0.006
    """A valid NHS number of someone else, or of no one, in social-care records."""
    birth_month_wrong: float = 0.012
    """Another birth month, in every extract."""
    birth_year_wrong: float = 0.004
    """Another birth year (off by one, or a digit slip of ten), in every extract."""
    sex_wrong: float = 0.0025
    """The other sex recorded, in every extract."""
    stale_area_social_care: float = 0.06
    """The LSOA a person lived in before moving, in social-care records."""
    area_missing_hospital: float = 0.005
    """LSOA blank in APC, outpatient and A&E records."""
    second_council_id: float = 0.025
    """Share of social-care clients known to the council under two person IDs."""
    twins: float = 0.012
    """Share of people who are one of a pair of same-sex twins (same birth month and area)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"error rate {f.name} must be in [0, 1), got {value}")


@dataclass(frozen=True)
class SynthOptions:
    """Everything that determines a synthetic site: the same options give the same bytes."""

    people: int
    seed: int
    reference_date: date
    errors: ErrorRates = field(default_factory=ErrorRates)
    key: bytes | None = None
    """Pseudonymisation key; by default one derived from the seed, so sites are reproducible."""
    history_days: int = 1095
    """Days of history before the reference date held in the extracts (three years)."""

    def __post_init__(self) -> None:
        if self.people < 100:
            raise ValueError("people must be at least 100")
        if self.history_days < 730:
            raise ValueError("history_days must be at least 730 (two years)")
