"""risk_report.html: what `linkcare stratify` scored and what `linkcare train` evaluated, as one
self-contained page (see linkcare.report.html).

Sections (their ids are stable; tests look for them):

- `distribution`: the calibrated risk of everyone scored, the tier cut-offs, people per tier and per
  tier and GP practice;
- `performance`: ROC and precision-recall curves and the calibration plot of the model's evaluation on
  a later period than it was fitted on. `train` measures them; `stratify` cannot (the outcomes of
  today's scores are not known yet), so it shows those of the model it used, read from the model
  folder's metrics.json and curves.json;
- `subgroups`: the same by age band, sex, ethnicity and deprivation quintile;
- `factors`: the factors that most often explain the scores in each tier.

The report holds aggregates only: every count of people passes through the site's disclosure
control, curves hold no point that describes fewer people than its threshold, and no value of a
record (person IDs, record keys, tokens, dates of birth) appears. Group labels and GP practice codes
(organisation codes) are shown.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from linkcare.config import Config, Tier, config_hash
from linkcare.disclosure import Disclosure
from linkcare.report.html import Report, figure, new_figure, note, table
from linkcare.risk.curves import read_evaluation

REPORT_NAME = "risk_report.html"
TOP_FACTORS_SHOWN = 5
_LOWEST_DECADE = -3  # the histogram's first bin starts at 10^-3 unless the scores go lower
_BINS_PER_DECADE = 20
_COLOURS = ("#005eb8", "#d5281b", "#007f3b", "#ffb81c", "#330072", "#768692")


@dataclass(frozen=True)
class Inputs:
    """What a report was made from, for its header: no record values, only names and checksums."""

    config: Config
    cohort_folder: str
    events_sha256: str

    def facts(self) -> list[tuple[str, str]]:
        return [("config", self.config.path.name), ("config SHA-256", config_hash(self.config.path)),
                ("cohort", self.cohort_folder), ("cohort events.parquet SHA-256", self.events_sha256)]


# --- the two reports ----------------------------------------------------------------------------------


def write_stratify_report(path: Path, inputs: Inputs, scored: pl.DataFrame, index_date: dt.date,
                          horizon_days: int, model_kind: str, model_folder: Path, model_label: str) -> int:
    """Write the report of a `stratify` run (its scores in `scored`, as in risk.parquet); return its size."""
    config = inputs.config
    metrics, curves = read_evaluation(model_folder)
    end = index_date + dt.timedelta(days=horizon_days)
    report = Report("linkcare risk stratification", [
        *inputs.facts(), ("model", f"{model_label} ({model_kind})"),
        ("index date", index_date.isoformat()),
        ("horizon", f"{horizon_days} days: the risk of an emergency admission from {index_date} to {end}"),
        ("people scored", config.disclosure.show(scored.height))], config.disclosure)
    _distribution(report, scored, config.risk.tiers,
                  f"Everyone living and registered on {index_date}, scored by the {model_kind} model.")
    if metrics is None:
        report.section("performance", "Model performance", note(
            f"The model folder {model_label} has no readable metrics.json, so this model's performance is not "
            "known here; see its model card, or retrain it with `linkcare train`."))
        report.section("subgroups", "Performance by group", note("Not known: the model folder has no metrics.json."))
    else:
        evaluation = metrics.get("evaluation") or {}
        intro = (f"Outcomes of today's scores (emergency admissions from {index_date} to {end}) are not known yet, "
                 f"so these figures are NOT measured on today's scores. They are from the evaluation of this model "
                 f"by `linkcare train`, on the people living on {evaluation.get('index_date', '?')} with outcomes "
                 f"from {evaluation.get('outcome_window', '?')}: a later period than the model was fitted on. "
                 "Once today's outcomes are known, measure these scores with `linkcare evaluate risk`.")
        _performance(report, metrics, curves, [model_kind], intro)
        _subgroups(report, metrics, model_kind)
    _factors(report, scored, config.risk.tiers)
    return report.write(path)


def write_train_report(path: Path, inputs: Inputs, scored: pl.DataFrame, metrics: Mapping[str, Any],
                       curves: Mapping[str, Any]) -> int:
    """Write the report of a `train` run: its evaluation on the later period (published metrics, the curves
    and the evaluation people scored by the default model in `scored`); return its size."""
    config = inputs.config
    fitting, evaluation = metrics["fitting"], metrics["evaluation"]
    default = str(metrics["default_model"])
    kinds = [default, *[k for k in metrics["models"] if k != default]]
    report = Report("linkcare risk model evaluation", [
        *inputs.facts(),
        ("models", f"{', '.join(f'{k}.json' for k in kinds)} in this folder; `stratify` scores with {default} "
                   f"(`[risk] model` in the config: {metrics.get('default_model_rule', 'as configured')})"),
        ("index date", f"{evaluation['index_date']} (evaluation); the models were fitted as of "
                       f"{fitting['index_date']}"),
        ("horizon", f"{metrics['horizon_days']} days"),
        ("fitted on", f"the people living on {fitting['index_date']}, outcomes from {fitting['outcome_window']}"),
        ("evaluated on", f"the people living on {evaluation['index_date']}, outcomes from "
                         f"{evaluation['outcome_window']}")], config.disclosure)
    held_out = (f"The people living on {evaluation['index_date']} (the evaluation period, later than the "
                f"fitting), scored by the {default} model as `stratify` would score them.")
    _distribution(report, scored, config.risk.tiers, held_out)
    _performance(report, metrics, {"models": dict(curves)}, kinds,
                 f"Measured on the later, held-out period: the people living on {evaluation['index_date']}, "
                 f"with emergency admissions from {evaluation['outcome_window']}.")
    _ablation(report, metrics)
    _subgroups(report, metrics, default)
    _factors(report, scored, config.risk.tiers)
    return report.write(path)


# --- sections -----------------------------------------------------------------------------------------


def _distribution(report: Report, scored: pl.DataFrame, tiers: tuple[Tier, ...], who: str) -> None:
    d = report.disclosure
    per_tier = (scored.group_by("tier_rank").agg(pl.len().alias("people"), pl.col("risk").min().alias("from"))
                .sort("tier_rank"))
    found = {r["tier_rank"]: r for r in per_tier.to_dicts()}
    # A tier's cut-off is its lowest score (the last tier has none); the highest and lowest scores are left out.
    lows = [float(found[rank]["from"]) if rank in found and rank < len(tiers) else None
            for rank in range(1, len(tiers) + 1)]
    cuts = [(tier.name, low) for tier, low in zip(tiers, lows, strict=True) if low is not None]
    rows, above = [], None
    for rank, (tier, low) in enumerate(zip(tiers, lows, strict=True), start=1):
        if rank not in found:
            span = "–"
        elif low is None:
            span = f"below {above:.3f}" if above is not None else "all"
        elif above is None:
            span = f"{low:.3f} and above"
        else:
            span = f"{low:.3f} to {above:.3f}"
        rows.append((tier.name, f"{100 * tier.share:g}%", report.count(found[rank]["people"] if rank in found else 0),
                     span))
        above = low if low is not None else above
    risk = scored["risk"].to_numpy()
    lowest = _LOWEST_DECADE
    if risk.size:
        lowest = min(lowest, math.floor(math.log10(max(float(np.quantile(risk, 0.01)), 1e-9))))
    edges = np.logspace(lowest, 0, (0 - lowest) * _BINS_PER_DECADE + 1)
    counts, _ = np.histogram(np.clip(risk, edges[0], 1.0), bins=edges)
    heights = np.array([d.value(int(c)) or 0 for c in counts], dtype=np.float64)
    fig, ax = new_figure(7.0, 3.6)
    ax.bar(edges[:-1], heights, width=np.diff(edges), align="edge", color="#768692", edgecolor="white",
           linewidth=0.3)
    ax.set_xscale("log")
    ax.set_xlim(edges[0], 1.0)
    ax.set_xlabel("calibrated risk of an emergency admission (log scale)")
    ax.set_ylabel("people")
    ax.yaxis.set_major_formatter("{x:,.0f}")  # a format string: thousands separated
    top = max(float(heights.max()) if heights.size else 1.0, 1.0)
    ax.set_ylim(0, top * 1.05)  # also when every bin is suppressed, so the cut-off labels stay inside
    for i, (name, cut) in enumerate(cuts):
        colour = _COLOURS[i % len(_COLOURS)]
        ax.axvline(cut, color=colour, linestyle="--", linewidth=1.2)
        ax.text(cut, top * 0.98, f"{name} ≥ {cut:.3f}", rotation=90, va="top", ha="right", fontsize=8,
                color=colour, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
    fig_html = figure(fig, "People by calibrated risk (bins of equal width on the log scale; heights are counts "
                      "after disclosure control, so bins of suppressed counts are empty), with the cut-off of each "
                      "tier: people at or above it are in that tier or a higher one.", "risk-distribution")
    report.section(
        "distribution", "Risk distribution and tiers", note(who), fig_html,
        table(("tier", "share of people", "people", "calibrated risk"), rows),
        "<h3>People per tier and GP practice</h3>", _practice_table(scored, tiers, d))


def _practice_table(scored: pl.DataFrame, tiers: tuple[Tier, ...], d: Disclosure) -> str:
    practice = pl.col("practice").fill_null("unknown")
    wide = (scored.group_by(practice, "tier_rank").agg(pl.len().alias("n"))
            .pivot(on="tier_rank", index="practice", values="n")
            .join(scored.group_by(practice).agg(pl.len().alias("all")), on="practice").sort("practice"))
    cells = [wide["practice"]]
    for rank in range(1, len(tiers) + 1):
        name = str(rank)
        counts = wide[name].fill_null(0) if name in wide.columns else pl.Series(name, [0] * wide.height)
        cells.append(d.column(counts.cast(pl.Int64)))
    cells.append(d.column(wide["all"].cast(pl.Int64)))
    header = ("GP practice", *[t.name for t in tiers], "all tiers")
    return table(header, pl.DataFrame(cells).rows())


def _ablation(report: Report, metrics: Mapping[str, Any]) -> None:
    ablation = metrics.get("ablation")
    if not isinstance(ablation, Mapping):
        return
    rows = [(str(s["sources"]), str(s["features"]), _num(s["auroc"]),
             "–" if s["auroc_gain"] is None else f"{s['auroc_gain']:+.3f}") for s in ablation["steps"]]
    report.section("ablation", "What each source adds", note(
        f"The {ablation['model']} model refitted on hospital data alone (demographics, hospital use and the "
        "comorbidity and frailty scores from diagnoses), then with the social-care features, then with the "
        "primary-care features, each evaluated on the same later period. A source the site does not link is "
        "left out. The models' own AUROC intervals above show how precise the evaluation is."),
        table(("sources", "features", "AUROC", "gain"), rows))


def _performance(report: Report, metrics: Mapping[str, Any], curves: Mapping[str, Any] | None,
                 kinds: Sequence[str], intro: str) -> None:
    models = metrics["models"]
    kinds = [k for k in kinds if k in models]
    if not kinds:
        report.section("performance", "Model performance", note(intro), note(
            "metrics.json holds no evaluation of this model kind; retrain it with `linkcare train`."))
        return
    default = str(metrics.get("default_model", kinds[0]))
    rows: list[tuple[str, ...]] = []
    measures: list[tuple[str, Any]] = [
        ("people", lambda m: _published(report, m.get("people"))),
        ("with an emergency admission", lambda m: _published(report, m.get("outcomes"))),
        ("AUROC", lambda m: _num(m.get("auroc"))),
        ("AUROC 95% interval (bootstrap)", lambda m: _interval(m.get("auroc_ci"))),
        ("AUPRC (average precision)", lambda m: _num(m.get("auprc"))),
        ("Brier score", lambda m: _num(m.get("brier"), 4)),
        ("calibration slope", lambda m: _num(m.get("calibration_slope"))),
        ("calibration intercept", lambda m: _num(m.get("calibration_intercept"))),
    ]
    for label, get in measures:
        rows.append((label, *[get(models[k]) for k in kinds]))
    for share in (0.005, 0.05, 0.2):
        for what, key in (("sensitivity", "sensitivity"), ("PPV", "ppv")):
            rows.append((f"{what}, top {100 * share:g}% flagged",
                         *[_num(_top(models[k], share, key)) for k in kinds]))
    header = ("measure", *[f"{k} (scores)" if k == default and len(kinds) > 1 else k for k in kinds])
    stored = (curves or {}).get("models") or {}
    have = [k for k in kinds if isinstance(stored.get(k), dict)]
    parts = [note(intro), table(header, rows)]
    if have:
        # Side by side where the page is wide enough; each box caps its figure's width (captions wrap).
        boxes = "".join(f'<div style="flex:1 1 300px;min-width:0;max-width:345px">{f}</div>' for f in (
            _roc_figure(models, stored, have), _pr_figure(models, stored, have),
            _calibration_figure(models, stored, have)))
        parts.append(f'<div style="display:flex;flex-wrap:wrap;gap:1em">{boxes}</div>')
    else:
        parts.append(note("The model folder has no curves.json (it was written by an older `linkcare train`), so "
                          "the curves cannot be drawn; retrain the model to see them."))
    report.section("performance", "Model performance", *parts)


def _unit_square(ax: Any, xlabel: str, ylabel: str, legend: str) -> None:
    """Label a curve plot whose axes both run from 0 to 1, with its legend at `legend`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc=legend, fontsize=7, frameon=False)


def _roc_figure(models: Mapping[str, Any], stored: Mapping[str, Any], kinds: Sequence[str]) -> str:
    fig, ax = new_figure(3.6, 3.6)
    ax.plot([0, 1], [0, 1], color="#aeb7bd", linestyle=":", linewidth=1, label="chance")
    for i, k in enumerate(kinds):
        m, roc = models[k], stored[k].get("roc") or {}
        ax.plot(roc.get("fpr", []), roc.get("tpr", []), color=_COLOURS[i], linewidth=1.6,
                label=f"{k}: AUROC {_num(m.get('auroc'))} ({_interval(m.get('auroc_ci'))})")
    _unit_square(ax, "false positive rate (1 − specificity)", "true positive rate (sensitivity)", "lower right")
    caption = "ROC curve. " + "; ".join(f"{k}: AUROC {_num(models[k].get('auroc'))}, 95% interval "
                                        f"{_interval(models[k].get('auroc_ci'))}" for k in kinds) + "."
    return figure(fig, caption, "roc")


def _pr_figure(models: Mapping[str, Any], stored: Mapping[str, Any], kinds: Sequence[str]) -> str:
    fig, ax = new_figure(3.6, 3.6)
    rate = models[kinds[0]].get("outcome_rate")
    if _finite(rate):
        ax.axhline(rate, color="#aeb7bd", linestyle=":", linewidth=1, label=f"outcome rate {rate:.3f}")
    for i, k in enumerate(kinds):
        pr = stored[k].get("precision_recall") or {}
        ax.plot(pr.get("recall", []), pr.get("precision", []), color=_COLOURS[i], linewidth=1.6,
                label=f"{k}: AUPRC {_num(models[k].get('auprc'))}")
    _unit_square(ax, "recall (sensitivity)", "precision (PPV)", "upper right")
    caption = "Precision-recall curve. " + "; ".join(f"{k}: AUPRC {_num(models[k].get('auprc'))}" for k in kinds)
    return figure(fig, caption + ".", "precision-recall")


def _calibration_figure(models: Mapping[str, Any], stored: Mapping[str, Any], kinds: Sequence[str]) -> str:
    fig, ax = new_figure(3.6, 3.6)
    highest = 0.0
    for i, k in enumerate(kinds):
        bins = [b for b in stored[k].get("calibration") or [] if b.get("observed") is not None]
        x = [b["predicted"] for b in bins]
        y = [b["observed"] for b in bins]
        highest = max([highest, *x, *y])
        m = models[k]
        ax.plot(x, y, marker="o", markersize=4, color=_COLOURS[i], linewidth=1,
                label=f"{k}: slope {_num(m.get('calibration_slope'), 2)}, "
                      f"intercept {_num(m.get('calibration_intercept'), 2)}")
    top = min(1.0, highest * 1.08) if highest > 0 else 1.0
    ax.plot([0, top], [0, top], color="#aeb7bd", linestyle=":", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted risk, by decile")
    ax.set_ylabel("observed rate of emergency admission")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    caption = ("Calibration by decile of predicted risk, with the diagonal of perfect calibration. "
               + "; ".join(f"{k}: calibration slope {_num(models[k].get('calibration_slope'))}, intercept "
                           f"{_num(models[k].get('calibration_intercept'))}" for k in kinds)
               + " (slope 1 and intercept 0 are perfect). A decile whose rate would reveal a suppressed count is "
                 "left out.")
    return figure(fig, caption, "calibration")


def _subgroups(report: Report, metrics: Mapping[str, Any], used: str) -> None:
    groups = metrics.get("subgroups")
    default = str(metrics.get("default_model", used))
    if not isinstance(groups, dict) or not groups:
        report.section("subgroups", "Performance by group", note("metrics.json holds no performance by group."))
        return
    rows = []
    dots: list[tuple[str, float, float, float]] = []
    for label, entries in groups.items():
        for g in entries:
            ci = g.get("auroc_ci")
            name = label.split(" (")[0]  # "deprivation quintile (1 = most deprived)": the note says so
            auroc = _num(g.get("auroc")) + (f" ({_interval(ci)})" if _finite(g.get("auroc")) else "")
            rows.append((name, g.get("value", ""), _published(report, g.get("people")),
                         _published(report, g.get("outcomes")), auroc, _num(g.get("calibration_slope"), 2),
                         _num(g.get("calibration_intercept"), 2), _num(_top(g, 0.05, "ppv"))))
            if _finite(g.get("auroc")) and isinstance(ci, list) and len(ci) == 2 and all(map(_finite, ci)):
                dots.append((f"{name}: {g.get('value', '')}", g["auroc"], ci[0], ci[1]))
    parts = [note(f"The {default} model's evaluation on the later period, by group (admitted: people with an "
                  "emergency admission in the horizon; deprivation quintile 1 is the most deprived). Groups with "
                  "too few people or outcomes to measure reliably show counts only." + (
                      f" These are for the {default} model, not the {used} model used for these scores."
                      if used != default else ""))]
    if dots:
        fig, ax = new_figure(7.0, max(2.4, 0.24 * len(dots) + 1.2))
        ypos = np.arange(len(dots))[::-1]
        values = np.array([d[1] for d in dots])
        ax.errorbar(values, ypos, xerr=[values - [d[2] for d in dots], [d[3] for d in dots] - values], fmt="o",
                    color=_COLOURS[0], markersize=4, capsize=2, linewidth=1)
        overall = (metrics.get("models") or {}).get(default, {}).get("auroc")
        if _finite(overall):
            ax.axvline(overall, color="#aeb7bd", linestyle=":", linewidth=1)
        ax.set_yticks(ypos, [d[0] for d in dots], fontsize=8)
        ax.set_xlabel("AUROC with its 95% bootstrap interval" + (
            f" (dotted: overall, {overall:.3f})" if _finite(overall) else ""))
        parts.append(figure(fig, "AUROC by group with 95% bootstrap intervals; groups too small to measure are "
                            "left out.", "subgroup-auroc"))
    parts.append(table(("group", "value", "people", "admitted", "AUROC (95% interval)", "calibration slope",
                        "calibration intercept", "PPV, top 5%"), rows))
    report.section("subgroups", "Performance by group", *parts)


def _factors(report: Report, scored: pl.DataFrame, tiers: tuple[Tier, ...]) -> None:
    d = report.disclosure
    factor_columns = sorted(c for c in scored.columns if c.startswith("factor_"))
    if not factor_columns or scored.height == 0:
        report.section("factors", "Top factors by tier", note("No factors to show: nobody was scored."))
        return
    first = scored.group_by("tier_rank", pl.col("factor_1").alias("factor")).agg(pl.len().alias("first"))
    anywhere = (pl.concat([scored.select("tier_rank", pl.col(c).alias("factor")) for c in factor_columns])
                .group_by("tier_rank", "factor").agg(pl.len().alias("any")))
    tier_sizes = scored.group_by("tier_rank").agg(pl.len().alias("size"))
    ranked = (anywhere.join(first, on=["tier_rank", "factor"], how="left").with_columns(pl.col("first").fill_null(0))
              .join(tier_sizes, on="tier_rank")
              .sort(["tier_rank", "first", "any", "factor"], descending=[False, True, True, False])
              .group_by("tier_rank", maintain_order=True).head(TOP_FACTORS_SHOWN))
    rows = []
    bars: list[tuple[str, float, float, int]] = []
    for r in ranked.iter_rows(named=True):  # at most TOP_FACTORS_SHOWN per tier
        tier = tiers[r["tier_rank"] - 1].name
        rows.append((tier, r["factor"], report.count(r["first"]), report.count(r["any"])))
        size = d.value(r["size"]) or 0
        shares = [(d.value(r[k]) or 0) / size if size else 0.0 for k in ("first", "any")]
        bars.append((f"{tier}: {r['factor']}", shares[0], shares[1], r["tier_rank"]))
    fig, ax = new_figure(7.0, max(2.6, 0.24 * len(bars) + 1.4))
    ypos = np.arange(len(bars))[::-1]
    ax.barh(ypos, [b[2] for b in bars], height=0.8, color="#c8cdd0", label="among the top three factors")
    ax.barh(ypos, [b[1] for b in bars], height=0.45, color=[_COLOURS[(b[3] - 1) % len(_COLOURS)] for b in bars],
            label="the first factor")
    ax.set_yticks(ypos, [b[0] for b in bars], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the tier's people")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    report.section(
        "factors", "Top factors by tier",
        note(f"How often each factor is a person's first factor, or one of their top {len(factor_columns)}, in each "
             f"tier (the factors of risk.parquet and the worklists: those that raise the person's calibrated "
             f"log-odds most); the {TOP_FACTORS_SHOWN} most common first factors of each tier. A factor says how "
             "the model used it for the person, not that it causes admissions."),
        figure(fig, "Share of each tier's people with the factor first (coloured) or among their top three "
               "(grey), from counts after disclosure control.", "factors"),
        table(("tier", "factor", "people with it first", f"people with it in their top {len(factor_columns)}"),
              rows))


# --- formatting ---------------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "–"


def _interval(ci: Any) -> str:
    if isinstance(ci, list) and len(ci) == 2 and all(map(_finite, ci)):
        return f"{ci[0]:.3f}–{ci[1]:.3f}"
    return "–"


def _top(m: Mapping[str, Any], share: float, key: str) -> Any:
    return next((t.get(key) for t in (m.get("top") or []) if abs(t.get("share", -1) - share) < 1e-12), None)


def _published(report: Report, value: Any) -> str:
    """Return a count that metrics.json already publishes (rounded, or None when suppressed) as text."""
    if value is None:
        return f"<{report.disclosure.threshold}"
    return f"{int(value):,}"


__all__ = ["REPORT_NAME", "Inputs", "write_stratify_report", "write_train_report"]
