"""A matched comparison group for an enrolled cohort: each enrolled person is matched, at their own
enrolment month, to a similar person who was eligible and not enrolled.

The method, and why:
- **The pool**: people at risk on the first day of the enrolment month who meet the cohort's eligibility
  rule (`eligible`, the programme's case-finding rule) and were never enrolled; by default only from
  practices with no enrolled member (`pool = "other_practices"`), so that a comparison person was never
  offered the programme and its teams cannot have changed their care.
- **The covariates**, as of the first day of the enrolment month: age, sex, deprivation decile,
  long-term conditions (Charlson conditions in two years of hospital diagnoses), emergency admissions
  in the 12 months and in the 90 days before, A&E attendances and emergency bed days in the 12 months
  before, and long-term social care support.
- **Exact on sex, long-term support, the number of emergency admissions in the 12 months before** (0
  to 6 or more) **and in the last 90 days** (0, 1, 2 or more): the first is what a high-use programme
  selects on and the strongest predictor of the next year's admissions; the second is how recently:
  a team enrols people soon after the admission that made them eligible, when their risk is at its
  peak and about to fall, so a comparison person must be at the same point of their own run of
  admissions, or the enrolled fall further without any help and the programme gets the credit.
- **Then the nearest neighbour** by Mahalanobis distance on the standardised covariates and the
  propensity score (the log-odds of enrolment from a logistic regression on the standardised
  covariates, scikit-learn, pooled over months), among those within a calliper of 0.2 standard
  deviations of the score (Austin 2011, *Pharmaceutical Statistics* 10(2)), **with replacement**: the pool
  holds few people like the highest users, and matching without replacement would leave them worse
  matched or unmatched. A comparison person used several times counts once per use, and the intervals
  are clustered by person. An enrolled person with no one in the calliper is reported, not dropped
  silently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.spatial import cKDTree
from sklearn.linear_model import LogisticRegression

from linkcare.cohort.dataset import Cohort
from linkcare.cohort.demographics import deprivation_decile
from linkcare.cohort.events import EMERGENCY_ADMISSION, long_term_support
from linkcare.config import Config
from linkcare.config.monitor import CohortRule
from linkcare.monitor.activity import AtRisk
from linkcare.monitor.cohorts import conditions_at

COVARIATES = ("age", "female", "deprivation_decile", "conditions", "emergency_admissions", "recent_admissions",
              "ae_attendances", "bed_days", "long_term_support")
#: Days before the index date in which an emergency admission counts as recent.
RECENT_DAYS = 90
CALIPER_SD = 0.2
SEED = 0
#: Prior emergency admissions are matched exactly up to this many (more counts as this many).
EXACT_ADMISSIONS = 6
#: Emergency admissions in the last RECENT_DAYS are matched exactly up to this many.
EXACT_RECENT = 2
#: How many nearest neighbours are searched for one inside the calliper.
NEIGHBOURS = 50


@dataclass(frozen=True)
class Matched:
    """The matching of one cohort: `pairs` (person_id of the enrolled, control_id, month: the first day of
    the enrolment month, enrolled: the enrolment date), `unmatched` (person_id, month), and the covariates
    of the enrolled and of the whole pool (person_id, month, treated and COVARIATES) for the balance table."""

    pairs: pl.DataFrame
    unmatched: pl.DataFrame
    covariates: pl.DataFrame


def covariates_at(config: Config, cohort: Cohort, people: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Return person_id and COVARIATES of `people` (person_id) as of `day` (events before it)."""
    keys = people.select("person_id").unique()
    roles = {r: c for r, c in config.risk.fields.items() if c in cohort.persons.collect_schema().names()}
    persons = (cohort.persons.select("person_id", *roles.values()).join(keys.lazy(), on="person_id", how="semi")
               .collect())
    persons = persons.rename({c: f"_{r}" for r, c in roles.items()})
    year = pl.col("_birth_year").cast(pl.Float64, strict=False) if "birth_year" in roles else pl.lit(None, pl.Float64)
    month = (pl.col("_birth_month").cast(pl.Float64, strict=False).fill_null(6.5) if "birth_month" in roles
             else pl.lit(6.5))
    sex = pl.col("_sex").str.to_lowercase() if "sex" in roles else pl.lit(None, pl.String)
    base = keys.join(persons, on="person_id", how="left").with_columns(
        (pl.lit(day.year + (day.month - 0.5) / 12.0) - (year + (month - 0.5) / 12.0)).clip(0.0, 120.0).alias("age"),
        pl.when(sex.is_in(["f", "female", "2"])).then(1.0).otherwise(0.0).alias("female"),
        deprivation_decile(config.risk.deprivation, roles))
    start = day - dt.timedelta(days=365)
    events = (cohort.events.join(keys.lazy(), on="person_id", how="semi")
              .filter(pl.col("start_date").is_between(start, day, closed="left"))
              .select("person_id", "event_type", "start_date", "end_date"))
    stay = (pl.min_horizontal(pl.col("end_date").fill_null(day), pl.lit(day)) - pl.col("start_date")).dt.total_days()
    emergency = pl.col("event_type") == EMERGENCY_ADMISSION
    recent = pl.col("start_date") >= day - dt.timedelta(days=RECENT_DAYS)
    hospital = events.group_by("person_id").agg(
        emergency.sum().cast(pl.Float64).alias("emergency_admissions"),
        (emergency & recent).sum().cast(pl.Float64).alias("recent_admissions"),
        (pl.col("event_type") == "ae_attendance").sum().cast(pl.Float64).alias("ae_attendances"),
        stay.filter(emergency).sum().cast(pl.Float64).alias("bed_days")).collect()
    care = (cohort.events.join(keys.lazy(), on="person_id", how="semi")
            .filter((pl.col("event_type") == "social_care_service") & long_term_support()
                    & (pl.col("start_date") < day) & (pl.col("end_date").is_null() | (pl.col("end_date") >= day)))
            .select("person_id").unique().with_columns(pl.lit(1.0).alias("long_term_support")).collect())
    out = (base.join(hospital, on="person_id", how="left")
           .join(conditions_at(cohort, keys, day), on="person_id", how="left")
           .join(care, on="person_id", how="left"))
    fill = [c for c in COVARIATES if c not in ("age", "deprivation_decile")]
    out = out.with_columns([pl.col(c).cast(pl.Float64).fill_null(0.0) for c in fill])
    # An unknown age or decile takes the middle, so a person is not dropped for a missing field.
    out = out.with_columns(pl.col("age").fill_null(pl.col("age").median()).fill_null(50.0),
                           pl.col("deprivation_decile").fill_null(5.5))
    return out.select("person_id", *COVARIATES)


def _eligible(frame: pl.DataFrame, rule: CohortRule | None) -> pl.Expr:
    if rule is None:
        return pl.lit(True)
    conditions = [pl.lit(True)]
    if rule.age_min is not None:
        conditions.append(pl.col("age").floor() >= rule.age_min)
    if rule.age_max is not None:
        conditions.append(pl.col("age").floor() <= rule.age_max)
    if rule.sex is not None:
        conditions.append(pl.col("female") == (1.0 if rule.sex == "F" else 0.0))
    if rule.emergency_admissions_min is not None:
        conditions.append(pl.col("emergency_admissions") >= rule.emergency_admissions_min)
    if rule.ltc_min is not None:
        conditions.append(pl.col("conditions") >= rule.ltc_min)
    if rule.social_care is not None:
        conditions.append(pl.col("long_term_support") > 0)
    if rule.deprivation is not None:
        conditions.append(pl.col("deprivation_decile").is_in([float(d) for d in rule.deprivation]))
    return pl.all_horizontal(conditions)


def candidates(config: Config, cohort: Cohort, risk: AtRisk, enrolled: pl.DataFrame, rule: CohortRule | None,
               pool: str, practices: pl.DataFrame) -> pl.DataFrame:
    """Return every enrolled person at their enrolment month and every pool person at each enrolment month:
    person_id, month, treated, enrolled (date; null for the pool) and COVARIATES."""
    members = enrolled.with_columns(pl.col("enrolled").dt.truncate("1mo").alias("month"))
    ever = members.select("person_id")
    in_programme = practices.join(ever, on="person_id", how="semi").select("practice").unique()
    frames = []
    for month in sorted(members["month"].unique().to_list()):
        treated = members.filter(pl.col("month") == month).select("person_id", "enrolled")
        at_risk = risk.frame.filter((pl.col("entry").is_null() | (pl.col("entry") <= month))
                                    & (pl.col("exit").is_null() | (pl.col("exit") >= month))).select("person_id")
        pool_people = at_risk.join(ever, on="person_id", how="anti")
        if pool == "other_practices":
            pool_people = pool_people.join(practices.join(in_programme, on="practice", how="semi"), on="person_id",
                                           how="anti")
        # The rule's cheap part first (admissions), then every covariate for those who pass it.
        pre = _emergency_counts(cohort, pool_people, month)
        if rule is not None and rule.emergency_admissions_min is not None:
            pre = pre.filter(pl.col("n") >= rule.emergency_admissions_min)
        people = pl.concat([treated.select("person_id"), pre.select("person_id")]).unique()
        cov = covariates_at(config, cohort, people, month)
        rows = cov.join(treated, on="person_id", how="left").with_columns(
            pl.lit(month).alias("month"), pl.col("enrolled").is_not_null().alias("treated"))
        rows = rows.filter(pl.col("treated") | _eligible(rows, rule))
        frames.append(rows)
    out = pl.concat(frames) if frames else pl.DataFrame()
    return out.select("person_id", "month", "treated", "enrolled", *COVARIATES).sort("month", "person_id")


def _emergency_counts(cohort: Cohort, people: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    start = day - dt.timedelta(days=365)
    counts = (cohort.events.filter((pl.col("event_type") == EMERGENCY_ADMISSION)
                                   & pl.col("start_date").is_between(start, day, closed="left"))
              .group_by("person_id").agg(pl.len().alias("n")).collect())
    return people.join(counts, on="person_id", how="left").with_columns(pl.col("n").fill_null(0))


def match(rows: pl.DataFrame, refine: tuple[str, ...] = ()) -> Matched:
    """Return each enrolled person's nearest pool person of the same month, sex, long-term support and
    prior emergency admissions (0 to 6 or more), by Mahalanobis distance on the standardised covariates and
    the propensity score, within the propensity calliper, with replacement (see the module docstring);
    each covariate of `refine` is matched exactly on its thirds too (cut at the enrolled's tertiles)."""
    schema = {"person_id": pl.String, "control_id": pl.String, "month": pl.Date, "enrolled": pl.Date}
    if rows.filter(~pl.col("treated")).height == 0 or rows.filter(pl.col("treated")).height == 0:
        return Matched(pl.DataFrame(schema=schema), rows.filter(pl.col("treated")).select("person_id", "month"), rows)
    x = rows.select(COVARIATES).to_numpy()
    scale = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    model = LogisticRegression(C=1e4, max_iter=2000, random_state=SEED).fit(z, rows["treated"].to_numpy())
    logit = model.decision_function(z)
    caliper = CALIPER_SD * float(np.std(logit))
    # The distance: the covariates and the score, whitened (so Euclidean distance is Mahalanobis distance).
    features = np.column_stack([z, (logit - logit.mean()) / max(float(np.std(logit)), 1e-9)])
    whiten = np.linalg.cholesky(np.linalg.inv(np.cov(features, rowvar=False) + 1e-6 * np.eye(features.shape[1])))
    points = features @ whiten
    frame = rows.with_row_index("_row").with_columns(
        pl.col("emergency_admissions").clip(0, EXACT_ADMISSIONS).cast(pl.Int32).alias("_admissions"),
        pl.col("recent_admissions").clip(0, EXACT_RECENT).cast(pl.Int32).alias("_recent"),
        (pl.col("long_term_support") > 0).alias("_care"))
    treated_rows = rows["treated"].to_numpy()
    for name in refine:
        values = rows[name].to_numpy()
        cuts = np.unique(np.quantile(values[treated_rows], [1 / 3, 2 / 3]))
        frame = frame.with_columns(pl.Series(f"_third_{name}", np.searchsorted(cuts, values, side="right")))
    pairs, unmatched = [], []
    strata = ["month", "female", "_care", "_admissions", "_recent", *[f"_third_{name}" for name in refine]]
    for _key, group in frame.group_by(strata, maintain_order=True):
        t = group.filter(pl.col("treated"))
        if t.height == 0:
            continue
        c = group.filter(~pl.col("treated")).sort("person_id")
        if c.height == 0:
            unmatched.append(t.select("person_id", "month"))
            continue
        t_rows, c_rows = t["_row"].to_numpy(), c["_row"].to_numpy()
        k = min(NEIGHBOURS, c.height)
        _, near = cKDTree(points[c_rows]).query(points[t_rows], k=k)
        near = near.reshape(t.height, k)
        gap = np.abs(logit[c_rows][near] - logit[t_rows][:, None])
        inside = gap <= caliper
        ok = inside.any(axis=1)
        pick = near[np.arange(t.height), inside.argmax(axis=1)]  # the nearest within the calliper
        chosen = t.filter(pl.Series(ok)).select("person_id", "month", "enrolled").with_columns(
            pl.Series("control_id", c["person_id"].to_numpy()[pick[ok]], dtype=pl.String))
        pairs.append(chosen)
        unmatched.append(t.filter(pl.Series(~ok)).select("person_id", "month"))
    out = (pl.concat(pairs).select(list(schema)) if pairs else pl.DataFrame(schema=schema)).sort("month", "person_id")
    missed = (pl.concat(unmatched) if unmatched else pl.DataFrame(schema={"person_id": pl.String, "month": pl.Date}))
    return Matched(out, missed.sort("month", "person_id"), rows)


#: The covariates the matching always holds exactly; the others may be refined.
EXACT = ("female", "long_term_support", "emergency_admissions", "recent_admissions")
BALANCED_SMD = 0.1
#: A refinement must keep at least this share of the people matched before it.
KEEP_MATCHED = 0.8


def match_balanced(rows: pl.DataFrame, rounds: int = 2) -> tuple[Matched, pl.DataFrame, tuple[str, ...]]:
    """Return the matching, its balance and the covariates refined: while a standardised mean difference
    after matching is BALANCED_SMD or more, the worst covariate is matched exactly on its thirds as well
    (at most `rounds` times), kept only if it lowers the largest difference and still matches at least
    KEEP_MATCHED of those matched before. Checking balance and refining the match until it holds is the
    practice of Ho, Imai, King and Stuart (2007, *Political Analysis* 15(3)) and Stuart (2010,
    *Statistical Science* 25(1))."""
    matched = match(rows)
    table = balance(matched)
    refine: tuple[str, ...] = ()
    for _ in range(rounds):
        worst = _worst(table)
        if worst is None or worst[1] < BALANCED_SMD or worst[0] in EXACT or worst[0] in refine:
            break
        trial = match(rows, (*refine, worst[0]))
        trial_table = balance(trial)
        better = _worst(trial_table)
        if better is None or better[1] >= worst[1] or trial.pairs.height < KEEP_MATCHED * matched.pairs.height:
            break
        matched, table, refine = trial, trial_table, (*refine, worst[0])
    return matched, table, refine


def _worst(table: pl.DataFrame) -> tuple[str, float] | None:
    rows = [(r["covariate"], abs(r["smd_after"])) for r in table.to_dicts()
            if r["smd_after"] is not None and np.isfinite(r["smd_after"])]
    return max(rows, key=lambda r: r[1]) if rows else None


def balance(matched: Matched) -> pl.DataFrame:
    """Return, per covariate, the means of the enrolled, of the pool and of the matched group, and the
    standardised mean differences before and after matching (difference / the pooled SD before)."""
    rows = matched.covariates
    treated = rows.filter(pl.col("treated")).join(matched.pairs.select("person_id", "month"),
                                                  on=["person_id", "month"], how="semi")
    pool = rows.filter(~pl.col("treated"))
    controls = matched.pairs.select(pl.col("control_id").alias("person_id"), "month").join(
        pool, on=["person_id", "month"], how="left")
    out = []
    for c in COVARIATES:
        t, p, m = treated[c].to_numpy(), pool[c].to_numpy(), controls[c].to_numpy()
        sd = float(np.sqrt((np.var(t) + np.var(p)) / 2)) if t.size and p.size else float("nan")
        sd = sd if sd > 0 else float("nan")
        mean_t = float(t.mean()) if t.size else float("nan")
        mean_p = float(p.mean()) if p.size else float("nan")
        mean_m = float(m.mean()) if m.size else float("nan")
        out.append({"covariate": c, "enrolled_mean": mean_t, "pool_mean": mean_p, "matched_mean": mean_m,
                    "smd_before": (mean_t - mean_p) / sd, "smd_after": (mean_t - mean_m) / sd})
    return pl.DataFrame(out)


__all__ = ["BALANCED_SMD", "CALIPER_SD", "COVARIATES", "EXACT", "Matched", "balance", "candidates", "covariates_at",
           "match", "match_balanced"]
