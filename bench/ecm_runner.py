"""recordlinkage's own ECM classifier on a linkcare config, as the benchmark's classical baseline.

The records are linkcare's standardised records (`standardised_records`), so recordlinkage sees the
same values as linkcare and Splink. Candidate pairs: recordlinkage's full index (every cross-source
pair for `link_only`; no blocking, as in the issue's reference figure). Comparison: ECM needs binary
features, so each linkcare comparison becomes one agree/disagree feature: string methods agree at
Jaro-Winkler >= 0.85, every other method (exact, levenshtein, date, numeric) on exact equality; a
missing value disagrees (recordlinkage's default). Then `ECMClassifier` (unsupervised EM, no labels),
and its matches are clustered by connected components into people.

Run as a child process by the benchmark, with a time limit:

    python bench/ecm_runner.py CONFIG --out DIR

writes DIR/clusters.parquet (source, record_id, cluster) and DIR/ecm.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import polars as pl
from measure import StageClock

from linkcare.config import load_config

STRING_THRESHOLD = 0.85


def connected_clusters(records: pl.DataFrame, left: np.ndarray, right: np.ndarray) -> pl.DataFrame:
    """Return source, record_id, cluster for records (row positions) joined by the pairs (left[i], right[i])."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = records.height
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return records.select("source", "record_id").with_columns(pl.Series("cluster", labels).cast(pl.String))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import recordlinkage

    from linkcare.linkage.prepare import standardised_records

    clock = StageClock(lambda stage, seconds: print(f"ecm: {stage} took {seconds:.1f} s", flush=True))
    lap, stages = clock.lap, clock.stages

    config = load_config(args.config)
    if config.linkage.link_type != "link_only" or len(config.sources) != 2:
        raise SystemExit("ecm_runner handles link_only configs with two sources")
    records = standardised_records(config)
    names = [s.name for s in config.sources]
    records = records.with_row_index("row")
    frames = []
    for name in names:
        part = records.filter(pl.col("source") == name)
        frames.append(part.to_pandas().set_index("row"))
    lap("read_standardise")

    pairs = recordlinkage.Index().full().index(frames[0], frames[1])
    lap("index")
    compare = recordlinkage.Compare()
    for c in config.linkage.comparisons:
        if c.method == "jaro_winkler":
            compare.string(c.field, c.field, method="jarowinkler", threshold=STRING_THRESHOLD, label=c.field)
        else:
            compare.exact(c.field, c.field, label=c.field)
    features = compare.compute(pairs, frames[0], frames[1])
    lap("compare")
    classifier = recordlinkage.ECMClassifier()
    matches = classifier.fit_predict(features)
    lap("ecm")
    left = matches.get_level_values(0).to_numpy()
    right = matches.get_level_values(1).to_numpy()
    clusters = connected_clusters(records, left, right)
    lap("cluster")
    args.out.mkdir(parents=True, exist_ok=True)
    clusters.write_parquet(args.out / "clusters.parquet")
    summary = {"recordlinkage_version": recordlinkage.__version__, "candidate_pairs": len(pairs),
               "matches": len(matches), "stage_seconds": stages, "string_threshold": STRING_THRESHOLD}
    (args.out / "ecm.json").write_text(json.dumps(summary, indent=2))
    print(f"ecm: {len(pairs):,} candidate pairs, {len(matches):,} matches")


if __name__ == "__main__":
    main()
