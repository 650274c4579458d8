"""The attach step: its posterior with a "none of them" outcome on hand-built cases, the prior
measured on trials, the check that switches a source off, and its calibration on the sample site
against the truth."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from conftest import write_config
from linkcare.cli import cli
from linkcare.linkage.attach import (
    ACTIVITY_BANDS,
    AttachPrior,
    activity_weights,
    choose_attachments,
    fit_prior,
    tempered_weights,
    wilson_lower,
    with_posteriors,
)

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 0.95


def _rows(orphans: list[list[tuple[float, float]]], log_none: float = -4.0, enabled: bool = True) -> pl.DataFrame:
    """Rows of orphans, each a list of candidates (bf, log2 w): log_found 0 (the owner is surely among the
    candidates if it exists), log_none as given."""
    data = [{"orphan": o, "candidate": 100 * o + c, "orphan_node": o, "other_node": 100 * o + c, "bf": bf,
             "log_weight": lw, "log_found": 0.0, "log_none": log_none, "enabled": enabled}
            for o, candidates in enumerate(orphans) for c, (bf, lw) in enumerate(candidates)]
    return pl.DataFrame(data)


def test_an_orphan_whose_owner_is_absent_is_not_attached() -> None:
    # One candidate, agreeing on little: "none of them" is likelier than the candidate.
    rows = _rows([[(2.0, -10.0)]], log_none=-1.0)
    scored = with_posteriors(rows, 1.0)
    assert scored["none"][0] > 0.99 and scored["posterior"][0] < 0.01
    assert choose_attachments(rows, THRESHOLD, 1.0).height == 0


def test_two_candidates_that_tie_are_not_attached() -> None:
    rows = _rows([[(20.0, -10.0), (20.0, -10.0)]], log_none=-20.0)
    scored = with_posteriors(rows, 1.0)
    assert np.allclose(scored["posterior"].to_numpy(), 0.5, atol=1e-6)
    assert choose_attachments(rows, THRESHOLD, 1.0).height == 0


def test_a_candidate_that_is_clearly_the_owner_is_attached() -> None:
    rows = _rows([[(25.0, -10.0), (10.0, -10.0)]], log_none=-5.0)
    chosen = choose_attachments(rows, THRESHOLD, 1.0)
    assert chosen.rows() == [(0, 0, pytest.approx(1 / (1 + 2.0 ** -15 + 2.0 ** (-5 - 15)), rel=1e-9))]


def test_posteriors_and_none_add_up_to_one_per_orphan() -> None:
    rows = _rows([[(12.0, -9.0), (11.0, -12.0), (3.0, -8.0)], [(5.0, -7.0)]], log_none=-3.0)
    scored = with_posteriors(rows, 0.8)
    totals = scored.group_by("orphan").agg(pl.col("posterior").sum() + pl.col("none").first())
    assert np.allclose(totals["posterior"].to_numpy(), 1.0)


def test_a_source_switched_off_is_not_attached() -> None:
    rows = _rows([[(25.0, -10.0)]], log_none=-5.0, enabled=False)
    assert choose_attachments(rows, THRESHOLD, 1.0).height == 0


def test_the_tempered_bayes_factor_weighs_less() -> None:
    rows = _rows([[(14.0, -10.0), (12.0, -10.0)]], log_none=-30.0)
    full = with_posteriors(rows, 1.0)["posterior"][0]
    half = with_posteriors(rows, 0.5)["posterior"][0]
    assert full == pytest.approx(0.8) and half == pytest.approx(2 / 3)


def test_activity_weights_follow_their_formula() -> None:
    # Three people: one with three records of source 0 (in two nodes), one with one, one with none.
    cluster = np.array([0, 0, 1, 2])
    src = np.array([0, 0, 0, 1])
    records = np.array([2, 1, 1, 1])
    log_weight, people = activity_weights(cluster, src, records, 2)
    # Source 0 has 4 records: 3 whose owner has 2 others, 1 whose owner has none; its people now hold 3, 1
    # and 0. w(n) is the share of records whose owner has n others, over the people who hold n.
    assert people[0, :4].tolist() == [1, 1, 0, 1]
    assert log_weight[0, 0] == pytest.approx(math.log2((1 + 0.5) / 4.5 / 1))
    assert log_weight[0, 1] == pytest.approx(math.log2((0 + 0.5) / 4.5 / 1))
    assert log_weight[0, 3] == pytest.approx(math.log2((0 + 0.5) / 4.5 / 1))
    assert log_weight[0, 2] == -1e9  # no one holds exactly 2: no candidate can
    assert log_weight.shape == people.shape == (2, ACTIVITY_BANDS)


def test_tempered_weights_stay_a_distribution_over_the_people() -> None:
    log_weight = np.array([[-3.0, -1.0, -0.5, -1e9, -1e9, -1e9, -1e9, -1e9, -1e9]])
    people = np.array([[4.0, 2.0, 1.0, 0, 0, 0, 0, 0, 0]])
    for exponent in (0.0, 0.5, 1.0, 1.3):
        w = tempered_weights(log_weight, people, exponent)
        assert (people * np.exp2(w)).sum() == pytest.approx(1.0)
    uniform = tempered_weights(log_weight, people, 0.0)
    assert np.allclose(uniform[0, :3], math.log2(1 / 7))


def test_wilson_lower_bound() -> None:
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(95, 100) == pytest.approx(0.9001, abs=1e-3)
    assert wilson_lower(990, 1000) < 0.99 < 990 / 1000 + 1e-12
    assert wilson_lower(1000, 1000) > 0.997


def _trials(n: int, right_share: float, seed: int) -> pl.DataFrame:
    """Trials of one source, each with its owner and a rival sharing its identifiers: the owner is the
    busier of the two in `right_share` of them, the rival in the rest."""
    rng = np.random.default_rng(seed)
    owner_busy = rng.random(n) < right_share
    rows = []
    for t in range(n):
        busy, quiet = (True, False) if owner_busy[t] else (False, True)
        rows.append({"trial": t, "src": 0, "mask": 1, "candidate": 2 * t, "bf": 15.0, "activity": 9 if busy else 0,
                     "owner": True, "has_owner": True})
        rows.append({"trial": t, "src": 0, "mask": 1, "candidate": 2 * t + 1, "bf": 15.0,
                     "activity": 9 if quiet else 0, "owner": False, "has_owner": True})
    return pl.DataFrame(rows)


def _weights() -> tuple[np.ndarray, np.ndarray]:
    log_weight = np.full((1, ACTIVITY_BANDS), -1e9)
    people = np.zeros((1, ACTIVITY_BANDS))
    log_weight[0, 0], people[0, 0] = math.log2(0.2 / 1000), 1000
    log_weight[0, 8], people[0, 8] = math.log2(0.8 / 10), 10  # busy people (20+ records) own most records
    return log_weight, people


def test_fit_prior_attaches_a_source_whose_trials_show_it_is_right() -> None:
    # The busy candidate is the owner in 999 of 1,000 trials: the measured weights say so, and the
    # attachments the trials make are right as often as the threshold asks.
    log_weight, people = _weights()
    trials = _trials(1000, 0.999, 1).with_columns(pl.when(pl.col("activity") > 0).then(25).otherwise(0)
                                                  .alias("activity"))
    prior = fit_prior(trials, log_weight, people, np.array([True]), THRESHOLD)
    assert isinstance(prior, AttachPrior)
    row = prior.checked[0]
    assert row["trials"] == 1000 and row["attached"] > 900 and row["enabled"]
    assert prior.none_share[0] == 0.0 and prior.source_recall[0] == 1.0


def test_fit_prior_switches_off_a_source_whose_trials_are_wrong_too_often() -> None:
    # The busy candidate is the owner in only 80% of trials: the attachments cannot be right 95% of the time.
    log_weight, people = _weights()
    trials = _trials(1000, 0.8, 2).with_columns(pl.when(pl.col("activity") > 0).then(25).otherwise(0)
                                                .alias("activity"))
    prior = fit_prior(trials, log_weight, people, np.array([True]), THRESHOLD)
    row = prior.checked[0]
    assert not prior.enabled[0] and not row["enabled"]
    # What is measured then shrinks the weights until the trials' outcomes are likeliest.
    assert prior.activity_exponent < 1.0


def test_fit_prior_respects_a_source_switched_off_in_the_config() -> None:
    log_weight, people = _weights()
    trials = _trials(500, 1.0, 3).with_columns(pl.when(pl.col("activity") > 0).then(25).otherwise(0)
                                               .alias("activity"))
    prior = fit_prior(trials, log_weight, people, np.array([False]), THRESHOLD)
    assert not prior.enabled[0] and "attach = false" in prior.checked[0]["why"]


# --- on linked sites ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample_linked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("attach") / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(ROOT / "configs" / "sample.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_attachments_on_the_sample_are_right_as_often_as_their_posterior_says(sample_linked: Path) -> None:
    truth = pl.read_parquet(ROOT / "sample_data" / "truth" / "records.parquet")
    index = pl.read_parquet(sample_linked / "person_index.parquet").join(truth, on=["source", "record_id"])
    owner_of = index.group_by("person_id").agg(pl.col("person").mode().first().alias("owner"))
    attached = (pl.read_parquet(sample_linked / "attachments.parquet").filter(pl.col("attached"))
                .join(truth, on=["source", "record_id"])
                .join(owner_of.rename({"person_id": "candidate_person_id"}), on="candidate_person_id"))
    assert attached.height > 200
    right = attached.select((pl.col("person") == pl.col("owner")).mean()).item()
    assert right >= THRESHOLD - 0.02
    edges = [0.95, 0.99, 0.999, 1.0 + 1e-9]
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = attached.filter((pl.col("posterior") >= lo) & (pl.col("posterior") < hi))
        if inside.height >= 50:
            assert inside.select((pl.col("person") == pl.col("owner")).mean()).item() >= lo - 0.02, lo


def test_the_manifest_says_what_the_attach_step_measured_and_did(sample_linked: Path) -> None:
    attach = json.loads((sample_linked / "manifest.json").read_text())["attach"]
    assert 0.05 <= attach["bayes_factor_exponent"] <= 1.5
    by_source = {row["source"]: row for row in attach["sources"]}
    assert set(by_source) >= {"ae", "apc", "outpatients"}
    for row in by_source.values():
        assert row["enabled"] == (row["attached"] >= 30 and wilson_lower(row["right"], row["attached"]) >= THRESHOLD)
    bins = attach["calibration"]
    assert [b["from"] for b in bins] == [0.5, 0.8, 0.9, 0.95, 0.99, 0.999]
    assert all(0 <= b["right"] <= b["attachments"] for b in bins)


def test_attach_false_switches_a_source_off(tmp_path: Path) -> None:
    config = write_config(ROOT / "configs" / "sample.toml", tmp_path / "site.toml",
                          replace={'name = "outpatients"\n': 'name = "outpatients"\nattach = false\n'})
    out = tmp_path / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    attached = pl.read_parquet(out / "attachments.parquet").filter(pl.col("attached"))
    assert attached.filter(pl.col("source") == "outpatients").height == 0
    assert attached.filter(pl.col("source") != "outpatients").height > 0
    rows = {row["source"]: row for row in json.loads((out / "manifest.json").read_text())["attach"]["sources"]}
    assert not rows["outpatients"]["enabled"] and "attach = false" in rows["outpatients"]["why"]


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_node_draws_are_uniform_and_neighbouring_nodes_are_not_alike(seed: int) -> None:
    """Trials are drawn by node number; one source's records are consecutive nodes, so a draw that
    followed the number (as one linear generator step does) would pick whole runs of them."""
    from scipy import stats

    from linkcare.linkage.attach_check import node_draws

    draws = node_draws(np.arange(500_000), seed)
    assert ((draws > 0) & (draws < 1)).all()
    assert stats.kstest(draws, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 0.01
    # Runs of 500 consecutive nodes: each run's mean varies as much as 500 independent draws' would.
    means = draws.reshape(-1, 500).mean(axis=1)
    assert means.std() == pytest.approx(math.sqrt(1 / 12 / 500), rel=0.1)
    # Every run of 1,000 nodes gives a third of its nodes a draw below 1/3 (a trial rate of 1/3).
    share = (draws.reshape(-1, 1_000) < 1 / 3).mean(axis=1)
    assert share.min() > 0.25 and share.max() < 0.42
    assert not np.array_equal(draws, node_draws(np.arange(500_000), seed + 1))


def test_a_trial_window_stays_in_its_block() -> None:
    # A sorted-neighbourhood pass on `a` within blocks of `b`: a trial at the last rank of its block
    # finds the nodes of its block within the window, never the first ranks of the next block.
    from linkcare.linkage.attach_check import trial_candidates
    from linkcare.linkage.blocking import plan_sorted

    codes = {"a": np.array([0, 1, 0, 1, 0]), "b": np.array([0, 0, 1, 1, 1])}
    plan = plan_sorted(codes, "a", 3, ("b",), np.zeros(5, dtype=np.int64), "link_and_dedupe")
    values = {"a": np.array([1, 0]), "b": np.array([0, 1])}  # trials with node 1's and node 2's values
    trial, node = trial_candidates([plan], values, codes)
    assert sorted(zip(trial.tolist(), node.tolist(), strict=True)) == [(0, 0), (0, 1), (1, 2), (1, 3), (1, 4)]
