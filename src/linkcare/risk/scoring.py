"""Scoring people with a fitted risk model: calibrated risk, tier, percentile and the top factors that
explain each score. Shared by `linkcare stratify` (at the reference date) and `linkcare train` (its
report on the later, held-out period)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from linkcare.config import Tier
from linkcare.risk.model import RiskModel

TOP_FACTORS = 3
SCORE_CHUNK = 200_000
GROUP_COLUMNS = ("age_band", "sex", "ethnic_group", "deprivation_quintile")


def assign_tiers(risk: np.ndarray, tiers: tuple[Tier, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Return (percentile, tier index) per person: people ranked by descending risk (ties in input
    order), the first `share` of them in the first tier and so on. The percentile is the share of
    people ranked below, from 0 to 100 (99.5 and above is the top 0.5%)."""
    n = risk.size
    order = np.argsort(-risk, kind="stable")
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    cuts = np.round(np.cumsum([t.share for t in tiers]) * n).astype(np.int64)
    cuts[-1] = n
    tier = np.searchsorted(cuts, position, side="right")
    percentile = 100.0 * (n - 1 - position) / max(n, 1)
    return percentile, tier


def score(model: RiskModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (risk, top factor indices, their contributions) per row, a chunk at a time.

    Factors are ranked by how much they raise the person's risk (largest contribution first).
    """
    n = x.shape[0]
    k = min(TOP_FACTORS, len(model.factors))
    risk = np.empty(n)
    top = np.empty((n, k), dtype=np.int64)
    top_value = np.empty((n, k))
    for lo in range(0, n, SCORE_CHUNK):
        hi = min(lo + SCORE_CHUNK, n)
        base, parts = model.explain(x[lo:hi])
        risk[lo:hi] = 1.0 / (1.0 + np.exp(-(base + parts.sum(axis=1))))
        order = np.argsort(-parts, axis=1, kind="stable")[:, :k]
        top[lo:hi] = order
        top_value[lo:hi] = np.take_along_axis(parts, order, axis=1)
    return risk, top, top_value


def score_table(model: RiskModel, frame: pl.DataFrame, x: np.ndarray, tiers: tuple[Tier, ...]) -> pl.DataFrame:
    """Return one row per person of a feature frame (x is its model matrix): person_id, record_id, practice,
    risk, percentile, tier, tier_rank, factor_1..k with contribution_1..k and the subgroup columns, highest
    risk first (ties by person_id)."""
    risk, top, top_value = score(model, x)
    percentile, tier = assign_tiers(risk, tiers)
    names = np.array(model.factors, dtype=object)
    tier_names = np.array([t.name for t in tiers], dtype=object)
    columns: dict[str, Any] = {
        "person_id": frame["person_id"], "record_id": frame["record_id"], "practice": frame["practice"],
        "risk": risk, "percentile": np.round(percentile, 3),
        "tier": pl.Series(tier_names[tier].tolist(), dtype=pl.String),
        "tier_rank": (tier + 1).astype(np.int32)}
    for j in range(top.shape[1]):
        columns[f"factor_{j + 1}"] = pl.Series(names[top[:, j]].tolist(), dtype=pl.String)
        columns[f"contribution_{j + 1}"] = top_value[:, j]
    for group in GROUP_COLUMNS:
        columns[group] = frame[group]
    return pl.DataFrame(columns).sort(["risk", "person_id"], descending=[True, False])


__all__ = ["GROUP_COLUMNS", "TOP_FACTORS", "assign_tiers", "score", "score_table"]
