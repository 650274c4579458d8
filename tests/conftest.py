"""Shared fixtures: tiny polars frames and one small synthetic site written once per session."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.synth import SynthOptions, write_site

REFERENCE_DATE = date(2026, 3, 31)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def node_frame() -> pl.DataFrame:
    """Sixty nodes from three sources with three small-alphabet fields, about a fifth missing each:
    enough agreeing pairs on every blocking key, within and across sources."""
    rng = np.random.default_rng(20260331)
    n = 60

    def column(values: list[str], missing: float) -> list[str | None]:
        picked = rng.choice(values, size=n).tolist()
        gone = rng.random(n) < missing
        return [None if g else v for v, g in zip(picked, gone, strict=True)]

    return pl.DataFrame({
        "source": rng.choice(["a", "b", "c"], size=n).tolist(),
        "x": column(["1", "2", "3", "4"], 0.2),
        "y": column(["p", "q"], 0.2),
        "z": column(["k", "l", "m"], 0.25),
    }, schema={"source": pl.String, "x": pl.String, "y": pl.String, "z": pl.String})


@pytest.fixture(scope="session")
def small_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic site of 1,500 people (five extracts, site.toml, truth/records.parquet)."""
    out = tmp_path_factory.mktemp("small_site") / "site"
    write_site(out, SynthOptions(people=1_500, seed=5, reference_date=REFERENCE_DATE))
    return out
