"""The link report (`link_report.html`): what `linkcare link` linked, how well, and how evenly
across groups of people, as one self-contained page (see linkcare.report.html).

Sections (their ids are stable; tests look for them):

- `sources`: rows read, rejected, and records linked per stage (deterministic, probabilistic,
  unlinked) per source, and the people that resulted;
- `blocking`: candidate pairs and new pairs per blocking pass;
- `weights`: the match weights of every scored pair (a histogram the link stage keeps with fixed
  bins, since pairs.parquet holds only the likelier pairs), with the threshold;
- `precision`: expected precision and recall of the scored pairs against the threshold, estimated
  from their match probabilities without labels, as a curve and at a few thresholds;
- `model`: m, u and the weight of every comparison level per field;
- `unlinkables`: per source, the records whose best possible match weight, even against an
  identical record, cannot reach the threshold: those an exact rule can still place and those that
  cannot link at all, with the fields they lack;
- `clusters`: records and sources per person, with unusually large people flagged (more than one
  record from one gp_registrations source, or far out in the tail; see linkcare.linkage.quality);
- `equity`: the linked share by source, age band, sex, ethnicity and deprivation quintile, with the
  groups well below the overall share named;
- `borderline`: a seeded sample of pairs near the threshold, as comparison levels only.

It shows counts, shares, model parameters and comparison levels only, never a value from a record:
groups are fixed labels (age bands, sex, ethnic groups, deprivation quintiles) computed from the
values, not the values themselves. Counts of records and people pass through the site's disclosure
control, and a share is shown only for a group of at least the disclosure threshold. Pair counts
are counts of comparisons between records, not of people, and are shown as they are.

Work is done per distinct identifier tuple (node), weighted by the records each stands for, so the
cost follows the nodes, not the records.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from linkcare.cohort.demographics import AGE_BANDS
from linkcare.cohort.equity import DIMENSIONS, ETHNIC_ORDER, STAGES
from linkcare.config import Comparison, Config, config_hash
from linkcare.linkage.engine import LinkReportData
from linkcare.linkage.model import MatchModel
from linkcare.linkage.scoring import WEIGHT_EDGES
from linkcare.report.html import Report, figure, log_scale, new_figure, note, table
from linkcare.report.link_quality import clusters, precision, threshold_weight, unlinkables

REPORT_NAME = "link_report.html"
BORDERLINE_SAMPLE = 20
BORDERLINE_BAND = 3.0  # log2 Bayes factor either side of the threshold's weight (8 times the odds)
EQUITY_GAP = 0.02  # flag groups whose linked share is this far below the overall share
STAGE_COLOURS = {"deterministic": "#005eb8", "probabilistic": "#41b6e6", "unlinked": "#d5281b"}
LEVEL_COLOURS = {"exact": "#007f3b", "close": "#78be20", "disagree": "#d5281b", "missing": "#aeb7bd"}


def write_link_report(path: Path, config: Config, data: LinkReportData, inputs: Sequence[Mapping[str, Any]],
                      n_people: int, when: dt.datetime | None = None) -> int:
    """Write the link report to `path`; return its size in bytes.

    `inputs` is the manifest's list of inputs (source, file, sha256, rows, rejected).
    """
    threshold = config.linkage.threshold
    show = config.disclosure.show
    facts = [("config", config.path.name), ("config SHA-256", config_hash(config.path)),
             ("reference date", config.reference_date.isoformat()),
             *[(f"input {i['source']}", f"{i['file']} (SHA-256 {str(i['sha256'])[:12]}, {show(int(i['rows']))} rows)")
               for i in inputs],
             ("linkage model", f"{data.model.trained_by}, threshold {threshold:g} "
                               f"(match weight {threshold_weight(threshold):.2f})")]
    report = Report("linkcare link report", facts, config.disclosure, when)
    _sources(report, data.nodes, inputs, n_people)
    _blocking(report, data)
    _weights(report, data, threshold, config.linkage.pairs_min_probability)
    precision(report, config, data)
    _model(report, data.model)
    unlinkables(report, config, data)
    clusters(report, config, data)
    _equity(report, data.nodes, data.deprivation_note)
    _borderline(report, data, threshold, config.linkage.seed)
    return report.write(path)


# --- sections ---------------------------------------------------------------------------------------------

def _sources(report: Report, nodes: pl.DataFrame, inputs: Sequence[Mapping[str, Any]],
             n_people: int) -> None:
    counts: dict[str, dict[str, int]] = {}
    for source, stage, n in nodes.group_by("source", "stage").agg(pl.col("records").sum()).iter_rows():
        counts.setdefault(source, dict.fromkeys(STAGES, 0))[STAGES[stage]] = int(n)
    rows, shares = [], {}
    total = dict.fromkeys(("rows", "rejected", *STAGES), 0)
    for i in inputs:
        name = str(i["source"])
        c = counts.get(name, dict.fromkeys(STAGES, 0))
        records = sum(c.values())
        rows.append((name, report.count(int(i["rows"])), report.count(int(i["rejected"])),
                     *[report.count(c[s]) for s in STAGES], report.share(records - c["unlinked"], records)))
        if report.shown(records):
            shares[name] = [c[s] / records for s in STAGES]
        for key, value in (("rows", int(i["rows"])), ("rejected", int(i["rejected"])), *c.items()):
            total[key] += value
    records = sum(total[s] for s in STAGES)
    rows.append(("all sources", report.count(total["rows"]), report.count(total["rejected"]),
                 *[report.count(total[s]) for s in STAGES], report.share(records - total["unlinked"], records)))
    fig, ax = new_figure(7.0, 0.45 * len(shares) + 1.4)
    left = np.zeros(len(shares))
    names = list(shares)
    for k, stage in enumerate(STAGES):
        values = np.array([shares[n][k] for n in names]) * 100
        ax.barh(names, values, left=left, color=STAGE_COLOURS[stage], label=stage)
        left += values
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the source's records (%)")
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, frameon=False)
    report.section(
        "sources", "Records and how they were linked",
        note(f"{report.count(n_people)} people resulted from {report.count(records)} records "
             f"({report.count(total['rows'])} rows read, {report.count(total['rejected'])} set aside by the row "
             "checks). A record is linked deterministically when an exact rule joined it or it shares every "
             "identifier with another record, probabilistically when the model's decision joined it to another "
             "record, and is unlinked when it is a person on its own: linkage missed it, or its person has no "
             "other record (a GP registration of someone never seen in hospital)."),
        table(("source", "rows read", "rejected", *STAGES, "linked share"), rows),
        figure(fig, "Share of each source's records by the stage that linked them.", "sources-stages"))


def _blocking(report: Report, data: LinkReportData) -> None:
    passes = data.pass_pairs
    rows = [(str(p["blocking"]), f"{int(p['pairs']):,}", f"{int(p['new_pairs']):,}") for p in passes]
    scored = int(data.weight_histogram.sum())
    fig, ax = new_figure(7.0, 0.55 * max(len(passes), 1) + 1.3)
    y = np.arange(len(passes))
    ax.barh(y - 0.2, [int(p["pairs"]) for p in passes], height=0.4, color="#005eb8", label="pairs")
    ax.barh(y + 0.2, [int(p["new_pairs"]) for p in passes], height=0.4, color="#41b6e6",
            label="new pairs (not found by an earlier pass)")
    ax.set_yticks(y, [str(p["blocking"]) for p in passes])
    ax.invert_yaxis()
    if passes and min(int(p["pairs"]) for p in passes) > 0:
        log_scale(ax, "x")
        ax.set_xlabel("candidate pairs of distinct identifier tuples (log scale)")
    else:
        ax.set_xlabel("candidate pairs of distinct identifier tuples")
        ax.xaxis.set_major_formatter(_thousands())
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    report.section(
        "blocking", "Candidate pairs per blocking pass",
        note("Each pass pairs the distinct identifier tuples that agree exactly on its key; a pair found by an "
             "earlier pass is compared once. Of the new pairs, those already joined by an exact rule are not "
             f"scored: {scored:,} pairs were compared and scored. Pair counts are comparisons, not people, "
             "and are shown unrounded."),
        table(("blocking pass", "pairs", "new pairs"), rows),
        figure(fig, "Candidate pairs and new pairs per blocking pass.", "blocking-pairs"))


def _thousands() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: f"{x:,.0f}")


def _weights(report: Report, data: LinkReportData, threshold: float, min_probability: float) -> None:
    counts = data.weight_histogram
    scored = int(counts.sum())
    totals = data.pairs.select(pl.len().alias("kept"), pl.col("accepted").cast(pl.Int64).sum()).collect()
    kept, accepted = int(totals["kept"][0]), int(totals["accepted"][0] or 0)
    cut = threshold_weight(threshold)
    fig, ax = new_figure(7.0, 3.4)
    ax.bar(WEIGHT_EDGES[:-1], counts, width=np.diff(WEIGHT_EDGES), align="edge", color="#005eb8",
           label="scored pairs")
    if scored:
        log_scale(ax, "y")
    ax.axvline(cut, color="#d5281b", linestyle="--", label=f"threshold {threshold:g} (weight {cut:.2f})")
    if min_probability > 0:
        ax.axvline(threshold_weight(min_probability), color="#768692", linestyle=":",
                   label=f"kept in pairs.parquet from probability {min_probability:g}")
    ax.set_xlim(WEIGHT_EDGES[0], WEIGHT_EDGES[-1])
    ax.set_xlabel("match weight (log2 odds of a match)")
    ax.set_ylabel("pairs (log scale)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    rows = [("scored", f"{scored:,}"),
            (f"kept in pairs.parquet (probability ≥ {min_probability:g})", f"{kept:,}"),
            (f"accepted (probability ≥ {threshold:g})", f"{accepted:,}")]
    report.section(
        "weights", "Match weights of every scored pair",
        *([] if _finite_model(data.model) else [note(_NOT_FINITE)]),
        note("The weight of a pair is the log2 odds that its two records belong to the same person: the prior "
             "odds plus the evidence of every field. Pairs to the right of the dashed line were accepted. A "
             "good model separates two humps, non-matches on the left and matches on the right, with few pairs "
             f"near the threshold. Bins are {WEIGHT_EDGES[1] - WEIGHT_EDGES[0]:g} wide; weights below "
             f"{WEIGHT_EDGES[0]:g} or above {WEIGHT_EDGES[-1]:g} are counted in the end bins."),
        table(("candidate pairs", "pairs"), rows),
        figure(fig, "Match weights of all scored candidate pairs (log scale), with the threshold.",
               "weights-histogram"))


_NOT_FINITE = ("Some of the model's weights are not numbers: the classifier did not fit this data, so pairs "
               "with those levels could not be scored (they are missing from the weights histogram). Link with "
               'model = "fellegi_sunter" instead.')


def _finite_model(model: MatchModel) -> bool:
    return math.isfinite(model.intercept) and all(bool(np.isfinite(w).all()) for w in model.weights)


def _model(report: Report, model: MatchModel) -> None:
    has_mu = model.m is not None and model.u is not None
    rows, bars = [], []
    for j, c in enumerate(model.comparisons):
        names = c.level_names
        for level, name in enumerate(names):
            m = f"{model.m[j][level]:.4g}" if model.m is not None and level else "–"
            u = f"{model.u[j][level]:.4g}" if model.u is not None and level else "–"
            w = float(model.weights[j][level])
            rows.append((c.field, c.method + (", term frequency" if c.term_frequency else ""), name, m, u,
                         f"{w:.2f}" if level else "0 (no evidence)"))
            if level:
                bars.append((f"{c.field}: {name}", w, j))
    fig, ax = new_figure(7.0, 0.26 * len(bars) + 1.2)
    y = np.arange(len(bars)) + np.array([j for _, _, j in bars]) * 0.6  # a gap between fields
    weights = np.array([w for _, w, _ in bars])
    ax.barh(y, weights, color=np.where(weights >= 0, "#005eb8", "#d5281b"))
    ax.set_yticks(y, [label for label, _, _ in bars])
    ax.invert_yaxis()
    ax.axvline(0, color="#425563", linewidth=0.8)
    ax.set_xlabel("match weight of the level, log2(m / u)")
    parts = [note(f"Prior: the chance that two random records match is {model.prior:.3g} "
                  f"(weight {model.intercept:.2f}). m is the chance of a level among matching pairs, u among "
                  "non-matching pairs; the weight log2(m/u) is what a level adds to a pair's weight. A missing "
                  "value on either side counts as no evidence.")]
    if not _finite_model(model):
        parts.append(note(_NOT_FINITE))
    if not has_mu:
        parts.append(note(f"This model was fitted by {model.trained_by} (recordlinkage's classifier) and has no "
                          "m and u probabilities; its weights are the classifier's log2 odds per level."))
    if any(c.term_frequency for c in model.comparisons):
        parts.append(note("For term-frequency fields, exact agreement on a rare value weighs more than the "
                          "weight shown, on a common value less."))
    report.section(
        "model", "The linkage model", *parts,
        table(("field", "method", "level", "m", "u", "weight"), rows),
        figure(fig, "Match weight of each comparison level, grouped by field.", "model-weights"))


def _equity(report: Report, nodes: pl.DataFrame, deprivation_note: str) -> None:
    records = int(nodes["records"].sum())
    linked = int(nodes.filter(pl.col("linked"))["records"].sum())
    overall = linked / records if records else 0.0
    rows, plotted, flagged = [], [], []
    for dim, title in DIMENSIONS.items():
        if dim not in nodes.columns:
            continue
        grouped = nodes.group_by(dim).agg(pl.col("records").sum(), pl.col("records").filter(pl.col("linked"))
                                          .sum().alias("linked"))
        order = _group_order(dim, grouped[dim].to_list())
        found = {r[dim]: (int(r["records"]), int(r["linked"])) for r in grouped.to_dicts()}
        for group in order:
            n, k = found[group]
            label = _group_label(dim, group)
            rows.append((title, label, report.count(n), report.share(k, n)))
            if report.shown(n):
                plotted.append((f"{title}: {label}", k / n))
                if k / n < overall - EQUITY_GAP:
                    flagged.append(f"{title} {label} ({k / n:.1%})")
    parts = [note("The linked share of a group is the share of its records that were joined to at least one "
                  "other record. Age is at the reference date, from the record's birth year (its person's when "
                  "the record has none); ethnicity is the person's from their latest GP registration that "
                  "records one, in Census groups.")]
    if deprivation_note:
        parts.append(note(f"Deprivation: {deprivation_note}."))
    if flagged:
        parts.append(note(f"Linked share more than {EQUITY_GAP * 100:.0f} percentage points below the overall "
                          f"{overall:.1%}: {'; '.join(flagged)}. Linkage that is worse for some groups biases "
                          "every later analysis: check these groups' identifiers before relying on counts by group."))
    else:
        parts.append(note(f"No group's linked share is more than {EQUITY_GAP * 100:.0f} percentage points below "
                          f"the overall {overall:.1%}. Linkage that is worse for some groups biases every later "
                          "analysis, so this is worth checking on every run."))
    fig, ax = new_figure(7.0, 0.22 * len(plotted) + 1.3)
    shares = np.array([s for _, s in plotted]) * 100
    low_share = (overall - EQUITY_GAP) * 100
    flag = shares < low_share
    # Start the axis some way below the overall share, so that gaps of a few points show; a group far
    # below it is drawn to the axis's edge, with its share written beside it.
    start = max(0.0, math.floor((min([*shares[~flag].tolist(), low_share]) - 5.0) / 5.0) * 5.0)
    y = np.arange(len(plotted))
    ax.barh(y, np.maximum(shares, start) - start, left=start, color=np.where(flag, "#d5281b", "#005eb8"))
    for yi, value in zip(y[flag], shares[flag], strict=True):
        ax.text(max(value, start) + 0.3, yi, f"{value:.1f}%", va="center", fontsize=8, color="#d5281b")
    ax.set_yticks(y, [label for label, _ in plotted])
    ax.invert_yaxis()
    ax.axvline(overall * 100, color="#425563", linestyle="--", label=f"overall {overall:.1%}")
    ax.set_xlim(start, 100.0)
    ax.set_xlabel("linked share of records (%)" + ("; the axis does not start at 0" if start > 0 else ""))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    report.section(
        "equity", "How evenly linkage worked across groups", *parts,
        table(("dimension", "group", "records", "linked share"), rows),
        figure(fig, "Linked share of records per group (red: more than 2 points below overall).", "equity-shares"))


def _group_order(dim: str, groups: list[str]) -> list[str]:
    if dim == "age_band":
        fixed = [label for _, label in AGE_BANDS] + ["unknown"]
    elif dim == "sex":
        fixed = ["female", "male", "unknown"]
    elif dim == "ethnic_group":
        fixed = list(ETHNIC_ORDER)
    elif dim == "deprivation":
        fixed = ["1", "2", "3", "4", "5", "unknown"]
    else:
        return sorted(groups)
    return [g for g in fixed if g in groups]


def _group_label(dim: str, group: str) -> str:
    if dim == "deprivation" and group == "1":
        return "1 (most deprived)"
    if dim == "deprivation" and group == "5":
        return "5 (least deprived)"
    return group


def short_level_names(comparison: Comparison) -> list[str]:
    """Return a short name for each level of a comparison: missing, exact, close or disagree
    (several close levels keep their cut-off, e.g. "close (similarity >= 0.88)")."""
    names = comparison.spec.level_names(comparison.levels)
    inner = names[1:-1]
    identical = {"exact", "similarity >= 1", "edits <= 0", "difference <= 0"}
    short = ["exact" if n in identical else "close" for n in inner]
    if short.count("close") > 1:
        short = [s if s == "exact" else f"close ({n})" for s, n in zip(short, inner, strict=True)]
    own = [*short, "disagree"]
    if comparison.given:  # the levels split by whether the given field agrees (linkcare.config.Comparison)
        return ["missing", *[f"{n}, {comparison.given} agrees" for n in own],
                *[f"{n}, {comparison.given} does not" for n in own]]
    return ["missing", *own]


def _borderline(report: Report, data: LinkReportData, threshold: float, seed: int) -> None:
    comparisons = data.model.comparisons
    levels = [f"level_{c.field}" for c in comparisons]
    cut = threshold_weight(threshold)
    pairs = data.pairs.select(*levels, "match_weight", "match_probability", "accepted")
    # Only the pairs near the threshold (or the few nearest to it) are read into memory.
    band = pairs.filter((pl.col("match_weight") - cut).abs() <= BORDERLINE_BAND).collect()
    low, high = 1.0 / (1.0 + 2.0 ** -(cut - BORDERLINE_BAND)), 1.0 / (1.0 + 2.0 ** -(cut + BORDERLINE_BAND))
    about = (f"pairs with a match weight within {BORDERLINE_BAND:g} of the threshold's {cut:.2f} (probability "
             f"{low:.3f} to {high:.4f}): {band.height:,} pairs")
    if band.height:
        sample = band.sample(min(BORDERLINE_SAMPLE, band.height), seed=seed)
    else:
        about = "no pair scored near the threshold; the pairs nearest to it"
        sample = (pairs.with_columns((pl.col("match_weight") - cut).abs().alias("_d"))
                  .sort("_d", "match_weight").head(BORDERLINE_SAMPLE).drop("_d").collect())
    sample = sample.sort("match_weight", *levels, descending=True)
    names = [short_level_names(c) for c in comparisons]
    rows = []
    for i, r in enumerate(sample.iter_rows(named=True), start=1):
        rows.append((str(i), *[names[j][int(r[col])] for j, col in enumerate(levels)], f"{r['match_weight']:.2f}",
                     f"{r['match_probability']:.3f}", "yes" if r["accepted"] else "no"))
    parts = [note(f"A seeded sample of at most {BORDERLINE_SAMPLE} {about}. Each row is one pair, shown only as "
                  "the comparison level of each field, never the values or record keys. Pairs that agree on "
                  "little but are accepted, or agree on much but are refused, point at weights to check.")]
    if rows:
        parts.append(table(("#", *[c.field for c in comparisons], "weight", "probability", "accepted"), rows))
    shown = band if band.height else sample
    if shown.height:
        parts.append(_level_plot(shown, comparisons, levels, names))
    report.section("borderline", "Pairs near the threshold", *parts)


def _level_plot(pairs: pl.DataFrame, comparisons: Sequence[Comparison], levels: list[str],
                names: list[list[str]]) -> str:
    """Return a figure of the share of pairs at each kind of level, per field."""
    kinds = ("exact", "close", "disagree", "missing")
    shares = np.zeros((len(comparisons), len(kinds)))
    for j, col in enumerate(levels):
        counts = np.bincount(pairs[col].cast(pl.Int64).to_numpy(), minlength=len(names[j]))
        for level, n in enumerate(counts):
            shares[j, kinds.index(names[j][level].split(" ")[0].rstrip(","))] += n
    shares = shares / max(pairs.height, 1) * 100
    fig, ax = new_figure(7.0, 0.4 * len(comparisons) + 1.4)
    left = np.zeros(len(comparisons))
    fields = [c.field for c in comparisons]
    for k, kind in enumerate(kinds):
        ax.barh(fields, shares[:, k], left=left, color=LEVEL_COLOURS[kind], label=kind)
        left += shares[:, k]
    ax.set_xlim(0, 100)
    ax.invert_yaxis()
    ax.set_xlabel("share of the pairs near the threshold (%)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=4, frameon=False)
    return figure(fig, "How the pairs near the threshold compare, field by field.", "borderline-levels")


__all__ = ["REPORT_NAME", "short_level_names", "write_link_report"]
