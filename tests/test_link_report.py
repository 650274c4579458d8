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

from conftest import record_values, write_config
from linkcare.cli import cli
from linkcare.commands.link import link_stages
from linkcare.config import load_config
from linkcare.disclosure import Disclosure
from linkcare.linkage.local import LocalEngine
from linkcare.linkage.scoring import WEIGHT_EDGES
from linkcare.log import StageLog

SECTIONS = ("sources", "blocking", "weights", "model", "equity", "borderline")
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
    assert fields == ["nhs", "la_id", "birth_year", "birth_month", "sex", "area"]
    rows = _rows(section)
    assert 0 < len(rows) <= 20
    threshold_weight = np.log2(0.95 / 0.05)
    weights = [float(r[-3]) for r in rows]
    assert weights == sorted(weights, reverse=True)
    for row in rows:
        assert {level.split(" (")[0] for level in row[1:1 + len(fields)]} <= LEVELS, row
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
