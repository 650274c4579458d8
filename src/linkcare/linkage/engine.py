"""The stages of `linkcare link`, as one interface that each engine implements.

The `link` command (linkcare.commands.link) runs the stages in this order, times each, and writes
the summary, the manifest, the rejects folder, the lineage and the report once for every engine:

    read -> reduce -> deterministic -> plan -> compare -> train -> decide -> write_cohort

Each stage returns a small frozen result of the engine's own type, which the command passes to the
next stage and otherwise reads only through the protocols below (counts and names, never records).
The local engine (linkcare.linkage.local) holds its results as numpy arrays and polars frames; the
Spark engine (linkcare.spark.engine) as Spark DataFrames that stay on the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import polars as pl

from linkcare.linkage.model import MatchModel
from linkcare.linkage.quality import ThresholdCurve
from linkcare.sources.checks import SourceRejects

#: Candidate pairs a pass trains its EM session on, at most (a seeded sample of them beyond it).
TRAIN_PAIRS_PER_PASS = 1_000_000


class ReadFacts(Protocol):
    """What the read stage found: rows read and rows the row checks set aside, per source."""

    @property
    def rows(self) -> Mapping[str, int]: ...

    @property
    def rejects(self) -> Mapping[str, SourceRejects]: ...


class NodeFacts(ReadFacts, Protocol):
    """The distinct identifier tuples (nodes): how many, and the read stage's facts carried on, so
    that the records themselves can be let go."""

    @property
    def n(self) -> int: ...


class ComparedFacts(Protocol):
    """The compared candidate pairs: per pass, its pairs and the pairs no earlier pass found."""

    @property
    def pass_pairs(self) -> list[dict[str, int | str]]: ...


@dataclass(frozen=True)
class CohortWritten:
    """What writing the cohort dataset gave, for the summary and the manifest."""

    people: int
    pairs_scored: int
    pairs_accepted: int
    #: per source: source, records, linked_share, deterministic, probabilistic
    shares: list[dict[str, Any]]
    #: the lineage table when person IDs were carried over from a previous run, else None
    lineage: pl.DataFrame | None
    #: what the attach step measured on its trials and did (linkcare.linkage.attach), when it ran
    attach: dict[str, Any] | None = None


@dataclass(frozen=True)
class LinkReportData:
    """What the link report is drawn from; each engine builds one after writing the cohort."""

    model: MatchModel
    pass_pairs: Sequence[Mapping[str, Any]]
    #: scored candidate pairs per match-weight bin of WEIGHT_EDGES (every pair scored, not only those kept)
    weight_histogram: np.ndarray
    #: the kept pairs as in pairs.parquet: level_<field>, match_weight, match_probability, accepted
    pairs: pl.LazyFrame
    #: records per source, stage, linked and group (see linkcare.cohort.equity); rows may be nodes or sums
    nodes: pl.DataFrame
    #: why there are no deprivation quintiles, if there are none
    deprivation_note: str
    #: records per source and reach (linkcare.linkage.quality.REACH), and per field the records missing it
    reach: pl.DataFrame
    #: expected true and false matches among the scored pairs at or above each threshold
    curve: ThresholdCurve
    #: people per records, sources and `merged` (more than one record from one gp_registrations source)
    sizes: pl.DataFrame


R = TypeVar("R", bound=ReadFacts)
N = TypeVar("N", bound=NodeFacts)
C = TypeVar("C")
P = TypeVar("P")
X = TypeVar("X", bound=ComparedFacts)
D = TypeVar("D")


class LinkEngine(Protocol[R, N, C, P, X, D]):
    """An engine that runs the stages of `link`, each result of its own frozen types.

    R: the standardised records; N: the nodes; C: the deterministic clusters; P: the candidate
    plans; X: the compared patterns; D: the decisions (people, stages, probabilities, kept pairs).
    """

    name: str

    def read(self, strict: bool) -> R:
        """Read and standardise every source; with `strict`, any row failing the row checks stops the run."""
        ...

    def reduce(self, records: R) -> N:
        """Reduce the records to distinct identifier tuples (nodes), checking the pseudonymisation keys."""
        ...

    def deterministic(self, nodes: N) -> C:
        """Join the nodes the exact rules join."""
        ...

    def plan(self, clusters: C) -> P:
        """Plan every candidate pass and count its pairs, stopping if one yields too many."""
        ...

    def compare(self, plans: P) -> X:
        """Form, de-duplicate and compare the candidate pairs; count their patterns."""
        ...

    def train(self, compared: X) -> MatchModel:
        """Fit the configured match model."""
        ...

    def decide(self, compared: X, model: MatchModel) -> D:
        """Score, accept and cluster the pairs into people, and attach what no exact rule placed."""
        ...

    def write_cohort(self, decisions: D, folder: Path, key: bytes,
                     previous: Path | None) -> tuple[CohortWritten, LinkReportData]:
        """Write person_index, persons, events and pairs into `folder`, carrying person IDs over from
        `previous` (an earlier output folder) when given; return what was written and the report's data."""
        ...

    def write_rejects(self, nodes: N, name: str, path: Path) -> None:
        """Write the rows of source `name` that the row checks rejected to `path` (Parquet)."""
        ...

    def facts(self) -> dict[str, Any] | None:
        """Return where the run ran, for the manifest (None for this machine)."""
        ...


__all__ = ["TRAIN_PAIRS_PER_PASS", "CohortWritten", "ComparedFacts", "LinkEngine", "LinkReportData", "NodeFacts",
           "ReadFacts"]
