"""`linkcare link` end to end on synthetic sites and the bundled sample: shuffled input gives the same
people, the indexers agree, model reuse, the pair-count guard, ECM and logistic models, FEBRL-style
files, and the sample site's accuracy, outputs and manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import write_config
from linkcare.cli import cli
from linkcare.synth import SynthOptions, write_site

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CONFIG = ROOT / "configs" / "sample.toml"
SAMPLE_TRUTH = ROOT / "sample_data" / "truth" / "records.parquet"


# --- `linkcare link` on a small synthetic site ---------------------------------------------------


def link_cli(runner: CliRunner, config: Path, out: Path, *extra: str) -> Result:
    return runner.invoke(cli, ["link", str(config), "--out", str(out), *extra])


def people(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "person_index.parquet").sort(["source", "record_id"])


@pytest.fixture(scope="module")
def small_linked(small_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small_linked") / "out"
    result = link_cli(CliRunner(), small_site / "site.toml", out)
    assert result.exit_code == 0, result.output
    return out


def test_shuffled_sources_give_the_same_people(small_site: Path, small_linked: Path, tmp_path: Path,
                                               runner: CliRunner) -> None:
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    for i, csv in enumerate(sorted(small_site.glob("*.csv"))):
        frame = pl.read_csv(csv, infer_schema=False)
        if csv.name == "areas.csv":  # the deprivation lookup, not an extract
            frame.write_csv(shuffled / csv.name)
            continue
        mixed = frame.sample(fraction=1.0, shuffle=True, seed=i)
        assert not mixed.equals(frame)
        mixed.write_csv(shuffled / csv.name)
    gp_events = pl.read_parquet(small_site / "gp_events.parquet")
    gp_events.sample(fraction=1.0, shuffle=True, seed=99).write_parquet(shuffled / "gp_events.parquet")
    (shuffled / "site.toml").write_text((small_site / "site.toml").read_text(), encoding="utf-8")
    result = link_cli(runner, shuffled / "site.toml", tmp_path / "out")
    assert result.exit_code == 0, result.output
    before, after = people(small_linked), people(tmp_path / "out")
    assert before.height == after.height > 5_000
    # The same partition of records, and the same person_id for each record.
    assert before.select("source", "record_id", "person_id").equals(after.select("source", "record_id", "person_id"))
    assert before.equals(after)
    assert pl.read_parquet(small_linked / "persons.parquet").equals(pl.read_parquet(tmp_path / "out/persons.parquet"))


@pytest.fixture(scope="module")
def tiny_linked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame, pl.DataFrame]:
    """A site of 300 people and its person index and persons, linked once."""
    site = tmp_path_factory.mktemp("tiny") / "site"
    write_site(site, SynthOptions(people=300, seed=9, reference_date=date(2026, 3, 31)))
    out = site.parent / "out"
    result = link_cli(CliRunner(), site / "site.toml", out)
    assert result.exit_code == 0, result.output
    return site, people(out), pl.read_parquet(out / "persons.parquet")


@settings(max_examples=6, deadline=None)
@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=5, max_size=5))
def test_linking_is_unchanged_by_shuffled_rows(tiny_linked: tuple[Path, pl.DataFrame, pl.DataFrame],
                                               tmp_path_factory: pytest.TempPathFactory, seeds: list[int]) -> None:
    # Any order of the rows of every extract gives the same people with the same person IDs.
    site, index, persons = tiny_linked
    shuffled = tmp_path_factory.mktemp("shuffled")
    extracts = sorted(p for p in site.glob("*.csv") if p.name != "areas.csv")
    assert len(extracts) == len(seeds)
    for seed, csv in zip(seeds, extracts, strict=True):
        rows = pl.read_csv(csv, infer_schema=False)
        rows.sample(fraction=1.0, shuffle=True, seed=seed).write_csv(shuffled / csv.name)
    for parquet in site.glob("*.parquet"):  # the GP clinical extract
        mixed = pl.read_parquet(parquet).sample(fraction=1.0, shuffle=True, seed=seeds[0])
        mixed.write_parquet(shuffled / parquet.name)
    shutil.copy(site / "areas.csv", shuffled / "areas.csv")
    shutil.copy(site / "site.toml", shuffled / "site.toml")
    result = link_cli(CliRunner(), shuffled / "site.toml", shuffled / "out")
    assert result.exit_code == 0, result.output
    assert people(shuffled / "out").equals(index)
    assert pl.read_parquet(shuffled / "out" / "persons.parquet").equals(persons)


def test_polars_indexer_gives_the_same_links_as_recordlinkage(small_site: Path, small_linked: Path,
                                                               tmp_path: Path, runner: CliRunner,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # small_linked used "auto", which is the polars path; here the reference path, recordlinkage's
    # Index and Compare, must give the same pairs, model and people.
    from linkcare.linkage import blocking, workers

    calls = {"index": 0, "compare": 0}

    def counted(name: str, function: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            calls[name] += 1
            return function(*args)
        return wrapper

    monkeypatch.setattr(blocking, "pairs_recordlinkage", counted("index", blocking.pairs_recordlinkage))
    monkeypatch.setattr(workers, "compare_pairs_recordlinkage", counted("compare", workers.compare_pairs_recordlinkage))
    config = write_config(small_site / "site.toml", tmp_path / "rl.toml", linkage='indexer = "recordlinkage"')
    result = link_cli(runner, config, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert calls["index"] > 0 and calls["compare"] > 0
    assert people(small_linked).equals(people(tmp_path / "out"))
    assert pl.read_parquet(small_linked / "pairs.parquet").equals(pl.read_parquet(tmp_path / "out/pairs.parquet"))
    assert (small_linked / "model.json").read_text() == (tmp_path / "out/model.json").read_text()


def test_pair_count_guard_stops_the_run(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    # Count the third pass's node pairs independently: distinct identifier tuples per source,
    # grouped by the pass's key.
    from linkcare.config import load_config
    from linkcare.linkage.prepare import read_records, reduce_records

    config = load_config(small_site / "site.toml")
    nodes = reduce_records(read_records(config), config.linkage.deterministic).frame
    key = ["birth_year", "birth_month", "area"]
    sizes = nodes.drop_nulls(key).group_by(key).len()["len"].cast(pl.Int64)
    expected = int((sizes * (sizes - 1) // 2).sum())
    nhs = nodes.drop_nulls("nhs").group_by("nhs").len()["len"].cast(pl.Int64)
    assert int((nhs * (nhs - 1) // 2).sum()) < 20_000 < expected  # only the third pass is over the limit

    config = write_config(small_site / "site.toml", tmp_path / "guard.toml", linkage="max_pairs = 20000")
    out = tmp_path / "runs" / "out"
    result = link_cli(runner, config, out)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: linkage.blocking[2] (birth_year, birth_month, area) would yield {expected:,} "
                      "candidate pairs, above linkage.max_pairs = 20,000; add a field to that blocking pass "
                      "or raise max_pairs"]
    assert result.stdout == ""
    # No output folder, no temporary left behind: only the run's record beside where the output would be.
    assert list(out.parent.iterdir()) == [out.parent / "out.run.json"]
    record = json.loads((out.parent / "out.run.json").read_text())
    assert (record["exit_code"], record["error"]["class"]) == (1, "DataError")


def test_model_reuse_gives_the_same_people(small_site: Path, small_linked: Path, tmp_path: Path,
                                           runner: CliRunner) -> None:
    out = tmp_path / "reused"
    result = link_cli(runner, small_site / "site.toml", out, "--model", str(small_linked / "model.json"))
    assert result.exit_code == 0, result.output
    assert "reusing the model" in result.stderr
    first, second = people(small_linked), people(out)
    assert first.drop("match_probability").equals(second.drop("match_probability"))
    diff = (first["match_probability"] - second["match_probability"]).abs().fill_null(0.0)
    assert (diff < 1e-6).all()
    assert first["match_probability"].is_null().equals(second["match_probability"].is_null())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["reused_from"] == "model.json"
    assert json.loads((out / "model.json").read_text())["fields"] == json.loads(
        (small_linked / "model.json").read_text())["fields"]


def test_model_reuse_is_exact(small_site: Path, small_linked: Path, tmp_path: Path, runner: CliRunner) -> None:
    out = tmp_path / "reused"
    result = link_cli(runner, small_site / "site.toml", out, "--model", str(small_linked / "model.json"))
    assert result.exit_code == 0, result.output
    assert people(small_linked).equals(people(out))
    assert pl.read_parquet(small_linked / "pairs.parquet").equals(pl.read_parquet(out / "pairs.parquet"))


def test_model_from_other_comparisons_is_refused(small_site: Path, small_linked: Path, tmp_path: Path,
                                                 runner: CliRunner) -> None:
    # A model trained under a config whose birth_year comparison has levels [0, 2].
    data = json.loads((small_linked / "model.json").read_text())
    year = next(f for f in data["fields"] if f["field"] == "birth_year")
    year["levels"] = [0.0, 2.0]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data), encoding="utf-8")
    result = link_cli(runner, small_site / "site.toml", tmp_path / "out", "--model", str(other))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: {other}: the model was trained on other comparisons than the config's "
        "[[linkage.comparisons]]; retrain without --model")
    assert not (tmp_path / "out").exists()


def test_model_that_is_not_json_is_refused(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    result = link_cli(runner, small_site / "site.toml", tmp_path / "out", "--model", str(small_site / "site.toml"))
    assert result.exit_code == 2
    not_json = small_site / "site.toml"
    assert result.stderr.splitlines()[-1] == f"Error: {not_json}: not a linkcare linkage model (not JSON)"
    assert not (tmp_path / "out").exists()


def all_records_f1(runner: CliRunner, out: Path, truth: Path) -> dict:
    result = runner.invoke(cli, ["evaluate", "links", str(out), "--truth", str(truth), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["all records"]


def test_ecm_model_links_a_small_site(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "ecm.toml", linkage='model = "ecm"')
    result = link_cli(runner, config, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out/model.json").read_text())["trained_by"] == "ecm"
    assert all_records_f1(runner, tmp_path / "out", small_site / "truth/records.parquet")["f1"] > 0.9


def test_logistic_model_links_a_small_site(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "logistic.toml",
                          linkage='model = "logistic"\nlabels = "truth/records.parquet"')
    result = link_cli(runner, config, tmp_path / "out")
    assert result.exit_code == 0, result.output
    model = json.loads((tmp_path / "out/model.json").read_text())
    assert model["trained_by"] == "logistic"
    assert model["training"]["matches"] > 0
    assert all_records_f1(runner, tmp_path / "out", small_site / "truth/records.parquet")["f1"] > 0.95


# --- two FEBRL-style name-and-address files -----------------------------------------------------

# (given_name, surname, date_of_birth, postcode); the first sixteen of each file are the same people.
FEBRL_A = [
    ("michaela", "neumann", "19751101", "4352"), ("courtney", "painter", "19800427", "4350"),
    ("charles", "green", "19840917", "2074"), ("vanessa", "parr", "19900221", "3150"),
    ("joshua", "fowler", "19710630", "2148"), ("benjamin", "carey", "19880725", "2617"),
    ("kayla", "rees", "19920306", "6061"), ("thomas", "hirst", "19850812", "2560"),
    ("isabella", "mcdonald", "19990114", "4870"), ("jack", "whitfield", "19830503", "3805"),
    ("olivia", "santos", "19761119", "2000"), ("liam", "oconnor", "19781228", "5163"),
    ("grace", "nguyen", "20010709", "3030"), ("samuel", "baxter", "19770102", "2795"),
    ("emily", "harrison", "19950215", "4215"), ("noah", "fitzgerald", "19790330", "7250"),
    ("chloe", "webb", "19860911", "2250"), ("ethan", "mcintyre", "19730424", "6155"),
    ("ruby", "hawkins", "19720808", "3350"), ("lucas", "webb", "19900117", "2250"),
]
FEBRL_B = [
    ("michaela", "neuman", "19751101", "4352"),  # surname typo
    ("courtney", "painter", "19800427", "4305"),  # postcode transposed
    ("charels", "green", "19840917", "2074"),  # given name transposed
    ("vanessa", "parr", "19900122", "3150"),  # day and month swapped
    ("josh", "fowler", "19710630", "2148"),  # short given name
    ("benjamin", "carey", "", "2617"),  # date of birth missing
    ("kayla", "reese", "19920306", "6061"),
    ("thomas", "hirst", "19850812", ""),  # postcode missing
    ("isabela", "mcdonald", "19990114", "4870"),
    ("jack", "whitfeld", "19830503", "3805"),
    ("olivia", "santos", "19761119", "2000"),
    ("liam", "o'connor", "19781228", "5163"),
    ("grace", "nguyen", "20011709", "3030"),  # impossible date: missing
    ("samuel", "baxter", "19770102", "2795"),
    ("emmily", "harrison", "19950215", "4215"),
    ("noha", "fitzgerald", "19790330", "7250"),
    ("harriet", "webb", "19880214", "2250"),  # same surname and postcode as a17 and a20: not them
    ("oscar", "pemberton", "19770605", "2611"),
    ("mia", "kowalski", "20030920", "4551"),
    ("george", "atkinson", "19800710", "3976"),
]
FEBRL_SOURCE = """
[[sources]]
name = "{name}"
path = "{name}.csv"
id = "rec_id"
kind = "other"
[sources.fields]
given_name = "given_name"
surname = "surname"
date_of_birth = {{ column = "date_of_birth", format = "%Y%m%d", invalid = "missing" }}
postcode = "postcode"
"""
FEBRL_CONFIG = 'version = 1\nreference_date = "2026-03-31"\n' + FEBRL_SOURCE.format(name="a") + \
    FEBRL_SOURCE.format(name="b") + """
[linkage]
link_type = "link_only"
blocking = [["surname"], ["date_of_birth"], ["postcode"]]
one_to_one = ["a", "b"]

[[linkage.comparisons]]
field = "given_name"
method = "jaro_winkler"
levels = [1.0, 0.9, 0.8]

[[linkage.comparisons]]
field = "surname"
method = "jaro_winkler"
levels = [1.0, 0.9, 0.8]

[[linkage.comparisons]]
field = "date_of_birth"
method = "date"
levels = [31, 366]

[[linkage.comparisons]]
field = "postcode"
method = "exact"
"""


def write_febrl(folder: Path, rows: list[tuple[str, str, str, str]], prefix: str, years_back: int) -> None:
    def shift(dob: str) -> str:
        return f"{int(dob[:4]) - years_back}{dob[4:]}" if dob else dob

    pl.DataFrame({
        "rec_id": [f"{prefix}{i:02d}" for i in range(1, len(rows) + 1)],
        "given_name": [r[0] for r in rows], "surname": [r[1] for r in rows],
        "date_of_birth": [shift(r[2]) for r in rows], "postcode": [r[3] for r in rows],
    }).write_csv(folder / f"{prefix}.csv")


@pytest.mark.parametrize("years_back", [
    0,
    pytest.param(50),
])
def test_febrl_style_files_link_the_right_records(tmp_path: Path, runner: CliRunner, years_back: int) -> None:
    write_febrl(tmp_path, FEBRL_A, "a", years_back)
    write_febrl(tmp_path, FEBRL_B, "b", years_back)
    (tmp_path / "link.toml").write_text(FEBRL_CONFIG, encoding="utf-8")
    result = link_cli(runner, tmp_path / "link.toml", tmp_path / "out")
    assert result.exit_code == 0, result.output
    index = pl.read_parquet(tmp_path / "out/person_index.parquet")
    assert index.height == 40
    linked = (index.group_by("person_id").agg(pl.col("record_id").sort())
              .filter(pl.col("record_id").list.len() > 1)["record_id"].to_list())
    assert sorted(linked) == [[f"a{i:02d}", f"b{i:02d}"] for i in range(1, 17)]
    assert (tmp_path / "out/events.parquet").exists()
    assert pl.read_parquet(tmp_path / "out/events.parquet").height == 0  # kind "other" has no events


# --- `linkcare link` on the bundled sample site --------------------------------------------------


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("sample") / "out"
    result = CliRunner().invoke(cli, ["-v", "link", str(SAMPLE_CONFIG), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


def test_sample_site_links_accurately(sample_run: tuple[Path, Result]) -> None:
    out, _ = sample_run
    score = all_records_f1(CliRunner(), out, SAMPLE_TRUTH)
    assert score["records"] == 249_520  # 60,469 of the five CSV extracts and 189,051 GP events
    assert score["f1"] >= 0.985
    assert score["precision"] >= 0.999


def test_sample_site_outputs_have_the_documented_columns(sample_run: tuple[Path, Result]) -> None:
    out, _ = sample_run
    assert {p.name for p in out.iterdir()} >= {"person_index.parquet", "persons.parquet", "events.parquet",
                                                "pairs.parquet", "model.json", "manifest.json"}
    index = pl.read_parquet(out / "person_index.parquet")
    assert index.columns[:5] == ["source", "record_id", "person_id", "match_probability", "match_stage"]
    assert set(index["match_stage"].unique()) == {"deterministic", "probabilistic", "unlinked"}
    assert index.filter(pl.col("match_stage") == "unlinked")["match_probability"].null_count() == \
        index.filter(pl.col("match_stage") == "unlinked").height
    assert (index.filter(pl.col("match_stage") == "probabilistic")["match_probability"] >= 0.95).all()  # threshold

    fields = ["nhs", "la_id", "birth_year", "birth_month", "sex", "area", "practice"]
    pairs = pl.read_parquet(out / "pairs.parquet")
    assert pairs.columns[:4] == ["source_l", "record_id_l", "source_r", "record_id_r"]
    assert [c for c in pairs.columns if c.startswith("level_")] == [f"level_{f}" for f in fields]
    assert {"match_weight", "match_probability"} <= set(pairs.columns)
    assert pairs.height > 10_000
    assert pairs["match_probability"].is_between(0.01, 1.0).all()  # pairs_min_probability

    persons = pl.read_parquet(out / "persons.parquet")
    sources = ["ae", "apc", "gp", "outpatients", "social_care"]
    assert persons.columns[0] == "person_id"
    assert {f"records_{s}" for s in sources} <= set(persons.columns)
    assert persons["person_id"].n_unique() == persons.height == index["person_id"].n_unique()
    for s in sources:
        assert persons[f"records_{s}"].sum() == index.filter(pl.col("source") == s).height

    events = pl.read_parquet(out / "events.parquet")
    assert events.height == index.height
    assert events["person_id"].null_count() == 0
    model = json.loads((out / "model.json").read_text())
    assert model["format"] == "linkcare-linkage-model"
    assert [f["field"] for f in model["fields"]] == fields


def test_sample_site_person_index_has_every_record_once(sample_run: tuple[Path, Result]) -> None:
    """Every record is in the person index once, or in its source's rejects file, never both."""
    out, _ = sample_run
    index = pl.read_parquet(out / "person_index.parquet").select("source", "record_id")
    rejects = pl.concat([pl.read_parquet(p).select(pl.lit(p.stem).alias("source"), "record_id")
                         for p in sorted((out / "rejects").glob("*.parquet"))])
    assert rejects.height == 2  # two birth years mistyped into the future (the synthetic site's errors)
    truth = pl.read_parquet(SAMPLE_TRUTH).select(pl.col("source").cast(pl.String), pl.col("record_id").cast(pl.String))
    assert index.is_duplicated().sum() == 0
    assert index.join(rejects, on=["source", "record_id"], how="semi").height == 0
    assert pl.concat([index, rejects]).sort(["source", "record_id"]).equals(truth.sort(["source", "record_id"]))


def test_sample_site_manifest_has_every_input(sample_run: tuple[Path, Result]) -> None:
    out, _ = sample_run
    manifest = json.loads((out / "manifest.json").read_text())
    inputs = {i["source"]: i for i in manifest["inputs"]}
    files = {"gp": "gp_registrations.csv", "apc": "apc.csv", "ae": "ae.csv", "outpatients": "outpatients.csv",
             "social_care": "social_care.csv", "gp_events": "gp_events.parquet"}
    assert set(inputs) == set(files)
    for source, name in files.items():
        path = ROOT / "sample_data" / name
        assert inputs[source]["file"] == name
        assert inputs[source]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        frame = pl.read_parquet(path) if name.endswith(".parquet") else pl.read_csv(path, infer_schema=False)
        assert inputs[source]["rows"] == frame.height
    assert manifest["config"]["sha256"] == hashlib.sha256(SAMPLE_CONFIG.read_bytes()).hexdigest()
    assert [p["blocking"] for p in manifest["blocking"]] == ["nhs", "la_id", "birth_year+birth_month+area"]


def test_sample_site_log_shows_no_token(sample_run: tuple[Path, Result]) -> None:
    _, result = sample_run
    text = result.output
    assert "DEBUG" in text and "pass nhs:" in text  # the verbose log was captured
    tokens: set[str] = set()
    for name, columns in [("gp_registrations.csv", ["Pseudo_NHS_Number"]), ("apc.csv", ["Pseudo_NHS_Number"]),
                          ("ae.csv", ["Pseudo_NHS_Number"]), ("outpatients.csv", ["Pseudo_NHS_Number"]),
                          ("social_care.csv", ["Der_NHS_Number_Traced_Pseudo",
                                               "Der_LA_Person_Unique_Identifier_Pseudo"])]:
        frame = pl.read_csv(ROOT / "sample_data" / name, columns=columns, infer_schema=False)
        for c in columns:
            tokens |= set(frame[c].drop_nulls().to_list())
    assert len(tokens) > 10_000
    shown = set(re.findall(r"[0-9a-fA-F]{32}", text))
    assert not shown & tokens
    assert not any(t in text for t in list(tokens)[:2_000])


def test_sample_site_deterministic_records_have_probability_one(sample_run: tuple[Path, Result]) -> None:
    out, _ = sample_run
    index = pl.read_parquet(out / "person_index.parquet")
    assert index.filter(pl.col("match_stage") == "deterministic")["match_probability"].min() == 1.0


def test_sorted_neighbourhood_window_must_be_odd(tmp_path: Path, runner) -> None:
    sorted_pass = 'sorted_neighbourhood = [{ field = "area", window = 4 }]'
    path = write_config(SAMPLE_CONFIG, tmp_path / "site.toml", linkage=sorted_pass)
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert (f"Error: {path}: linkage.sorted_neighbourhood[0].window: must be an odd whole number of 3 or more, "
            "e.g. window = 5") in result.output
