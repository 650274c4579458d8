"""`linkcare link`: the whole pipeline, stage by stage, with time and peak memory per stage."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from linkcare.config import Config
from linkcare.errors import ConfigError
from linkcare.linkage.attach import activity_shape, attach_unplaced
from linkcare.linkage.blocking import (
    candidate_pairs,
    check_pair_counts,
    deterministic_edges,
    encode_fields,
    plan_pass,
    plan_sorted,
    source_codes,
)
from linkcare.linkage.cluster import components, one_to_one
from linkcare.linkage.compare import FieldData, compare_pairs, compare_pairs_recordlinkage, field_data, n_levels
from linkcare.linkage.model import MatchModel, PatternCodec, PatternCounts
from linkcare.linkage.prepare import Nodes, check_pseudonymisation_keys, read_records, reduce_records
from linkcare.linkage.rejects import SourceRejects
from linkcare.linkage.train import Sessions, estimate_u, fit_fellegi_sunter, fit_recordlinkage
from linkcare.log import get_logger, progress

log = get_logger("link")
TRAIN_PAIRS_PER_PASS = 1_000_000
COMPARE_WORKERS = 4  # at most this many worker processes compare pairs, never more than the cores
RECORDLINKAGE_MAX_NODES = 200_000  # above this, `indexer = "auto"` uses the polars path


@dataclass
class StageLog:
    """Time and peak memory of each stage."""

    stages: list[dict[str, float | str]] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        log.info("%s…", name)
        yield
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        seconds = time.perf_counter() - started
        self.stages.append({"stage": name, "seconds": round(seconds, 3), "peak_mib": round(peak, 1)})
        log.info("%s done in %.1f s (peak memory so far %.0f MiB)", name, seconds, peak)


@dataclass
class Linked:
    """Everything the link stage decided, ready to be written as the cohort dataset."""

    nodes: Nodes
    node_person: np.ndarray  # cluster label per node
    node_stage: np.ndarray  # 'deterministic' | 'probabilistic' | 'unlinked' per node
    node_probability: np.ndarray  # best accepted probability touching the node (1 if deterministic)
    pairs: pl.DataFrame  # scored candidate pairs kept for pairs.parquet
    model: MatchModel
    pass_pairs: list[dict[str, int | str]]
    rows: dict[str, int]
    stages: StageLog
    codes: dict[str, np.ndarray]  # per field, the rank of each node's value among its sorted values (-1 missing)
    rejects: dict[str, SourceRejects] = field(default_factory=dict)  # per source, rows the row checks set aside
    #: scored candidate pairs per match-weight bin of WEIGHT_EDGES (every pair scored, not only those kept)
    weight_histogram: np.ndarray = field(default_factory=lambda: np.zeros(WEIGHT_EDGES.size - 1, dtype=np.int64))


def _total_pairs(src: np.ndarray, link_type: str, records: np.ndarray) -> float:
    """Return the number of record pairs the link type allows."""
    n = float(records.sum())
    per = np.bincount(src, weights=records.astype(np.float64))
    within = float((per * (per - 1) / 2).sum())
    every = n * (n - 1) / 2
    return {"link_only": every - within, "dedupe_only": within, "link_and_dedupe": every}[link_type]


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


def link(config: Config, model_path: Path | None = None, strict: bool = False) -> Linked:
    """Run the linkage pipeline on a site and return its decisions; with `strict`, any row that
    fails the row checks stops the run."""
    lk = config.linkage
    stages = StageLog()
    rng = np.random.default_rng(lk.seed)
    comparisons = list(lk.comparisons)
    if not comparisons:
        raise ConfigError(f"{config.path}: [[linkage.comparisons]] is empty; add a comparison per field to link on")
    # A model to reuse is checked before any work, so a wrong file fails at once.
    reused = MatchModel.load(model_path, comparisons) if model_path is not None else None

    with stages.stage("read and standardise"):
        records = read_records(config, strict)
        rejects = records.rejects
    with stages.stage("reduce to distinct identifiers"):
        nodes = reduce_records(records)
        check_pseudonymisation_keys(nodes)
        codes = encode_fields(nodes.frame, nodes.fields)
        src = source_codes(nodes.frame)
        log.info("%s records reduce to %s distinct identifier tuples", f"{records.frame.height:,}", f"{nodes.n:,}")
    records_rows = records.rows
    del records

    with stages.stage("deterministic rules"):
        dl, dr = deterministic_edges(codes, lk.deterministic, src, lk.link_type)
        det_cluster = components(nodes.n, dl, dr)
        det_size = np.bincount(det_cluster)
        records_per_node = nodes.frame["records"].to_numpy()
        det_records = np.bincount(det_cluster, weights=records_per_node.astype(np.float64))
        known_match_pairs = float((det_records * (det_records - 1) / 2).sum())

    with stages.stage("candidate pairs"):
        plans = [plan_pass(codes, tuple(key), src, lk.link_type) for key in lk.blocking]
        plans += [plan_sorted(codes, sn.field, sn.window, sn.block, src, lk.link_type)
                  for sn in lk.sorted_neighbourhood]
        for plan in plans:
            log.info("pass %s: %s pairs before de-duplication", plan.label, f"{plan.pairs:,}")
        check_pair_counts(plans, lk.max_pairs)

    fields = [field_data(nodes.frame, c, codes.get(c.field)) for c in comparisons]
    indexer = lk.indexer
    if indexer == "auto":
        indexer = "recordlinkage" if nodes.n <= RECORDLINKAGE_MAX_NODES else "polars"
    patterns = PatternCodec([n_levels(c) for c in comparisons])
    sessions = Sessions([p.key for p in plans], [PatternCounts(patterns) for _ in plans])
    candidates = PatternCounts(patterns)
    kept_left, kept_right, kept_codes = [], [], []
    pass_pairs: list[dict[str, int | str]] = []
    new_per_pass = np.zeros(len(plans), dtype=np.int64)
    total_pairs = sum(plan.pairs for plan in plans)
    with (stages.stage("compare"), _ComparePool(fields, indexer, nodes, comparisons) as pool,
          progress("compare", total_pairs, "pairs") as advance):
        def tasks() -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
            # Random draws happen here, in order, so the result does not depend on the workers.
            for i, left, right, new in candidate_pairs(plans, codes, src, lk.link_type, lk.chunk_pairs, indexer):
                rate = min(1.0, TRAIN_PAIRS_PER_PASS / max(plans[i].pairs, 1))
                sampled = rng.random(left.size) < rate
                needed = new & (det_cluster[left] != det_cluster[right])
                new_per_pass[i] += int(new.sum())
                yield i, left, right, sampled, needed, sampled | needed

        for (i, left, right, sampled, needed, todo), code in pool.map(tasks()):
            advance(int(left.size))
            # Node pairs stand for records × records record pairs: the model is one of record pairs.
            record_pairs = (records_per_node[left] * records_per_node[right]).astype(np.float64)
            sessions.counts[i].add_codes(code[sampled[todo]], record_pairs[sampled])
            new_code = code[needed[todo]]
            candidates.add_codes(new_code, record_pairs[needed])
            # Keep only what scoring needs: the two nodes (int32) and the pattern's code.
            kept_left.append(left[needed].astype(np.int32))
            kept_right.append(right[needed].astype(np.int32))
            kept_codes.append(new_code)
        for i, plan in enumerate(plans):
            pass_pairs.append({"blocking": plan.label, "pairs": plan.pairs, "new_pairs": int(new_per_pass[i])})
        left = np.concatenate(kept_left) if kept_left else np.zeros(0, dtype=np.int32)
        right = np.concatenate(kept_right) if kept_right else np.zeros(0, dtype=np.int32)
        pattern = np.concatenate(kept_codes) if kept_codes else np.zeros(0, dtype=patterns.dtype)
        del kept_left, kept_right, kept_codes

    with stages.stage("train model"):
        if reused is not None:
            model = reused
            log.info("reusing the model in %s (no training)", model_path)
        elif lk.model == "fellegi_sunter":
            u, n_u = estimate_u(rng, fields, src, det_cluster, lk.link_type, records_per_node)
            model = fit_fellegi_sunter(comparisons, u, sessions, candidates, known_match_pairs,
                                       _total_pairs(src, lk.link_type, records_per_node))
            model.training["u_pairs"] = n_u
        else:
            sample = np.sort(rng.permutation(left.size)[:TRAIN_PAIRS_PER_PASS])
            labels = None
            if lk.model == "logistic":
                person = _node_labels(config, nodes)
                pl_, pr_ = person[left[sample]], person[right[sample]]
                labels = (pl_ == pr_) & pl.Series(pl_.tolist(), dtype=pl.String).is_not_null().to_numpy()
            model = fit_recordlinkage(lk.model, comparisons, patterns.decode(pattern[sample]), labels)

    with stages.stage("score and cluster"):
        placed = _placed_nodes(codes, lk.deterministic) if lk.deterministic else np.ones(nodes.n, dtype=bool)
        scored = _score(model, fields, patterns, left, right, pattern, placed, lk.threshold,
                        lk.pairs_min_probability)
        acc = scored.accepted
        if lk.one_to_one:
            names = sorted(nodes.frame["source"].unique().to_list())
            pair = (names.index(lk.one_to_one[0]), names.index(lk.one_to_one[1]))
            keep_acc = one_to_one(left[acc], right[acc], scored.accepted_weight, src, pair)
            rejected = acc[~keep_acc]
            acc, scored.accepted_probability = acc[keep_acc], scored.accepted_probability[keep_acc]
            scored.kept_accepted &= ~np.isin(scored.kept, rejected)
        el = np.concatenate([dl, left[acc]])
        er = np.concatenate([dr, right[acc]])
        person = components(nodes.n, el, er)
        node_probability = np.zeros(nodes.n)
        np.maximum.at(node_probability, left[acc], scored.accepted_probability)
        np.maximum.at(node_probability, right[acc], scored.accepted_probability)
        if lk.deterministic:
            among = _owner_among_candidates(codes, lk.blocking, det_cluster, det_size, src,
                                            records_per_node, placed)
            log.debug("chance an owner is among the candidates, per source: %s", np.unique(among).round(4))
            alpha = activity_shape(det_cluster[placed], src[placed], records_per_node[placed])
            log.debug("records per person, gamma shape per source: %s", alpha.round(3))
            o = scored.orphan
            al, ar, ap = attach_unplaced(person, placed, src, records_per_node, left[o], right[o],
                                         scored.orphan_bf, among, lk.threshold, alpha)
            log.info("attached %s unplaced clusters to existing people", f"{al.size:,}")
            if al.size:
                person = components(nodes.n, np.concatenate([el, al]), np.concatenate([er, ar]))
                np.maximum.at(node_probability, al, ap)
        # Records sharing every identifier (one node) or joined by an exact rule are deterministic.
        person_size = np.bincount(person)[person]
        exact = (det_size[det_cluster] > 1) | ((person_size == 1) & (records_per_node > 1))
        node_probability[exact] = 1.0
        stage = np.where(exact, "deterministic", np.where(person_size > 1, "probabilistic", "unlinked"))
        k = scored.kept
        pairs = _pairs_frame(nodes, comparisons, left[k], right[k], patterns.decode(pattern[k]),
                             scored.kept_weight, scored.kept_probability, scored.kept_accepted)
    return Linked(nodes, person, stage, node_probability, pairs, model, pass_pairs,
                  records_rows, stages, codes, rejects, scored.weight_histogram)


@dataclass
class _Scored:
    accepted: np.ndarray  # indices of pairs at or above the threshold
    accepted_weight: np.ndarray
    accepted_probability: np.ndarray
    kept: np.ndarray  # indices of pairs written to pairs.parquet
    kept_weight: np.ndarray
    kept_probability: np.ndarray
    kept_accepted: np.ndarray
    orphan: np.ndarray  # indices of pairs touching a node no exact rule could place
    orphan_bf: np.ndarray  # their log2 Bayes factors
    weight_histogram: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


SCORE_CHUNK = 4_000_000
#: Fixed match-weight bins, so histograms of runs and chunks add up; weights beyond fall in the end bins.
WEIGHT_EDGES: np.ndarray = np.arange(-30.0, 30.25, 0.5)


def _score(model: MatchModel, fields: list[FieldData], patterns: PatternCodec, left: np.ndarray,
           right: np.ndarray, pattern: np.ndarray, placed: np.ndarray, threshold: float,
           min_probability: float) -> _Scored:
    """Score every candidate pair a chunk at a time, keeping only what the later steps need."""
    table = pattern_table(model, patterns)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _Scored.__dataclass_fields__ if k != "weight_histogram"}
    histogram = np.zeros(WEIGHT_EDGES.size - 1, dtype=np.int64)
    for start in range(0, left.size, SCORE_CHUNK):
        stop = min(start + SCORE_CHUNK, left.size)
        code = pattern[start:stop]
        weight = match_weights(model, patterns, table, code, partial(_left_frequency, fields, left[start:stop]))
        probability = match_probabilities(weight)
        histogram += weight_counts(weight)
        index = np.arange(start, stop)
        accept = probability >= threshold
        keep = probability >= min_probability
        orphan = ~placed[left[start:stop]] | ~placed[right[start:stop]]
        for name, value in (("accepted", index[accept]), ("accepted_weight", weight[accept]),
                            ("accepted_probability", probability[accept]), ("kept", index[keep]),
                            ("kept_weight", weight[keep]), ("kept_probability", probability[keep]),
                            ("kept_accepted", accept[keep]), ("orphan", index[orphan]),
                            ("orphan_bf", weight[orphan] - model.intercept)):
            parts[name].append(value)
    empty = {"accepted": np.int64, "kept": np.int64, "orphan": np.int64, "kept_accepted": bool}
    return _Scored(**{k: (np.concatenate(v) if v else np.zeros(0, dtype=empty.get(k, np.float64)))
                      for k, v in parts.items()}, weight_histogram=histogram)


def weight_counts(weight: np.ndarray) -> np.ndarray:
    """Return how many of the match weights fall in each bin of WEIGHT_EDGES (the end bins take the rest)."""
    edges = (WEIGHT_EDGES[0], WEIGHT_EDGES[-1])
    return np.histogram(np.clip(weight, *edges), bins=WEIGHT_EDGES.size - 1, range=edges)[0]


def pattern_table(model: MatchModel, patterns: PatternCodec, limit: int = 1 << 22) -> np.ndarray | None:
    """Return the match weight of every possible pattern, by code, when there are at most `limit`."""
    if patterns.space <= limit:  # one weight per possible pattern, looked up by code
        return model.pattern_weights(patterns.decode(np.arange(patterns.space, dtype=np.int64)))
    return None


def match_weights(model: MatchModel, patterns: PatternCodec, table: np.ndarray | None, code: np.ndarray,
                  frequency: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
    """Return the match weight (log2 odds) of each pair from its pattern's code, with the term-frequency
    adjustments; `frequency(j, exact)` gives, for the pairs marked `exact`, the share of nodes holding
    the left node's value of field j. Both engines score every pair through this."""
    if table is not None:
        weight = table[code]
    else:
        uniq, inverse = np.unique(code, return_inverse=True)
        weight = model.pattern_weights(patterns.decode(uniq))[inverse.ravel()]
    return weight + _tf_adjustments(model, patterns, code, frequency)


def _left_frequency(fields: list[FieldData], left: np.ndarray, j: int, exact: np.ndarray) -> np.ndarray:
    return fields[j].frequency[fields[j].code[left[exact]]]


def match_probabilities(weight: np.ndarray) -> np.ndarray:
    """Return the match probability of each match weight (log2 odds)."""
    return 1.0 / (1.0 + np.exp2(-weight))


def _placed_nodes(codes: dict[str, np.ndarray], rules: tuple[tuple[str, ...], ...]) -> np.ndarray:
    """Return which nodes have every field of at least one deterministic rule."""
    placed = np.zeros(next(iter(codes.values())).size, dtype=bool)
    for rule in rules:
        ok = np.ones(placed.size, dtype=bool)
        for f in rule:
            ok &= codes[f] >= 0
        placed |= ok
    return placed


def _owner_among_candidates(codes: dict[str, np.ndarray], blocking: tuple[tuple[str, ...], ...],
                            det_cluster: np.ndarray, det_size: np.ndarray, src: np.ndarray,
                            records: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """Return per node the chance that its owner is among its candidates, measured on the people
    the exact rules found: among placed records of the same source, the share whose person has
    another record agreeing with them on the key of a blocking pass this node can take part in."""
    n = src.size
    available = np.zeros(n, dtype=np.int64)  # bit k: the node has every field of pass k
    hits = np.zeros(n, dtype=np.int64)  # bit k: another node of the person agrees on pass k's key
    for k, key in enumerate(blocking):
        present = np.ones(n, dtype=bool)
        for f in key:
            present &= codes[f] >= 0
        frame = pl.DataFrame({"c": det_cluster, **{f: codes[f] for f in key}})
        shared = frame.select(pl.len().over(["c", *key]) > 1).to_series().to_numpy()
        available |= present.astype(np.int64) << k
        hits |= (present & shared).astype(np.int64) << k
    reference = placed & (det_size[det_cluster] > 1)
    out = np.zeros(n)
    combos = pl.DataFrame({"src": src, "mask": available}).filter(pl.Series(~placed)).unique()
    for s_, mask in zip(combos["src"].to_list(), combos["mask"].to_list(), strict=True):
        ref = reference & (src == s_)
        weight = records[ref].astype(np.float64)
        share = float((((hits[ref] & mask) > 0) * weight).sum() / weight.sum()) if weight.sum() else 0.0
        out[(src == s_) & (available == mask)] = share
    return out


_POOL_FIELDS: list[FieldData] = []


def _one_thread() -> None:
    from linkcare.linkage import compare

    compare.THREADS = 1


def _compare_in_worker(args: tuple[np.ndarray, np.ndarray, PatternCodec]) -> np.ndarray:
    left, right, codec = args
    return codec.encode(compare_pairs(_POOL_FIELDS, left, right))


class _ComparePool:
    """Compares chunks of pairs in worker processes (one per core) on the polars path.

    The workers are forked after the field data is in place, so they share it without copying;
    they run only numpy and rapidfuzz. Chunks come back in order, and at most two per worker are
    in flight, so memory still follows the chunk size.
    """

    def __init__(self, fields: list[FieldData], indexer: str, nodes: Nodes, comparisons: list):
        self.fields, self.indexer, self.nodes, self.comparisons = fields, indexer, nodes, comparisons
        self.codec = PatternCodec([n_levels(c) for c in comparisons])
        self.workers = min(os.cpu_count() or 1, COMPARE_WORKERS)
        self.executor: Any = None

    def __enter__(self) -> _ComparePool:
        if self.indexer == "polars" and self.workers > 1 and "fork" in mp.get_all_start_methods():
            global _POOL_FIELDS
            _POOL_FIELDS = self.fields
            self.executor = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("fork"),
                                                initializer=_one_thread)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)

    def map(self, tasks: Iterator[tuple[Any, ...]]) -> Iterator[tuple[tuple[Any, ...], np.ndarray]]:
        if self.executor is None:
            for task in tasks:
                left, right, todo = task[1], task[2], task[5]
                levels = _compare(self.nodes, self.fields, self.comparisons, left[todo], right[todo], self.indexer)
                yield task, self.codec.encode(levels)
            return
        pending: deque[tuple[tuple[Any, ...], Any]] = deque()
        for task in tasks:
            left, right, todo = task[1], task[2], task[5]
            pending.append((task, self.executor.submit(_compare_in_worker, (left[todo], right[todo], self.codec))))
            if len(pending) >= 2 * self.workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def _compare(nodes: Nodes, fields: list[FieldData], comparisons: list, left: np.ndarray, right: np.ndarray,
             indexer: str) -> np.ndarray:
    if indexer == "recordlinkage":
        return compare_pairs_recordlinkage(nodes.frame, comparisons, left, right)
    return compare_pairs(fields, left, right)


def _tf_adjustments(model: MatchModel, patterns: PatternCodec, code: np.ndarray,
                    frequency: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
    """Return the term-frequency adjustment of each pair: agreeing on a rare value is stronger
    evidence than the field's average exact agreement, agreeing on a common one weaker."""
    out = np.zeros(code.size)
    if model.u is None:
        return out
    for j, comparison in enumerate(model.comparisons):
        if not comparison.term_frequency:
            continue
        exact = patterns.level(code, j) == 1
        if not exact.any():
            continue
        freq = np.maximum(frequency(j, exact), 1e-12)
        out[exact] = np.log2(model.u[j][1] / freq)
    return out


def _pairs_frame(nodes: Nodes, comparisons: list, left: np.ndarray, right: np.ndarray, levels: np.ndarray,
                 weight: np.ndarray, probability: np.ndarray, accepted: np.ndarray) -> pl.DataFrame:
    first = nodes.frame.select("node", "source", "first_id")
    lf = pl.DataFrame({"node": left}).join(first, on="node", how="left", maintain_order="left")
    rf = pl.DataFrame({"node": right}).join(first, on="node", how="left", maintain_order="left")
    data = {
        "source_l": lf["source"], "record_id_l": lf["first_id"],
        "source_r": rf["source"], "record_id_r": rf["first_id"],
    }
    for j, c in enumerate(comparisons):
        data[f"level_{c.field}"] = pl.Series(levels[:, j], dtype=pl.Int8)
    data["match_weight"] = pl.Series(weight)
    data["match_probability"] = pl.Series(probability)
    data["accepted"] = pl.Series(accepted)
    return pl.DataFrame(data).sort(["source_l", "record_id_l", "source_r", "record_id_r"])
