"""How well `linkcare link`'s attach step is calibrated, measured against the truth.

From a link output's `attachments.parquet` (one row per record of a cluster no exact rule placed,
with its likeliest candidate person, the posterior and whether it was attached) and
`person_index.parquet`:

- the **owner** of a person is the most common true person among that person's records in
  person_index.parquet joined to the truth (ties to the smallest true person number, as a string),
  counting only records that were not themselves attached, so an attached record never votes for
  itself;
- an attached record is **right** when its own true person is the owner of `candidate_person_id`,
  the person it was attached to;
- attachments are counted per record, in posterior bins with lower edges 0.5, 0.8, 0.9, 0.95, 0.99
  and 0.999 (each bin [lower, next lower), the last [0.999, 1]); an attachment below 0.5 (none is
  expected at a threshold of 0.95) gets a bin of its own.

The target (issue 14): in every bin with at least MIN_BIN attachments, the share right is at least
the bin's lower edge minus SLACK.

Beside it, `without_attachments` scores the same clusters with every attached record taken out into
a cluster of its own: the difference to the full scores is what the attach step's decisions did (the
rest, accepted pairs and exact rules, is in pairs.parquet and the exact stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from linkage_metrics import pairwise_scores

BIN_EDGES = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
MIN_BIN = 50
SLACK = 0.02
ATTACHMENTS = "attachments.parquet"


def _keys(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String))


def owners(index: pl.DataFrame, truth: pl.DataFrame, attached: pl.DataFrame) -> pl.DataFrame:
    """Return person_id, owner: the most common true person among each person's records that were not
    attached (ties to the smallest true person, as a string)."""
    voters = index.join(attached.select("source", "record_id"), on=["source", "record_id"], how="anti")
    votes = voters.join(truth, on=["source", "record_id"], how="inner").group_by("person_id", "person").len()
    return (votes.sort(["person_id", "len", "person"], descending=[False, True, False])
            .group_by("person_id", maintain_order=True).agg(pl.col("person").first().alias("owner")))


def _bin_of(posterior: pl.Expr) -> pl.Expr:
    expr: Any = pl.when(posterior < BIN_EDGES[0]).then(pl.lit(0.0))
    for lo, hi in zip(BIN_EDGES, (*BIN_EDGES[1:], 2.0), strict=True):
        expr = expr.when((posterior >= lo) & (posterior < hi)).then(pl.lit(lo))
    return expr.otherwise(pl.lit(None, pl.Float64))


def attach_calibration(out: Path, truth: pl.DataFrame) -> dict[str, Any] | None:
    """Return the attach calibration of a link output folder (None when it wrote no attachments.parquet):
    records considered and attached, the bins (from, to, attachments, right, share_right) and the
    pairwise scores without the attachments."""
    path = out / ATTACHMENTS
    if not path.exists():
        return None
    truth = _keys(truth).with_columns(pl.col("person").cast(pl.String))
    decisions = _keys(pl.read_parquet(path))
    index = _keys(pl.read_parquet(out / "person_index.parquet").select("source", "record_id", "person_id"))
    attached = decisions.filter(pl.col("attached"))
    owner = owners(index, truth, attached)
    judged = (attached.join(truth, on=["source", "record_id"], how="left")
              .join(owner.rename({"person_id": "candidate_person_id"}), on="candidate_person_id", how="left")
              .with_columns((pl.col("person") == pl.col("owner")).fill_null(False).alias("right"),
                            _bin_of(pl.col("posterior")).alias("bin")))
    per_bin = judged.group_by("bin").agg(pl.len().alias("attachments"), pl.col("right").sum().alias("right"))
    counts = {row["bin"]: row for row in per_bin.iter_rows(named=True)}
    lows = ((0.0,) if 0.0 in counts else ()) + BIN_EDGES
    bins = []
    for lo, hi in zip(lows, (*lows[1:], 1.0), strict=True):
        row = counts.get(lo, {"attachments": 0, "right": 0})
        n, right = int(row["attachments"]), int(row["right"])
        bins.append({"from": lo, "to": hi, "attachments": n, "right": right,
                     "share_right": round(right / n, 6) if n else None})
    clusters = index.join(attached.select("source", "record_id", pl.lit(True).alias("_att")),
                          on=["source", "record_id"], how="left")
    alone = pl.format("attached {} {}", "source", "record_id")
    clusters = clusters.select("source", "record_id", pl.when(pl.col("_att")).then(alone)
                               .otherwise(pl.col("person_id")).alias("cluster"))
    return {"records_considered": decisions.height, "attached": attached.height,
            "attached_right": int(judged["right"].sum()), "bins": bins,
            "by_source": _by_source(judged),
            "without_attachments": pairwise_scores(clusters, truth).as_dict()}


def _by_source(judged: pl.DataFrame) -> dict[str, dict[str, int]]:
    rows = judged.group_by("source").agg(pl.len().alias("attached"), pl.col("right").sum().alias("right"))
    return {r["source"]: {"attached": int(r["attached"]), "right": int(r["right"])}
            for r in rows.sort("source").iter_rows(named=True)}


def calibration_targets(label: str, calibration: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return one target per bin with at least MIN_BIN attachments: share right >= lower edge - SLACK;
    a single unmeasured target when no bin has that many."""
    name = f"attachments calibrated, {label}"
    if calibration is None:
        return [{"target": f"{name}: no attachments.parquet", "value": None, "bound": None, "met": None}]
    out = []
    for b in calibration["bins"]:
        if b["attachments"] >= MIN_BIN:
            bound = round(b["from"] - SLACK, 6)
            out.append({"target": f"{name}, posterior [{b['from']}, {b['to']}) n={b['attachments']:,}: "
                                  f"share right >= {bound}",
                        "value": b["share_right"], "bound": bound, "met": b["share_right"] >= bound})
    if not out:
        out.append({"target": f"{name}: no posterior bin holds {MIN_BIN} attachments", "value": None,
                    "bound": None, "met": None})
    return out
