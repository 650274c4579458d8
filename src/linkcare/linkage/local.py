"""The local engine: the stages of `link` (linkcare.linkage.engine) on this machine, with polars,
numpy, rapidfuzz and scipy, a chunk of pairs at a time.

One seeded generator (`[linkage] seed`) draws, in this order, each pass's training sample (a
number per candidate pair of every pass, in pass and chunk order) and then the u sample; the
Spark engine draws the same numbers, so both engines give the same model.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from linkcare.cohort.equity import (
    STAGES,
    combine_groups,
    ethnicity_of,
    own_groups,
    person_groups,
    report_deprivation,
    report_persons,
)
from linkcare.cohort.events import write_events
from linkcare.cohort.lineage import read_previous
from linkcare.cohort.nodes import NODES_NAME, candidate_counts, node_rules, node_table, smallest_members
from linkcare.cohort.persons import ATTACHMENTS_NAME, NodeDecisions, attachments, node_persons, person_index, persons
from linkcare.config import Config
from linkcare.errors import ConfigError
from linkcare.io.parquet import write_parquet
from linkcare.linkage.attach import (
    AttachPrior,
    activity_weights,
    attach_decisions,
    attach_facts,
    choose_attachments,
    fit_prior,
    log_attach_prior,
    orphan_candidates,
    orphan_rows,
    pass_masks,
    placed_nodes,
    prior_columns,
)
from linkcare.linkage.attach_check import attach_trials
from linkcare.linkage.blocking import (
    BlockPlan,
    candidate_pairs,
    check_pair_counts,
    deterministic_edges,
    encode_fields,
    plan_passes,
    source_codes,
)
from linkcare.linkage.cluster import components, one_to_one
from linkcare.linkage.compare import FieldData, field_data
from linkcare.linkage.engine import TRAIN_PAIRS_PER_PASS, CohortWritten, LinkReportData
from linkcare.linkage.model import MatchModel, PatternCodec, PatternCounts
from linkcare.linkage.prepare import Nodes, Records, check_pseudonymisation_keys, read_records, reduce_records
from linkcare.linkage.quality import (
    ThresholdCurve,
    pair_sums,
    reach_counts,
    reach_fields,
    size_counts,
    threshold_curve,
    threshold_grid,
    with_value_counts,
)
from linkcare.linkage.scoring import Scored, pairs_frame, score_pairs, total_pairs
from linkcare.linkage.train import Sessions, estimate_u, fit_fellegi_sunter, fit_recordlinkage
from linkcare.linkage.workers import ComparePool
from linkcare.log import get_logger, progress
from linkcare.sources.checks import SourceRejects

log = get_logger("link")


@dataclass(frozen=True)
class LocalNodes:
    """The nodes, their fields as dense codes, their source codes and records, and the read stage's facts."""

    nodes: Nodes
    codes: dict[str, np.ndarray]  # per field, the rank of each node's value among its sorted values (-1 missing)
    src: np.ndarray  # per node, its source's position among the sources in name order
    records: np.ndarray  # per node, the records it stands for
    rows: dict[str, int]
    rejects: dict[str, SourceRejects]

    @property
    def n(self) -> int:
        return self.nodes.n


@dataclass(frozen=True)
class LocalClusters:
    """The exact rules' edges and clusters, and the record pairs they join."""

    nodes: LocalNodes
    left: np.ndarray
    right: np.ndarray
    cluster: np.ndarray  # per node, its cluster under the exact rules
    size: np.ndarray  # per cluster, its nodes
    known_match_pairs: float
    rule: np.ndarray  # per edge, the position of its exact rule


@dataclass(frozen=True)
class LocalPlans:
    """The candidate passes: which nodes are in which block of each, and how many pairs they give."""

    clusters: LocalClusters
    plans: list[BlockPlan]


@dataclass(frozen=True)
class LocalCompared:
    """The candidate pairs left to score (node pairs and packed patterns) and the counts that train EM."""

    clusters: LocalClusters
    plans: list[BlockPlan]
    fields: list[FieldData]
    patterns: PatternCodec
    sessions: Sessions
    candidates: PatternCounts
    left: np.ndarray
    right: np.ndarray
    pattern: np.ndarray
    passes: np.ndarray  # per pair, the first candidate pass that found it
    pass_pairs: list[dict[str, int | str]]


@dataclass(frozen=True)
class LocalDecisions:
    """Each node's person, stage and probability, the kept pairs, and the weights of all scored pairs."""

    decided: NodeDecisions
    pairs: pl.DataFrame
    nodes: pl.DataFrame  # nodes.parquet (linkcare.cohort.nodes)
    weight_histogram: np.ndarray
    model: MatchModel
    pass_pairs: list[dict[str, int | str]]
    #: per unplaced cluster with candidates: its nodes, its likeliest candidate (a node of it), that
    #: candidate's posterior, the posterior of none, the candidates and whether it was attached
    attach: pl.DataFrame | None = None
    attach_prior: AttachPrior | None = None


class LocalEngine:
    """The stages of `link` on this machine; `workers` compare processes (default: one per core, at most 4)."""

    name = "local"

    def __init__(self, config: Config, workers: int | None = None) -> None:
        self.config = config
        self.workers = workers
        self.rng = np.random.default_rng(config.linkage.seed)

    def read(self, strict: bool) -> Records:
        return read_records(self.config, strict)

    def reduce(self, records: Records) -> LocalNodes:
        nodes = reduce_records(records, self.config.linkage.deterministic)
        check_pseudonymisation_keys(nodes)
        log.info("%s records reduce to %s distinct identifier tuples", f"{records.frame.height:,}", f"{nodes.n:,}")
        return LocalNodes(nodes, encode_fields(nodes.frame, nodes.fields), source_codes(nodes.frame),
                          nodes.frame["records"].to_numpy(), records.rows, records.rejects)

    def deterministic(self, nodes: LocalNodes) -> LocalClusters:
        lk = self.config.linkage
        left, right, rule = deterministic_edges(nodes.codes, lk.deterministic, nodes.src, lk.link_type)
        cluster = components(nodes.n, left, right)
        records = np.bincount(cluster, weights=nodes.records.astype(np.float64))
        return LocalClusters(nodes, left, right, cluster, np.bincount(cluster),
                             float((records * (records - 1) / 2).sum()), rule)

    def plan(self, clusters: LocalClusters) -> LocalPlans:
        lk, nodes = self.config.linkage, clusters.nodes
        plans = plan_passes(nodes.codes, nodes.src, lk)
        for plan in plans:
            log.info("pass %s: %s pairs before de-duplication", plan.label, f"{plan.pairs:,}")
        check_pair_counts(plans, lk.max_pairs)
        return LocalPlans(clusters, plans)

    def compare(self, plans: LocalPlans) -> LocalCompared:
        lk, clusters = self.config.linkage, plans.clusters
        nodes = clusters.nodes
        comparisons = list(lk.comparisons)
        fields = [field_data(nodes.nodes.frame, c, nodes.codes.get(c.field)) for c in comparisons]
        indexer = "polars" if lk.indexer == "auto" else lk.indexer
        patterns = PatternCodec([c.n_levels for c in comparisons])
        sessions = Sessions([p.key for p in plans.plans], [PatternCounts(patterns) for _ in plans.plans])
        candidates = PatternCounts(patterns)
        kept_left, kept_right, kept_codes, kept_pass = [], [], [], []
        new_per_pass = np.zeros(len(plans.plans), dtype=np.int64)
        with (ComparePool(fields, indexer, nodes.nodes.frame, comparisons, self.workers) as pool,
              progress("compare", sum(p.pairs for p in plans.plans), "pairs") as advance):
            for (i, left, right, sampled, needed, todo), code in pool.map(self._tasks(plans, indexer, new_per_pass)):
                advance(int(left.size))
                # Node pairs stand for records × records record pairs: the model is one of record pairs.
                record_pairs = (nodes.records[left] * nodes.records[right]).astype(np.float64)
                sessions.counts[i].add_codes(code[sampled[todo]], record_pairs[sampled])
                new_code = code[needed[todo]]
                candidates.add_codes(new_code, record_pairs[needed])
                # Keep only what scoring needs: the two nodes (int32) and the pattern's code.
                kept_left.append(left[needed].astype(np.int32))
                kept_right.append(right[needed].astype(np.int32))
                kept_codes.append(new_code)
                kept_pass.append(np.full(new_code.size, i, dtype=np.int8))
        pass_pairs: list[dict[str, int | str]] = [
            {"blocking": plan.label, "pairs": plan.pairs, "new_pairs": int(new_per_pass[i])}
            for i, plan in enumerate(plans.plans)]
        return LocalCompared(clusters, plans.plans, fields, patterns, sessions, candidates,
                             _joined(kept_left, np.int32), _joined(kept_right, np.int32),
                             _joined(kept_codes, patterns.dtype), _joined(kept_pass, np.int8), pass_pairs)

    def _tasks(self, plans: LocalPlans, indexer: str, new_per_pass: np.ndarray,
               ) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (pass, left, right, sampled, needed, todo) per chunk of candidate pairs; the random draws
        happen here, in order, so the result does not depend on the workers."""
        lk, clusters = self.config.linkage, plans.clusters
        nodes = clusters.nodes
        for i, left, right, new in candidate_pairs(plans.plans, nodes.codes, nodes.src, lk.link_type, lk.chunk_pairs,
                                                   indexer):
            rate = min(1.0, TRAIN_PAIRS_PER_PASS / max(plans.plans[i].pairs, 1))
            sampled = self.rng.random(left.size) < rate
            needed = new & (clusters.cluster[left] != clusters.cluster[right])
            new_per_pass[i] += int(new.sum())
            yield i, left, right, sampled, needed, sampled | needed

    def train(self, compared: LocalCompared) -> MatchModel:
        lk, clusters = self.config.linkage, compared.clusters
        nodes = clusters.nodes
        comparisons = list(lk.comparisons)
        if lk.model == "fellegi_sunter":
            u, n_u = estimate_u(self.rng, compared.fields, nodes.src, clusters.cluster, lk.link_type, nodes.records)
            model = fit_fellegi_sunter(comparisons, u, compared.sessions, compared.candidates,
                                       clusters.known_match_pairs, total_pairs(nodes.src, lk.link_type, nodes.records))
            model.training["u_pairs"] = n_u
            return model
        sample = np.sort(self.rng.permutation(compared.left.size)[:TRAIN_PAIRS_PER_PASS])
        labels = None
        if lk.model == "logistic":
            person = _node_labels(self.config, nodes.nodes)
            pl_, pr_ = person[compared.left[sample]], person[compared.right[sample]]
            labels = (pl_ == pr_) & pl.Series(pl_.tolist(), dtype=pl.String).is_not_null().to_numpy()
        return fit_recordlinkage(lk.model, comparisons, compared.patterns.decode(compared.pattern[sample]), labels)

    def decide(self, compared: LocalCompared, model: MatchModel) -> LocalDecisions:
        lk, clusters = self.config.linkage, compared.clusters
        nodes = clusters.nodes
        left, right = compared.left, compared.right
        placed = placed_nodes(nodes.codes, lk.deterministic) if lk.deterministic else np.ones(nodes.n, dtype=bool)
        scored = score_pairs(model, compared.fields, compared.patterns, left, right, compared.pattern, placed,
                             lk.threshold, lk.pairs_min_probability)
        accepted = self._one_to_one(scored, left, right, nodes) if lk.one_to_one else scored.accepted
        el = np.concatenate([clusters.left, left[accepted]])
        er = np.concatenate([clusters.right, right[accepted]])
        person = components(nodes.n, el, er)
        probability = np.zeros(nodes.n)
        np.maximum.at(probability, left[accepted], scored.accepted_probability)
        np.maximum.at(probability, right[accepted], scored.accepted_probability)
        attach, prior = None, None
        if lk.deterministic:
            person, attach, prior = self._attach(compared, scored, model, person, placed, el, er, probability)
        # Records sharing every identifier (one node) or joined by an exact rule are deterministic.
        person_size = np.bincount(person)[person]
        exact = (clusters.size[clusters.cluster] > 1) | ((person_size == 1) & (nodes.records > 1))
        probability[exact] = 1.0
        stage = np.where(exact, "deterministic", np.where(person_size > 1, "probabilistic", "unlinked"))
        k = scored.kept
        pairs = pairs_frame(nodes.nodes, list(lk.comparisons), left[k], right[k], compared.patterns.decode(
            compared.pattern[k]), scored.kept_weight, scored.kept_probability, scored.kept_accepted,
            compared.passes[k], [p.label for p in compared.plans])
        decided = NodeDecisions(nodes.nodes.frame, nodes.nodes.record_node, nodes.nodes.fields, person, stage,
                                probability, nodes.codes, nodes.nodes.forms)
        facts = node_table(nodes.nodes.frame, nodes.nodes.fields, lk.deterministic,
                           node_rules(nodes.n, clusters.left, clusters.right, clusters.rule),
                           smallest_members(clusters.cluster), candidate_counts(nodes.n, left, right))
        return LocalDecisions(decided, pairs, facts, scored.weight_histogram, model, compared.pass_pairs, attach,
                              prior)

    def _one_to_one(self, scored: Scored, left: np.ndarray, right: np.ndarray, nodes: LocalNodes) -> np.ndarray:
        """Return the accepted pairs that one_to_one keeps, updating `scored` to match."""
        names = sorted(nodes.nodes.frame["source"].unique().to_list())
        pair = (names.index(self.config.linkage.one_to_one[0]), names.index(self.config.linkage.one_to_one[1]))
        acc = scored.accepted
        keep = one_to_one(left[acc], right[acc], scored.accepted_weight, nodes.src, pair)
        scored.accepted_probability = scored.accepted_probability[keep]
        scored.kept_accepted &= ~np.isin(scored.kept, acc[~keep])
        return acc[keep]

    def _attach(self, compared: LocalCompared, scored: Scored, model: MatchModel, person: np.ndarray,
                placed: np.ndarray, el: np.ndarray, er: np.ndarray,
                probability: np.ndarray) -> tuple[np.ndarray, pl.DataFrame, AttachPrior]:
        """Return the people after attaching unplaced clusters to existing people or to none
        (linkcare.linkage.attach), what was decided per unplaced cluster, and the prior measured on
        the trials; `probability` of the attached nodes is raised to their posterior."""
        lk, nodes = self.config.linkage, compared.clusters.nodes
        names = sorted(nodes.nodes.frame["source"].unique().to_list())
        placed_cluster = np.bincount(person, weights=placed.astype(np.float64)) > 0
        anchored = placed_cluster[person]
        weights, people = activity_weights(person[anchored], nodes.src[anchored], nodes.records[anchored],
                                           len(names))
        trials = attach_trials(compared.plans, compared.fields, model, nodes.codes, nodes.src, nodes.records, person,
                               placed, lk.link_type, lk.threshold, lk.seed)
        allowed = np.array([self.config.source(name).attach for name in names])
        prior = fit_prior(trials, weights, people, allowed, lk.threshold)
        log_attach_prior(prior, names)
        o = scored.orphan
        rows = orphan_candidates(person, placed_cluster, compared.left[o], compared.right[o], scored.orphan_bf)
        masks = pass_masks({f: code >= 0 for f, code in nodes.codes.items()}, [p.key for p in compared.plans])
        rows = prior_columns(orphan_rows(rows, person, nodes.src, nodes.records, masks), prior)
        chosen = choose_attachments(rows, lk.threshold, prior.temperature)
        al, ar, ap = (chosen[c].to_numpy() for c in ("orphan_node", "other_node", "posterior"))
        log.info("attached %s unplaced clusters to existing people", f"{al.size:,}")
        decided = attach_decisions(rows, chosen, person, prior.temperature)
        if not al.size:
            return person, decided, prior
        # An attachment joins its two nodes as an accepted pair does: both are linked at its posterior.
        np.maximum.at(probability, al, ap)
        np.maximum.at(probability, ar, ap)
        return components(nodes.n, np.concatenate([el, al]), np.concatenate([er, ar])), decided, prior

    def write_cohort(self, decisions: LocalDecisions, folder: Path, key: bytes,
                     previous: Path | None) -> tuple[CohortWritten, LinkReportData]:
        config, decided = self.config, decisions.decided
        previous_index = read_previous(previous) if previous is not None else None
        per_node, lineage = node_persons(decided, key, previous_index)
        del previous_index
        index = person_index(decided, per_node)
        write_parquet(index, folder / "person_index.parquet")
        people = persons(decided, per_node)
        write_parquet(people, folder / "persons.parquet")
        n_people = people.height
        persons_for_report = report_persons(config, people, per_node)  # the report needs them after events
        del people
        if decisions.attach is not None:
            write_parquet(attachments(decisions.attach, decided.record_node, per_node), folder / ATTACHMENTS_NAME)
        del per_node
        write_events(config, index, folder / "events.parquet")
        write_parquet(decisions.pairs, folder / "pairs.parquet")
        write_parquet(decisions.nodes, folder / NODES_NAME)
        shares = index.group_by("source").agg(
            pl.len().alias("records"), (pl.col("match_stage") != "unlinked").mean().alias("linked_share"),
            (pl.col("match_stage") == "deterministic").sum().alias("deterministic"),
            (pl.col("match_stage") == "probabilistic").sum().alias("probabilistic"),
        ).sort("source")
        accepted = int(decisions.pairs["accepted"].sum()) if decisions.pairs.height else 0
        prior = decisions.attach_prior
        names = sorted(decided.frame["source"].unique().to_list())
        written = CohortWritten(n_people, int(decisions.pairs.height), accepted, shares.to_dicts(), lineage,
                                None if prior is None else attach_facts(prior, names))
        return written, self._report_data(decisions, persons_for_report, folder / "events.parquet")

    def _report_data(self, decisions: LocalDecisions, persons: pl.DataFrame, events: Path) -> LinkReportData:
        """Return the report's data; `persons` comes from `report_persons`, `events` is the written events.parquet."""
        config, decided = self.config, decisions.decided
        frame = decided.frame
        roles = {role: name for role, name in config.risk.fields.items() if name in frame.columns}
        deprivation, why = report_deprivation(config, roles)
        code = np.where(decided.stage == STAGES[0], 0, np.where(decided.stage == STAGES[1], 1, 2)).astype(np.uint8)
        own = pl.DataFrame({"key": decided.person, "source": frame["source"],
                            "records": frame["records"].cast(pl.Int64), "stage": code,
                            **{f"_{role}": frame[name] for role, name in roles.items()}})
        own = own_groups(config, own, deprivation)
        people = person_groups(config, persons.rename({"cluster": "key"}), ethnicity_of(config, events), deprivation)
        nodes = combine_groups(own, people, deprivation is not None)
        return LinkReportData(decisions.model, decisions.pass_pairs, decisions.weight_histogram,
                              decisions.pairs.lazy(), nodes, why, *self._quality(decisions))

    def _quality(self, decisions: LocalDecisions) -> tuple[pl.DataFrame, ThresholdCurve, pl.DataFrame]:
        """Return the report's reach per source, threshold curve and people per size (linkcare.linkage.quality)."""
        lk, decided = self.config.linkage, decisions.decided
        frame, tf_totals = with_value_counts(decided.frame, decisions.model.comparisons)
        reach = reach_counts(decisions.model, lk.deterministic, lk.threshold, reach_fields(self.config), frame,
                             tf_totals)
        grid = threshold_grid(lk.threshold, lk.pairs_min_probability)
        pairs = decisions.pairs
        sums = pair_sums(pairs["match_weight"].to_numpy(), pairs["match_probability"].to_numpy(), grid)
        curve = threshold_curve(sums, decisions.weight_histogram, grid, lk.pairs_min_probability)
        spines = [s.name for s in self.config.sources if s.kind == "gp_registrations"]
        sizes = size_counts(pl.DataFrame({"key": decided.person, "source": decided.frame["source"],
                                          "records": decided.frame["records"]}), spines)
        return reach, curve, sizes

    def write_rejects(self, nodes: LocalNodes, name: str, path: Path) -> None:
        write_parquet(nodes.rejects[name].frame, path)

    def facts(self) -> dict[str, Any] | None:
        return None


def _joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _node_labels(config: Config, nodes: Nodes) -> np.ndarray:
    """Return a true person label per node from the config's `labels` file (for `model = "logistic"`)."""
    path = config.linkage.labels
    assert path is not None
    try:
        labels = pl.read_parquet(path).select(pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String),
                                              pl.col("person").cast(pl.String))
    except (OSError, pl.exceptions.PolarsError):
        raise ConfigError(f"{path}: cannot read the labels (need parquet with source, record_id, person)") from None
    joined = nodes.record_node.join(labels, on=["source", "record_id"], how="left").group_by("node").agg(
        pl.col("person").drop_nulls().first())
    per_node = np.full(nodes.n, None, dtype=object)
    per_node[joined["node"].to_numpy()] = joined["person"].to_numpy()
    return per_node


__all__ = ["LocalEngine"]
