"""The resolved site config: frozen objects with absolute paths and every default filled in.

What the user wrote is checked by the other modules of this package (one per table); these are
what they build. The names and defaults are the public contract documented in docs/config.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from linkcare.config.asof import AsOf
from linkcare.config.methods import METHODS, ComparisonMethod
from linkcare.config.monitor import MonitorSettings
from linkcare.disclosure import Disclosure

CONFIG_VERSION = 1
FORMATS = ("csv", "parquet")
LINK_TYPES = ("link_only", "dedupe_only", "link_and_dedupe")
DATE_PARTS = ("year", "month", "day")
DEFAULT_THRESHOLD = 0.95
#: The linkage models: linkcare's own Fellegi-Sunter, or recordlinkage's ECM or logistic classifiers.
MODELS = ("fellegi_sunter", "ecm", "logistic")
INDEXERS = ("auto", "recordlinkage", "polars")
INVALID_ACTIONS = ("reject", "missing")
#: The risk models `linkcare train` fits, in the order it fits them.
RISK_MODELS = ("gradient_boosting", "logistic")
DEMOGRAPHIC_FIELDS = ("birth_year", "birth_month", "sex", "area")
#: Who may read what the commands write: "owner" (files 0600, folders 0700) or "group" (0640, 0750).
OUTPUT_MODES = ("owner", "group")


@dataclass(frozen=True)
class FieldSpec:
    """Where a linkage field comes from: a column, optionally parsed as a date (and cut to one part
    of it) and recoded through a map of raw values."""

    column: str
    format: str | None = None
    part: str | None = None
    values: Mapping[str, str] | None = field(default=None, hash=False)
    #: A regular expression every non-empty value must match (after trimming spaces).
    pattern: str | None = None
    #: What a value failing the row checks does to its row: "reject" it (to the rejects file), or
    #: keep the row and treat the value as "missing".
    invalid: str = "reject"


@dataclass(frozen=True)
class Validation:
    """Row checks: how many rows may be rejected before a run fails, and which birth years are real."""

    #: A source with more than this share of its rows rejected stops the run.
    max_reject_share: float = 0.01
    #: Birth years before this (or after the reference date's year) are out of range.
    min_birth_year: int = 1900
    #: An input byte-identical to the previous run's (by its manifest's checksum): "error" or "allow".
    unchanged_inputs: str = "error"
    #: A source whose latest event is more than this many days before the as-of date gets a warning.
    stale_after_days: int = 45
    #: A source whose row count changes by more than this share since the previous run gets a warning...
    max_row_change: float = 0.25
    #: ...or, with "error", stops the run.
    row_change: str = "warn"


@dataclass(frozen=True)
class Source:
    """One extract: where it is, how to read it, which columns are its key, fields and events."""

    name: str
    path: Path
    format: str
    id: str
    kind: str
    delimiter: str
    fields: Mapping[str, FieldSpec] = field(hash=False)
    #: event key -> column, glob, or tuple of columns; the kind's defaults merged with overrides.
    #: An empty tuple means the extract does not have that (optional) event attribute.
    events: Mapping[str, str | tuple[str, ...]] = field(hash=False)
    #: The attach step may place this source's records that no exact rule could place (linkcare.linkage.attach).
    attach: bool = True
    #: event date key -> the strftime format its text is read with (`events.<key>.format`); a date key
    #: not here is read in the default forms (linkcare.sources.dates).
    event_formats: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class Comparison:
    """How one field is compared: the method and its agreement levels, best first."""

    field: str
    method: str
    levels: tuple[float, ...] = ()
    term_frequency: bool = False
    #: Another compared field this one's levels are split by: whether that field agrees (is at its
    #: best level) or not, so two correlated fields do not count as independent evidence.
    given: str | None = None

    @property
    def spec(self) -> ComparisonMethod:
        """The method's entry in the registry of comparison methods."""
        return METHODS[self.method]

    @property
    def base_levels(self) -> int:
        """How many levels the method gives, the missing level included (before any split by `given`)."""
        return self.spec.n_levels(self.levels)

    @property
    def n_levels(self) -> int:
        """How many levels the comparison has, the missing level included: with `given`, each of the
        method's levels once where the given field agrees and once where it does not."""
        k = self.base_levels
        return 1 + 2 * (k - 1) if self.given else k

    @property
    def level_names(self) -> list[str]:
        """A readable name for each level, for models and reports."""
        names = self.spec.level_names(self.levels)
        if not self.given:
            return names
        return [names[0], *[f"{n}, {self.given} agrees" for n in names[1:]],
                *[f"{n}, {self.given} does not" for n in names[1:]]]

    @property
    def parts(self) -> list[tuple[int, int]]:
        """The runs of levels (start, stop) over each of which m and u are distributions: all the
        present levels; with `given`, those where the given field agrees and those where it does
        not, so that m and u (and the weights) are conditional on the given field's agreement."""
        k = self.base_levels
        return [(1, k), (k, 2 * k - 1)] if self.given else [(1, k)]

    def is_best(self, level: np.ndarray) -> np.ndarray:
        """Return which levels are the method's best (exact agreement), whatever `given` says."""
        return (level == 1) | ((level == self.base_levels) if self.given else False)


@dataclass(frozen=True)
class SortedNeighbourhood:
    """A sorted-neighbourhood pass: records whose values of `field`, sorted, lie within `window`
    distinct values of each other (centred: window // 2 on each side), within each `block`."""

    field: str
    window: int
    block: tuple[str, ...] = ()


@dataclass(frozen=True)
class Linkage:
    """How the sources are linked."""

    link_type: str = "link_and_dedupe"
    threshold: float = DEFAULT_THRESHOLD
    deterministic: tuple[tuple[str, ...], ...] = ()
    blocking: tuple[tuple[str, ...], ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    model: str = "fellegi_sunter"
    labels: Path | None = None
    max_pairs: int = 200_000_000
    one_to_one: tuple[str, ...] = ()
    indexer: str = "auto"
    seed: int = 0
    chunk_pairs: int = 2_000_000
    pairs_min_probability: float = 0.01
    sorted_neighbourhood: tuple[SortedNeighbourhood, ...] = ()


@dataclass(frozen=True)
class Engine:
    """Where `linkcare link --engine spark` runs; the local engine ignores it."""

    #: The Spark master URL; None: from the Spark environment (spark-submit, spark-defaults.conf), else local[*].
    master: str | None = None
    #: Where the iterative steps checkpoint (a path or URI every executor can reach); None: local checkpoints.
    checkpoint_dir: str | None = None
    #: Spark settings ("spark.executor.memory" = "4g"), as strings.
    spark: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class Output:
    """How the commands write their outputs (`[output]`)."""

    #: one of OUTPUT_MODES; linkcare.io.modes gives each its permission bits
    mode: str = "owner"


@dataclass(frozen=True)
class Tier:
    """A band of the risk pyramid: `share` of the scored people, counted from the top."""

    name: str
    share: float


# The NHS risk pyramid: top 0.5% case management, next 4.5% high risk, next 15% moderate, the rest low.
DEFAULT_TIERS = (Tier("case management", 0.005), Tier("high risk", 0.045), Tier("moderate risk", 0.15),
                 Tier("low risk", 0.8))


@dataclass(frozen=True)
class DeprivationLookup:
    """A public lookup of area code to deprivation decile (1 = most deprived), such as the English
    Indices of Deprivation by LSOA."""

    path: Path
    area: str
    decile: str
    format: str = "csv"
    delimiter: str = ","


@dataclass(frozen=True)
class RiskSettings:
    """How risk is modelled and published."""

    horizon_days: int = 365
    lookback_days: tuple[int, ...] = (90, 365, 730)
    #: the gp_registrations source whose registrations are the population: as configured, else the
    #: only such source (resolved when the config loads); None when there is not exactly one
    spine: str | None = None
    #: the model stratify scores with: "auto" (the one that evaluated better on the later period, by the
    #: rule in linkcare.risk.training) or a kind of RISK_MODELS, pinned
    model: str = "auto"
    seed: int = 0
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    deprivation: DeprivationLookup | None = None
    #: demographic role -> the linkage field (a column of persons.parquet) that holds it
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({f: f for f in DEMOGRAPHIC_FIELDS}),
                                      hash=False)
    #: the tiers whose people are listed on the worklists, as configured; None: every tier but the lowest
    worklist_tiers: tuple[str, ...] | None = None

    @property
    def listed_tiers(self) -> tuple[str, ...]:
        """Return the names of the tiers the worklists list: `worklist_tiers`, else every tier but the
        lowest (the only tier, when there is one)."""
        if self.worklist_tiers is not None:
            return self.worklist_tiers
        names = tuple(t.name for t in self.tiers)
        return names[:-1] or names


@dataclass(frozen=True)
class Config:
    """A whole site config, resolved: absolute paths, defaults filled in."""

    path: Path
    version: int
    reference_date: dt.date
    sources: tuple[Source, ...]
    linkage: Linkage
    risk: RiskSettings = field(default_factory=RiskSettings)
    disclosure: Disclosure = field(default_factory=Disclosure)
    validation: Validation = field(default_factory=Validation)
    engine: Engine = field(default_factory=Engine)
    output: Output = field(default_factory=Output)
    #: where reference_date came from (--as-of, the config, or "auto") and why; None: the config's date
    as_of: AsOf | None = None
    #: the `[monitor]` table; None: the config has none (monitor then follows the population alone)
    monitor: MonitorSettings | None = None

    @property
    def as_of_facts(self) -> dict[str, str]:
        """Return the as-of date, its source and the reason, for manifests and summaries."""
        if self.as_of is None:
            return {"date": self.reference_date.isoformat(), "source": "config",
                    "why": f'reference_date = "{self.reference_date.isoformat()}" in the config'}
        return self.as_of.facts()

    def source(self, name: str) -> Source:
        """Return the source of that name."""
        return next(s for s in self.sources if s.name == name)

    @property
    def fields(self) -> tuple[str, ...]:
        """Every linkage field any source maps, sorted."""
        return tuple(sorted({f for s in self.sources for f in s.fields}))


__all__ = ["CONFIG_VERSION", "DEFAULT_TIERS", "DEMOGRAPHIC_FIELDS", "FORMATS", "INDEXERS", "LINK_TYPES", "MODELS",
           "OUTPUT_MODES", "RISK_MODELS", "Comparison", "Config", "DeprivationLookup", "Engine", "FieldSpec", "Linkage",
           "Output", "RiskSettings", "SortedNeighbourhood", "Source", "Tier", "Validation"]
