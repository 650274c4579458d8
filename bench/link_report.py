"""Print the linkage benchmark's results: per scenario a table of every tool run (precision, recall,
F1, seconds, peak MiB and the load when it ran), the idealised linkers, linkcare's attach
calibration and each target's verdict beside Splink's figure; then how every number was obtained."""

from __future__ import annotations

from typing import Any

from attach_calibration import MIN_BIN, SLACK
from link_runs import Scenario, ToolRun
from measure import HOW_MEASURED
from site_cases import FOCUS_DEFINITION


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"


def _print_runs(sc: Scenario) -> None:
    print(f"  {'tool':<18} {'variant':<12} {'status':<14} {'prec':>7} {'recall':>7} {'F1':>7} "
          f"{'focus F1':>9} {'seconds':>8} {'peak MiB':>9} {'load':>5}")
    for r in sc.runs:
        s = r.scores or {}
        print(f"  {r.tool:<18} {r.variant:<12} {r.status:<14} {_fmt(s.get('precision'), '.4f'):>7} "
              f"{_fmt(s.get('recall'), '.4f'):>7} {_fmt(r.f1, '.4f'):>7} {_fmt(r.focus_f1, '.4f'):>9} "
              f"{_fmt(r.seconds, '.1f'):>8} {_fmt(r.peak_mib, ',.0f'):>9} {_fmt(r.load_before, '.1f'):>5}")
        if r.note and r.status != "ok":
            print(f"      note: {r.note.splitlines()[0]}")


def _print_idealised(ideal: dict[str, Any]) -> None:
    print(f"  idealised linkers ({ideal['note']}): every other record placed right; "
          f"{ideal['loose_records']:,.0f} loose records (hospital records without a token, and social-care "
          f"records of clients with no token on any record{ideal.get('council_note', '')}), "
          f"{ideal['share_with_one_candidate']:.1%} with one candidate person (same birth year, month, sex and "
          f"LSOA on the GP record), {ideal['share_with_several_candidates']:.1%} several, "
          f"{ideal['share_with_no_candidate']:.1%} none")
    for linker, how in (("busiest", "each with its busiest candidate"),
                        ("practice", "busiest among candidates whose GP record shows its practice"),
                        ("unique", "only those with exactly one candidate")):
        print(f"    {linker:<9} P {ideal[f'{linker}_precision']:.4f} R {ideal[f'{linker}_recall']:.4f} "
              f"F1 {ideal[f'{linker}_f1']:.4f}  ({how})")
    print(f"    unique keeps precision >= 0.999: {'yes' if ideal['unique_precision'] >= 0.999 else 'NO'}")


def _print_attach(r: ToolRun) -> None:
    a = r.attach
    if a is None or r.scores is None:
        return
    w = a["without_attachments"]
    print(f"  attach calibration, {r.tool} {r.variant}: {a['records_considered']:,} records considered, "
          f"{a['attached']:,} attached, {a['attached_right']:,} right; per source "
          + (", ".join(f"{k} {v['right']:,}/{v['attached']:,}" for k, v in a["by_source"].items()) or "none")
          + f"; without the attachments P {w['precision']:.4f} R {w['recall']:.4f} F1 {w['f1']:.4f} "
          f"({w['false_positives']:,} false-positive pairs, against {r.scores['false_positives']:,} with them)")
    print(f"    {'posterior':<16} {'attached':>9} {'right':>7} {'share right':>12}")
    for b in a["bins"]:
        print(f"    [{b['from']:<5}, {b['to']:<5}) {b['attachments']:>9,} {b['right']:>7,} "
              f"{_fmt(b['share_right'], '.4f'):>12}")


def _print_targets(sc: Scenario) -> None:
    for t in sc.targets:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        splink = "" if t.get("splink") is None else f" (Splink {_number(t['splink'])})"
        print(f"  target: {t['target']}\n          {_number(t['value']):>10} vs {_number(t['bound']):>10}"
              f"{splink}  {verdict}")


def print_report(scenarios: list[Scenario], quick: bool) -> None:
    print("\n" + "=" * 100)
    print("linkcare link benchmark" + (" (--quick sizes: a smoke run, not the issue's sizes)" if quick else ""))
    for sc in scenarios:
        print(f"\n[{sc.name}] {sc.description}")
        if "hard_options" in sc.data:
            print(f"  hard site options: {sc.data['hard_options']}")
        _print_runs(sc)
        if sc.data.get("idealised"):
            _print_idealised(sc.data["idealised"])
        for r in sc.runs:
            _print_attach(r)
        _print_targets(sc)
        if sc.data.get("bound_note"):
            print(f"  {sc.data['bound_note']}")
    print("\nHow each number was obtained:")
    print(f"  - {HOW_MEASURED}; tools run one after another, never together; 'load' is the 1-minute load "
          "average when the child started (other work on the machine slows a run down).")
    print("  - precision, recall, F1: pairwise, computed by bench/linkage_metrics.py from each tool's clusters "
          "against the truth table (linkcare: person_index.parquet's person_id; Splink: its connected-components "
          "clusters; ECM: connected components of its matches).")
    print(f"  - focus F1 (sites): {FOCUS_DEFINITION}.")
    print("  - idealised linkers (sites): linkcare.synth.audit.idealised_linkage on the variant's site folder, from "
          "the truth; a bound on what birth year, month, sex, LSOA (and the practice) can do for loose records "
          "(hospital records without a token; social-care records of clients with no token on any record, or "
          "every token-less one when the config drops the council ID), not a tool that was run. Site targets: "
          "F1 >= each idealised F1 - 0.002; the target's linker is 'unique', the one that keeps precision "
          ">= 0.999 (busiest and practice guess and lose it); "
          "all three verdicts are printed.")
    print("  - attach calibration: bench/attach_calibration.py; attached records (attachments.parquet, attached "
          "true) per posterior bin; right when the record's true person is the owner (most common true person "
          "among the records not attached) of the person it was attached to; target: share right >= the bin's "
          f"lower edge - {SLACK} in every bin with at least {MIN_BIN} attachments.")
    print("  - linkcare's F1 is cross-checked against `linkcare evaluate links --json` (a warning is printed above "
          "if they differ).")
    print("  - Splink: bench/splink_runner.py; linkcare's standardised records, closest equivalent comparisons "
          "(practice given area as a custom comparison on both columns), same blocking passes; prior from "
          "deterministic rules + assumed recall, u by random sampling (max_pairs 1e7, seeded), m by EM on each "
          "blocking pass; predict and cluster at the threshold.")
    print("  - recordlinkage ECM: bench/ecm_runner.py; full index, binary features (Jaro-Winkler >= 0.85 for "
          "strings, exact for the rest), ECMClassifier, in a child killed at the time limit.")
