"""`linkcare explain` on the bundled sample: a deterministic, a probabilistic, an attached, an
unlinked and a rejected record, pairs, JSON, and the errors; each explanation is checked against the
outputs it is drawn from, and none holds a value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CONFIG = ROOT / "configs" / "sample.toml"


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("explain") / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(SAMPLE_CONFIG), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _explain(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["explain", *args, "--json"])
    assert result.exit_code == 0, result.output
    facts: dict[str, Any] = json.loads(result.stdout)
    return facts


def _text(*args: str) -> str:
    result = CliRunner().invoke(cli, ["explain", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _index(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "person_index.parquet")


def _pick(frame: pl.DataFrame) -> str:
    source, record_id = frame.sort("source", "record_id").select("source", "record_id").row(0)
    return f"{source}:{record_id}"


def _check_waterfall(pair: dict[str, Any]) -> None:
    """The terms add up to the match weight, and the probability is the weight's."""
    total = sum(t["weight"] for t in pair["terms"])
    assert total == pytest.approx(pair["match_weight"], abs=1e-9)
    assert pair["match_probability"] == pytest.approx(1 / (1 + 2 ** -pair["match_weight"]), rel=1e-9)
    assert pair["terms"][0]["term"] == "prior"


def _attached(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "attachments.parquet")


def test_a_deterministic_record_names_its_exact_rule(linked: Path) -> None:
    nodes = pl.read_parquet(linked / "nodes.parquet").filter(pl.col("exact_rule").is_not_null())
    index = _index(linked).join(nodes.select("node"), on="node", how="semi").filter(
        pl.col("match_stage") == "deterministic")
    record = _pick(index)
    facts = _explain(str(linked), "--record", record)
    assert facts["status"] == "linked" and facts["match_stage"] == "deterministic"
    assert facts["node"]["exact_rule"] == "nhs+birth_year+sex"
    assert facts["node"]["exact_cluster_nodes"] >= 2
    # The exact cluster's records are all of this record's person.
    same = nodes.filter(pl.col("exact_cluster") == facts["node"]["exact_cluster"])
    people = _index(linked).join(same.select("node"), on="node", how="semi")["person_id"].unique()
    assert people.to_list() == [facts["person_id"]]
    assert "exact rule nhs+birth_year+sex joined it" in _text(str(linked), "--record", record)


def test_a_probabilistic_record_shows_the_accepted_pair_as_a_waterfall(linked: Path) -> None:
    index = _index(linked).filter(pl.col("match_stage") == "probabilistic").join(
        _attached(linked).filter("attached"), on=["source", "record_id"], how="anti")
    record = _pick(index)
    facts = _explain(str(linked), "--record", record, "--pairs", "50")
    accepted = [p for p in facts["pairs"] if p["accepted"]]
    assert accepted, "a record linked by a pair shows that pair"
    for pair in facts["pairs"]:
        _check_waterfall(pair)
    best = accepted[0]
    assert best["match_probability"] >= facts["threshold"]
    assert best["other"]["same_person"]
    assert facts["match_probability"] == pytest.approx(max(p["match_probability"] for p in accepted))
    assert sum(p["pairs_kept"] for p in facts["passes"]) == facts["pairs_kept"]
    # The pair as --pair shows it is the same pair, with the same terms.
    other = f"{best['other']['source']}:{best['other']['record_id']}"
    pair = _explain(str(linked), "--pair", record, other)
    assert pair["status"] == "scored" and pair["pair"]["terms"] == best["terms"]
    text = _text(str(linked), "--record", record)
    assert "prior (log2 odds of a match)" in text and "match weight" in text and "accepted" in text


def test_an_attached_record_shows_its_posterior_and_its_alternatives(linked: Path) -> None:
    attached = _attached(linked).filter("attached")
    row = attached.sort("source", "record_id").row(0, named=True)
    facts = _explain(str(linked), "--record", f"{row['source']}:{row['record_id']}")
    attach = facts["attach"]
    assert attach["attached"] and attach["candidate_person_id"] == facts["person_id"]
    assert attach["posterior"] >= facts["threshold"] and attach["posterior"] == pytest.approx(row["posterior"])
    assert not facts["node"]["rules_held"]  # the attach step only places records no exact rule can
    with_alternatives = attached.filter(pl.col("alternative_person_ids").list.len() > 0)
    if with_alternatives.height:
        alt = with_alternatives.sort("source", "record_id").row(0, named=True)
        facts = _explain(str(linked), "--record", f"{alt['source']}:{alt['record_id']}")
        shown = [a["posterior"] for a in facts["attach"]["alternatives"]]
        assert shown == pytest.approx(alt["alternative_posteriors"])
        assert all(p <= facts["attach"]["posterior"] for p in shown)


def test_an_unlinked_record_has_no_accepted_pair_and_says_why_not_attached(linked: Path) -> None:
    tied = _attached(linked).filter(~pl.col("attached")).join(
        _index(linked).filter(pl.col("match_stage") == "unlinked"), on=["source", "record_id"], how="semi")
    record = _pick(tied)
    facts = _explain(str(linked), "--record", record, "--pairs", "100")
    assert facts["status"] == "unlinked" and facts["person"]["records"] == 1
    assert not any(p["accepted"] for p in facts["pairs"])
    assert all(p["match_probability"] < facts["threshold"] for p in facts["pairs"])
    assert not facts["attach"]["attached"] and facts["attach"]["posterior"] < facts["threshold"]
    assert "not attached" in _text(str(linked), "--record", record)


def test_a_rejected_record_gives_its_row_check_reason(linked: Path) -> None:
    rejects = sorted((linked / "rejects").glob("*.parquet"))
    assert rejects
    row = pl.read_parquet(rejects[0]).row(0, named=True)
    record = f"{rejects[0].stem}:{row['record_id']}"
    facts = _explain(str(linked), "--record", record)
    assert facts["status"] == "rejected" and facts["rejected"] == {"row": row["row"], "reason": row["reason"]}
    assert row["reason"] in _text(str(linked), "--record", record)


def test_records_of_one_node_or_one_exact_cluster_were_not_compared(linked: Path) -> None:
    index = _index(linked)
    shared = index.filter(pl.col("node").is_duplicated()).sort("node", "record_id").head(2)
    a, b = (f"{s}:{r}" for s, r in shared.select("source", "record_id").iter_rows())
    assert _explain(str(linked), "--pair", a, b)["status"] == "one_node"
    nodes = pl.read_parquet(linked / "nodes.parquet")
    cluster = nodes.filter(pl.col("exact_cluster").is_duplicated()).sort("exact_cluster", "node").head(2)
    picks = [_pick(index.filter(pl.col("node") == n)) for n in cluster["node"]]
    facts = _explain(str(linked), "--pair", *picks)
    assert facts["status"] == "exact_rule" and facts["same_person"]


def test_explain_shows_no_value_of_the_record(linked: Path) -> None:
    index = _index(linked).filter(pl.col("source") == "apc", pl.col("match_stage") == "probabilistic")
    record = _pick(index)
    apc = pl.read_csv(ROOT / "sample_data" / "apc.csv", infer_schema=False)
    mine = apc.filter(pl.col(apc.columns[0]) == record.split(":", 1)[1])
    values = [v for v in mine.row(0) if v and len(v) >= 6 and v != record.split(":", 1)[1]]
    assert values
    out = _text(str(linked), "--record", record, "--pairs", "50") + json.dumps(
        _explain(str(linked), "--record", record, "--pairs", "50"))
    assert not [v for v in values if v in out]


def test_explain_errors_name_what_to_fix(linked: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    cases = [
        (["--record", "nosuch:1"], 2, "source 'nosuch' is not one of this link's sources"),
        (["--record", "apc:no-such-record"], 1, "no such record"),
        (["--record", "apc"], 2, "give SOURCE:RECORD_ID"),
        ([], 2, "give --record"),
    ]
    for args, code, message in cases:
        result = runner.invoke(cli, ["explain", str(linked), *args])
        assert result.exit_code == code, result.output
        assert message in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["explain", str(tmp_path), "--record", "apc:1"])
    assert result.exit_code == 1 and "give the output folder of `linkcare link`" in result.output
