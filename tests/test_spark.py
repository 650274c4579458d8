"""`linkcare link --engine spark` (issue 7): the same people as the local engine, on Spark in local mode.

The bundled sample site (10,000 people and 906 visitors, 60,469 records) is linked once by each engine; the Spark run
uses one SparkSession for the module (2 cores, 4 shuffle partitions, no UI). On the sample site every
pass has fewer pairs than the EM training sample, so both engines train on the same pairs and draw
the same u sample: the model, the pairs and the people are the same, not just close.
"""

from __future__ import annotations

import json
import os
import re
import sys
from html import unescape
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from conftest import error_lines, write_config
from linkcare.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "configs" / "sample.toml"
try:
    import pyspark  # noqa: F401 - only whether it imports

    HAVE_PYSPARK = True
except ImportError:
    HAVE_PYSPARK = False
needs_spark = pytest.mark.skipif(not HAVE_PYSPARK, reason="PySpark is not installed (pip install '.[spark]')")


@pytest.fixture(scope="module")
def spark():  # type: ignore[no-untyped-def]
    from pyspark.sql import SparkSession

    from linkcare.spark.session import DEFAULTS, LOG_CONFIG

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master("local[2]").appName("linkcare tests")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"))
    for key, value in DEFAULTS.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def linked(spark, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """The sample site linked by the local engine and by Spark: (local output, Spark output)."""
    root = tmp_path_factory.mktemp("spark_parity")
    runner = CliRunner()
    local = runner.invoke(cli, ["-q", "link", str(SAMPLE), "--out", str(root / "local")])
    assert local.exit_code == 0, local.output
    on_spark = runner.invoke(cli, ["-q", "link", str(SAMPLE), "--out", str(root / "spark"), "--engine", "spark"])
    assert on_spark.exit_code == 0, on_spark.output
    return root / "local", root / "spark"


@needs_spark
def test_spark_finds_the_same_people(linked: tuple[Path, Path]) -> None:
    local, on_spark = (pl.read_parquet(p / "person_index.parquet") for p in linked)
    assert local.height == on_spark.height == 249_518  # 249,520 records, 2 rejected by the row checks
    assert local.schema == on_spark.schema
    # The same partition of records into people, and the same keyed person IDs.
    joined = local.join(on_spark, on=["source", "record_id"], how="full", suffix="_spark", coalesce=True)
    assert joined["person_id"].null_count() == joined["person_id_spark"].null_count() == 0
    assert (joined["person_id"] == joined["person_id_spark"]).all()
    assert (joined["match_stage"] == joined["match_stage_spark"]).all()
    assert (joined["has_nhs"] == joined["has_nhs_spark"]).all()
    # Probabilities agree; an attached record's posterior sums its candidates in another order on
    # Spark, so it may differ in the last bits.
    a, b = joined["match_probability"].to_numpy(), joined["match_probability_spark"].to_numpy()
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=0, atol=1e-12)
    assert local["person_id"].n_unique() == 11_449


def _assert_same_attach_step(local: Path, on_spark: Path) -> None:
    """attachments.parquet the same (posteriors within 1e-12) and the manifest's attach facts the same
    (exponents and shares within 1e-6, counts and reasons equal)."""
    theirs, ours = (pl.read_parquet(p / "attachments.parquet") for p in (local, on_spark))
    assert ours.schema == theirs.schema
    shares = ["posterior", "none"]
    assert ours.drop(shares).equals(theirs.drop(shares))  # same rows in the same order
    for name in shares:
        assert np.allclose(ours[name].to_numpy(), theirs[name].to_numpy(), rtol=0, atol=1e-12), name
    facts = [json.loads((p / "manifest.json").read_text())["attach"] for p in (local, on_spark)]
    for key in ("bayes_factor_exponent", "activity_exponent"):
        assert abs(facts[0][key] - facts[1][key]) <= 1e-6, key
    assert facts[0]["calibration"] == facts[1]["calibration"]
    assert len(facts[0]["sources"]) == len(facts[1]["sources"]) > 0
    for mine, other in zip(facts[1]["sources"], facts[0]["sources"], strict=True):
        assert mine.keys() == other.keys()
        for key, value in other.items():
            if isinstance(value, float):
                assert abs(mine[key] - value) <= 1e-6, (other["source"], key)
            else:
                assert mine[key] == value, (other["source"], key)


@needs_spark
def test_spark_attaches_as_the_local_engine(linked: tuple[Path, Path]) -> None:
    _assert_same_attach_step(*linked)
    attached = pl.read_parquet(linked[1] / "attachments.parquet")
    assert attached.height > 0 and 0 < attached["attached"].sum() < attached.height


@needs_spark
def test_spark_writes_what_explain_reads_as_the_local_engine(linked: tuple[Path, Path]) -> None:
    """nodes.parquet, the nodes and passes of pairs.parquet and person_index's nodes are the same,
    so `linkcare explain` says the same of a record of either output."""
    local, on_spark = linked
    for name in ("nodes.parquet", "pairs.parquet"):
        assert pl.read_parquet(on_spark / name).equals(pl.read_parquet(local / name)), name
    index = [pl.read_parquet(p / "person_index.parquet").select("source", "record_id", "node") for p in linked]
    assert index[0].equals(index[1])
    attached = pl.read_parquet(local / "attachments.parquet").filter(pl.col("alternative_person_ids").list.len() > 0)
    records = [f"{s}:{r}" for s, r in attached.select("source", "record_id").head(2).iter_rows()]
    records += [f"{s}:{r}" for s, r in index[0].select("source", "record_id").head(2).iter_rows()]
    runner = CliRunner()
    for record in records:
        said = [runner.invoke(cli, ["explain", str(p), "--record", record, "--json"]) for p in linked]
        assert said[0].exit_code == said[1].exit_code == 0, said[0].output + said[1].output
        facts = [json.loads(r.stdout) for r in said]
        for f in facts:  # an attached record's posterior may differ in its last bits (see above)
            f.pop("match_probability")
            if f["attach"]:
                f["attach"] = {k: v for k, v in f["attach"].items() if k not in ("posterior", "none", "alternatives")}
        assert facts[0] == facts[1], record


@needs_spark
def test_spark_draws_trials_as_the_local_engine(spark) -> None:  # type: ignore[no-untyped-def]
    from linkcare.linkage.attach_check import node_draws
    from linkcare.spark.trials import node_draw

    for seed in (0, 42, -7, 2**40 + 3):
        got = spark.range(0, 200_000, numPartitions=3).withColumnRenamed("id", "node").select(
            "node", node_draw(seed).alias("u")).orderBy("node").toPandas()
        assert np.array_equal(got["u"].to_numpy(), node_draws(got["node"].to_numpy(), seed)), seed


@needs_spark
def test_spark_trains_the_same_model(linked: tuple[Path, Path]) -> None:
    local, on_spark = (json.loads((p / "model.json").read_text()) for p in linked)
    assert on_spark["trained_by"] == local["trained_by"] == "fellegi_sunter"
    assert abs(on_spark["prior"] - local["prior"]) <= 1e-9 * local["prior"]
    for mine, theirs in zip(on_spark["fields"], local["fields"], strict=True):
        assert mine["field"] == theirs["field"]
        for key in ("m", "u", "weights"):
            assert np.allclose(mine[key], theirs[key], rtol=0, atol=1e-9), (mine["field"], key)
    assert on_spark["training"]["u_pairs"] == local["training"]["u_pairs"]
    assert on_spark["training"]["sessions"] == local["training"]["sessions"]


@needs_spark
def test_spark_writes_the_same_cohort_files(linked: tuple[Path, Path]) -> None:
    local, on_spark = linked
    for name in ("persons.parquet", "pairs.parquet", "events.parquet", "rejects/ae.parquet",
                 "rejects/outpatients.parquet"):
        ours, theirs = pl.read_parquet(on_spark / name), pl.read_parquet(local / name)
        assert ours.schema == theirs.schema, name
        assert ours.equals(theirs), name  # same rows in the same order
    manifest = json.loads((on_spark / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "spark"
    assert manifest["blocking"] == json.loads((local / "manifest.json").read_text())["blocking"]
    for name, digest in manifest["outputs"].items():
        assert (on_spark / name).is_file()  # one Parquet file per output, not a folder of parts
        from linkcare.io.checksum import file_sha256

        assert file_sha256(on_spark / name) == digest
    assert not list(on_spark.glob(".*")), "scratch folders are cleared"


def _report_tables(path: Path) -> dict[str, list[list[str]]]:
    """Return every section's table rows of a report, each cell as plain text."""
    text = path.read_text(encoding="utf-8")
    sections = dict(re.findall(r'<section id="([^"]+)">(.*?)</section>', text, flags=re.S))
    return {name: [[unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
                   for body in re.findall(r"<tbody>(.*?)</tbody>", section, flags=re.S)
                   for row in re.findall(r"<tr>(.*?)</tr>", body)]
            for name, section in sections.items()}


@needs_spark
def test_spark_writes_the_same_link_report(linked: tuple[Path, Path]) -> None:
    local, on_spark = (p / "link_report.html" for p in linked)
    assert on_spark.is_file()
    mine, theirs = _report_tables(on_spark), _report_tables(local)
    assert list(mine) == ["sources", "blocking", "weights", "precision", "model", "unlinkables", "clusters", "equity",
                          "borderline"]
    # Every table of every section: counts, groups, weights, expected precision and recall, unlinkable
    # records, cluster sizes and flags, borderline pairs.
    assert mine == theirs
    for name in ("precision", "unlinkables", "clusters"):
        assert len(mine[name]) > 3, name
    figures = [len(re.findall("<figure data-plot=", p.read_text(encoding="utf-8"))) for p in (on_spark, local)]
    assert figures[0] == figures[1] == 9


@needs_spark
def test_spark_carries_person_ids_over_as_the_local_engine(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Last month's run linked the sample at a stricter threshold, so this month's people merge some
    # of last month's: both engines must carry the same IDs over and record the same lineage.
    strict = write_config(SAMPLE, tmp_path / "strict.toml", replace={"threshold = 0.95": "threshold = 0.9999"})
    runner = CliRunner()
    before = runner.invoke(cli, ["-q", "link", str(strict), "--out", str(tmp_path / "before")])
    assert before.exit_code == 0, before.output
    # The same extracts as last month's, which the check against the previous run is told to allow.
    same = write_config(SAMPLE, tmp_path / "same.toml", extra='\n[validation]\nunchanged_inputs = "allow"\n')
    outs = {}
    for engine in ("local", "spark"):
        outs[engine] = tmp_path / engine
        done = runner.invoke(cli, ["-q", "link", str(same), "--out", str(outs[engine]), "--engine", engine,
                                   "--previous", str(tmp_path / "before")])
        assert done.exit_code == 0, done.output
    local, on_spark = (pl.read_parquet(outs[e] / "person_index.parquet") for e in ("local", "spark"))
    assert local.select("source", "record_id", "person_id").equals(on_spark.select("source", "record_id", "person_id"))
    lineage = pl.read_parquet(outs["local"] / "lineage.parquet")
    assert lineage.equals(pl.read_parquet(outs["spark"] / "lineage.parquet"))
    changes = dict(lineage.group_by("change").len().iter_rows())
    assert changes.get("kept", 0) > 5_000 and changes.get("merged", 0) > 0, changes
    manifest = json.loads((outs["spark"] / "manifest.json").read_text())
    assert manifest["previous"] == json.loads((outs["local"] / "manifest.json").read_text())["previous"]
    _assert_same_attach_step(outs["local"], outs["spark"])


@needs_spark
def test_stratify_reads_the_spark_cohort(linked: tuple[Path, Path], tmp_path: Path) -> None:
    local, on_spark = linked
    runner = CliRunner()
    for cohort, out in ((local, tmp_path / "local"), (on_spark, tmp_path / "spark")):
        result = runner.invoke(cli, ["-q", "stratify", str(SAMPLE), "--cohort", str(cohort), "--out", str(out)])
        assert result.exit_code == 0, result.output
    risk = [pl.read_parquet(tmp_path / engine / "risk.parquet") for engine in ("local", "spark")]
    assert risk[0].equals(risk[1])


@needs_spark
def test_spark_link_only_sorted_neighbourhood_and_one_to_one(spark, small_site: Path,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    """Another link type, a sorted-neighbourhood pass and one-to-one between two sources: the same pairs
    (with their levels and decisions) and the same people."""
    config = write_config(small_site / "site.toml", tmp_path / "variant.toml", replace={
        'link_type = "link_and_dedupe"': 'link_type = "link_only"',
        'blocking = [["nhs"], ["la_id"], ["birth_year", "birth_month", "area"]]':
        'blocking = [["nhs"], ["birth_year", "birth_month", "area"]]\n'
        'sorted_neighbourhood = [{ field = "area", window = 3, block = ["birth_year", "sex"] }]\n'
        'one_to_one = ["gp", "social_care"]'})
    runner = CliRunner()
    for engine in ("local", "spark"):
        result = runner.invoke(cli, ["-q", "link", str(config), "--out", str(tmp_path / engine), "--engine", engine])
        assert result.exit_code == 0, result.output
    for name in ("pairs.parquet", "persons.parquet"):
        assert pl.read_parquet(tmp_path / "spark" / name).equals(pl.read_parquet(tmp_path / "local" / name)), name
    index = [pl.read_parquet(tmp_path / e / "person_index.parquet").select("source", "record_id", "person_id")
             for e in ("local", "spark")]
    assert index[0].equals(index[1])
    _assert_same_attach_step(tmp_path / "local", tmp_path / "spark")
    pairs = pl.read_parquet(tmp_path / "spark" / "pairs.parquet").filter(pl.col("accepted"))
    between = pairs.filter(pl.concat_list("source_l", "source_r").list.sort() == pl.lit(["gp", "social_care"]))
    for side in ("l", "r"):
        assert not between.select(pl.struct(f"source_{side}", f"record_id_{side}").is_duplicated().any()).item()
    assert pairs.filter(pl.col("source_l") == pl.col("source_r")).height == 0  # link_only


def test_engine_spark_without_pyspark_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyspark", None)  # `import pyspark` now raises ImportError
    result = CliRunner().invoke(cli, ["link", str(SAMPLE), "--out", str(tmp_path / "out"), "--engine", "spark"])
    assert result.exit_code == 2
    assert error_lines(result.stderr) == [
        "Error: --engine spark needs PySpark, which is not installed; install it with: "
        "pip install 'linkcare[spark]' (or use --engine local)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("table", "message"), [
    ('[engine]\nmastr = "local[2]"',
     "engine.mastr: unknown key; did you mean 'master'? allowed keys: master, checkpoint_dir, spark"),
    ('[engine]\nmaster = ""', "engine.master: is empty; give a value, e.g. master = \"local[*]\""),
    ('[engine.spark]\n"executor.memory" = "4g"',
     'engine.spark."executor.memory": is not a Spark setting (they start with "spark."); '
     'e.g. [engine.spark] "spark.executor.memory" = "4g"'),
    ('[engine.spark]\n"spark.master" = "local"', 'engine.spark."spark.master": set the master with '
     '[engine] master = "..." instead'),
    ('[engine.spark]\n"spark.jars" = ["a.jar"]', 'engine.spark."spark.jars": must be a string, number or boolean, '
     'not an array; e.g. [engine.spark] "spark.executor.memory" = "4g"'),
])
def test_a_bad_engine_table_is_a_config_error(tmp_path: Path, table: str, message: str) -> None:
    config = write_config(SAMPLE, tmp_path / "site.toml", extra="\n" + table + "\n")
    commands = [["validate", str(config)]]
    if HAVE_PYSPARK:  # without PySpark, --engine spark stops before reading the config
        commands.append(["link", str(config), "--out", str(tmp_path / "out"), "--engine", "spark"])
    for command in commands:
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        assert error_lines(result.stderr) == [f"Error: {config}: {message}"]
    assert not (tmp_path / "out").exists()


def test_engine_table_is_read(tmp_path: Path) -> None:
    from linkcare.config import load_config

    text = SAMPLE.read_text() + (
        '\n[engine]\nmaster = "local[3]"\ncheckpoint_dir = "ckpt"\n'
        '[engine.spark]\n"spark.executor.memory" = "4g"\n"spark.sql.shuffle.partitions" = 8\n'
        '"spark.sql.adaptive.enabled" = false\n')
    (tmp_path / "site.toml").write_text(text)
    engine = load_config(tmp_path / "site.toml").engine
    assert engine.master == "local[3]"
    assert engine.checkpoint_dir == str(tmp_path.resolve() / "ckpt")
    assert dict(engine.spark) == {"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": "8",
                                  "spark.sql.adaptive.enabled": "false"}


def test_link_help_names_the_engines() -> None:
    result = CliRunner().invoke(cli, ["link", "--help"])
    assert result.exit_code == 0
    assert "--engine [local|spark]" in result.output
