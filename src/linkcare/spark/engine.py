"""`linkcare link --engine spark`: the stages of linkcare.linkage.engine on Apache Spark, each
result a frozen set of Spark DataFrames that stay on the cluster.

What reaches the driver: counts per source and per partition, the number of pairs of each pass,
the (pass, pattern, weight) table that trains the model, the (pattern, count) table of the u
sample, the model, the attach step's counts and trials (linkcare.spark.attach and
linkcare.spark.trials: per source and count of records a person holds, the people and records;
about MAX_TRIALS drawn nodes per source, with counts but no values, and their candidate people's
best log2 Bayes factors), and the people and pairs counted for the summary. Records, nodes, pairs
and edges stay in Spark.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from linkcare.cohort.nodes import NODES_NAME, rule_label
from linkcare.cohort.persons import ATTACHMENTS_NAME
from linkcare.config import Comparison, Config
from linkcare.errors import ConfigError
from linkcare.linkage.attach import AttachPrior, attach_facts
from linkcare.linkage.engine import TRAIN_PAIRS_PER_PASS, CohortWritten, LinkReportData
from linkcare.linkage.model import MatchModel, PatternCodec
from linkcare.linkage.scoring import total_pairs
from linkcare.linkage.train import Sessions, fit_fellegi_sunter, fit_recordlinkage
from linkcare.log import get_logger, peak_mib
from linkcare.sources.checks import SourceRejects
from linkcare.spark.attach import attach_unplaced
from linkcare.spark.decide import one_to_one, people, score_pairs
from linkcare.spark.frames import materialize, write_parquet_file
from linkcare.spark.nodes import SparkNodes, check_pseudonymisation_keys, deterministic_clusters, reduce_records
from linkcare.spark.output import (
    node_decisions,
    write_attachments,
    write_events,
    write_nodes,
    write_pairs,
    write_person_index,
    write_persons,
)
from linkcare.spark.pairs import Compared, Pass, compare_candidates, plan_passes
from linkcare.spark.read import SparkRecords, read_records
from linkcare.spark.report import spark_report_data
from linkcare.spark.session import jvm_memory, spark_session
from linkcare.spark.usample import estimate_u

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = get_logger("link")


@dataclass(frozen=True)
class Reduced:
    """The nodes, and the read stage's facts carried on (the rejected rows stay in Spark)."""

    nodes: SparkNodes
    rows: dict[str, int]
    rejects: dict[str, SourceRejects]
    reject_rows: dict[str, DataFrame]
    forms: DataFrame | None = None  # field, value, form (linkcare.spark.read.choose_forms)

    @property
    def n(self) -> int:
        return self.nodes.n


@dataclass(frozen=True)
class Clusters:
    """The nodes with their exact cluster (`det`, `det_size`) and, per term-frequency field (by
    position), the column counting the nodes that hold each node's value, with their total."""

    reduced: Reduced
    frame: DataFrame
    tf_totals: dict[int, tuple[str, float]]
    known_match_pairs: float


@dataclass(frozen=True)
class Plans:
    clusters: Clusters
    passes: list[Pass]


@dataclass(frozen=True)
class ComparedPairs:
    plans: Plans
    compared: Compared
    pass_pairs: list[dict[str, int | str]]


@dataclass(frozen=True)
class Decisions:
    """The scored pairs, the accepted pairs one-to-one dropped, each node's person and best probability,
    and what the attach step decided (per node of each unplaced cluster with a candidate) and measured."""

    clusters: Clusters
    scored: DataFrame
    dropped: DataFrame | None
    person: DataFrame
    best: DataFrame
    model: MatchModel
    pass_pairs: list[dict[str, int | str]]
    attach: DataFrame | None = None
    attach_prior: AttachPrior | None = None


@contextmanager
def spark_engine(config: Config) -> Iterator[SparkEngine]:
    """Yield the Spark engine on the session the config's [engine] table (or the environment) gives;
    a session linkcare started is stopped afterwards."""
    spark, started_here = spark_session(config.engine)
    try:
        yield SparkEngine(spark, config)
    finally:
        if started_here:
            spark.stop()


class SparkEngine:
    """The stages of `link` on a Spark session."""

    name = "spark"

    def __init__(self, spark: SparkSession, config: Config) -> None:
        self.spark, self.config = spark, config
        self.comparisons: list[Comparison] = list(config.linkage.comparisons)
        log.info("Spark %s, master %s, %s default partitions", spark.version, spark.sparkContext.master,
                 spark.sparkContext.defaultParallelism)

    def read(self, strict: bool) -> SparkRecords:
        return read_records(self.spark, self.config, strict)

    def reduce(self, records: SparkRecords) -> Reduced:
        nodes = reduce_records(self.spark, records.frame, records.fields, self.config.linkage.deterministic)
        check_pseudonymisation_keys(nodes)
        kept = sum(found.rows - found.n for found in records.rejects.values())
        log.info("%s records reduce to %s distinct identifier tuples", f"{kept:,}", f"{nodes.n:,}")
        return Reduced(nodes, records.rows, records.rejects, records.reject_rows, records.forms)

    def deterministic(self, reduced: Reduced) -> Clusters:
        from pyspark.sql import functions as F

        frame = deterministic_clusters(self.spark, reduced.nodes, self.config.linkage)
        per_cluster = frame.groupBy("det").agg(F.sum("records").alias("r"))
        known = per_cluster.agg(F.sum(F.expr("r * (r - 1) div 2"))).first()[0]  # type: ignore[index]
        frame, tf_totals = _with_value_counts(frame, self.comparisons)
        return Clusters(reduced, frame, tf_totals, float(known or 0))

    def plan(self, clusters: Clusters) -> Plans:
        passes = plan_passes(self.spark, clusters.frame, self.config.linkage)
        for p in passes:
            log.info("pass %s: %s pairs before de-duplication", p.plan.label, f"{p.plan.pairs:,}")
        return Plans(clusters, passes)

    def compare(self, plans: Plans) -> ComparedPairs:
        tf_columns = [column for column, _ in plans.clusters.tf_totals.values()]
        compared = compare_candidates(plans.clusters.frame, plans.passes, self.config.linkage, tf_columns)
        pass_pairs: list[dict[str, int | str]] = [
            {"blocking": p.plan.label, "pairs": p.plan.pairs, "new_pairs": compared.new_per_pass[i]}
            for i, p in enumerate(plans.passes)]
        return ComparedPairs(plans, compared, pass_pairs)

    def train(self, compared: ComparedPairs) -> MatchModel:
        from pyspark.sql import functions as F

        lk, plans = self.config.linkage, compared.plans
        frame, nodes = plans.clusters.frame, plans.clusters.reduced.nodes
        if lk.model != "fellegi_sunter":
            return _fit_classifier(self.config, compared.compared.pairs, nodes.record_node)
        # The local engine's generator has drawn one number per candidate pair of every pass by now.
        u, n_u = estimate_u(self.spark, frame, lk, skip=sum(p.plan.pairs for p in plans.passes))
        per_source = {int(r["src"]): int(r["n"]) for r in
                      frame.groupBy("src").agg(F.sum("records").alias("n")).collect()}
        records_per_source = np.array([per_source.get(i, 0) for i in range(len(nodes.sources))])
        pairs = total_pairs(np.arange(len(nodes.sources)), lk.link_type, records_per_source)
        sessions = Sessions([p.plan.key for p in plans.passes], compared.compared.sessions)
        model = fit_fellegi_sunter(self.comparisons, u, sessions, compared.compared.candidates,
                                   plans.clusters.known_match_pairs, pairs)
        model.training["u_pairs"] = n_u
        return model

    def decide(self, compared: ComparedPairs, model: MatchModel) -> Decisions:
        from pyspark.sql import functions as F

        lk, clusters = self.config.linkage, compared.plans.clusters
        frame, nodes = clusters.frame, clusters.reduced.nodes
        scored = materialize(score_pairs(compared.compared.pairs.where(F.col("needed")), model, clusters.tf_totals))
        accepted = scored.where(F.col("probability") >= lk.threshold)
        dropped = None
        if lk.one_to_one:
            dropped = materialize(one_to_one(accepted, nodes.sources, lk.one_to_one))
            accepted = accepted.join(dropped, ["l", "r"], "left_anti")
        person = people(self.spark, frame, accepted)
        touched = accepted.select(F.col("l").alias("node"), "probability").unionByName(
            accepted.select(F.col("r").alias("node"), "probability"))
        attached = None
        if lk.deterministic:
            person = materialize(person)
            allowed = np.array([self.config.source(name).attach for name in nodes.sources])
            attached = attach_unplaced(self.spark, frame, scored, person, model, lk, compared.plans.passes,
                                       nodes.fields, clusters.tf_totals, nodes.sources, allowed)
            chosen = attached.chosen
            log.info("attached %s unplaced clusters to existing people", f"{chosen.count():,}")
            # An unplaced person joins one placed person at most: the union is a relabelling.
            moves = chosen.select(F.col("orphan").alias("person"), "candidate")
            person = person.join(moves, "person", "left").select(
                "node", F.coalesce("candidate", "person").alias("person"))
            # An attachment joins its two nodes as an accepted pair does: both are linked at its posterior.
            for end in ("orphan_node", "other_node"):
                touched = touched.unionByName(chosen.select(F.col(end).alias("node"),
                                                            F.col("posterior").alias("probability")))
        person = materialize(person)
        best = touched.groupBy("node").agg(F.max("probability").alias("best"))
        return Decisions(clusters, scored, dropped, person, best, model, compared.pass_pairs,
                         None if attached is None else attached.decided, None if attached is None else attached.prior)

    def write_cohort(self, decisions: Decisions, folder: Path, key: bytes,
                     previous: Path | None) -> tuple[CohortWritten, LinkReportData]:
        from pyspark.sql import functions as F

        lk, clusters = self.config.linkage, decisions.clusters
        nodes = clusters.reduced.nodes
        has_nhs = "nhs" in nodes.fields
        carry = None
        if previous is not None:
            carry = (nodes.record_node, self.spark.read.parquet(str(Path(previous) / "person_index.parquet")))
        per_node, lineage = node_decisions(clusters.frame, decisions.person, decisions.best, key, has_nhs, carry)
        index = write_person_index(per_node, nodes.record_node, folder / "person_index.parquet", has_nhs)
        n_people = write_persons(per_node, nodes.fields, nodes.sources, folder / "persons.parquet",
                                 clusters.reduced.forms)
        if decisions.attach is not None:
            write_attachments(decisions.attach, per_node, nodes.record_node, folder / ATTACHMENTS_NAME)
        write_events(self.config, index, folder / "events.parquet")
        labels = [str(p["blocking"]) for p in decisions.pass_pairs]
        n_pairs, n_accepted = write_pairs(decisions.scored, decisions.dropped, clusters.frame, self.comparisons,
                                          lk.threshold, lk.pairs_min_probability, labels, folder / "pairs.parquet")
        write_nodes(clusters.frame, decisions.scored, nodes.fields, [rule_label(r) for r in lk.deterministic],
                    folder / NODES_NAME)
        shares = index.groupBy("source").agg(
            F.count(F.lit(1)).alias("records"), F.avg((F.col("match_stage") != "unlinked").cast("double"))
            .alias("linked_share"), F.count_if(F.col("match_stage") == "deterministic").alias("deterministic"),
            F.count_if(F.col("match_stage") == "probabilistic").alias("probabilistic")).orderBy("source").collect()
        prior = decisions.attach_prior
        written = CohortWritten(n_people, n_pairs, n_accepted, [row.asDict() for row in shares], lineage,
                                None if prior is None else attach_facts(prior, nodes.sources))
        log.info("building the report's data…")
        report = spark_report_data(self.spark, self.config, per_node, folder, decisions.model, decisions.pass_pairs,
                                   decisions.scored, clusters.tf_totals)
        return written, report

    def write_rejects(self, reduced: Reduced, name: str, path: Path) -> None:
        write_parquet_file(reduced.reject_rows[name], path, ["row"])

    def facts(self) -> dict[str, Any]:
        """Return where the run ran and the memory its JVM used, for the manifest."""
        spark = self.spark
        return {"name": "spark", "spark_version": spark.version, "master": spark.sparkContext.master,
                "default_parallelism": spark.sparkContext.defaultParallelism,
                "shuffle_partitions": int(spark.conf.get("spark.sql.shuffle.partitions") or 0),
                "driver_peak_mib": round(peak_mib(), 1),
                **jvm_memory(spark)}


def _with_value_counts(frame: DataFrame, comparisons: list[Comparison],
                       ) -> tuple[DataFrame, dict[int, tuple[str, float]]]:
    """Return the nodes with, per term-frequency field, how many nodes hold each node's value, and
    per such field (by position) that column and the number of nodes holding any value."""
    from pyspark.sql import functions as F

    totals: dict[int, tuple[str, float]] = {}
    for j, c in enumerate(comparisons):
        if not c.term_frequency:
            continue
        column = f"tfc{j}"
        counts = frame.where(F.col(c.field).isNotNull()).groupBy(c.field).agg(F.count(F.lit(1)).alias(column))
        frame = frame.join(counts, c.field, "left")
        total = frame.where(F.col(c.field).isNotNull()).count()
        totals[j] = (column, float(max(total, 1)))
    if totals:
        frame = materialize(frame)
    return frame, totals


def _fit_classifier(config: Config, compared: DataFrame, record_node: DataFrame) -> MatchModel:
    """Return recordlinkage's ECM or logistic model fitted on a seeded sample of at most
    TRAIN_PAIRS_PER_PASS scored pairs (only their patterns, and labels, reach the driver)."""
    from pyspark.sql import functions as F

    lk = config.linkage
    comparisons = list(lk.comparisons)
    needed = compared.where(F.col("needed"))
    rate = min(1.0, TRAIN_PAIRS_PER_PASS / max(needed.count(), 1))
    draw = F.xxhash64(F.lit(lk.seed), F.col("l"), F.col("r")).bitwiseAND(F.lit((1 << 53) - 1)) / float(1 << 53)
    sample = needed if rate >= 1.0 else needed.where(draw < rate)
    if lk.model == "logistic":
        sample = _with_labels(sample, record_node, lk.labels)
    else:
        sample = sample.withColumn("label", F.lit(False))
    rows = sample.select("l", "r", "code", F.coalesce("label", F.lit(False)).alias("label")).orderBy("l", "r")
    got = pl.from_arrow(rows.toArrow())
    assert isinstance(got, pl.DataFrame)
    codec = PatternCodec([c.n_levels for c in comparisons])
    levels = codec.decode(got["code"].to_numpy())
    labels = got["label"].to_numpy() if lk.model == "logistic" else None
    return fit_recordlinkage(lk.model, comparisons, levels, labels)


def _with_labels(sample: DataFrame, record_node: DataFrame, path: Path | None) -> DataFrame:
    """Return the sampled pairs with `label`: whether the labels file gives both nodes the same person."""
    from pyspark.sql import functions as F

    assert path is not None
    spark = sample.sparkSession
    try:
        truth = spark.read.parquet(str(path)).select(F.col("source").cast("string"),
                                                     F.col("record_id").cast("string"),
                                                     F.col("person").cast("string"))
        per_node = (record_node.join(truth, ["source", "record_id"], "left").groupBy("node")
                    .agg(F.min("person").alias("person")))
    except Exception:  # noqa: BLE001 - Spark could not read it: say which file and what it needs
        raise ConfigError(f"{path}: cannot read the labels (need parquet with source, record_id, person)") from None
    return (sample.join(per_node.select(F.col("node").alias("l"), F.col("person").alias("pl")), "l", "left")
            .join(per_node.select(F.col("node").alias("r"), F.col("person").alias("pr")), "r", "left")
            .withColumn("label", (F.col("pl") == F.col("pr")) & F.col("pl").isNotNull()))


__all__ = ["SparkEngine", "spark_engine"]
