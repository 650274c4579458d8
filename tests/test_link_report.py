"""The link report: `linkcare link` writes link_report.html beside the cohort, with every section and
its plots, counts through disclosure control, no record value and nothing loaded from a network."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import record_values, write_config
from linkcare.cli import cli
from linkcare.commands.link import link_stages
from linkcare.config import load_config
from linkcare.disclosure import Disclosure
from linkcare.linkage.local import LocalEngine
from linkcare.linkage.prepare import standardised_records
from linkcare.linkage.quality import (
    ThresholdCurve,
    large_people,
    pair_sums,
    size_counts,
    tail_cut,
    threshold_curve,
    threshold_grid,
    weighted_median,
)
from linkcare.linkage.scoring import WEIGHT_EDGES, weight_counts
from linkcare.log import StageLog

SECTIONS = ("sources", "blocking", "weights", "precision", "model", "unlinkables", "clusters", "equity", "borderline")
LEVELS = {"exact", "close", "missing", "disagree"}
PUBLISHED = re.compile(r"^(0|<\d+|\d{1,3}(,\d{3})*)$")
KEEP_EVERY_PAIR = {"threshold = 0.95\n": "threshold = 0.95\npairs_min_probability = 0.0\n"}


def _link(config: Path, out: Path) -> Path:
    result = CliRunner().invoke(cli, ["-q", "link", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def reported(small_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small site linked with every scored pair kept in pairs.parquet, counts rounded to 5 and
    suppressed below 8; returns the output folder."""
    root = tmp_path_factory.mktemp("link_report")
    config = write_config(small_site / "site.toml", root / "site.toml", replace=KEEP_EVERY_PAIR,
                          extra="\n[disclosure]\nthreshold = 8\nrounding = 5\n")
    return _link(config, root / "cohort")


def _sections(text: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', text, flags=re.S))


def _rows(section: str) -> list[list[str]]:
    """Return the body rows of every table in a section, each cell as plain text."""
    return [[unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
            for body in re.findall(r"<tbody>(.*?)</tbody>", section, flags=re.S)
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_link_writes_a_report_with_every_section_and_a_plot_in_each(reported: Path) -> None:
    path = reported / "link_report.html"
    assert path.is_file()
    assert path.stat().st_mode & 0o077 == 0  # owner-only, like every output
    sections = _sections(path.read_text(encoding="utf-8"))
    assert list(sections) == list(SECTIONS)
    for name, body in sections.items():
        assert "<figure data-plot=" in body, f"section {name} has no plot"
        assert "<svg" in body
    manifest = json.loads((reported / "manifest.json").read_text())
    assert "link_report.html" not in manifest["outputs"]  # a report, not a dataset


def test_the_report_holds_no_record_value_and_loads_nothing(reported: Path, small_site: Path) -> None:
    text = (reported / "link_report.html").read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<img" not in text and "<link" not in text
    values = record_values(small_site)
    values |= set(pl.read_parquet(reported / "person_index.parquet")["person_id"].unique().to_list())
    assert len(values) > 5_000
    leaked = sorted(v for v in values if v in text)
    assert leaked == [], f"{len(leaked)} record value(s) in the report, e.g. {leaked[:3]}"


def test_counts_of_records_and_people_pass_through_disclosure_control(reported: Path) -> None:
    d = Disclosure(threshold=8, rounding=5)
    sections = _sections((reported / "link_report.html").read_text(encoding="utf-8"))
    manifest = json.loads((reported / "manifest.json").read_text())
    index = pl.read_parquet(reported / "person_index.parquet")
    stages = {(s, st): n for s, st, n in index.group_by("source", "match_stage").len().iter_rows()}
    rows = {r[0]: r for r in _rows(sections["sources"])}
    rounded = 0
    for source in manifest["inputs"]:
        name, read = source["source"], source["rows"]
        row = rows[name]
        assert row[1] == d.show(read)
        assert row[2] == d.show(source["rejected"])
        assert row[3:6] == [d.show(stages.get((name, st), 0)) for st in ("deterministic", "probabilistic", "unlinked")]
        rounded += row[1] != f"{read:,}"
    assert rounded > 0, "no count needed rounding, so the test shows nothing"
    people = pl.read_parquet(reported / "persons.parquet").height
    assert f"{d.show(people)} people resulted" in sections["sources"]
    for row in _rows(sections["equity"]):
        assert PUBLISHED.match(row[2]), row
        assert row[2].startswith("<") or int(row[2].replace(",", "")) % 5 == 0, row
    # The new sections' counts of records and people: every cell published, or suppressed with its people.
    counts = [cell for name in ("unlinkables", "clusters") for row in _rows(sections[name]) for cell in row[1:]
              if not cell.endswith("%") and cell not in ("–", "not in source")]
    assert len(counts) > 30
    for cell in counts:
        assert PUBLISHED.match(cell) or cell == "suppressed", cell
        assert not PUBLISHED.match(cell) or cell.startswith("<") or int(cell.replace(",", "")) % 5 == 0, cell


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # recordlinkage's ECM on this small site
def test_small_groups_show_no_share_and_a_model_without_m_and_u_says_so(small_site: Path, tmp_path: Path) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "site.toml", replace={
        "threshold = 0.95\n": 'threshold = 0.95\nmodel = "ecm"\n',
        'deprivation = { path = "areas.csv", area = "LSOA11CD", decile = "IMD_Decile" }\n': ""},
        extra="\n[disclosure]\nthreshold = 1000\nrounding = 1\n")
    text = (_link(config, tmp_path / "cohort") / "link_report.html").read_text(encoding="utf-8")
    sections = _sections(text)
    groups = _rows(sections["equity"])
    assert any(r[3] == "suppressed" for r in groups)
    for _dimension, _group, count, share in groups:
        assert (share == "suppressed") == count.startswith("<"), (count, share)
        assert share == "suppressed" or re.fullmatch(r"\d+\.\d%", share)
    assert not any(r[0] == "deprivation quintile" for r in groups)
    assert "no deprivation lookup configured" in sections["equity"]
    assert "has no m and u probabilities" in sections["model"]


def test_the_weights_histogram_counts_every_scored_pair(reported: Path, small_site: Path, tmp_path: Path) -> None:
    # With pairs_min_probability = 0, pairs.parquet holds every scored pair.
    pairs = pl.read_parquet(reported / "pairs.parquet")
    rows = dict(r for r in _rows(_sections((reported / "link_report.html").read_text())["weights"]) if len(r) == 2)
    assert int(rows["scored"].replace(",", "")) == pairs.height > 1_000
    config = write_config(small_site / "site.toml", tmp_path / "site.toml", replace=KEEP_EVERY_PAIR)
    linked = link_stages(LocalEngine(load_config(config)), StageLog()).decisions
    assert linked.weight_histogram.size == WEIGHT_EDGES.size - 1
    assert int(linked.weight_histogram.sum()) == linked.pairs.height == pairs.height
    weights = np.clip(linked.pairs["match_weight"].to_numpy(), WEIGHT_EDGES[0], WEIGHT_EDGES[-1])
    assert np.array_equal(np.histogram(weights, bins=WEIGHT_EDGES)[0], linked.weight_histogram)


def test_borderline_pairs_are_a_small_sample_shown_as_levels_only(reported: Path) -> None:
    section = _sections((reported / "link_report.html").read_text(encoding="utf-8"))["borderline"]
    header = re.findall(r"<th>(.*?)</th>", section)
    fields = header[1:-3]
    assert fields == ["nhs", "la_id", "birth_year", "birth_month", "sex", "area", "practice"]
    rows = _rows(section)
    assert 0 < len(rows) <= 20
    threshold_weight = np.log2(0.95 / 0.05)
    weights = [float(r[-3]) for r in rows]
    assert weights == sorted(weights, reverse=True)
    for row in rows:
        # practice's levels are split by whether the area agrees: "exact, area agrees"
        assert {level.split(" (")[0].split(", ")[0] for level in row[1:1 + len(fields)]} <= LEVELS, row
        assert abs(float(row[-3]) - threshold_weight) <= 3.0
        assert row[-1] in ("yes", "no")


def test_report_figures_leave_the_process_matplotlib_alone() -> None:
    # A notebook that imports linkcare keeps its own backend and figures: the reports draw on
    # figures of their own, not pyplot's.
    import matplotlib

    matplotlib.use("pdf")  # stands for the notebook's backend
    import matplotlib.pyplot as plt

    from linkcare.report.html import new_figure, svg

    mine = plt.figure()
    fig, ax = new_figure(3.0, 2.0)
    ax.plot([0, 1], [1, 0])
    drawn = svg(fig)
    assert drawn.startswith("<svg") and "<path" in drawn
    assert matplotlib.get_backend() == "pdf"
    assert plt.get_fignums() == [mine.number]
    plt.close(mine)


# --- the quality sections: unlinkables, precision and recall, cluster sizes -----------------------------------

def _independent_reach(config_path: Path, model_path: Path) -> dict[str, list[int]]:
    """Return per source the records that reach the threshold, only an exact rule can place, or cannot link,
    worked out here from the config, model.json and the nodes' values, without linkcare's scoring."""
    config = load_config(config_path)
    model = json.loads(model_path.read_text())
    records = standardised_records(config)
    fields = [c for c in records.columns if c not in ("source", "record_id")]
    nodes = records.group_by("source", *fields).agg(pl.len().alias("records"))
    best = np.full(nodes.height, model["intercept"])
    for f in model["fields"]:
        present = nodes[f["field"]].is_not_null().to_numpy()
        if f["given"]:  # exact where the given field agrees (an identical record has it), else "does not"
            does_not = (len(f["weights"]) + 1) // 2
            exact = np.where(nodes[f["given"]].is_not_null().to_numpy(), f["weights"][1], f["weights"][does_not])
            best += np.where(present, exact, 0.0)
        else:
            best += np.where(present, f["weights"][1], 0.0)
        if f["term_frequency"]:
            holding = nodes.select(pl.col(f["field"]).count().over(f["field"])).to_series().to_numpy()
            share = holding / present.sum()
            best += np.where(present, np.log2(f["u"][1] / np.where(present, share, 1.0)), 0.0)
    threshold = config.linkage.threshold
    reaches = best >= np.log2(threshold / (1 - threshold))
    by_rule = np.zeros(nodes.height, dtype=bool)
    for rule in config.linkage.deterministic:
        by_rule |= np.all([nodes[f].is_not_null().to_numpy() for f in rule], axis=0)
    reach = np.where(reaches, 0, np.where(by_rule, 1, 2))
    out: dict[str, list[int]] = {}
    for source, code, n in zip(nodes["source"].to_list(), reach.tolist(), nodes["records"].to_list(), strict=True):
        out.setdefault(source, [0, 0, 0])[code] += n
    return out


def _check_reach(out: Path, config: Path, d: Disclosure) -> dict[str, list[int]]:
    expected = _independent_reach(config, out / "model.json")
    rows = {r[0]: r for r in _rows(_sections((out / "link_report.html").read_text())["unlinkables"]) if len(r) == 7}
    for source, counts in expected.items():
        assert rows[source][1:5] == [d.show(sum(counts)), *[d.show(c) for c in counts]], source
    return expected


def test_unlinkables_match_a_computation_from_the_config_the_model_and_the_node_values(
        reported: Path, small_site: Path, tmp_path: Path) -> None:
    d = Disclosure(threshold=8, rounding=5)
    expected = _check_reach(reported, small_site / "site.toml", d)
    # Records without an NHS token cannot reach the threshold on this site: the other fields are too weak.
    assert sum(c[2] for c in expected.values()) > 100
    section = _sections((reported / "link_report.html").read_text())["unlinkables"]
    assert "lack nhs" in unescape(section)
    lacking = {r[0]: r for r in _rows(section) if len(r) > 7}  # the table of fields lacked
    assert lacking["ae"][2] == "100.0%"  # every ae record below the threshold lacks its NHS token
    assert lacking["ae"][3] == "not in source"  # ae has no council ID field
    # Without the NHS token among the comparisons, the exact rule (nhs, birth_year, sex) is the only way
    # for most records: the split between "an exact rule only" and "cannot link" is tested too.
    config = write_config(small_site / "site.toml", tmp_path / "site.toml", replace={
        '[[linkage.comparisons]]\nfield = "nhs"\nmethod = "exact"\n\n': ""},
        extra="\n[disclosure]\nthreshold = 1\nrounding = 1\n")
    out = _link(config, tmp_path / "cohort")
    exact = _check_reach(out, config, Disclosure(threshold=1, rounding=1))
    assert sum(c[1] for c in exact.values()) > 1_000 and sum(c[2] for c in exact.values()) > 100


def test_precision_and_recall_match_the_sums_of_the_pairs_probabilities(reported: Path) -> None:
    # With pairs_min_probability = 0, pairs.parquet holds every scored pair, so the sums are exact.
    p = pl.read_parquet(reported / "pairs.parquet")["match_probability"].to_numpy()
    section = _sections((reported / "link_report.html").read_text())["precision"]
    rows = _rows(section)
    assert [r[0] for r in rows] == ["0.5", "0.8", "0.9", "0.95 (configured)", "0.99", "0.999"]
    for row in rows:
        t = float(row[0].split(" ")[0])
        above = p[p >= t]
        assert int(row[2].replace(",", "")) == above.size
        assert abs(float(row[3].replace(",", "")) - above.sum()) <= 0.051
        assert abs(float(row[4].replace(",", "")) - (1 - above).sum()) <= 0.051
        assert abs(float(row[5]) - above.sum() / above.size) <= 5.1e-5
        assert abs(float(row[6]) - above.sum() / p.sum()) <= 5.1e-5
    assert f"({p.sum():,.1f} here)" in unescape(section)
    assert "are not kept" not in section  # nothing was estimated
    assert "<figure data-plot=\"precision-recall\">" in section


def test_the_threshold_curve_estimates_only_the_pairs_not_kept() -> None:
    rng = np.random.default_rng(3)
    weight = np.concatenate([rng.normal(-12, 4, 50_000), rng.normal(12, 4, 2_000)])
    probability = 1 / (1 + np.exp2(-weight))
    histogram = weight_counts(weight)
    grid = threshold_grid(0.95, 0.01)
    kept = probability >= 0.01
    # The kept pairs summed in two batches give what one batch gives.
    halves = [pair_sums(weight[kept][s], probability[kept][s], grid) for s in (slice(0, 900), slice(900, None))]
    summed = pl.concat(halves).group_by("kind", "index").agg(pl.col("pairs", "p").sum())
    curve = threshold_curve(summed, histogram, grid, 0.01)
    whole = threshold_curve(pair_sums(weight[kept], probability[kept], grid), histogram, grid, 0.01)
    assert isinstance(curve, ThresholdCurve)
    assert np.array_equal(curve.expected_true, whole.expected_true) and curve.expected_matches == whole.expected_matches
    at = list(grid).index(0.95)
    assert curve.pairs[at] == (probability >= 0.95).sum()
    assert abs(curve.expected_true[at] - probability[probability >= 0.95].sum()) < 1e-6
    assert curve.not_kept == (~kept).sum()
    # The pairs not kept are estimated from their bins: close to their true sum, which is small.
    truth = probability[~kept].sum()
    assert abs(curve.estimated - truth) <= 0.05 * truth
    assert abs(curve.expected_matches - probability.sum()) <= 0.05 * truth
    assert 0 < curve.recall[at] < 1 and 0.99 < curve.precision[at] <= 1


def test_cluster_sizes_match_the_person_index(reported: Path) -> None:
    d = Disclosure(threshold=8, rounding=5)
    index = pl.read_parquet(reported / "person_index.parquet")
    people = index.group_by("person_id").agg(pl.len().alias("records"), pl.col("source").n_unique().alias("sources"),
                                             (pl.col("source") == "gp").sum().alias("gp"))
    section = _sections((reported / "link_report.html").read_text())["clusters"]
    rows = _rows(section)
    by_sources = {r[0]: r[1] for r in rows if len(r) == 2}
    for n, count in people.group_by("sources").len().iter_rows():
        assert by_sources[str(n)] == d.show(count)
    sizes = {r[0]: r[1:] for r in rows if len(r) == 3}
    five_to_nine = people.filter(pl.col("records").is_between(5, 9))
    assert sizes["5–9"] == [d.show(five_to_nine.height), d.show(int(five_to_nine["records"].sum()))]
    # The tail rule, worked out here with numpy on every person's records.
    x = np.log(people["records"].to_numpy())
    mad = np.median(np.abs(x - np.median(x)))
    cut = max(np.exp(np.median(x) + 3.5 * mad / 0.6745), 2 * np.median(people["records"].to_numpy()))
    tail = people.filter(pl.col("records") > cut)
    flagged = {r[0]: r[1:] for r in rows if r[0].startswith("far out")}
    assert flagged == {f"far out in the tail: more than {int(cut):,} records": [d.show(tail.height),
                                                                                 d.show(int(tail["records"].sum()))]}
    merged = people.filter(pl.col("gp") > 1).height
    assert [r[1] for r in rows if r[0].startswith("more than one record")] == [d.show(merged)]


def test_a_merged_registration_and_a_far_tail_are_flagged() -> None:
    # Forty people of 2 to 4 records; one of 3 records with two GP registrations (two nodes); one of
    # 60 records from one hospital source; one with a GP registration of two identical records (one node).
    nodes = [(p, src, 1) for p in range(40) for src in ("gp", "apc", "ae")[: 2 + p % 2]]
    nodes += [(100, "gp", 1), (100, "gp", 1), (100, "ae", 1), (101, "op", 60), (102, "gp", 2), (102, "op", 1)]
    frame = pl.DataFrame(nodes, schema={"key": pl.Int64, "source": pl.String, "records": pl.Int64}, orient="row")
    sizes = size_counts(frame, ["gp"])
    assert int(sizes["people"].sum()) == 43
    large = large_people(sizes)
    assert (large.merged_people, large.merged_records) == (2, 6)
    assert (large.tail_people, large.tail_records) == (1, 60)
    assert (large.flagged_people, large.flagged_records) == (3, 66)
    assert 3 < large.cut < 60
    # Everyone the same size: no spread, so nobody is in the tail.
    same = size_counts(pl.DataFrame({"key": [1, 2, 3], "source": ["a"] * 3, "records": [2, 2, 2]}), ["gp"])
    assert large_people(same).tail_people == 0
    # Most people one size (MAD 0): the mean absolute deviation stands in, and the floor of twice the
    # median keeps the people one record above the rest out of the tail; the outlier is caught.
    assert tail_cut(np.array([1.0, 2.0, 50.0]), np.array([95, 4, 1])) == 2.0
    assert 2 < tail_cut(np.array([1.0, 2.0, 50.0]), np.array([30, 20, 1])) < 50
    assert tail_cut(np.array([3.0]), np.array([0])) == np.inf


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 5)), min_size=1, max_size=12))
def test_weighted_median_is_the_median_of_the_repeated_values(pairs: list[tuple[int, int]]) -> None:
    values = np.array([float(v) for v, _ in pairs])
    counts = np.array([c for _, c in pairs])
    if counts.sum() == 0:
        counts[0] = 1
    assert weighted_median(values, counts) == np.median(np.repeat(values, counts))
