"""Features of every living registered person as of an index date, and the outcome that follows it.

Only events that start before the index date feed the features; the outcome is an emergency
admission that starts on the index date or within the `horizon - 1` days after it. So the index
day belongs to the outcome window, never to both. Every look-back window is counted in whole
days before the index date: a 90-day window holds events from index - 90 up to index - 1.

With a GP clinical extract (a source of kind gp_events), its records before the index date give the
primary-care features: its conditions and frailty deficits count whenever they were recorded before it.

The population is the spine: people with a registration in the spine source (kind
gp_registrations) that started before the index date, and no recorded death before it. Their
practice, ethnicity and pseudonymised record key come from their latest such registration.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from linkcare.cohort.dataset import Cohort
from linkcare.cohort.demographics import AGE_BANDS, ETHNIC_GROUPS, deprivation_decile
from linkcare.cohort.events import (
    ELECTIVE_ADMISSION,
    EMERGENCY_ADMISSION,
    GP_CONDITION,
    GP_CONSULTATION,
    GP_EVENT_TYPES,
    GP_FRAILTY_DEFICIT,
    GP_MEDICATION,
    long_term_support,
    reablement,
    service_kind,
)
from linkcare.config import Config, RiskSettings
from linkcare.errors import ConfigError, DataError
from linkcare.risk.comorbidity import comorbidity_scores

EMERGENCY, ELECTIVE = EMERGENCY_ADMISSION, ELECTIVE_ADMISSION
# Outpatient attendance codes (NHS Data Dictionary ATTENDED): 3 did not attend, 7 arrived late and not seen.
MISSED_OUTPATIENT = ("3", "7")
LONG_TERM = ("community", "residential", "nursing")
GROUPS = ("demographics", "hospital use", "comorbidity and frailty", "social care", "primary care")
#: The electronic Frailty Index: deficits present over the 36 it counts, in bands fit (up to 0.12), mild (up
#: to 0.24), moderate (up to 0.36) and severe (Clegg et al. 2016, Age and Ageing 45:353).
EFI_DEFICITS = 36
EFI_BANDS = (0.12, 0.24, 0.36)
#: The look-back windows of GP consultations, in days.
CONSULTATION_WINDOWS = (90, 365)


@dataclass(frozen=True)
class Feature:
    """One model input: its column, the factor it explains in words, and its group."""

    name: str
    factor: str
    group: str


@dataclass(frozen=True)
class FeatureSet:
    """Features (and the outcome, when known) of the people living at an index date."""

    index_date: dt.date
    frame: pl.DataFrame  # person_id, record_id, practice, subgroup columns, feature columns, outcome
    features: tuple[Feature, ...]
    windows: tuple[int, ...]

    def matrix(self, names: list[str] | None = None) -> np.ndarray:
        """Return the features as a float64 matrix (NaN where missing), in `names` order."""
        names = names or [f.name for f in self.features]
        return self.frame.select([pl.col(n).cast(pl.Float64) for n in names]).to_numpy()


def spine_source(config: Config) -> str:
    """Return the name of the source whose registrations are the population (resolved when the config
    loaded); raise ConfigError if there is not exactly one to choose from."""
    if config.risk.spine is not None:
        return config.risk.spine
    spines = [s.name for s in config.sources if s.kind == "gp_registrations"]
    found = f"{len(spines)} ({', '.join(spines)})" if spines else "none"
    raise ConfigError(f"{config.path}: risk.spine: risk needs one source of kind gp_registrations as the "
                      f"population, found {found}; name it with [risk] spine = \"...\"")


#: Events dated before the extract's window by nature: a GP record carries the diagnoses, deficits and repeat
#: medicines of years before the feed starts, so they say nothing about how far back its activity goes.
BACKDATED = ("registration", GP_CONDITION, GP_FRAILTY_DEFICIT, GP_MEDICATION)


def history_start(cohort: Cohort) -> dt.date | None:
    """Return the first day of recorded activity: the earliest start of any event but a registration or
    a GP record that carries older history (BACKDATED)."""
    first = (cohort.events.filter(~pl.col("event_type").is_in(BACKDATED)).select(pl.col("start_date").min())
             .collect())
    value = first.item()
    return value if isinstance(value, dt.date) else None


def usable_windows(settings: RiskSettings, earliest_index: dt.date, start: dt.date | None) -> tuple[int, ...]:
    """Return the look-back windows that the history covers at the earliest index date used.

    A window longer than the recorded history would count fewer events at that date than later
    ones, so a model fitted there would misread the longer history it scores on.
    """
    if start is None:
        return settings.lookback_days
    available = (earliest_index - start).days
    usable = tuple(w for w in settings.lookback_days if w <= available)
    if not usable:
        raise DataError(f"the events start on {start.isoformat()}, only {max(available, 0)} day(s) before the index "
                        f"date {earliest_index.isoformat()}; the shortest look-back (risk.lookback_days) is "
                        f"{settings.lookback_days[0]} days; give a later --as-of or a shorter look-back")
    return usable


def _between(start: dt.date, stop: dt.date) -> pl.Expr:
    return (pl.col("start_date") >= start) & (pl.col("start_date") < stop)


def _population(cohort: Cohort, spine: str, index: dt.date) -> pl.DataFrame:
    """Return person_id, record_id, practice and ethnicity of everyone registered and alive at `index`."""
    regs = (cohort.events.filter((pl.col("source") == spine) & (pl.col("event_type") == "registration"))
            .select("person_id", "record_id", "start_date", "end_date", "practice", "ethnicity").collect())
    if regs.height == 0:
        raise DataError(f"{cohort.folder / 'events.parquet'}: no registrations of source {spine!r}; "
                        "is the spine source in the config linked into this cohort?")
    dead = regs.filter(pl.col("end_date") < index).select("person_id").unique()
    live = regs.filter((pl.col("start_date") < index) | pl.col("start_date").is_null()).join(
        dead, on="person_id", how="anti")
    return (live.sort(["person_id", "start_date", "record_id"], descending=[False, True, False], nulls_last=True)
            .group_by("person_id", maintain_order=True).first()
            .select("person_id", "record_id", "practice", "ethnicity").sort("person_id"))


def _demographics(cohort: Cohort, settings: RiskSettings, people: pl.DataFrame, index: dt.date) -> pl.DataFrame:
    names = cohort.persons.collect_schema().names()
    roles = {role: column for role, column in settings.fields.items() if column in names}
    persons = cohort.persons.select("person_id", *roles.values()).collect()
    persons = persons.rename({column: f"_{role}" for role, column in roles.items()})
    frame = people.join(persons, on="person_id", how="left")
    year = pl.col("_birth_year").cast(pl.Float64, strict=False) if "birth_year" in roles else pl.lit(None, pl.Float64)
    month = (pl.col("_birth_month").cast(pl.Float64, strict=False).fill_null(6.5) if "birth_month" in roles
             else pl.lit(6.5))
    index_years = index.year + (index.month - 0.5) / 12.0 + (index.day - 15) / 365.25
    age = (pl.lit(index_years) - (year + (month - 0.5) / 12.0)).clip(0.0, 120.0)
    sex = pl.col("_sex").str.to_lowercase() if "sex" in roles else pl.lit(None, pl.String)
    frame = frame.with_columns(
        age.alias("age"),
        pl.when(sex.is_in(["f", "female", "2"])).then(1.0).when(sex.is_in(["m", "male", "1"])).then(0.0)
        .otherwise(None).alias("female"),
        pl.col("ethnicity").str.strip_chars().str.to_uppercase().replace_strict(
            ETHNIC_GROUPS, default="Unknown", return_dtype=pl.String).alias("ethnic_group"),
    )
    frame = frame.with_columns(deprivation_decile(settings.deprivation, roles))
    bands = pl.lit(AGE_BANDS[0][1])
    for low, label in AGE_BANDS[1:]:
        bands = pl.when(pl.col("age") >= low).then(pl.lit(label)).otherwise(bands)
    frame = frame.with_columns(
        pl.when(pl.col("age").is_null()).then(pl.lit("unknown")).otherwise(bands).alias("age_band"),
        pl.when(pl.col("female") == 1).then(pl.lit("female")).when(pl.col("female") == 0).then(pl.lit("male"))
        .otherwise(pl.lit("unknown")).alias("sex"),
        pl.when(pl.col("deprivation_decile").is_null()).then(pl.lit("unknown"))
        .otherwise(((pl.col("deprivation_decile") + 1) // 2).cast(pl.Int64).cast(pl.String))
        .alias("deprivation_quintile"),
    )
    for group in ("Asian", "Black", "Mixed", "Other", "Unknown"):  # White is the reference
        frame = frame.with_columns((pl.col("ethnic_group") == group).cast(pl.Float64).alias(f"ethnic_{group.lower()}"))
    return frame.drop([c for c in frame.columns if c.startswith("_")])


def _hospital(events: pl.LazyFrame, people: pl.LazyFrame, index: dt.date, windows: tuple[int, ...]) -> pl.DataFrame:
    longest = max(windows)
    start = index - dt.timedelta(days=longest)
    hospital = (events.filter(_between(start, index)
                              & pl.col("event_type").is_in([EMERGENCY, ELECTIVE, "ae_attendance",
                                                            "outpatient_appointment"]))
                .join(people, on="person_id", how="semi")
                .select("person_id", "event_type", "start_date", "end_date", "attended"))
    # Bed days stop at the day before the index date: a stay running past it is not yet known in full.
    last_day = index - dt.timedelta(days=1)
    stay = ((pl.min_horizontal(pl.col("end_date").fill_null(pl.col("start_date")), pl.lit(last_day))
             - pl.col("start_date")).dt.total_days().clip(0, None))
    admitted = pl.col("event_type").is_in([EMERGENCY, ELECTIVE])
    outpatient = pl.col("event_type") == "outpatient_appointment"
    missed = pl.col("attended").is_in(MISSED_OUTPATIENT).fill_null(False)
    aggs: list[pl.Expr] = []
    for w in windows:
        inside = pl.col("start_date") >= index - dt.timedelta(days=w)
        aggs += [
            (inside & (pl.col("event_type") == EMERGENCY)).sum().alias(f"emergency_admissions_{w}d"),
            (inside & (pl.col("event_type") == ELECTIVE)).sum().alias(f"elective_admissions_{w}d"),
            stay.filter(inside & admitted).sum().alias(f"bed_days_{w}d"),
            (inside & (pl.col("event_type") == "ae_attendance")).sum().alias(f"ae_attendances_{w}d"),
            (inside & outpatient & ~missed).sum().alias(f"outpatient_appointments_{w}d"),
            (inside & outpatient & missed).sum().alias(f"missed_outpatient_{w}d"),
        ]
    last = pl.col("start_date").filter(pl.col("event_type") == EMERGENCY).max()
    aggs.append((pl.lit(index) - last).dt.total_days().alias("days_since_emergency"))
    out = hospital.group_by("person_id").agg(aggs).collect()
    # No emergency admission in the longest window reads as "at least that long ago".
    return out.with_columns(pl.col("days_since_emergency").fill_null(longest).cast(pl.Float64))


def _comorbidity(events: pl.LazyFrame, people: pl.LazyFrame, index: dt.date, longest: int) -> pl.DataFrame:
    start = index - dt.timedelta(days=longest)
    admissions = pl.col("event_type").is_in([EMERGENCY, ELECTIVE, "other_admission"])
    codes = (events.filter(_between(start, index) & admissions)
             .join(people, on="person_id", how="semi")
             .select("person_id", pl.col("diagnoses").alias("code")).explode("code")
             .filter(pl.col("code").is_not_null()).unique().collect())
    return comorbidity_scores(codes)


def _social_care(events: pl.LazyFrame, people: pl.LazyFrame, index: dt.date) -> pl.DataFrame:
    year_ago = index - dt.timedelta(days=365)
    care = (events.filter(pl.col("event_type").str.starts_with("social_care_") & (pl.col("start_date") < index))
            .join(people, on="person_id", how="semi")
            .select("person_id", "event_type", "start_date", "end_date", "service_type", "service_component",
                    "planned_units").collect())
    service = pl.col("event_type") == "social_care_service"
    current = service & (pl.col("end_date").is_null() | (pl.col("end_date") >= index))
    kind = service_kind()
    long_term = long_term_support()
    reablement_service = reablement()
    recent = pl.col("start_date") >= year_ago
    aggs = [
        (current & long_term).any().cast(pl.Float64).alias("long_term_support"),
        *[(current & long_term & kind.str.contains(k)).any().cast(pl.Float64).alias(f"long_term_{k}")
          for k in LONG_TERM],
        pl.col("planned_units").filter(current).sum().alias("planned_hours_week"),
        (recent & (pl.col("event_type") == "social_care_assessment")).sum().cast(pl.Float64).alias("assessments_365d"),
        (recent & (pl.col("event_type") == "social_care_review")).sum().cast(pl.Float64).alias("reviews_365d"),
        (recent & (pl.col("event_type") == "social_care_request")).sum().cast(pl.Float64).alias("requests_365d"),
        (recent & service & reablement_service).any().cast(pl.Float64).alias("reablement_365d"),
        (current & reablement_service).any().cast(pl.Float64).alias("reablement_now"),
    ]
    return care.group_by("person_id").agg(aggs)


def efi_band(efi: pl.Expr) -> pl.Expr:
    """Return the eFI band of an eFI: 0 fit, 1 mild, 2 moderate, 3 severe (EFI_BANDS)."""
    mild, moderate, severe = EFI_BANDS
    return (pl.when(efi <= mild).then(0.0).when(efi <= moderate).then(1.0).when(efi <= severe).then(2.0)
            .otherwise(3.0))


def _primary_care(events: pl.LazyFrame, people: pl.LazyFrame, index: dt.date) -> pl.DataFrame:
    """Return the GP-record features of each person with GP events before `index`: long-term conditions
    on the register, the eFI and its band, repeat medicines current at the index date, and consultations
    in the last 90 and 365 days."""
    gp = (events.filter(pl.col("event_type").is_in(GP_EVENT_TYPES) & (pl.col("start_date") < index))
          .join(people, on="person_id", how="semi")
          .select("person_id", "event_type", "code", "start_date", "end_date", "issue_type"))
    code = pl.col("code").str.strip_chars().str.to_lowercase()
    kind = pl.col("event_type")
    # A medication is a repeat unless its issue type says acute (a feed of repeat authorisations alone may
    # carry no issue type), and current if it has not ended before the index date.
    repeat = ~pl.col("issue_type").str.to_lowercase().str.strip_chars().str.starts_with("acute").fill_null(False)
    current = pl.col("end_date").is_null() | (pl.col("end_date") >= index)
    aggs = [
        code.filter(kind == GP_CONDITION).drop_nulls().n_unique().cast(pl.Float64).alias("gp_conditions"),
        (code.filter(kind == GP_FRAILTY_DEFICIT).drop_nulls().n_unique() / EFI_DEFICITS).alias("efi"),
        code.filter((kind == GP_MEDICATION) & repeat & current).drop_nulls().n_unique().cast(pl.Float64)
        .alias("repeat_medications"),
        *[((kind == GP_CONSULTATION) & (pl.col("start_date") >= index - dt.timedelta(days=w))).sum()
          .cast(pl.Float64).alias(f"gp_consultations_{w}d") for w in CONSULTATION_WINDOWS],
    ]
    return gp.group_by("person_id").agg(aggs).with_columns(efi_band(pl.col("efi")).alias("efi_band")).collect()


def has_primary_care(config: Config) -> bool:
    """Return whether a config has a GP clinical extract (a source of kind gp_events): its features are
    then model inputs."""
    return any(s.kind == "gp_events" for s in config.sources)


def _outcome(events: pl.LazyFrame, index: dt.date, horizon: int) -> pl.DataFrame:
    stop = index + dt.timedelta(days=horizon)
    return (events.filter((pl.col("event_type") == EMERGENCY) & _between(index, stop))
            .select("person_id").unique().with_columns(pl.lit(True).alias("outcome")).collect())


def feature_list(windows: tuple[int, ...], with_deprivation: bool,
                 with_primary_care: bool = False) -> tuple[Feature, ...]:
    """Return the model inputs for the given look-back windows, in a fixed order; the GP-record features
    (group "primary care") last, and only `with_primary_care`."""
    demo = "demographics"
    out = [Feature("age", "age", demo), Feature("female", "sex", demo)]
    if with_deprivation:
        out.append(Feature("deprivation_decile", "deprivation", demo))
    out += [Feature(f"ethnic_{g}", "ethnicity", demo) for g in ("asian", "black", "mixed", "other", "unknown")]
    hosp = "hospital use"
    for w in windows:
        out += [Feature(f"emergency_admissions_{w}d", "emergency admissions", hosp),
                Feature(f"elective_admissions_{w}d", "planned admissions", hosp),
                Feature(f"bed_days_{w}d", "bed days", hosp),
                Feature(f"ae_attendances_{w}d", "A&E attendances", hosp),
                Feature(f"outpatient_appointments_{w}d", "outpatient appointments", hosp),
                Feature(f"missed_outpatient_{w}d", "missed outpatient appointments", hosp)]
    out.append(Feature("days_since_emergency", "time since last emergency admission", hosp))
    como = "comorbidity and frailty"
    out += [Feature("charlson", "Charlson comorbidity index", como),
            Feature("elixhauser", "Elixhauser comorbidity score", como),
            Feature("hfrs", "Hospital Frailty Risk Score", como)]
    care = "social care"
    out += [Feature("long_term_support", "long-term social care", care),
            *[Feature(f"long_term_{k}", "long-term social care", care) for k in LONG_TERM],
            Feature("planned_hours_week", "social care hours a week", care),
            Feature("assessments_365d", "social care assessments and reviews", care),
            Feature("reviews_365d", "social care assessments and reviews", care),
            Feature("requests_365d", "social care requests", care),
            Feature("reablement_365d", "reablement", care),
            Feature("reablement_now", "reablement", care)]
    if with_primary_care:
        primary = "primary care"
        out += [Feature("gp_conditions", "long-term conditions (GP)", primary),
                Feature("efi", "frailty (eFI)", primary),
                Feature("efi_band", "frailty (eFI)", primary),
                Feature("repeat_medications", "repeat medicines", primary),
                *[Feature(f"gp_consultations_{w}d", "GP consultations", primary) for w in CONSULTATION_WINDOWS]]
    return tuple(out)


def build_features(config: Config, cohort: Cohort, index: dt.date, windows: tuple[int, ...],
                   horizon: int | None = None) -> FeatureSet:
    """Return the features of every living registered person at `index`; with `horizon`, also
    whether each had an emergency admission in the `horizon` days from the index date on."""
    settings = config.risk
    people = _population(cohort, spine_source(config), index)
    frame = _demographics(cohort, settings, people, index)
    keys = people.lazy().select("person_id")
    parts = [_hospital(cohort.events, keys, index, windows),
             _comorbidity(cohort.events, keys, index, max(windows)),
             _social_care(cohort.events, keys, index)]
    with_primary_care = has_primary_care(config)
    if with_primary_care:
        parts.append(_primary_care(cohort.events, keys, index))
    for part in parts:
        frame = frame.join(part, on="person_id", how="left")
    with_deprivation = settings.deprivation is not None
    features = feature_list(windows, with_deprivation, with_primary_care)
    # Someone with no events of a kind has zero of them; only demographics can be truly unknown.
    fill = [f.name for f in features if f.group != "demographics" and f.name != "days_since_emergency"]
    frame = frame.with_columns([pl.col(n).cast(pl.Float64).fill_null(0.0) for n in fill]
                               + [pl.col("days_since_emergency").fill_null(float(max(windows)))])
    if horizon is not None:
        frame = frame.join(_outcome(cohort.events, index, horizon), on="person_id", how="left").with_columns(
            pl.col("outcome").fill_null(False))
    return FeatureSet(index, frame.sort("person_id"), features, windows)


__all__ = ["CONSULTATION_WINDOWS", "EFI_BANDS", "EFI_DEFICITS", "Feature", "FeatureSet", "build_features", "efi_band",
           "feature_list", "has_primary_care", "history_start", "spine_source", "usable_windows"]
