"""Shared fixtures: tiny polars frames and one small synthetic site written once per session, and
helpers: a site config rewritten for one test, the groups of a labelling, the values of a site."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli
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


@pytest.fixture(scope="session")
def trained(small_site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The small site linked and trained once: (config, cohort, model folder). Copy before changing."""
    root = tmp_path_factory.mktemp("risk")
    runner = CliRunner()
    config = small_site / "site.toml"
    result = runner.invoke(cli, ["-q", "link", str(config), "--out", str(root / "cohort")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["-q", "train", str(config), "--cohort", str(root / "cohort"),
                                 "--out", str(root / "model")])
    assert result.exit_code == 0, result.output
    return config, root / "cohort", root / "model"


def record_values(site: Path) -> set[str]:
    """Return identifying values taken from a site's extracts (tokens, council IDs, record keys,
    areas; at least 6 characters), for tests that no log, error or report holds one."""
    import polars as pl

    values: set[str] = set()
    for csv in site.glob("*.csv"):
        if csv.name == "areas.csv":
            continue
        frame = pl.read_csv(csv, infer_schema=False)
        for column in frame.columns:
            if any(k in column for k in ("NHS", "Pseudo", "LSOA", "_ID", "Ident", "KEY", "Record")):
                values |= {v for v in frame[column].drop_nulls().unique().to_list() if len(v) >= 6}
    return values


def write_config(config: Path, dest: Path, *, linkage: str = "", replace: Mapping[str, str] | None = None,
                 extra: str = "", own_monitor: bool = False) -> Path:
    """Write `dest`, a copy of the site config `config` for one test, and return it.

    Every relative `path`, `labels`, `trajectory`, `members` and `costs` is made absolute, so the copy
    reads the site's files where they are; `linkage` (TOML lines) is added to the [linkage] table; each
    `replace` is applied once and must be found; with `own_monitor`, the config's [monitor] tables (the
    last of a synthetic site's) are dropped for those of `extra`; `extra` (TOML tables) is appended.
    """
    text = config.read_text(encoding="utf-8")
    if own_monitor:
        assert "\n[monitor]\n" in text
        text = text.split("\n[monitor]\n")[0] + "\n"
    base = config.resolve().parent
    if linkage:
        assert "[linkage]\n" in text
        text = text.replace("[linkage]\n", f"[linkage]\n{linkage}\n", 1)
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new, 1)

    def absolute(match: re.Match[str]) -> str:
        return f'{match.group(1)} = "{(base / match.group(2)).resolve().as_posix()}"'

    text = re.sub(r'\b(path|labels|trajectory|members|costs) = "([^"/][^"]*)"', absolute, text + extra)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    return dest


def partition(labels: np.ndarray | list) -> list[frozenset[int]]:
    """Return the groups of a labelling (index sets of equal labels), ordered by their smallest index."""
    groups: dict[object, set[int]] = {}
    for i, label in enumerate(list(labels)):
        groups.setdefault(label, set()).add(i)
    return sorted((frozenset(g) for g in groups.values()), key=min)


_LOG_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2} ")
_END_FIGURES = re.compile(r" in \d+\.\d s, peak memory \d+ MiB$")


def log_lines(stderr: str) -> list[str]:
    """Return standard error's lines with each log line's time left off, and the end line's duration
    and peak memory as `<s>` and `<mib>`, so that tests can compare every line exactly."""
    return [_END_FIGURES.sub(" in <s> s, peak memory <mib> MiB", _LOG_TIME.sub("", line))
            for line in stderr.splitlines()]


def error_lines(stderr: str) -> list[str]:
    """Return the `Error: ...` lines of standard error."""
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]
