"""risk_report.html from `train` and `stratify`: its sections and plots, nothing from a network or a
record, counts as the disclosure rule publishes them, and figures that match metrics.json. The curves
that train stores for it (curves.json) are aggregates that describe no fewer people than the threshold."""

from __future__ import annotations

import json
import re
import shutil
from html import unescape
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from conftest import record_values
from linkcare.cli import cli
from linkcare.config import load_config
from linkcare.disclosure import Disclosure
from linkcare.risk.curves import evaluation_curves
from linkcare.risk.metrics import auroc

PLOTS = {"distribution": ["risk-distribution"], "performance": ["roc", "precision-recall", "calibration"],
         "subgroups": ["subgroup-auroc"], "factors": ["factors"]}


@pytest.fixture(scope="module")
def stratified(trained: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small site's scores with the session's trained model: the stratify output folder."""
    config, cohort, model_dir = trained
    out = tmp_path_factory.mktemp("risk_report") / "risk"
    result = CliRunner().invoke(cli, ["-q", "stratify", str(config), "--cohort", str(cohort), "--model",
                                      str(model_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _reports(trained: tuple[Path, Path, Path], stratified: Path) -> dict[str, str]:
    return {"train": (trained[2] / "risk_report.html").read_text(encoding="utf-8"),
            "stratify": (stratified / "risk_report.html").read_text(encoding="utf-8")}


def _section(html: str, anchor: str) -> str:
    found = re.search(rf'<section id="{anchor}">(.*?)</section>', html, flags=re.S)
    assert found, f"no section {anchor}"
    return found.group(1)


def _cell_after(html: str, label: str) -> list[str]:
    """Return the cells of the table row whose first cell is `label`."""
    row = re.search(rf"<tr><td>{re.escape(label)}</td>(.*?)</tr>", html)
    assert row, f"no row {label!r}"
    return [unescape(c) for c in re.findall(r"<td>(.*?)</td>", row.group(1))]


@pytest.mark.parametrize("which", ["train", "stratify"])
def test_report_has_every_section_and_its_plots(trained: tuple[Path, Path, Path], stratified: Path,
                                                which: str) -> None:
    html = _reports(trained, stratified)[which]
    for anchor, plots in PLOTS.items():
        section = _section(html, anchor)
        for plot in plots:
            assert f'<figure data-plot="{plot}"><svg' in section, (anchor, plot)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html


def test_reports_hold_no_value_from_a_record(trained: tuple[Path, Path, Path], stratified: Path,
                                             small_site: Path) -> None:
    risk = pl.read_parquet(stratified / "risk.parquet")
    values = record_values(small_site) | set(risk["person_id"].to_list()) | set(risk["record_id"].to_list())
    assert len(values) > 5_000
    for which, html in _reports(trained, stratified).items():
        leaked = sorted(v for v in values if v in html)
        assert leaked == [], f"{which}: {len(leaked)} record value(s), e.g. {leaked[:3]}"


def test_stratify_report_counts_are_the_published_counts_of_risk_parquet(trained: tuple[Path, Path, Path],
                                                                         stratified: Path) -> None:
    config = load_config(trained[0])
    disclosure = config.disclosure
    risk = pl.read_parquet(stratified / "risk.parquet")
    distribution = _section((stratified / "risk_report.html").read_text(encoding="utf-8"), "distribution")
    for tier in config.risk.tiers:
        people = risk.filter(pl.col("tier") == tier.name).height
        assert _cell_after(distribution, tier.name)[1] == disclosure.show(people), tier.name
    per_practice = risk.group_by(pl.col("practice").fill_null("unknown")).len()
    assert per_practice.height >= 1
    for practice, people in per_practice.iter_rows():
        assert _cell_after(distribution, practice)[-1] == disclosure.show(people), practice
    # Every count of people in the tables of people is published: 0, suppressed, or a multiple of the rounding.
    html = (stratified / "risk_report.html").read_text(encoding="utf-8")
    for anchor in ("distribution", "factors"):
        cells = re.findall(r"<td>([\d,]+)</td>", _section(html, anchor))
        assert cells
        for cell in cells:
            assert int(cell.replace(",", "")) % disclosure.rounding == 0, (anchor, cell)


def test_factor_counts_per_tier_match_risk_parquet(trained: tuple[Path, Path, Path], stratified: Path) -> None:
    disclosure = load_config(trained[0]).disclosure
    risk = pl.read_parquet(stratified / "risk.parquet")
    factors = _section((stratified / "risk_report.html").read_text(encoding="utf-8"), "factors")
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>", factors)
    assert rows
    shown: dict[str, int] = {}
    for cells in rows:
        tier, factor, first, anywhere = map(unescape, cells)
        shown[tier] = shown.get(tier, 0) + 1
        mine = risk.filter(pl.col("tier") == tier)
        assert first == disclosure.show(mine.filter(pl.col("factor_1") == factor).height), (tier, factor)
        among = mine.filter(pl.any_horizontal(pl.col(f"factor_{j}") == factor for j in (1, 2, 3))).height
        assert anywhere == disclosure.show(among), (tier, factor)
    assert max(shown.values()) == 5


@pytest.mark.parametrize("which", ["train", "stratify"])
def test_calibration_and_auroc_shown_are_those_of_metrics_json(trained: tuple[Path, Path, Path], stratified: Path,
                                                               which: str) -> None:
    metrics = json.loads((trained[2] / "metrics.json").read_text())
    default = metrics["default_model"]
    performance = _section(_reports(trained, stratified)[which], "performance")
    m = metrics["models"][default]
    assert _cell_after(performance, "calibration slope")[0] == f"{m['calibration_slope']:.3f}"
    assert _cell_after(performance, "calibration intercept")[0] == f"{m['calibration_intercept']:.3f}"
    assert _cell_after(performance, "AUROC")[0] == f"{m['auroc']:.3f}"
    assert f"calibration slope {m['calibration_slope']:.3f}, intercept {m['calibration_intercept']:.3f}" in performance
    if which == "train":  # both models, the one that scores first
        other = next(k for k in metrics["models"] if k != default)
        slope = metrics["models"][other]["calibration_slope"]
        assert _cell_after(performance, "calibration slope")[1] == f"{slope:.3f}"
    else:
        assert "NOT measured on today&#x27;s scores" in performance
        assert metrics["evaluation"]["index_date"] in performance


def test_train_stores_curves_that_agree_with_its_metrics(trained: tuple[Path, Path, Path]) -> None:
    _, _, model_dir = trained
    curves = json.loads((model_dir / "curves.json").read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert set(curves["models"]) == set(metrics["models"]) == {"gradient_boosting", "logistic"}
    for kind, c in curves["models"].items():
        fpr, tpr = np.array(c["roc"]["fpr"]), np.array(c["roc"]["tpr"])
        assert 10 < fpr.size <= 200 and fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
        assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
        # The area under the stored points is the AUROC, up to the thinning.
        assert float(np.trapezoid(tpr, fpr)) == pytest.approx(metrics["models"][kind]["auroc"], abs=0.01)
        assert len(c["precision_recall"]["recall"]) <= 200
        deciles = c["calibration"]
        assert len(deciles) == 10
        assert all(d["people"] is None or d["people"] % 5 == 0 for d in deciles)
        predicted = [d["predicted"] for d in deciles]
        assert predicted == sorted(predicted)


def test_curves_describe_no_fewer_people_than_the_threshold() -> None:
    rng = np.random.default_rng(3)
    n = 1_000
    p = rng.random(n)
    y = rng.random(n) < p * 0.3
    disclosure = Disclosure(threshold=8, rounding=5)
    curves = evaluation_curves(y, p, disclosure, points=50)
    positives, negatives = int(y.sum()), int((~y).sum())
    fpr, tpr = np.array(curves["roc"]["fpr"]), np.array(curves["roc"]["tpr"])
    assert fpr.size <= 50
    flagged = np.round(fpr * negatives + tpr * positives).astype(int)[1:-1]  # the ends are everyone or no one
    assert flagged.min() >= 8 and flagged.max() <= n - 8
    recall = np.array(curves["precision_recall"]["recall"])
    precision = np.array(curves["precision_recall"]["precision"])
    assert np.round(recall * positives / precision).min() >= 8
    full = evaluation_curves(y, p, Disclosure(threshold=0, rounding=1), points=10_000)
    assert float(np.trapezoid(full["roc"]["tpr"], full["roc"]["fpr"])) == pytest.approx(auroc(y, p), abs=1e-4)
    # A decile's rate is left out when it would give away a suppressed count.
    few = np.zeros(n, dtype=bool)
    few[np.argsort(p)[:3]] = True  # three outcomes, all in the lowest decile
    bins = evaluation_curves(few | (p > 0.95), p, disclosure)["calibration"]
    assert bins[0]["observed"] is None and bins[0]["outcomes"] is None
    assert bins[-1]["observed"] is not None and sum(b["people"] for b in bins) == n


def test_stratify_with_a_model_folder_without_curves_still_reports(trained: tuple[Path, Path, Path],
                                                                   tmp_path: Path, runner: CliRunner) -> None:
    config, cohort, model_dir = trained
    older = tmp_path / "older_model"
    shutil.copytree(model_dir, older)
    (older / "curves.json").unlink()  # as written before curves.json existed
    out = tmp_path / "risk"
    result = runner.invoke(cli, ["-q", "stratify", str(config), "--cohort", str(cohort), "--model", str(older),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "risk_report.html").read_text(encoding="utf-8")
    performance = _section(html, "performance")
    assert "has no curves.json" in performance and "data-plot" not in performance
    metrics = json.loads((model_dir / "metrics.json").read_text())
    slope = metrics["models"][metrics["default_model"]]["calibration_slope"]
    assert _cell_after(performance, "calibration slope")[0] == f"{slope:.3f}"
    for anchor in ("distribution", "subgroups", "factors"):
        assert "data-plot" in _section(html, anchor)
