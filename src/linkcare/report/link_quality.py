"""The link report's quality sections (see linkcare.report.link_report for the whole page), drawn
from what linkcare.linkage.quality gives either engine:

- `unlinkables`: per source, the records whose best possible match weight, even against an
  identical record, cannot reach the threshold, split into those an exact rule can still place and
  those that cannot link at all, with the fields they lack;
- `precision`: expected precision and recall of the scored pairs against the threshold, from their
  match probabilities, without labels;
- `clusters`: records and sources per person, with unusually large people flagged (more than one
  record from one gp_registrations source, or records far out in the tail).

Counts of records and people pass through disclosure control (`Report.count`, and shares only of
groups of at least the threshold); pair counts and expected matches are counts of comparisons, not
of people, and are shown as they are.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from linkcare.config import Config
from linkcare.linkage.engine import LinkReportData
from linkcare.linkage.quality import REACH, TABLE_THRESHOLDS, TAIL_Z, ThresholdCurve, large_people, reach_fields
from linkcare.report.html import Report, figure, log_scale, new_figure, note, table

REACH_COLOURS = ("#007f3b", "#ffb81c", "#d5281b")
#: Bands of records per person: each is from its lower bound up to the next one.
SIZE_BANDS = (1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000)
#: Thresholds labelled on the precision plot's axis.
PLOT_TICKS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.99999)


def threshold_weight(probability: float) -> float:
    """Return the match weight (log2 odds) of a probability."""
    return math.log2(probability / (1.0 - probability))


# --- unlinkables ---------------------------------------------------------------------------------------------

def unlinkables(report: Report, config: Config, data: LinkReportData) -> None:
    """Add the section of the records that cannot reach the threshold, per source."""
    lk = config.linkage
    fields = reach_fields(config)
    reach = data.reach
    sources = [s.name for s in config.sources]
    per: dict[str, list[int]] = {s: [0, 0, 0] for s in sources}
    for source, code, n in reach.select("source", "reach", "records").iter_rows():
        per.setdefault(source, [0, 0, 0])[int(code)] += int(n)
    rows, shares = [], {}
    for source, counts in [*per.items(), ("all sources", [sum(c[k] for c in per.values()) for k in range(3)])]:
        total = sum(counts)
        rows.append((source, report.count(total), *[report.count(c) for c in counts],
                     report.share(counts[1], total), report.share(counts[2], total)))
        if source in per and report.shown(total):
            shares[source] = [c / total for c in counts]
    missing = [f"missing_{f}" for f in fields]
    below = reach.filter(pl.col("reach") > 0).group_by("source").agg(pl.col("records", *missing).sum()).sort("source")
    held = {s.name: set(s.fields) for s in config.sources}
    lacking = [(r["source"], report.count(r["records"]),
                *[report.share(r[f"missing_{f}"], r["records"]) if f in held.get(r["source"], ()) else "not in source"
                  for f in fields])
               for r in below.iter_rows(named=True)]
    cut = threshold_weight(lk.threshold)
    rules = "; ".join(" + ".join(rule) for rule in lk.deterministic) or "none configured"
    parts = [note(f"A record's best possible match weight is what it would score against an identical record: the "
                  f"prior ({data.model.intercept:.2f}) plus, for each compared field it has a value for, the weight "
                  "of exact agreement (for a term-frequency field, of agreeing on its own value); a missing field "
                  f"adds nothing. Where that falls short of the threshold's weight ({cut:.2f}), the model can never "
                  "accept a pair of the record, however alike its partner: it is placed only by an exact rule, if it "
                  f"has every field of one (rules: {rules}), or it cannot link at all. These records are not the "
                  "same as the unlinked ones: a record that can reach the threshold may still have no partner.")]
    if not all(math.isfinite(float(w[1])) for w in data.model.weights) or not math.isfinite(data.model.intercept):
        parts.append(note("Some of the model's weights are not numbers, so the records with those fields count "
                          "here as unable to reach the threshold; see the model section."))
    parts.append(note(_advice(report, below, fields, held)))
    parts.append(table(("source", "records", *REACH, "share only by an exact rule", "share that cannot link"), rows))
    if lacking:
        parts.append(table(("below the threshold: source", "records", *[f"lacking {f}" for f in fields]), lacking))
    parts.append(_reach_plot(shares))
    report.section("unlinkables", "Records that cannot reach the threshold", *parts)


def _advice(report: Report, below: pl.DataFrame, fields: list[str], held: dict[str, set[str]]) -> str:
    """Return what to do about the records below the threshold, naming per source the field of its own
    that they lack most often."""
    said: list[str] = []
    for r in below.iter_rows(named=True):
        own = [f for f in fields if f in held.get(r["source"], ())]
        if not report.shown(r["records"]) or not own:
            continue
        field = max(own, key=lambda f: (r[f"missing_{f}"], -own.index(f)))
        if r[f"missing_{field}"]:
            said.append(f"{r['source']}: {r[f'missing_{field}'] / r['records']:.0%} lack {field}")
        else:
            said.append(f"{r['source']}: they have every field the source gives, but too little evidence")
    if below.height == 0 or not said:
        return ("Every record can reach the threshold against an identical record, or is in a group too small "
                "to describe.")
    return ("Of the records below the threshold, per source, the field they most often lack: "
            + "; ".join(said) + ". To link them, fill the missing identifiers upstream (trace NHS numbers before "
            "pseudonymising, so that fewer tokens are missing), or add a field that tells people apart to the "
            "source and to [[linkage.comparisons]] (a council ID, the GP practice). A lower threshold would let "
            "them through, and more false matches with them. Records placed only by an exact rule link only while "
            "every field of the rule agrees exactly: one mistyped token leaves them apart.")


def _reach_plot(shares: dict[str, list[float]]) -> str:
    # Only the records below the threshold are drawn, on an axis scaled to them: they are a few percent
    # at most on a good site, and would not show beside the rest.
    fig, ax = new_figure(7.0, 0.45 * len(shares) + 1.4)
    names = list(shares)
    left = np.zeros(len(names))
    for k in (1, 2):
        values = np.array([shares[n][k] for n in names]) * 100
        ax.barh(names, values, left=left, color=REACH_COLOURS[k], label=f"below the threshold: {REACH[k]}")
        left += values
    for y, total in enumerate(left.tolist()):
        ax.text(total, y, f" {total:.1f}%", va="center", fontsize=8, color="#425563")
    ax.set_xlim(0, max(1.0, float(left.max(initial=0.0)) * 1.2))
    ax.set_xlabel("share of the source's records (%)")
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=2, frameon=False)
    return figure(fig, "Share of each source's records whose best possible match weight cannot reach the threshold.",
                  "unlinkables-reach")


# --- precision and recall against the threshold --------------------------------------------------------------

def precision(report: Report, config: Config, data: LinkReportData) -> None:
    """Add the section of expected precision and recall against the threshold."""
    lk, curve = config.linkage, data.curve
    shown = [t for t in sorted({*TABLE_THRESHOLDS, lk.threshold}) if t in set(curve.thresholds.tolist())]
    at = {t: i for i, t in enumerate(curve.thresholds.tolist())}
    rows = []
    for t in shown:
        i = at[t]
        rows.append((f"{t:g}" + (" (configured)" if t == lk.threshold else ""), f"{threshold_weight(t):.2f}",
                     f"{int(curve.pairs[i]):,}", f"{curve.expected_true[i]:,.1f}", f"{curve.expected_false[i]:,.1f}",
                     _ratio(curve.precision[i]), _ratio(curve.recall[i])))
    parts = [note("Without labels, each scored pair's match probability p stands for the chance it is a match: "
                  "among the pairs at or above a threshold, the expected true matches are the sum of p, the "
                  "expected false ones the sum of 1 − p, and precision their share of those pairs; recall is the "
                  "expected true matches as a share of all expected matches, the sum of p over every scored pair "
                  f"({curve.expected_matches:,.1f} here). The estimate is only as good as the model's calibration: "
                  "fields that are not independent can make it overconfident (for example a disagreeing NHS "
                  "token, which usually means another person, outweighed by an agreeing date of birth and area). "
                  "Pairs are of distinct identifier tuples; pairs joined by exact rules are not scored and not "
                  "included, nor are records the attach step placed, and a pair whose records are already in one "
                  "person through other links counts as missed here.")]
    if 0.5 in at:
        low = curve.expected_matches - float(curve.expected_true[at[0.5]])
        parts.append(note(f"{low:,.1f} of the expected matches are among pairs below probability 0.5: many pairs, "
                          "each a small chance. If that is a large share, either many matches are being missed or "
                          "the model is overconfident about such pairs; the pairs near the threshold (below) show "
                          "which."))
    if curve.not_kept:
        parts.append(note(f"{curve.not_kept:,} scored pairs below pairs_min_probability "
                          f"({lk.pairs_min_probability:g}) are not kept; they add an estimated "
                          f"{curve.estimated:,.1f} expected matches, from their weight bins."))
    if lk.threshold not in at:
        parts.append(note(f"The configured threshold {lk.threshold:g} is below pairs_min_probability, so pairs "
                          "near it were not kept and it is not shown."))
    parts.append(table(("threshold", "weight", "scored pairs at or above", "expected true", "expected false",
                        "expected precision", "expected recall"), rows))
    parts.append(_precision_plot(curve, lk.threshold))
    report.section("precision", "Precision and recall against the threshold, estimated without labels", *parts)


def _ratio(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.4f}"


def _precision_plot(curve: ThresholdCurve, threshold: float) -> str:
    # The x axis is the match weight, labelled with probabilities: a linear axis spreads 0.9 to 0.9999
    # evenly, as a logit axis would, at a third of the drawing cost.
    fig, ax = new_figure(7.0, 3.4)
    x = np.array([threshold_weight(t) for t in curve.thresholds.tolist()]) if curve.thresholds.size else np.zeros(0)
    ax.plot(x, curve.precision, color="#005eb8", label="expected precision")
    ax.plot(x, curve.recall, color="#41b6e6", linestyle="-.", label="expected recall")
    ax.axvline(threshold_weight(threshold), color="#d5281b", linestyle="--", label=f"threshold {threshold:g}")
    ticks = [t for t in PLOT_TICKS if not x.size or x[0] <= threshold_weight(t) <= x[-1]]
    ax.set_xticks([threshold_weight(t) for t in ticks], [f"{t:g}" for t in ticks])
    if x.size:
        ax.set_xlim(float(x[0]), float(x[-1]))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("threshold: match probability (spaced by match weight)")
    ax.set_ylabel("expected share")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, frameon=False)
    return figure(fig, "Expected precision and recall of the scored pairs at each threshold, with the configured one.",
                  "precision-recall")


# --- cluster sizes -------------------------------------------------------------------------------------------

def clusters(report: Report, config: Config, data: LinkReportData) -> None:
    """Add the section of records and sources per person, with unusually large people flagged."""
    sizes = data.sizes
    records, people = sizes["records"].to_numpy(), sizes["people"].to_numpy()
    band = np.searchsorted(SIZE_BANDS, records, side="right") - 1
    n_bands = int(band.max()) + 1 if band.size else 1
    in_band = np.bincount(band, weights=people, minlength=n_bands).astype(np.int64)
    records_in_band = np.bincount(band, weights=people * records, minlength=n_bands).astype(np.int64)
    labels = [_band_label(b) for b in SIZE_BANDS[:n_bands]]
    size_rows = [(label, report.count(n), _records(report, n, r))
                 for label, n, r in zip(labels, in_band.tolist(), records_in_band.tolist(), strict=True)]
    by_sources = np.bincount(sizes["sources"].to_numpy(), weights=people).astype(np.int64)[1:].tolist()
    source_rows = [(str(s), report.count(n)) for s, n in enumerate(by_sources, start=1)]
    large = large_people(sizes)
    spines = [s.name for s in config.sources if s.kind == "gp_registrations"]
    tail = f"more than {math.floor(large.cut):,} records" if math.isfinite(large.cut) else "no people"
    flags = [("more than one record from one GP registration source"
              + (f" ({', '.join(spines)})" if spines else " (no source of kind gp_registrations)"),
              report.count(large.merged_people), _records(report, large.merged_people, large.merged_records)),
             (f"far out in the tail: {tail}", report.count(large.tail_people),
              _records(report, large.tail_people, large.tail_records)),
             ("either", report.count(large.flagged_people), _records(report, large.flagged_people,
                                                                     large.flagged_records))]
    parts = [note(f"{report.count(int(people.sum()))} people. A person is flagged as unusually large by either of "
                  "two rules. More than one record from one GP registration source: a registration list holds each "
                  "registered person once, so two of its records in one person are two registered people merged "
                  "(or one person registered twice, which the practice should resolve); it is almost always a "
                  "false match. Far out in the tail: a modified z-score of log(records per person) above "
                  f"{TAIL_Z:g} (Iglewicz and Hoaglin, 1993), that is 0.6745 × (log records − median) / MAD, and more "
                  "than twice the median person's records; where the MAD is 0, 1.2533 × the mean absolute "
                  "deviation stands in. A large person is often a heavy "
                  "user of services (a long outpatient series), so this flag asks for a look at the person's "
                  "identifiers, not a correction. The records of fewer people than the disclosure threshold are "
                  "suppressed with them.")]
    parts.append(table(("unusually large people", "people", "records"), flags))
    parts.append(table(("records per person", "people", "records"), size_rows))
    parts.append(table(("sources per person", "people"), source_rows))
    parts.append(_size_plot(report, labels, in_band.tolist(), by_sources))
    report.section("clusters", "Cluster sizes: records and sources per person", *parts)


def _records(report: Report, people: int, records: int) -> str:
    """Return the records of a group of people as published: suppressed with the people when they are."""
    return report.count(records) if people == 0 or report.shown(people) else "suppressed"


def _band_label(low: int) -> str:
    i = SIZE_BANDS.index(low)
    if i + 1 == len(SIZE_BANDS):
        return f"{low:,} or more"
    high = SIZE_BANDS[i + 1] - 1
    return f"{low:,}" if high == low else f"{low:,}–{high:,}"


def _size_plot(report: Report, labels: list[str], people: list[int], by_sources: list[int]) -> str:
    from matplotlib.ticker import FuncFormatter

    # Horizontal bars: the band labels read without rotating, and the plot draws faster.
    fig, (left, right) = new_figure(7.0, 0.25 * max(len(labels), len(by_sources)) + 1.6, ncols=2)
    widths = [report.published(n) for n in people]
    left.barh(labels, widths, color="#005eb8")
    if max(widths, default=0) > 0:
        log_scale(left, "x")
    left.invert_yaxis()
    left.set_ylabel("records per person")
    left.set_xlabel("people (log scale)")
    right.barh([str(s) for s in range(1, len(by_sources) + 1)], [report.published(n) for n in by_sources],
               color="#41b6e6")
    right.invert_yaxis()
    right.set_ylabel("sources per person")
    right.set_xlabel("people")
    right.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    return figure(fig, "People by records per person and by the sources their records come from "
                       "(counts as published: rounded, suppressed ones drawn as 0).", "clusters-sizes")


__all__ = ["clusters", "precision", "threshold_weight", "unlinkables"]
