"""`linkcare evaluate links` and `linkcare evaluate risk`: score a linkage or a risk output against
labels (pairwise precision, recall and F1; AUROC, calibration and the rest, with counts of people
passed through the disclosure rule)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linkcare.config import load_config
from linkcare.linkage.evaluate import PairwiseScore, evaluate_links
from linkcare.risk.evaluate import evaluate_risk


def evaluate_linkage(out_dir: Path, truth: Path) -> dict[str, PairwiseScore]:
    """Return the pairwise scores of the `link` output in `out_dir` against the truth file."""
    return evaluate_links(out_dir, truth)


def evaluate_scores(risk_dir: Path, outcomes: Path, config: Path | None = None) -> dict[str, Any]:
    """Return the metrics of the `stratify` output in `risk_dir` against the outcomes file, counts
    published by the config's [disclosure] rule (default: below 8 suppressed, rounded to 5)."""
    disclosure = load_config(config).disclosure if config is not None else None
    return evaluate_risk(risk_dir, outcomes, disclosure)


__all__ = ["evaluate_linkage", "evaluate_scores"]
