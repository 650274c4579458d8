"""Outputs an analyst can open: one Parquet compression throughout, rejects as CSV too, and codes
written as the extracts wrote them (standardised only for comparing)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli
from linkcare.cohort.persons import written_forms
from linkcare.io.parquet import PARQUET_COMPRESSION, parquet_codecs, write_parquet
from linkcare.sources.read import FORM_PREFIX, choose_forms, form_counts

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "configs" / "sample.toml"


@pytest.fixture(scope="module")
def sample_outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample linked, as `make demo` does."""
    root = tmp_path_factory.mktemp("sample_outputs")
    result = CliRunner().invoke(cli, ["-q", "link", str(SAMPLE), "--out", str(root / "cohort")])
    assert result.exit_code == 0, result.output
    return root


def test_every_parquet_output_of_link_train_and_stratify_is_zstd(sample_outputs: Path, trained: tuple[Path, Path, Path],
                                                                  tmp_path: Path, runner: CliRunner) -> None:
    config, cohort, model = trained
    result = runner.invoke(cli, ["-q", "stratify", str(config), "--cohort", str(cohort), "--model", str(model),
                                 "--out", str(tmp_path / "risk")])
    assert result.exit_code == 0, result.output
    files = sorted([*sample_outputs.rglob("*.parquet"), *model.rglob("*.parquet"), *tmp_path.rglob("*.parquet")])
    names = {p.relative_to(p.parent.parent).as_posix() for p in files}
    assert {"cohort/person_index.parquet", "cohort/persons.parquet", "cohort/events.parquet", "cohort/pairs.parquet",
            "cohort/nodes.parquet", "cohort/attachments.parquet", "risk/risk.parquet"} <= names
    assert any(n.startswith("rejects/") for n in names)
    for path in files:
        assert parquet_codecs(path) == {PARQUET_COMPRESSION.upper()}, path


def test_the_helper_writes_zstd(tmp_path: Path) -> None:
    write_parquet(pl.DataFrame({"a": [1, 2]}), tmp_path / "a.parquet")
    assert parquet_codecs(tmp_path / "a.parquet") == {"ZSTD"}


def test_sample_rejects_csv_hold_the_parquet_rows(sample_outputs: Path) -> None:
    parquets = sorted((sample_outputs / "cohort" / "rejects").glob("*.parquet"))
    assert parquets
    for parquet in parquets:
        expected = pl.read_parquet(parquet)
        got = pl.read_csv(parquet.with_suffix(".csv"), schema=dict(expected.schema))
        assert got.equals(expected), parquet.name


def test_persons_codes_are_as_the_extracts_wrote_them_and_join_to_ons_lookups(sample_outputs: Path) -> None:
    persons = pl.read_parquet(sample_outputs / "cohort" / "persons.parquet")
    data = ROOT / "sample_data"
    lsoa = pl.read_csv(data / "areas.csv", infer_schema=False)["LSOA11CD"]
    areas = persons["area"].drop_nulls()
    assert areas.len() > 0 and areas.str.contains("^E01").all()
    # Every area the ONS lookup knows joins to it as written: E01017352, not e01017352.
    known = areas.str.to_lowercase().is_in(lsoa.str.to_lowercase().implode())
    assert known.sum() > 0.5 * areas.len()
    assert areas.filter(known).is_in(lsoa.implode()).all()
    gp = pl.read_csv(data / "gp_registrations.csv", infer_schema=False)
    practices = persons["practice"].drop_nulls()
    assert (practices == practices.str.to_uppercase()).all()  # ODS codes, as every extract writes them
    spine = practices.str.to_lowercase().is_in(gp["Practice_Code"].str.to_lowercase().implode())
    assert spine.sum() > 0 and practices.filter(spine).is_in(gp["Practice_Code"].implode()).all()
    assert set(persons["sex"].drop_nulls()) <= {"M", "F", "U", "X", "0", "9"}
    tokens = persons["nhs"].drop_nulls()
    assert tokens.is_in(gp["Pseudo_NHS_Number"].implode()).mean() > 0.9  # type: ignore[operator]


def test_the_most_common_form_of_a_value_is_written() -> None:
    frame = pl.DataFrame({"area": ["e01", "e01", "e01", "e02", None],
                          FORM_PREFIX + "area": ["E01", "E01", "e01", "e02", None],
                          "sex": ["m", "f", "m", "f", "m"],
                          FORM_PREFIX + "sex": ["M", "f", "m", "F", "M"]})
    forms = choose_forms(form_counts(frame, ("area", "sex")))
    assert sorted(forms.rows()) == [("area", "e01", "E01"), ("area", "e02", "e02"), ("sex", "f", "F"),
                                    ("sex", "m", "M")]  # f: a tie, the smallest form
    people = pl.DataFrame({"person_id": ["P1", "P2", "P3"], "area": ["e01", "e02", None], "sex": ["m", "f", "m"],
                           "birth_year": ["1950", "1960", None]})
    out = written_forms(people, forms, ("area", "sex", "birth_year"))
    assert out.rows() == [("P1", "E01", "M", "1950"), ("P2", "e02", "F", "1960"), ("P3", None, "M", None)]


def test_codes_written_in_other_cases_still_link(small_site: Path, tmp_path: Path, runner: CliRunner) -> None:
    # Standardising is for comparing: an APC extract that lower-cases LSOAs links as before.
    import shutil

    site = tmp_path / "site"
    shutil.copytree(small_site, site)
    apc = pl.read_csv(site / "apc.csv", infer_schema=False)
    apc.with_columns(pl.col("LSOA11").str.to_lowercase()).write_csv(site / "apc.csv")
    out = tmp_path / "cohort"
    result = runner.invoke(cli, ["-q", "link", str(site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    base = tmp_path / "base"
    result = runner.invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(base)])
    assert result.exit_code == 0, result.output
    columns = ["source", "record_id", "person_id"]
    assert pl.read_parquet(out / "person_index.parquet", columns=columns).equals(
        pl.read_parquet(base / "person_index.parquet", columns=columns))
    # The spine writes LSOAs in upper case, more often than APC's lower case: persons keep that.
    assert pl.read_parquet(out / "persons.parquet")["area"].drop_nulls().str.contains("^E01").all()
