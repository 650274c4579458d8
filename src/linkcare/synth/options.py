"""Options of `linkcare synth`: the size of the site, its seed, the identifier error rates, changes
of GP practice, the hospital patients who are in no other extract, and how monthly snapshots
(`--months`) arrive."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date

from linkcare.synth.programme import Programme


@dataclass(frozen=True)
class ErrorRates:
    """Shares of records (or of social-care clients, or of people) that make a site as untidy as
    real extracts: identifiers wrong on purpose, changes of GP practice and how hospitals record
    them, and hospital patients who are in no other extract.

    The defaults are no kinder than what real extracts show; each is a `linkcare synth` option.
    Where no published figure fits a synthetic site, the default is a stated assumption.
    """

    nhs_missing_hospital: float = 0.015
    """NHS token blank in APC, outpatient and A&E records (of people who have an NHS number:
    visitors from overseas have none, so their records have no token either)."""
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
    """LSOA blank in APC, outpatient and A&E records (of people who have one: visitors from
    overseas have none)."""
    second_council_id: float = 0.025
    """Share of social-care clients known to the council under two person IDs."""
    twins: float = 0.012
    """Share of people who are one of a pair of same-sex twins (same birth month and area)."""
    practice_change_on_move: float = 0.6
    """Share of the people who move within the site during the history (and were registered before
    the move) who change GP practice, a few days or weeks after the move. An assumption: a move
    into an area served by another practice makes most people re-register, while a practice whose
    boundary still covers the new address keeps many."""
    practice_change_other: float = 0.03
    """Share of the people who do not move (and were registered before the last day) who change
    practice at some time during the history: practice closures and mergers, and people choosing
    another practice. An assumption of about 1% a year over the default three years."""
    practice_stale_hospital: float = 0.2
    """Share of APC, outpatient and A&E records made after a person's change of practice (among
    those with a practice recorded) that still carry the old practice. Hospitals refresh the
    registered practice from the NHS Spine (PDS), but not at every contact; records soon after the
    change are the likeliest to be out of date (their chance halves every 180 days after it).
    An assumption."""
    practice_missing_hospital: float = 0.01
    """Registered GP practice blank in APC, outpatient and A&E records (of people with a practice
    on the day). An assumption: GPPRAC is well completed in HES, but not always known."""
    visitors_apc: float = 0.02
    """Share of APC records that belong to people in no other extract: out-of-area patients,
    visitors and people not registered with the site's practices (issue 14's default)."""
    visitors_outpatients: float = 0.02
    """Share of outpatient records that belong to people in no other extract (issue 14's default)."""
    visitors_ae: float = 0.04
    """Share of A&E attendances that belong to people in no other extract: A&E sees more visitors
    than planned care does (issue 14's default)."""
    visitor_overseas: float = 0.1
    """Share of those people who are from overseas: no NHS number, no LSOA and no GP practice.
    An assumption: most patients from outside a site are English residents of other areas."""
    visitor_local: float = 0.1
    """Share of those people who live in the site's areas but are registered with none of its
    practices (or with no practice at all): their LSOA is one of the site's, their practice is
    blank. An assumption."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"error rate {f.name} must be in [0, 1), got {value}")
        if self.visitor_overseas + self.visitor_local > 1.0:
            raise ValueError("visitor_overseas + visitor_local must be at most 1, got "
                             f"{self.visitor_overseas + self.visitor_local}")


@dataclass(frozen=True)
class MonthlyRates:
    """How the extracts of a site arrive month by month (`linkcare synth --months`): records that
    arrive late, and records whose first version carries an error that a later month corrects.

    Each share is of the whole site's records and holds exactly (round(rate × eligible records)),
    drawn once for the site, so a snapshot is the same whichever months are written. No published
    figure fits a synthetic site; each default is a stated assumption."""

    late_arrival: float = 0.05
    """Share of event records (APC, A&E, outpatients, social care) that first appear in the
    snapshot of a later month end than their date's (1, 2 or 3 months later: 70%, 20%, 10%): a
    record coded after the month's submission, or a council's late data entry. An assumption in
    line with SUS's monthly flex and freeze, where a month's data may still change for two months."""
    birth_month_corrected: float = 0.005
    """Share of records (every extract) whose recorded birth month is right in the end but arrived
    wrong, and is corrected 1 to 3 months after the record first appears."""
    nhs_filled: float = 0.02
    """Share of APC, A&E, outpatient and social-care records whose NHS token is right in the end
    but arrived blank, and is filled 1 to 3 months after the record first appears (NHS number
    tracing catches up)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value < 0.5:
                raise ValueError(f"monthly rate {f.name} must be in [0, 0.5), got {value}")


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
    programme: Programme | None = None
    """An MDT programme with a known effect (linkcare.synth.programme); None: none."""
    gp_events: bool = True
    """Write the GP clinical extract (linkcare.synth.gp_events); it draws from its own random stream, so
    the other extracts are the same either way."""

    def __post_init__(self) -> None:
        if self.people < 100:
            raise ValueError("people must be at least 100")
        if self.history_days < 730:
            raise ValueError("history_days must be at least 730 (two years)")
        if self.programme is not None and not (
                -self.history_days < (self.programme.start - self.reference_date).days < 0):
            raise ValueError("the programme must start inside the history, before the reference date")
