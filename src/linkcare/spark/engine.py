"""`linkcare link --engine spark`: the linkage pipeline of linkcare.linkage.pipeline, stage by stage,
on Apache Spark, writing the same cohort dataset into the same all-or-nothing output folder.

What reaches the driver: counts per source and per partition, the number of pairs of each pass,
the (pass, pattern, weight) table that trains the model, the (pattern, count) table of the u
sample, per source the sums behind the gamma shapes and the owner-among-candidates shares, the
model, and the people and pairs counted for the summary. Records, nodes, pairs and edges stay in
Spark.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from linkcare.config import Config, load_config
from linkcare.errors import ConfigError
from linkcare.io.atomic import atomic_dir
from linkcare.linkage.compare import n_levels
from linkcare.linkage.lineage import read_previous
from linkcare.linkage.model import MatchModel, PatternCodec
from linkcare.linkage.pipeline import TRAIN_PAIRS_PER_PASS, StageLog, _total_pairs
from linkcare.linkage.run import (
    DEFAULT_PERSON_KEY,
    LinkOptions,
    LinkSummary,
    link_inputs,
    summary_sources,
    write_lineage,
    write_link_manifest,
)
from linkcare.linkage.train import Sessions, fit_fellegi_sunter, fit_recordlinkage
from linkcare.log import get_logger
from linkcare.report.link_report import REPORT_NAME, write_link_report
from linkcare.spark.decide import attach_unplaced, one_to_one, people, score_pairs
from linkcare.spark.frames import materialize, write_parquet_file
from linkcare.spark.nodes import check_pseudonymisation_keys, deterministic_clusters, reduce_records
from linkcare.spark.output import node_decisions, write_events, write_pairs, write_person_index, write_persons
from linkcare.spark.pairs import compare_candidates, plan_passes
from linkcare.spark.read import read_records
from linkcare.spark.report import spark_report_data, weight_histogram
from linkcare.spark.session import jvm_memory, spark_session
from linkcare.spark.usample import estimate_u

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = get_logger("link")


def run_link_spark(config_path: Path, out: Path, options: LinkOptions) -> LinkSummary:
    """Link the config's sources on Spark and write the cohort dataset into `out` (the caller holds
    the output's lock)."""
    started = time.perf_counter()
    config: Config = load_config(config_path)
    comparisons = list(config.linkage.comparisons)
    if not comparisons:
        raise ConfigError(f"{config.path}: [[linkage.comparisons]] is empty; add a comparison per field to link on")
    if options.previous is not None:
        read_previous(options.previous, check_only=True)  # a wrong folder fails before any work
    reused = MatchModel.load(options.model_path, comparisons) if options.model_path is not None else None
    spark, started_here = spark_session(config.engine)
    try:
        return _run(spark, config, Path(out), options, reused, started)
    finally:
        if started_here:
            spark.stop()


def _run(spark: SparkSession, config: Config, out: Path, options: LinkOptions, reused: MatchModel | None,
         started: float) -> LinkSummary:
    from pyspark.sql import functions as F

    lk = config.linkage
    comparisons = list(lk.comparisons)
    stages = StageLog()
    log.info("Spark %s, master %s, %s default partitions", spark.version, spark.sparkContext.master,
             spark.sparkContext.defaultParallelism)
    with stages.stage("read and standardise"):
        records = read_records(spark, config, options.strict)
    with stages.stage("reduce to distinct identifiers"):
        nodes = reduce_records(spark, records.frame, records.fields, lk.deterministic)
        check_pseudonymisation_keys(nodes)
        kept = sum(found.rows - found.n for found in records.rejects.values())
        log.info("%s records reduce to %s distinct identifier tuples", f"{kept:,}", f"{nodes.n:,}")

    with stages.stage("deterministic rules"):
        frame = deterministic_clusters(spark, nodes, lk)
        per_cluster = frame.groupBy("det").agg(F.sum("records").alias("r"))
        known = per_cluster.agg(F.sum(F.expr("r * (r - 1) div 2"))).first()[0]  # type: ignore[index]
        known_match_pairs = float(known or 0)
        frame, tf_totals = _with_value_counts(frame, comparisons)

    with stages.stage("candidate pairs"):
        passes = plan_passes(spark, frame, lk)
        for p in passes:
            log.info("pass %s: %s pairs before de-duplication", p.plan.label, f"{p.plan.pairs:,}")

    tf_columns = [column for column, _ in tf_totals.values()]
    with stages.stage("compare"):
        compared = compare_candidates(frame, passes, lk, tf_columns)
        pass_pairs: list[dict[str, int | str]] = [
            {"blocking": p.plan.label, "pairs": p.plan.pairs, "new_pairs": compared.new_per_pass[i]}
            for i, p in enumerate(passes)]

    with stages.stage("train model"):
        if reused is not None:
            model = reused
            log.info("reusing the model in %s (no training)", options.model_path)
        elif lk.model == "fellegi_sunter":
            # The local engine's generator has drawn one number per candidate pair of every pass by now.
            u, n_u = estimate_u(spark, frame, lk, skip=sum(p.plan.pairs for p in passes))
            per_source = {int(r["src"]): int(r["n"]) for r in
                          frame.groupBy("src").agg(F.sum("records").alias("n")).collect()}
            records_per_source = np.array([per_source.get(i, 0) for i in range(len(nodes.sources))])
            total_pairs = _total_pairs(np.arange(len(nodes.sources)), lk.link_type, records_per_source)
            model = fit_fellegi_sunter(comparisons, u, Sessions([p.plan.key for p in passes], compared.sessions),
                                       compared.candidates, known_match_pairs, total_pairs)
            model.training["u_pairs"] = n_u
        else:
            model = _fit_classifier(config, compared.pairs, nodes.record_node)

    with stages.stage("score and cluster"):
        scored = materialize(score_pairs(compared.pairs.where(F.col("needed")), model, tf_totals))
        accepted = scored.where(F.col("probability") >= lk.threshold)
        dropped = None
        if lk.one_to_one:
            dropped = materialize(one_to_one(accepted, nodes.sources, lk.one_to_one))
            accepted = accepted.join(dropped, ["l", "r"], "left_anti")
        person = people(spark, frame, accepted)
        touched = accepted.select(F.col("l").alias("node"), "probability").unionByName(
            accepted.select(F.col("r").alias("node"), "probability"))
        if lk.deterministic:
            person = materialize(person)
            chosen = attach_unplaced(spark, frame, scored, person, model, lk)
            log.info("attached %s unplaced clusters to existing people", f"{chosen.count():,}")
            moves = chosen.select(F.col("orphan").alias("person"), "candidate")
            person = person.join(moves, "person", "left").select(
                "node", F.coalesce("candidate", "person").alias("person"))
            touched = touched.unionByName(chosen.select(F.col("orphan_node").alias("node"),
                                                        F.col("posterior").alias("probability")))
        person = materialize(person)
        best = touched.groupBy("node").agg(F.max("probability").alias("best"))

    has_nhs = "nhs" in nodes.fields
    with stages.stage("build and write the cohort"), atomic_dir(out) as tmp:
        key = options.key or DEFAULT_PERSON_KEY
        carry = None
        if options.previous is not None:
            carry = (nodes.record_node, spark.read.parquet(str(Path(options.previous) / "person_index.parquet")))
        decisions, lineage = node_decisions(frame, person, best, key, has_nhs, carry)
        lineage_counts = write_lineage(tmp, lineage)
        rejected = {name: found.n for name, found in records.rejects.items()}
        if any(rejected.values()):
            (tmp / "rejects").mkdir(mode=0o700)
            for name, n in rejected.items():
                if n:
                    write_parquet_file(records.reject_rows[name], tmp / "rejects" / f"{name}.parquet", ["row"])
        index = write_person_index(decisions, nodes.record_node, tmp / "person_index.parquet", has_nhs)
        n_people = write_persons(decisions, nodes.fields, nodes.sources, tmp / "persons.parquet")
        write_events(config, index, tmp / "events.parquet")
        n_pairs, n_accepted = write_pairs(scored, dropped, frame, comparisons, lk.threshold,
                                          lk.pairs_min_probability, tmp / "pairs.parquet")
        model.save(tmp / "model.json")
        shares = index.groupBy("source").agg(
            F.count(F.lit(1)).alias("records"), F.avg((F.col("match_stage") != "unlinked").cast("double"))
            .alias("linked_share"), F.count_if(F.col("match_stage") == "deterministic").alias("deterministic"),
            F.count_if(F.col("match_stage") == "probabilistic").alias("probabilistic")).orderBy("source").collect()
        sources = summary_sources([row.asDict() for row in shares], records.rows, rejected)
        inputs = link_inputs(config, records.rows, rejected)
        log.info("writing %s…", REPORT_NAME)
        data = spark_report_data(spark, config, decisions, tmp, model, pass_pairs, weight_histogram(scored))
        size = write_link_report(tmp / REPORT_NAME, config, data, inputs, n_people)
        log.info("wrote %s (%s bytes)", REPORT_NAME, f"{size:,}")
        manifest = write_link_manifest(tmp, config, inputs, options.previous, lineage_counts, model.trained_by,
                                       options.model_path, n_people, pass_pairs, stages.stages, _engine_facts(spark))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    log.info("Spark: %s", ", ".join(f"{k} {v}" for k, v in manifest["engine"].items()))
    return LinkSummary(out, sources, pass_pairs, stages.stages, n_people, n_pairs, n_accepted, model.trained_by,
                       time.perf_counter() - started, peak, lineage_counts)


def _engine_facts(spark: SparkSession) -> dict[str, Any]:
    """Return where the run ran and the memory its JVM used, for the manifest."""
    return {"name": "spark", "spark_version": spark.version, "master": spark.sparkContext.master,
            "default_parallelism": spark.sparkContext.defaultParallelism,
            "shuffle_partitions": int(spark.conf.get("spark.sql.shuffle.partitions") or 0),
            "driver_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            **jvm_memory(spark)}


def _with_value_counts(frame: DataFrame, comparisons: list) -> tuple[DataFrame, dict[int, tuple[str, float]]]:
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
    labels = None
    if lk.model == "logistic":
        path = lk.labels
        assert path is not None
        spark = compared.sparkSession
        try:
            truth = spark.read.parquet(str(path)).select(F.col("source").cast("string"),
                                                         F.col("record_id").cast("string"),
                                                         F.col("person").cast("string"))
            per_node = (record_node.join(truth, ["source", "record_id"], "left").groupBy("node")
                        .agg(F.min("person").alias("person")))
        except Exception:  # noqa: BLE001 - Spark could not read it: say which file and what it needs
            raise ConfigError(f"{path}: cannot read the labels (need parquet with source, record_id, person)") from None
        sample = (sample.join(per_node.select(F.col("node").alias("l"), F.col("person").alias("pl")), "l", "left")
                  .join(per_node.select(F.col("node").alias("r"), F.col("person").alias("pr")), "r", "left")
                  .withColumn("label", (F.col("pl") == F.col("pr")) & F.col("pl").isNotNull()))
    else:
        sample = sample.withColumn("label", F.lit(False))
    rows = sample.select("l", "r", "code", F.coalesce("label", F.lit(False)).alias("label")).orderBy("l", "r")
    got = pl.from_arrow(rows.toArrow())
    assert isinstance(got, pl.DataFrame)
    codec = PatternCodec([n_levels(c) for c in comparisons])
    levels = codec.decode(got["code"].to_numpy())
    if lk.model == "logistic":
        labels = got["label"].to_numpy()
    return fit_recordlinkage(lk.model, comparisons, levels, labels)


__all__ = ["run_link_spark"]
