"""The model card: what the risk model is for, what it was fitted and evaluated on, how well it did
overall and for each group of people, and what it cannot do. Counts of people are published only
through the disclosure rule."""

from __future__ import annotations

from typing import Any

from linkcare.config import Config
from linkcare.risk.model import CV_FOLDS, RiskModel

_NAMES = {"gradient_boosting": "gradient boosting (LightGBM)",
          "logistic": "logistic regression (standardised inputs)"}


def _count(value: Any) -> str:
    return "suppressed" if value is None else f"{value:,}"


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _metrics_rows(models: dict[str, Any]) -> list[str]:
    rows = ["| model | AUROC (95% CI) | AUPRC | Brier | calibration slope | calibration intercept |",
            "|---|---|---|---|---|---|"]
    for kind, m in models.items():
        lo, hi = m["auroc_ci"]
        rows.append(f"| {_NAMES.get(kind, kind)} | {_num(m['auroc'])} ({_num(lo)}–{_num(hi)}) | {_num(m['auprc'])} | "
                    f"{_num(m['brier'], 4)} | {_num(m['calibration_slope'], 2)} | "
                    f"{_num(m['calibration_intercept'], 2)} |")
    return rows


def _top_rows(m: dict[str, Any]) -> list[str]:
    rows = ["| flagged | people | sensitivity | PPV |", "|---|---|---|---|"]
    for t in m["top"]:
        rows.append(f"| top {100 * t['share']:g}% | {_count(t['people'])} | {_num(t['sensitivity'])} | "
                    f"{_num(t['ppv'])} |")
    return rows


def _subgroup_rows(subgroups: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = ["| group | value | people | outcomes | AUROC | calibration slope | calibration intercept | PPV top 5% |",
            "|---|---|---|---|---|---|---|---|"]
    for label, groups in subgroups.items():
        for g in groups:
            top5 = next((t["ppv"] for t in (g.get("top") or []) if abs(t["share"] - 0.05) < 1e-12), None)
            rows.append(f"| {label} | {g['value']} | {_count(g['people'])} | {_count(g['outcomes'])} | "
                        f"{_num(g.get('auroc'))} | {_num(g.get('calibration_slope'), 2)} | "
                        f"{_num(g.get('calibration_intercept'), 2)} | {_num(top5)} |")
    return rows


#: The model card's sections that are the same for every model folder.
_EXPLANATIONS_AND_LIMITS = (
    "## Explanations",
    "",
    "Each score comes with its top contributing factors. Contributions are on the log-odds scale and add "
    "up exactly: the baseline plus every factor's contribution is the person's calibrated log-odds. For "
    "gradient boosting they are LightGBM's exact TreeSHAP values; for the logistic model, coefficient "
    "times standardised value. A contribution says how the model used a factor for this person, not that "
    "the factor causes admissions.",
    "",
    "## Limitations",
    "",
    "- The model sees only what the linked extracts hold. Records the linkage failed to join, or joined "
    "wrongly, change a person's features; check the linkage report before relying on the scores.",
    "- Deaths before the outcome window ends count as no admission; people who move away stay in the "
    "denominator until their registration ends.",
    "- Performance drifts as services change; retrain each month or quarter and compare these figures.",
    "",
)


def _ablation_rows(ablation: dict[str, Any]) -> list[str]:
    rows = ["| sources | features | AUROC | gain |", "|---|---|---|---|"]
    for step in ablation["steps"]:
        gain = "–" if step["auroc_gain"] is None else f"{step['auroc_gain']:+.3f}"
        rows.append(f"| {step['sources']} | {step['features']} | {_num(step['auroc'])} | {gain} |")
    return rows


def model_card(config: Config, metrics: dict[str, Any], model: RiskModel) -> str:
    """Return the model card (Markdown) of a trained model folder."""
    fit, ev = metrics["fitting"], metrics["evaluation"]
    default = metrics["default_model"]
    disclosure = metrics["disclosure"]
    factors: dict[str, list[str]] = {}
    for f in model.features:
        factors.setdefault(f.group, []).append(f.factor)
    lines = [
        "# Model card: risk of an emergency admission",
        "",
        f"Written by linkcare {metrics['linkcare_version']} from the config `{config.path.name}`, with the data "
        f"as of {config.reference_date.isoformat()} (the same inputs and as-of date give the same card). "
        f"Scores are made by the **{_NAMES.get(default, default)}** model, chosen by `[risk] model`: "
        f"{metrics.get('default_model_rule', 'as configured')}. Both models were fitted and are kept in this folder.",
        "",
        "## What it is for",
        "",
        f"It estimates each registered person's probability of at least one emergency hospital admission "
        f"(ADMIMETH 21–25, 2A–2D, 28) in the {metrics['horizon_days']} days from the index date, so that a "
        "multidisciplinary team can offer care earlier to the people most at risk. It supports a clinical "
        "judgement; it does not replace one. It has not been validated for any other purpose, population or "
        "outcome.",
        "",
        "## Data and periods",
        "",
        f"- Fitted on the people living and registered on {fit['index_date']} "
        f"({_count(fit['people'])} people, {_count(fit['outcomes'])} with an emergency admission from "
        f"{fit['outcome_window']}). The calibration lines (overall, and for each age band with at least 100 "
        f"outcomes) were fitted on out-of-fold scores: the model was refitted {CV_FOLDS} times, each time without "
        "one of as many seeded parts of these people, and scored that part.",
        f"- Evaluated on the people living and registered on {ev['index_date']} ({_count(ev['people'])} people), "
        f"with outcomes from {ev['outcome_window']}: a later period than the fitting, as in use.",
        f"- Look-back windows: {', '.join(str(w) for w in metrics['lookback_days'])} days before the index date. "
        "Only events before the index date are used; an admission on the index date counts as an outcome.",
        "",
        "## Inputs",
        "",
        *[f"- {group}: {', '.join(dict.fromkeys(names))}" for group, names in factors.items()],
        "",
        "Comorbidity and frailty come from the ICD-10 diagnoses of admissions in the longest look-back: the "
        "Charlson index (Quan 2005 coding), the Elixhauser score (Quan 2005 coding, van Walraven weights) and the "
        "Hospital Frailty Risk Score (Gilbert 2018), computed with pycomorb.",
        "",
        "## Performance on the later period",
        "",
        *_metrics_rows(metrics["models"]),
        "",
        f"Flagging the highest-risk people ({_NAMES.get(default, default)}):",
        "",
        *_top_rows(metrics["models"][default]),
        "",
        f"What each source is worth: the {_NAMES.get(default, default)} model refitted on hospital data alone, "
        "then with each further source in turn (primary care only where the site links a GP extract), each "
        "step's uncalibrated scores evaluated on the later period.",
        "",
        *_ablation_rows(metrics["ablation"]),
        "",
        "## Performance by group",
        "",
        "Groups with too few people or outcomes to measure reliably show counts only.",
        "",
        *_subgroup_rows(metrics["subgroups"]),
        "",
        *_EXPLANATIONS_AND_LIMITS,
        "## Disclosure control",
        "",
        f"Counts of people are rounded to the nearest {disclosure['rounding']}; counts from 1 to "
        f"{disclosure['threshold'] - 1} are suppressed.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["model_card"]
