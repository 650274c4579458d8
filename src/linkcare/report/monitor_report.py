"""monitor_report.html: per cohort, activity and cost per person-month over time as SPC charts with the
plan line, cost split by setting, and the last month against plan. Every figure is one monitor.parquet
and spc.parquet publish: suppressed cells are not drawn, and counts are as the disclosure rule shows them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from linkcare.config import Config
from linkcare.config.load import config_hash
from linkcare.config.monitor import MEASURE_BY_NAME
from linkcare.monitor.cohorts import Members
from linkcare.monitor.costs import UnitCosts
from linkcare.monitor.impact import WORDS, Impact, ratio_text
from linkcare.monitor.tables import ChartSummary
from linkcare.monitor.window import Window
from linkcare.report.html import Report, escape, figure, new_figure, note, table
from linkcare.report.spc_icons import (
    ASSURANCE_WORDS,
    NO_ASSURANCE_WORDS,
    VARIATION_WORDS,
    assurance_icon,
    variation_icon,
)

REPORT_NAME = "monitor_report.html"
#: The measures charted for every cohort, in order; a measure with a plan is charted too.
CHARTED = ("emergency_admissions", "emergency_bed_days", "ae_attendances", "elective_admissions",
           "outpatient_attendances", "social_care_people", "deaths", "cost_health", "cost_social_care", "cost_total")
#: The cost of each setting: the activity measure whose cost it is.
SETTINGS = (("emergency admissions", "emergency_admissions"), ("elective and day cases", "elective_admissions"),
            ("A&E", "ae_attendances"), ("outpatients", "outpatient_attendances"), ("home care", "home_care_hours"),
            ("residential care", "residential_weeks"), ("nursing care", "nursing_weeks"),
            ("reablement", "reablement_episodes"))
_POINT_COLOURS = {"common_cause": "#7f7f7f", "improvement": "#0072c6", "concern": "#ff6600",
                  "neutral_high": "#8000c0", "neutral_low": "#8000c0"}
_SETTING_COLOURS = ("#d5281b", "#005eb8", "#ffb81c", "#41b6e6", "#007f3b", "#78be20", "#330072", "#ae2573")


@dataclass(frozen=True)
class MonitorReport:
    """Everything the report shows, all of it already published (disclosure applied) but `members`,
    whose sizes it shows through the rule."""

    config: Config
    inputs: Mapping[str, Any]
    window: Window
    members: Sequence[Members]
    monitor: pl.DataFrame
    spc: pl.DataFrame
    summaries: Sequence[ChartSummary]
    against_plan: pl.DataFrame
    costs: UnitCosts
    impacts: Sequence[Impact] = ()


def write_monitor_report(path: Path, data: MonitorReport) -> int:
    """Write the report; return its size in bytes."""
    config, window = data.config, data.window
    facts = [("config", config.path.name), ("config SHA-256", config_hash(config.path)),
             ("cohort", str(data.inputs["cohort"]["folder"])),
             ("as of", f"{config.reference_date.isoformat()} ({config.as_of_facts['why']})"),
             ("months", f"{window.first:%B %Y} to {window.last:%B %Y} ({len(window.months)})"),
             ("prices", f"{data.costs.price_year} (unit costs {data.costs.version})")]
    if "risk" in data.inputs:
        facts.insert(3, ("risk", str(data.inputs["risk"]["folder"])))
    report = Report("linkcare monitor: use and cost of care by cohort", facts, config.disclosure)
    _cohorts(report, data)
    _overview(report, data)
    for m in data.members:
        _cohort_section(report, data, m.name)
    for impact in data.impacts:
        _impact(report, impact)
    _coverage(report, data)
    _unit_costs(report, data.costs)
    _method(report, data)
    return report.write(path)


def _label(measure: str) -> str:
    return measure.replace("_", " ").replace("ae ", "A&E ").capitalize()


def _value_label(measure: str) -> str:
    return "£ per person-month" if MEASURE_BY_NAME[measure].money else "per 1,000 person-months"


def _cohorts(report: Report, data: MonitorReport) -> None:
    rows = [(m.name, m.definition, report.count(m.frame.height),
             "open (joins at registration)" if m.frame["enrolled"].null_count() == m.frame.height
             else (m.enrolled.isoformat() if m.enrolled is not None else "each member's own date"),
             "; ".join(m.notes) or "–") for m in data.members]
    report.section("cohorts", "Cohorts", note(
        "Membership is frozen at enrolment and written to cohorts/<name>.parquet, so later months follow the same "
        "people; each member counts while registered and alive. The population cohort is everyone on the spine."),
        table(("cohort", "who", "members", "enrolled", "notes"), rows))


def _overview(report: Report, data: MonitorReport) -> None:
    """A table per cohort of its charted measures: latest value, mean, variation and assurance icons."""
    last = data.spc.filter(pl.col("value").is_not_null()).sort("month").group_by(
        "cohort", "measure", maintain_order=True).last()
    latest = {(r["cohort"], r["measure"]): r for r in last.to_dicts()}
    head = "".join(f"<th>{escape(h)}</th>" for h in ("cohort", "measure", "latest month", "value", "mean",
                                                      "plan", "variation", "assurance"))
    body = []
    for s in data.summaries:
        if not _charted(s, data):
            continue
        row = latest.get((s.cohort, s.measure))
        value = "suppressed or missing" if row is None else _fmt(row["value"], s.measure)
        mean = "–" if row is None else _fmt(row["mean"], s.measure)
        plan = "–" if row is None or row["plan"] is None else _fmt(row["plan"], s.measure)
        month = "–" if row is None else f"{row['month']:%b %Y}"
        body.append(
            f"<tr><td>{escape(s.cohort)}</td><td>{escape(_label(s.measure))}</td><td>{month}</td>"
            f"<td>{escape(value)}</td><td>{escape(mean)}</td><td>{escape(plan)}</td>"
            f"<td>{_icon_cell(s)}</td><td>{_assurance_cell(s)}</td></tr>")
    report.section("overview", "Overview", note(
        "Each row is one SPC chart: the latest month's value (a rate per 1,000 person-months, or £ per "
        "person-month), the chart's mean, and its Making Data Count icons: the variation of the latest point, "
        "and the assurance that the plan will be met."),
        f'<table class="icons"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>', _legend())


def _charted(s: ChartSummary, data: MonitorReport) -> bool:
    return s.measure in CHARTED or s.plan or any(p.cohort == s.cohort and p.measure == s.measure
                                                 for p in (data.config.monitor.plans if data.config.monitor else ()))


_SHORT_VARIATION = {"common_cause": "common cause", "improvement_high": "improvement (high)",
                    "improvement_low": "improvement (low)", "concern_high": "concern (high)",
                    "concern_low": "concern (low)", "neutral_high": "special cause (high)",
                    "neutral_low": "special cause (low)"}
_SHORT_ASSURANCE = {"pass": "meets the plan consistently", "fail": "misses the plan consistently",
                    "hit_and_miss": "hit and miss"}


def _icon_cell(s: ChartSummary, words: bool = False) -> str:
    """Return the variation icon with its label (`words`: its full meaning)."""
    if s.variation is None:
        return escape("no points to judge")
    text = VARIATION_WORDS.get(s.variation, s.variation) if words else _SHORT_VARIATION.get(s.variation, s.variation)
    trial = " (trial limits: fewer than 12 points)" if s.trial_limits else ""
    return f"{variation_icon(s.variation)} {escape(text + trial)}"


def _assurance_cell(s: ChartSummary, words: bool = False) -> str:
    if s.assurance is None:
        return escape(NO_ASSURANCE_WORDS) if words else escape("– (no plan)" if not s.plan else "–")
    text = ASSURANCE_WORDS.get(s.assurance, s.assurance) if words else _SHORT_ASSURANCE.get(s.assurance, s.assurance)
    return f"{assurance_icon(s.assurance)} {escape(text)}"


def _legend() -> str:
    rows = "".join(f"<tr><td>{variation_icon(k)}</td><td>{escape(v)}</td></tr>" for k, v in VARIATION_WORDS.items())
    rows += "".join(f"<tr><td>{assurance_icon(k)}</td><td>{escape(v)}</td></tr>" for k, v in ASSURANCE_WORDS.items())
    return (f'<details><summary>What the icons mean</summary><table class="legend"><tbody>{rows}</tbody>'
            "</table></details>")


def _fmt(value: float | None, measure: str) -> str:
    if value is None:
        return "–"
    return f"£{value:,.2f}" if MEASURE_BY_NAME[measure].money else f"{value:,.1f}"


def _cohort_section(report: Report, data: MonitorReport, cohort: str) -> None:
    parts: list[str] = []
    for s in data.summaries:
        if s.cohort != cohort or not _charted(s, data):
            continue
        chart = data.spc.filter((pl.col("cohort") == cohort) & (pl.col("measure") == s.measure)).sort("month")
        parts.append(f'<h3>{escape(_label(s.measure))}</h3><p class="note">{_icon_cell(s, True)}<br>'
                     f'{_assurance_cell(s, True)}</p>')
        parts.append(_spc_figure(chart, s))
    parts.append(_setting_costs(data, cohort))
    parts.append(_against_plan(data, cohort))
    report.section(f"cohort-{cohort}", f"Cohort: {cohort}", *parts)


def _spc_figure(chart: pl.DataFrame, s: ChartSummary) -> str:
    fig, ax = new_figure(7.0, 2.8)
    months = chart["month"].to_list()
    for column, style in (("mean", {"color": "#425563", "lw": 1.2}),
                          ("upper", {"color": "#768692", "lw": 1, "ls": "--"}),
                          ("lower", {"color": "#768692", "lw": 1, "ls": "--"})):
        values = [None if v is None else v for v in chart[column].to_list()]
        for group in chart["rebase_group"].unique().sort().to_list():
            idx = [i for i, g in enumerate(chart["rebase_group"].to_list()) if g == group]
            ax.plot([months[i] for i in idx], [values[i] if values[i] is not None else float("nan") for i in idx],
                    **style)
    values = chart["value"].to_list()
    ax.plot(months, [float("nan") if v is None else v for v in values], color="#aeb7bd", lw=1, zorder=2)
    colours = [_POINT_COLOURS.get(v or "common_cause", "#7f7f7f") for v in chart["variation"].to_list()]
    shown = [i for i, v in enumerate(values) if v is not None]
    ax.scatter([months[i] for i in shown], [values[i] for i in shown], c=[colours[i] for i in shown], s=14, zorder=3)
    if chart["plan"].drop_nulls().len():
        ax.plot(months, [float("nan") if v is None else v for v in chart["plan"].to_list()], color="#d5281b",
                lw=1.4, ls=":", label="plan")
        ax.legend(loc="upper left", frameon=False, fontsize=8)
    gaps = [months[i] for i, m in enumerate(chart["missing"].to_list()) if m]
    for gap in gaps:
        ax.axvspan(gap - dt.timedelta(days=14), gap + dt.timedelta(days=14), color="#f0c0c0", lw=0)
    for month, _reason in s.rebases:
        ax.axvline(month, color="#330072", lw=1)
    ax.set_ylabel(_value_label(s.measure))
    ax.set_ylim(bottom=0)
    caption = (f"{_label(s.measure)}, {_value_label(s.measure)}, with the mean and the process limits "
               "(dashed); orange points are special cause of concern, blue of improvement, purple neutral")
    if gaps:
        caption += f"; shaded: {len(gaps)} month(s) a source does not cover (missing, not joined)"
    if s.rebases:
        caption += "; limits recalculated at " + ", ".join(f"{m:%b %Y} ({r})" for m, r in s.rebases)
    return figure(fig, caption + ".", f"spc-{s.cohort}-{s.measure}")


def _setting_costs(data: MonitorReport, cohort: str) -> str:
    rows = data.monitor.filter((pl.col("cohort") == cohort)
                               & pl.col("measure").is_in([m for _, m in SETTINGS])).sort("month")
    if rows.height == 0:
        return ""
    fig, ax = new_figure(7.0, 3.0)
    months = sorted(rows["month"].unique().to_list())
    bottom = [0.0] * len(months)
    for (label, measure), colour in zip(SETTINGS, _SETTING_COLOURS, strict=True):
        by_month = dict(zip(*rows.filter(pl.col("measure") == measure).select("month", "cost_per_person_month")
                            .to_dict(as_series=False).values(), strict=True))
        if not by_month:
            continue
        heights = [by_month.get(m) or 0.0 for m in months]
        ax.bar(months, heights, bottom=bottom, width=25, color=colour, label=label)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("£ per person-month")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    return ("<h3>Cost by setting</h3>"
            + figure(fig, "Cost per person-month by setting, health and social care together (suppressed cells "
                     "drawn as 0).", f"costs-{cohort}"))


def _against_plan(data: MonitorReport, cohort: str) -> str:
    if data.against_plan.height == 0:
        return ""
    rows = data.against_plan.filter(pl.col("cohort") == cohort)
    if rows.height == 0:
        return ""
    direction = {(s.cohort, s.measure): s.direction for s in data.summaries}
    out = []
    for r in rows.to_dicts():
        measure = r["measure"]
        better = direction.get((cohort, measure), "neutral")
        value = r["last_value"]
        met = ("suppressed" if value is None else "met" if (value <= r["last_plan"] if better == "lower"
                                                           else value >= r["last_plan"]) else "not met")
        money = MEASURE_BY_NAME[measure].money
        gap = ("suppressed" if r["gap_activity"] is None else f"£{r['gap_activity']:+,.0f}" if money
               else f"{r['gap_activity']:+,.0f} {MEASURE_BY_NAME[measure].unit}")
        pounds = "suppressed" if r["gap_pounds"] is None else f"£{r['gap_pounds']:+,.0f}"
        out.append((_label(measure), f"{r['last_month']:%b %Y}", _fmt(value, measure),
                    _fmt(r["last_plan"], measure), met, str(r["planned_months"]), gap, pounds))
    return ("<h3>Last month against plan</h3>" + note(
        "The cumulative gap is what the cohort used above (+) or below (-) its trajectory over the planned months so "
        "far, in activity and in pounds (activity priced at the cohort's own mean cost per event).")
            + table(("measure", "month", "value", "plan", "plan", "planned months", "cumulative gap",
                     "gap in £"), out))


def _impact(report: Report, impact: Impact) -> None:
    """The matched comparison of one cohort: both groups by month from enrolment, balance, estimates, words."""
    d = report.disclosure
    enrolled, comparison = impact.matched.pairs.height, impact.matched.pairs["control_id"].n_unique()
    late = (f", and {report.count(impact.without_follow_up)} enrolled in the last month counted have no month after "
            "enrolment yet" if impact.without_follow_up else "")
    intro = note(
        f"{report.count(enrolled)} enrolled people were each matched, at their enrolment month, to a similar person "
        f"who met the same rule and was not enrolled ({report.count(comparison)} different people, some matched more "
        f"than once); {report.count(impact.matched.unmatched.height)} had no one similar enough and are left out of "
        f"the estimates{late}. See docs/impact.md.")
    words = "".join(f"<p><strong>{escape(WORDS[m].capitalize())}.</strong> {escape(text)}</p>"
                    for m, text in impact.conclusions.items())
    rows = [(WORDS[e.measure], _change(e.naive_change), _change(e.comparison_change),
             "–" if e.rate_ratio is None else f"{ratio_text(e.rate_ratio)} ({ratio_text(e.ci_low)}–"
             f"{ratio_text(e.ci_high)})")
            for e in impact.estimates]
    estimates = table(("outcome", "change of the enrolled (after ÷ before)",
                       "change of the matched group (regression to the mean)",
                       "rate ratio, difference-in-differences (95% interval)"), rows)
    flagged = [r for r in impact.balance.to_dicts() if not abs(r["smd_after"] or 0) < 0.1]
    refined = (f" To balance {', '.join(c.replace('_', ' ') for c in impact.refined)}, the matching also held "
               "each enrolled person to the same third of it." if impact.refined else "")
    warning = note(f"Warning: after matching, {len(flagged)} covariate(s) still differ by a standardised mean "
                   f"difference of 0.1 or more; read the estimates with care.{refined}") if flagged else note(
        f"Every standardised mean difference after matching is below 0.1.{refined}")
    balance = table(("covariate", "enrolled", "pool (before matching)", "matched group", "SMD before", "SMD after"),
                    [(r["covariate"].replace("_", " "), f"{r['enrolled_mean']:.2f}", f"{r['pool_mean']:.2f}",
                      f"{r['matched_mean']:.2f}", f"{r['smd_before']:+.3f}", f"{r['smd_after']:+.3f}")
                     for r in impact.balance.to_dicts()])
    fig, ax = new_figure(7.0, 3.0)
    for group, colour in (("enrolled", "#005eb8"), ("matched comparison", "#768692")):
        rows_g = impact.event_time.filter(pl.col("group") == group).sort("offset")
        shown = rows_g.filter((pl.col("events") >= d.threshold) | (pl.col("events") == 0))
        ax.plot(shown["offset"].to_list(), shown["rate"].to_list(), marker="o", ms=3, color=colour, label=group)
    ax.axvline(0, color="#d5281b", lw=1)
    ax.annotate("enrolment", (0, 0), xytext=(3, 3), textcoords="offset points", fontsize=8, color="#d5281b")
    ax.set_xlabel("months from the enrolment month")
    ax.set_ylabel("per 1,000 person-months")
    ax.set_title("Emergency admissions", fontsize=10, loc="left")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, fontsize=8)
    chart = figure(fig, "Emergency admissions of the enrolled and of their matched comparison group, by month from "
                        "enrolment (a month with fewer admissions than the disclosure threshold is not drawn).",
                   f"impact-{impact.cohort}")
    report.section(f"impact-{impact.cohort}", f"Did it make a difference? {impact.cohort}", intro, words, estimates,
                   chart, "<h3>Balance</h3>", warning, balance)


def _change(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ({value - 1:+.0%})"


def _coverage(report: Report, data: MonitorReport) -> None:
    rows = [(s, str(len(v)), ", ".join(f"{m:%Y-%m}" for m in sorted(v)) or "–")
            for s, v in data.window.uncovered.items()]
    report.section("coverage", "Months each source covers", note(
        "A source covers a month when it holds at least half as many events as its median month of the last "
        "twelve. The measures drawn from a source are flagged missing in the months it does not cover; SPC "
        "charts leave a gap there, never a line across."), table(("source", "months not covered", "which"), rows))


def _unit_costs(report: Report, costs: UnitCosts) -> None:
    rows = [(r["activity"], r["unit"], f"£{r['cost']:,.2f}", r["price_year"], f"£{r['cost_at_price_year']:,.2f}",
             r["origin"], r["source"], r["licence"]) for r in costs.table.to_dicts()]
    report.section("unit-costs", "Unit costs", note(
        f"Costs are at {costs.price_year} prices. The bundled table ({costs.version}) is replaced row by row by the "
        "site's own ([monitor] costs); an extract's own cost (a tariff column, CLD's unit cost) is used where it "
        "has one. Check the licence notes before republishing the table."),
        table(("activity", "unit", "cost", "price year", f"at {costs.price_year}", "from", "source", "licence"), rows))


def _method(report: Report, data: MonitorReport) -> None:
    settings = data.config.monitor
    baseline = settings.baseline_months if settings else 12
    screen = "are" if (settings is None or settings.screen_outliers) else "are not"
    report.section("method", "How this is counted", note(
        "People count from registration to death or deregistration; an event counts only while its person is "
        "at risk. Rates are per 1,000 person-months at risk. SPC follows NHS England's Making Data Count as "
        f"NHSRplotthedots implements it: XmR limits at the mean ± 2.66 × the mean moving range, fixed from the "
        f"first {baseline} points of each period (moving ranges above 3.267 × their mean {screen} left out); "
        "special cause for a point outside the limits, 7 points in a row rising or falling, 2 of 3 points beyond "
        "two thirds of the way to a limit on one side, and 7 points in a row on one side of the mean. See "
        "docs/monitor.md and docs/spc.md."))


__all__ = ["REPORT_NAME", "MonitorReport", "write_monitor_report"]
