"""Golden files for the output schemas: the columns and types of every Parquet output, the shape of
model.json and the worklists' columns, from the small synthetic site. A change to any of them is a
change to the outputs' contract (docs/config.md and the README document them), so it must show up
here as a failing test. After a deliberate change, rewrite the files with
`LINKCARE_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py` and review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("LINKCARE_UPDATE_GOLDEN") == "1"


def _parquet_schema(path: Path) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in pl.read_parquet_schema(path).items()}


def _shape(value: Any) -> Any:
    """Return the shape of a JSON value: object keys with the shapes of their values, a list as the
    shape of its first item, and a scalar as its JSON type."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else "string"


def _check(name: str, found: Any) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert found == expected, f"{name} changed; if that is meant, rewrite it with LINKCARE_UPDATE_GOLDEN=1"


@pytest.fixture(scope="module")
def stratified(trained: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    config, cohort, model = trained
    out = tmp_path_factory.mktemp("golden") / "risk"
    result = CliRunner().invoke(cli, ["-q", "stratify", str(config), "--cohort", str(cohort), "--model", str(model),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_cohort_parquet_outputs_keep_their_columns_and_types(trained: tuple[Path, Path, Path]) -> None:
    _, cohort, _ = trained
    names = ("person_index.parquet", "persons.parquet", "events.parquet", "pairs.parquet", "nodes.parquet",
             "attachments.parquet")
    _check("cohort_parquet.json", {name: _parquet_schema(cohort / name) for name in names})


def test_model_json_keeps_its_shape(trained: tuple[Path, Path, Path]) -> None:
    _, cohort, _ = trained
    model = json.loads((cohort / "model.json").read_text())
    # The values (and the EM sessions' report) vary with the data; the keys and types are the contract.
    _check("model_json.json", _shape({k: v for k, v in model.items() if k != "training"}))


def test_risk_outputs_keep_their_columns_and_types(stratified: Path) -> None:
    worklists = sorted((stratified / "worklists").glob("*.csv"))
    assert worklists
    _check("risk_outputs.json", {
        "risk.parquet": _parquet_schema(stratified / "risk.parquet"),
        "worklists/<practice>.csv": pl.read_csv(worklists[0], n_rows=1).columns,
    })
