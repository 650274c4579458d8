"""Splink 5 (DuckDB backend) configured like a linkcare config, as the reference linker of the benchmark.

`plan_from_config` translates a linkcare config into the closest Splink model: the same fields, one
Splink comparison per linkcare comparison, and one `block_on` rule per blocking pass. Splink gets the
very records linkcare links, standardised by linkcare's own reader
(`linkcare.linkage.prepare.standardised_records`), so both tools see identical values.

| linkcare method | Splink comparison (levels, best first; a null on either side is Splink's null level) |
|---|---|
| `exact` | `ExactMatch` |
| `jaro_winkler` [1.0, a, b] | `JaroWinklerAtThresholds([a, b])`: exact, >= a, >= b, else |
| `levenshtein` [0, a, b] | `LevenshteinAtThresholds([a, b])`: exact, <= a, <= b, else |
| `date` [d1, d2] | custom: exact, day and month swapped, within d1 days, within d2 days, else |
| `numeric` [0, a] | custom: exact, absolute difference <= a, else |
| `exact`, `given = "g"` | custom, both columns: null, exact & g agrees, differs & g agrees, exact & g not, else |

`term_frequency = true` becomes Splink's term-frequency adjustment of the exact-match level.

A comparison with `given` (the sites' `practice` given `area`) becomes one `CustomComparison` on the
field whose levels are SQL conditions on both columns (`practice_l`, `practice_r`, `area_l`,
`area_r`), in linkcare's order: the field null on either side; the field exact and g agrees; the
field differs and g agrees; the field exact and g does not agree; else. "g agrees" is g's best level
(`g_l = g_r`; Jaro-Winkler at least the first cut-off for a `jaro_winkler` g whose first level is
below 1.0), and is false when g is null on either side, as in linkcare. linkcare fits m and u over
each half (g agrees, g does not) separately; Splink fits one m and one u distribution over the four
levels, by its own EM and random sampling. Only `exact` fields take `given` in this translation (the
only use linkcare's generated configs make of it).

Training follows Splink's documented unsupervised workflow, with no labels: the prior (probability
that two random records match) from deterministic rules and an assumed recall; u by random
sampling (`max_pairs` 1e7, seeded); m by EM, one session per blocking pass. Then `predict` at the
config's threshold (0.95 by default, as linkcare's) and connected-components clustering at it.

Run as a child process by the benchmark (so its peak memory can be measured):

    python bench/splink_runner.py CONFIG --out DIR [--prior-recall 0.8] [--seed 42]

writes DIR/clusters.parquet (source, record_id, cluster) and DIR/splink.json (stage timings, counts,
the trained model).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from measure import StageClock

from linkcare.config import Comparison, Config, load_config

DEFAULT_U_MAX_PAIRS = 1e7
DEFAULT_PRIOR_RECALL = 0.8


@dataclass(frozen=True)
class SplinkPlan:
    """Everything Splink is told: data shape, comparisons, blocking and how to train."""

    link_type: str
    threshold: float
    fields: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    blocking: tuple[tuple[str, ...], ...]
    prior_rules: tuple[tuple[str, ...], ...]  # deterministic rules for the prior
    prior_recall: float
    em_rules: tuple[tuple[str, ...], ...]
    u_max_pairs: float = DEFAULT_U_MAX_PAIRS
    em_max_pairs: float | None = None
    seed: int = 42
    predict_chunks: int = 1  # Splink 5 scores num_chunks_left x num_chunks_right slices; 1 = no chunking
    memory_limit: str | None = None  # DuckDB's memory_limit, e.g. "8GB"; it spills to temp_directory beyond it
    temp_directory: str | None = None


def plan_from_config(config: Config, *, prior_rules: tuple[tuple[str, ...], ...] | None = None,
                     prior_recall: float = DEFAULT_PRIOR_RECALL, em_max_pairs: float | None = None,
                     u_max_pairs: float = DEFAULT_U_MAX_PAIRS, seed: int = 42, predict_chunks: int = 1,
                     memory_limit: str | None = None, temp_directory: str | None = None) -> SplinkPlan:
    """Return the Splink plan for a linkcare config.

    The prior's deterministic rules are the config's own `deterministic` rules when it has any, else
    the given prior_rules (for FEBRL: given name, surname and date of birth all agreeing).
    """
    linkage = config.linkage
    fields = tuple(sorted({f for s in config.sources for f in s.fields}))
    rules = linkage.deterministic or prior_rules or ()
    if not rules:
        raise ValueError("Splink needs deterministic rules to estimate its prior: give prior_rules")
    blocking = linkage.blocking
    # A deterministic rule is a blocking pass in linkcare (records agreeing on it are linked). Give Splink
    # the same pairs: add the rule as a pass unless an existing pass already finds all its pairs.
    extra = tuple(r for r in linkage.deterministic if not any(set(b) <= set(r) for b in blocking))
    return SplinkPlan(
        link_type=linkage.link_type, threshold=linkage.threshold, fields=fields, comparisons=linkage.comparisons,
        blocking=blocking + extra, prior_rules=tuple(rules), prior_recall=prior_recall, em_rules=blocking,
        u_max_pairs=u_max_pairs, em_max_pairs=em_max_pairs, seed=seed, predict_chunks=predict_chunks,
        memory_limit=memory_limit, temp_directory=temp_directory)


def _quoted(name: str, side: str) -> str:
    return f'"{name}_{side}"'


def _agrees_sql(given: Comparison) -> str:
    """Return the SQL condition under which a given field is at its best level (null: not)."""
    left, right = _quoted(given.field, "l"), _quoted(given.field, "r")
    if given.method == "jaro_winkler" and given.levels and given.levels[0] < 1.0:
        return f"jaro_winkler_similarity({left}, {right}) >= {given.levels[0]}"
    return f"{left} = {right}"


def given_comparison(comparison: Comparison, given: Comparison) -> Any:
    """Return a Splink CustomComparison mirroring a linkcare comparison split by a `given` field."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    if comparison.method != "exact":
        raise ValueError(f"no Splink translation in this benchmark for {comparison.method!r} with given")
    name, other = comparison.field, given.field
    same = f"{_quoted(name, 'l')} = {_quoted(name, 'r')}"
    agrees = f"coalesce({_agrees_sql(given)}, false)"
    return cl.CustomComparison([
        cll.NullLevel(name),
        cll.CustomLevel(f"{same} and {agrees}", label_for_charts=f"{name} exact, {other} agrees"),
        cll.CustomLevel(f"not ({same}) and {agrees}", label_for_charts=f"{name} differs, {other} agrees"),
        cll.CustomLevel(same, label_for_charts=f"{name} exact, {other} does not agree"),
        cll.ElseLevel(),
    ], output_column_name=name)


def splink_comparison(comparison: Comparison, others: tuple[Comparison, ...] = ()) -> Any:
    """Return the Splink comparison closest to a linkcare comparison (see the module's table); `others`
    are the config's comparisons, where a `given` field's comparison is looked up."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    name, levels, tf = comparison.field, comparison.levels, comparison.term_frequency
    if comparison.given:
        given = next((c for c in others if c.field == comparison.given), None)
        if given is None:
            raise ValueError(f"comparison of {name!r} is given {comparison.given!r}, which is not compared")
        return given_comparison(comparison, given)
    if comparison.method == "exact":
        return cl.ExactMatch(name).configure(term_frequency_adjustments=tf)
    if comparison.method == "jaro_winkler":
        created = cl.JaroWinklerAtThresholds(name, [float(x) for x in levels if x < 1.0])
        return created.configure(term_frequency_adjustments=tf)
    if comparison.method == "levenshtein":
        created = cl.LevenshteinAtThresholds(name, [int(x) for x in levels if x > 0])
        return created.configure(term_frequency_adjustments=tf)
    left, right = _quoted(name, "l"), _quoted(name, "r")
    if comparison.method == "numeric":
        diff = f"abs(try_cast({left} as double) - try_cast({right} as double))"
        steps = [cll.CustomLevel(f"{diff} <= {x}", label_for_charts=f"abs difference <= {x}")
                 for x in levels if x > 0]
        return cl.CustomComparison(
            [cll.NullLevel(name), cll.ExactMatchLevel(name, term_frequency_adjustments=tf), *steps, cll.ElseLevel()],
            output_column_name=name)
    if comparison.method == "date":
        # Values are YYYY-MM-DD (linkcare's standardised dates).
        swapped = (f"substr({left}, 1, 4) = substr({right}, 1, 4) and substr({left}, 6, 2) = substr({right}, 9, 2) "
                   f"and substr({left}, 9, 2) = substr({right}, 6, 2)")
        within = [cll.AbsoluteDateDifferenceLevel(name, input_is_string=True, threshold=int(days), metric="day",
                                                  datetime_format="%Y-%m-%d") for days in levels]
        return cl.CustomComparison(
            [cll.NullLevel(name), cll.ExactMatchLevel(name, term_frequency_adjustments=tf),
             cll.CustomLevel(swapped, label_for_charts="day and month swapped"), *within, cll.ElseLevel()],
            output_column_name=name)
    raise ValueError(f"no Splink equivalent in this benchmark for method {comparison.method!r}")


@dataclass
class SplinkResult:
    """Splink's clusters and what it took to get them."""

    clusters: pl.DataFrame  # source, record_id, cluster
    stage_seconds: dict[str, float] = field(default_factory=dict)
    links: int = 0  # pairs at or above the threshold
    prior: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)


def run_splink(records: pl.DataFrame, plan: SplinkPlan, *, log_level: int = logging.WARNING) -> SplinkResult:
    """Link standardised records (source, record_id, one String column per field) with Splink; return clusters."""
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    clock = StageClock(lambda stage, seconds: logging.getLogger("bench.splink").warning(
        "stage %s took %.1f s", stage, seconds))
    lap, stages = clock.lap, clock.stages

    import duckdb

    connection = duckdb.connect(":memory:")
    if plan.memory_limit:
        connection.execute(f"SET memory_limit = '{plan.memory_limit}'")
    if plan.temp_directory:
        connection.execute(f"SET temp_directory = '{plan.temp_directory}'")
    db_api = DuckDBAPI(connection)
    columns = ["source", "record_id", *plan.fields]
    tables = [db_api.register(part.select(columns).to_arrow(), dataset_display_name=f"src_{name}")
              for (name,), part in sorted(records.partition_by("source", as_dict=True).items())]
    settings = SettingsCreator(
        link_type=plan.link_type,
        unique_id_column_name="record_id",
        source_dataset_column_name="source",
        comparisons=[splink_comparison(c, plan.comparisons) for c in plan.comparisons],
        blocking_rules_to_generate_predictions=[block_on(*rule) for rule in plan.blocking],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(tables if len(tables) > 1 else tables[0], settings, log_level=log_level)
    lap("register")

    linker.training.estimate_probability_two_random_records_match(
        [block_on(*rule) for rule in plan.prior_rules], recall=plan.prior_recall)
    lap("train_prior")
    linker.training.estimate_u_using_random_sampling(max_pairs=plan.u_max_pairs, seed=plan.seed)
    lap("train_u")
    for rule in plan.em_rules:
        linker.training.estimate_parameters_using_expectation_maximisation(
            block_on(*rule), estimate_without_term_frequencies=True, max_pairs=plan.em_max_pairs)
    lap("train_m_em")

    chunks = {"num_chunks_left": plan.predict_chunks, "num_chunks_right": plan.predict_chunks} \
        if plan.predict_chunks > 1 else {}
    predictions = linker.inference.predict(threshold_match_probability=plan.threshold, **chunks)
    links = int(predictions.as_duckdbpyrelation().aggregate("count(*)").fetchall()[0][0])
    lap("predict")
    clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=plan.threshold)
    table = clustered.as_duckdbpyrelation().select("source, record_id, cluster_id").arrow()
    clusters = pl.from_arrow(table.read_all() if hasattr(table, "read_all") else table)
    assert isinstance(clusters, pl.DataFrame)
    clusters = clusters.select(pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String),
                               pl.col("cluster_id").cast(pl.String).alias("cluster"))
    lap("cluster")
    model = linker._settings_obj.as_dict()  # the trained m, u and prior, for the record
    prior = float(linker._settings_obj._probability_two_random_records_match)
    return SplinkResult(clusters, stages, links, prior, model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="a linkcare config")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prior-rule", action="append", default=None,
                        help="comma-separated fields of a deterministic rule for the prior "
                             "(used when the config has no deterministic rules); repeatable")
    parser.add_argument("--prior-recall", type=float, default=DEFAULT_PRIOR_RECALL)
    parser.add_argument("--u-max-pairs", type=float, default=DEFAULT_U_MAX_PAIRS)
    parser.add_argument("--em-max-pairs", type=float, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--predict-chunks", type=int, default=1,
                        help="score predictions in N x N chunks (Splink 5's num_chunks_left/right)")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory_limit, e.g. 8GB (spills beyond it)")
    parser.add_argument("--verbose", action="store_true", help="log Splink's progress (INFO)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")

    from linkcare.linkage.prepare import standardised_records

    started = time.perf_counter()
    config = load_config(args.config)
    records = standardised_records(config)
    read_seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)  # DuckDB spills into it
    prior_rules = tuple(tuple(r.split(",")) for r in args.prior_rule) if args.prior_rule else None
    plan = plan_from_config(config, prior_rules=prior_rules, prior_recall=args.prior_recall,
                            em_max_pairs=args.em_max_pairs, u_max_pairs=args.u_max_pairs, seed=args.seed,
                            predict_chunks=args.predict_chunks, memory_limit=args.memory_limit,
                            temp_directory=str(args.out / "duckdb_tmp") if args.memory_limit else None)
    result = run_splink(records, plan, log_level=logging.INFO if args.verbose else logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    result.clusters.write_parquet(args.out / "clusters.parquet")
    summary = {
        "splink_version": __import__("splink").__version__,
        "duckdb_version": __import__("duckdb").__version__,
        "records": records.height,
        "stage_seconds": {"read_standardise": round(read_seconds, 3), **result.stage_seconds},
        "links": result.links,
        "prior": result.prior,
        "plan": {k: v for k, v in asdict(plan).items() if k != "comparisons"}
        | {"comparisons": [asdict(c) for c in plan.comparisons]},
        "model": result.model,
    }
    (args.out / "splink.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"splink: {records.height:,} records, {result.links:,} links, "
          f"{time.perf_counter() - started:.1f} s in this process")


if __name__ == "__main__":
    main()
