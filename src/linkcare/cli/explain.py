"""`linkcare explain DIR --record SOURCE:ID` (or `--pair SOURCE:ID SOURCE:ID`): why a record
linked where it did, in words and a waterfall of weights, or as JSON; never a value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from linkcare.cli.output import print_table
from linkcare.linkage.explain import DEFAULT_PAIRS, explain_pair, explain_record, parse_record


@click.command()
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option("--record", "record", metavar="SOURCE:RECORD_ID", help="The record to explain.")
@click.option("--pair", "pair", nargs=2, metavar="SOURCE:ID SOURCE:ID", help="Two records whose pair to explain.")
@click.option("--pairs", "max_pairs", type=click.IntRange(min=0), default=DEFAULT_PAIRS, show_default=True,
              help="With --record: how many of its pairs to show, the strongest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON for scripts.")
def explain(folder: Path, record: str | None, pair: tuple[str, str] | None, max_pairs: int, as_json: bool) -> None:
    """Explain why a record in DIR (the output of `linkcare link`) linked where it did, or did not.

    Shows the exact rule that placed it, the candidate passes that brought its pairs, each pair's
    level and weight per field as a waterfall (the prior, the fields, any term-frequency
    adjustment, the total and the probability), the attach decision with its alternatives, or the
    row check that rejected it. It shows levels and weights only, never a value.
    """
    if (record is None) == (not pair):
        raise click.UsageError("give --record SOURCE:RECORD_ID or --pair SOURCE:ID SOURCE:ID")
    if record is not None:
        source, record_id = parse_record(record, "--record")
        facts = explain_record(folder, source, record_id, max_pairs)
    else:
        assert pair is not None
        facts = explain_pair(folder, parse_record(pair[0], "--pair"), parse_record(pair[1], "--pair"))
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    elif record is not None:
        _show_record(facts)
    else:
        _show_pair(facts)


def _p(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def _show_waterfall(pair: dict[str, Any], threshold: float) -> None:
    rows: list[tuple[str, ...]] = [("term", "level", "weight", "running total")]
    total = 0.0
    for term in pair["terms"]:
        total += term["weight"]
        if term["term"] == "prior":
            rows.append(("prior (log2 odds of a match)", "", f"{term['weight']:+.3f}", f"{total:+.3f}"))
        elif term["term"] == "field":
            rows.append((term["field"], term["level"], f"{term['weight']:+.3f}", f"{total:+.3f}"))
        else:
            on = f" ({', '.join(term['fields'])})" if term["fields"] else ""
            rows.append((f"term-frequency adjustment{on}", "", f"{term['weight']:+.3f}", f"{total:+.3f}"))
    rows.append(("match weight", "", f"{pair['match_weight']:+.3f}", ""))
    print_table(rows)
    verdict = "accepted" if pair["accepted"] else "not accepted"
    click.echo(f"    probability {_p(pair['match_probability'])} (threshold {threshold:g}): {verdict}; "
               f"found by the candidate pass {pair['pass']}")


def _show_node(facts: dict[str, Any]) -> None:
    node = facts["node"]
    click.echo(f"identifier tuple (node) {node['node']}: {node['records']:,} record(s) of {facts['record']['source']} "
               f"share it; fields held: {', '.join(node['fields_held']) or 'none'}"
               + (f"; missing: {', '.join(node['fields_missing'])}" if node["fields_missing"] else ""))
    if node["exact_rule"]:
        click.echo(f"exact rule {node['exact_rule']} joined it to other records: its exact cluster has "
                   f"{node['exact_cluster_nodes']:,} nodes, {node['exact_cluster_records']:,} records")
    elif node["rules_held"]:
        click.echo(f"it holds every field of the exact rule(s) {', '.join(node['rules_held'])}, but no other record "
                   "shares them")
    else:
        click.echo("it holds no exact rule's fields, so only scored pairs and the attach step can place it")


def _show_record(facts: dict[str, Any]) -> None:
    rec = f"{facts['record']['source']}:{facts['record']['record_id']}"
    if facts["status"] == "rejected":
        click.echo(f"{rec} was rejected by the row checks (row {facts['rejected']['row']:,} of its extract): "
                   f"{facts['rejected']['reason']}; it is in no person")
        return
    person = facts["person"]
    click.echo(f"{rec}: person {facts['person_id']} ({person['records']:,} records from {person['sources']} "
               f"source(s)), stage {facts['match_stage']}, match probability {_p(facts['match_probability'])}")
    _show_node(facts)
    passes = ", ".join(f"{p['pass']} {p['pairs_kept']:,} ({p['accepted']:,} accepted)" for p in facts["passes"])
    click.echo(f"candidate pairs scored: {facts['node']['candidate_pairs']:,}; kept in pairs.parquet: "
               f"{facts['pairs_kept']:,}" + (f", by pass: {passes}" if passes else "")
               + (f"; {facts['pairs_not_kept']:,} scored below pairs_min_probability "
                  f"{facts['pairs_min_probability']:g} and were not kept" if facts["pairs_not_kept"] else ""))
    if not facts["node"]["candidate_pairs"]:
        click.echo("no candidate pass brought it a candidate outside its exact cluster (records in one exact cluster "
                   "are not compared)" if facts["node"]["exact_rule"] else
                   f"no candidate pass brought it a candidate: no record it may pair with under link_type "
                   f"{facts['link_type']} shares every field of any pass")
    for pair in facts["pairs"]:
        other = pair["other"]
        same = "the same person" if other["same_person"] else f"person {other['person_id']}"
        click.echo(f"\n  pair with {other['source']}:{other['record_id']} (node {other['node']}, {same})")
        _show_waterfall(pair, facts["threshold"])
    if len(facts["pairs"]) < facts["pairs_kept"]:
        click.echo(f"\n  ({facts['pairs_kept'] - len(facts['pairs']):,} weaker pairs not shown; see --pairs)")
    _show_attach(facts.get("attach"))


def _show_attach(attach: dict[str, Any] | None) -> None:
    if attach is None:
        return
    click.echo("\nattach step (its cluster held no exact rule's fields):")
    verdict = (f"attached to person {attach['candidate_person_id']}" if attach["attached"] else
               f"not attached; the likeliest candidate, person {attach['candidate_person_id']},")
    click.echo(f"  {verdict} at posterior {_p(attach['posterior'])}; none of the {attach['candidates']} candidate(s): "
               f"{_p(attach['none'])}")
    for alt in attach["alternatives"]:
        click.echo(f"  alternative: person {alt['person_id']} at posterior {_p(alt['posterior'])}")
    if "source_attaches" in attach and not attach["source_attaches"]:
        click.echo(f"  this source does not attach: {attach['source_why']}")


def _show_pair(facts: dict[str, Any]) -> None:
    a, b = facts["records"]
    names = f"{a['source']}:{a['record_id']} and {b['source']}:{b['record_id']}"
    same = "the same person" if facts["same_person"] else "different people"
    click.echo(f"{names}: {same} (nodes {a['node']} and {b['node']}; stages {a['match_stage']}, {b['match_stage']})")
    status = facts["status"]
    if status == "one_node":
        click.echo("they share every identifier (one node): they are one identifier tuple and were not compared")
    elif status == "exact_rule":
        click.echo(f"the exact rule(s) {', '.join(r for r in facts['exact_rules'] if r)} put them in one exact "
                   "cluster, so they were not compared")
    elif status == "not_kept":
        if facts["pairs_min_probability"] > 0:
            click.echo("their pair is not in pairs.parquet: no candidate pass brought them together, or it scored "
                       f"below pairs_min_probability {facts['pairs_min_probability']:g}")
        else:
            click.echo("their pair is not in pairs.parquet, which keeps every scored pair: no candidate pass brought "
                       "them together")
    else:
        _show_waterfall(facts["pair"], facts["threshold"])


__all__ = ["explain"]
