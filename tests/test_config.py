"""The site config: loading into frozen objects, every rule's message, and `linkcare validate`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from conftest import error_lines
from linkcare.cli import cli
from linkcare.commands.validate import validate_site
from linkcare.config import (
    Comparison,
    Config,
    FieldSpec,
    Linkage,
    Source,
    check_config,
    config_hash,
    load_config,
)
from linkcare.config.kinds import KIND_NAMES, default_events, match_columns, required_events
from linkcare.errors import ConfigError, DataError, ProblemList
from linkcare.io.extracts import read_header

GP_CSV = (
    "Patient_ID,Pseudo_NHS_Number,Birth_Year,Sex,LSOA,Registration_Date,Practice_Code\n"
    "P1,aa,1950,1,E01,2001-01-01,A1\n"
)
APC_CSV = (
    "EPIKEY,Pseudo_NHS_Number,MYDOB,SEX,ADMIDATE,ADMIMETH,DIAG_4_01,DIAG_4_02\n"
    "1,aa,031950,1,2020-01-01,21,I10X,\n"
)

SITE = """\
version = 1
reference_date = "2026-03-31"

[[sources]]
name = "gp"
path = "gp.csv"
id = "Patient_ID"
kind = "gp_registrations"
fields = { nhs = "Pseudo_NHS_Number", birth_year = "Birth_Year", sex = "Sex", area = "LSOA" }
events = { ethnicity = [], death_date = [] }

[[sources]]
name = "apc"
path = "data/apc.csv"
id = "EPIKEY"
kind = "apc"
events = { end_date = [], admission_source = [], discharge_destination = [] }
[sources.fields]
nhs = "Pseudo_NHS_Number"
birth_year = { column = "MYDOB", format = "%m%Y", part = "year" }
sex = { column = "SEX", values = { "1" = "M", "2" = "F" } }

[linkage]
link_type = "link_only"
threshold = 0.9
deterministic = [["nhs", "birth_year"]]
blocking = [["nhs"], ["birth_year", "sex"]]

[[linkage.comparisons]]
field = "birth_year"
method = "numeric"
levels = [0, 1]

[[linkage.comparisons]]
field = "sex"
method = "exact"
term_frequency = true
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A valid two-source site in tmp_path, which is also the working folder."""
    (tmp_path / "gp.csv").write_text(GP_CSV)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "apc.csv").write_text(APC_CSV)
    (tmp_path / "site.toml").write_text(SITE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def problems_of(text: str) -> list[str]:
    """Return the config problems of a config text, written as site.toml in the working folder."""
    Path("site.toml").write_text(text)
    return [str(p) for p in check_config("site.toml").problems]


# --- loading -----------------------------------------------------------------------------------


def test_valid_config_loads_into_frozen_dataclasses(site: Path) -> None:
    config = load_config("site.toml")
    assert isinstance(config, Config)
    assert config.path == site / "site.toml"
    assert config.version == 1
    assert config.reference_date == dt.date(2026, 3, 31)
    gp, apc = config.sources
    assert (gp.name, gp.format, gp.id, gp.kind, gp.delimiter) == (
        "gp", "csv", "Patient_ID", "gp_registrations", ","
    )
    assert gp.path == site / "gp.csv" and gp.path.is_absolute()
    assert apc.path == site / "data" / "apc.csv"
    assert gp.fields["sex"] == FieldSpec("Sex")
    assert apc.fields["birth_year"] == FieldSpec("MYDOB", format="%m%Y", part="year")
    assert apc.fields["sex"].values == {"1": "M", "2": "F"}
    assert gp.events == {"registration_date": "Registration_Date", "death_date": (),
                         "practice": "Practice_Code", "ethnicity": (),
                         "deregistration_date": "Deregistration_Date"}
    assert apc.events["diagnoses"] == "DIAG_4_*"
    assert config.linkage == Linkage(
        link_type="link_only",
        threshold=0.9,
        deterministic=(("nhs", "birth_year"),),
        blocking=(("nhs",), ("birth_year", "sex")),
        comparisons=(Comparison("birth_year", "numeric", (0.0, 1.0), False),
                     Comparison("sex", "exact", (), True)),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.version = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        gp.fields["x"] = FieldSpec("X")  # type: ignore[index]


def test_defaults_are_filled_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("site.toml").write_text(
        'version = 1\nreference_date = 2026-03-31\n'
        '[[sources]]\nname = "a"\npath = "a.PARQUET"\nid = "k"\nfields = { x = "X" }\n'
    )
    config = load_config("site.toml")
    (a,) = config.sources
    assert (a.format, a.kind, a.delimiter, dict(a.events)) == ("parquet", "other", ",", {})
    assert config.reference_date == dt.date(2026, 3, 31)
    assert config.linkage == Linkage("link_and_dedupe", 0.95, (), (), ())


def test_config_hash_is_sha256_of_the_bytes(site: Path) -> None:
    assert config_hash("site.toml") == hashlib.sha256(SITE.encode()).hexdigest()


def test_load_config_raises_one_problem_list_with_every_problem(site: Path) -> None:
    Path("site.toml").write_text(SITE.replace("version = 1", "version = 3").replace(
        "threshold = 0.9", "threshold = 0"))
    with pytest.raises(ProblemList) as info:
        load_config("site.toml")
    assert info.value.exit_code == 2
    assert [str(p) for p in info.value.problems] == [
        "site.toml: version: 3 is not supported; use version = 1",
        "site.toml: linkage.threshold: 0 is not strictly between 0 and 1; e.g. threshold = 0.95",
    ]
    assert all(isinstance(p, ConfigError) for p in info.value.problems)


# --- every rule --------------------------------------------------------------------------------


def _swap(old: str, new: str) -> str:
    assert old in SITE, old
    return SITE.replace(old, new, 1)


RULES = [
    (SITE.replace("version = 1\n", ""), 'version: missing; add it, e.g. version = 1'),
    (_swap("version = 1", 'version = "1"'), "version: must be the integer 1, not a string"),
    (_swap('"2026-03-31"', '"31/03/2026"'), 'reference_date: must be a date; write it as '
     '"YYYY-MM-DD", e.g. reference_date = "2026-03-31", or "auto" (the last complete month\'s end)'),
    (_swap('"2026-03-31"', '"2026-02-30"'), "reference_date: '2026-02-30' is not a real date; "
     'write it as "YYYY-MM-DD", e.g. reference_date = "2026-03-31", or "auto" (the last complete month\'s end)'),
    ('version = 1\nreference_date = "2026-03-31"\n',
     "sources: missing; add at least one [[sources]] table with name, path, id, fields"),
    (_swap('name = "gp"', 'name = "GP Data"'),
     "sources[0].name: 'GP Data' may use only a-z, 0-9 and _; e.g. name = \"gp\""),
    (_swap('name = "apc"', 'name = "gp"'),
     "sources[1].name: 'gp' is already the name of sources[0]; give each source a unique name"),
    (_swap('path = "gp.csv"', 'path = "gp.txt"'), "sources[0].path: cannot tell the format from "
     "the extension '.txt'; add format = \"csv\" or format = \"parquet\""),
    (_swap('path = "gp.csv"', 'path = "gp.csv"\nformat = "xlsx"'),
     "sources[0].format: 'xlsx' is not a format; use one of: csv, parquet"),
    (_swap('id = "Patient_ID"\n', ''),
     'sources[0].id: missing; add it, e.g. id = "Patient_ID" (the record key column)'),
    (_swap('kind = "apc"', 'kind = "hes_apc"'), "sources[1].kind: 'hes_apc' is not a kind; "
     "did you mean 'apc'? use one of: " + ", ".join(KIND_NAMES)),
    (_swap('path = "gp.csv"', 'path = "gp.csv"\ndelimiter = ";;"'), 'sources[0].delimiter: '
     'must be one character other than a quote or newline, e.g. ";" or "\\t"'),
    (_swap("sex = \"Sex\",", "Sex = \"Sex\","), 'sources[0].fields.Sex: field names may use '
     'only a-z, 0-9 and _; rename it, e.g. birth_year'),
    (_swap('sex = "Sex"', "sex = 1"), 'sources[0].fields.sex: must be a column name or an inline '
     'table, not an integer; e.g. "MYDOB" or { column = "MYDOB", format = "%m%Y", part = "year" }'),
    (_swap('part = "year"', 'part = "decade"'), "sources[1].fields.birth_year.part: 'decade' is "
     "not a date part; use one of: year, month, day"),
    (_swap('format = "%m%Y", ', ''), 'sources[1].fields.birth_year.part: needs a date format to '
     'take the part from; add format, e.g. format = "%m%Y"'),
    (_swap('"%m%Y"', '"%m%q"'), "sources[1].fields.birth_year.format: '%q' is not a date "
     'directive; use %Y, %m, %d and the like; e.g. format = "%m%Y" for MYDOB or "%Y-%m-%d"'),
    (_swap('"%m%Y"', '"%m"'), 'sources[1].fields.birth_year.format: has no year; a date format '
     'needs %Y or %y; e.g. format = "%m%Y" for MYDOB or "%Y-%m-%d"'),
    (_swap('"2" = "F"', '"2" = 2'),
     'sources[1].fields.sex.values."2": must be a string, not an integer; e.g. "F"'),
    (_swap("end_date = []", 'end_dat = "DISDATE"'), "sources[1].events.end_dat: unknown key; "
     "did you mean 'end_date'? allowed keys: start_date, end_date, admission_method, "
     "admission_source, discharge_destination, diagnoses, cost"),
    (_swap("end_date = []", "start_date = []"),
     "sources[1].events.start_date: is required for kind 'apc'; give its column"),
    (_swap('kind = "gp_registrations"', 'kind = "other"'), "sources[0].events: kind 'other' has "
     "no events; set a kind such as gp_registrations, apc, ae, outpatients, social_care, gp_events, "
     "or remove events"),
    (_swap('link_type = "link_only"', 'link_type = "link"'), "linkage.link_type: 'link' is not "
     "a link type; did you mean 'link_only'? use one of: link_only, dedupe_only, link_and_dedupe"),
    (_swap("threshold = 0.9", "threshold = 1.0"),
     "linkage.threshold: 1.0 is not strictly between 0 and 1; e.g. threshold = 0.95"),
    (_swap("threshold = 0.9", 'threshold = "high"'),
     "linkage.threshold: must be a number, not a string; e.g. threshold = 0.95"),
    (_swap('["nhs", "birth_year"]]', '["nhs", "surname"]]'), "linkage.deterministic[0][1]: no "
     "source maps field 'surname'; add it to a source's fields or remove it"),
    (_swap('["birth_year", "sex"]]', '["birth_yr", "sex"]]'), "linkage.blocking[1][0]: no "
     "source maps field 'birth_yr'; did you mean 'birth_year'? add it to a source's fields or "
     "remove it"),
    (_swap('blocking = [["nhs"], ["birth_year", "sex"]]', 'blocking = ["nhs"]'),
     'linkage.blocking: must be an array of arrays of field names, e.g. [["nhs"], '
     '["birth_year", "area"]]'),
    (_swap('field = "sex"', 'field = "birth_year"'), "linkage.comparisons[1].field: 'birth_year' "
     "is already compared by linkage.comparisons[0]; compare each field once"),
    (_swap('method = "numeric"', 'method = "fuzzy"'), "linkage.comparisons[0].method: 'fuzzy' "
     "is not a comparison method; use one of: exact, jaro_winkler, levenshtein, date, numeric, "
     "dice"),
    (_swap('method = "exact"', 'method = "exact"\nlevels = [1]'), "linkage.comparisons[1].levels: "
     "exact compares agree or disagree and takes no levels; remove levels"),
    (_swap("levels = [0, 1]\n", ""), "linkage.comparisons[0].levels: numeric needs levels, best "
     "first; e.g. levels = [0, 1, 5]"),
    (_swap("levels = [0, 1]", "levels = [1, 0]"), "linkage.comparisons[0].levels: must be "
     "strictly increasing (best first); e.g. levels = [0, 1, 5]"),
    (_swap("levels = [0, 1]", "levels = [-1, 0]"), "linkage.comparisons[0].levels[0]: -1 must "
     "be a number 0 or above; e.g. levels = [0, 1, 5]"),
    (_swap('method = "numeric"\nlevels = [0, 1]', 'method = "jaro_winkler"\nlevels = [0.8, 0.9]'),
     "linkage.comparisons[0].levels: must be strictly decreasing (best first); "
     "e.g. levels = [0.95, 0.88]"),
    (_swap('method = "numeric"\nlevels = [0, 1]', 'method = "dice"\nlevels = [1.5, 0.9]'),
     "linkage.comparisons[0].levels[0]: 1.5 must be a similarity above 0 and at most 1; "
     "e.g. levels = [0.95, 0.85]"),
    (_swap('method = "numeric"\nlevels = [0, 1]', 'method = "levenshtein"\nlevels = [0, 0]'),
     "linkage.comparisons[0].levels: must be strictly increasing (best first); "
     "e.g. levels = [0, 1, 2]"),
    (_swap('method = "numeric"\nlevels = [0, 1]', 'method = "date"\nlevels = [0.5, 366]'),
     "linkage.comparisons[0].levels[0]: 0.5 must be a whole number of days above 0; "
     "e.g. levels = [31, 366]"),
    (_swap('method = "numeric"\nlevels = [0, 1]', 'method = "date"\nlevels = [366, 31]'),
     "linkage.comparisons[0].levels: must be strictly increasing (best first); "
     "e.g. levels = [31, 366]"),
    (_swap("term_frequency = true", 'term_frequency = "yes"'),
     "linkage.comparisons[1].term_frequency: must be true or false, not a string"),
    (_swap("term_frequency = true", 'given = "nhs"'),
     "linkage.comparisons[1].given: 'nhs' is not a compared field; compare it in its own "
     "[[linkage.comparisons]] table, or remove given"),
    (_swap("term_frequency = true", 'given = "sex"'),
     "linkage.comparisons[1].given: 'sex' is this comparison's own field; name another compared field"),
    (_swap("term_frequency = true", 'given = "birth_year"\nterm_frequency = true'),
     "linkage.comparisons[1].term_frequency: cannot be used with given; its levels are already split by "
     "'birth_year'"),
    (_swap("term_frequency = true", "given = 3"),
     "linkage.comparisons[1].given: must be the name of another compared field, not an integer"),
]


@pytest.mark.parametrize(("text", "message"), RULES, ids=[m.split(":")[0] for _, m in RULES])
def test_each_rule_gives_its_message(site: Path, text: str, message: str) -> None:
    assert problems_of(text) == [f"site.toml: {message}"]


def test_a_comparison_is_split_only_by_a_field_that_is_not_split_itself(site: Path) -> None:
    both = _swap('levels = [0, 1]', 'levels = [0, 1]\ngiven = "sex"').replace("term_frequency = true",
                                                                             'given = "birth_year"')
    assert problems_of(both) == [
        "site.toml: linkage.comparisons[0].given: 'sex' is itself split by given = 'birth_year'; a field can be "
        "split only by a field that is not",
        "site.toml: linkage.comparisons[1].given: 'birth_year' is itself split by given = 'sex'; a field can be "
        "split only by a field that is not",
    ]


def test_link_only_needs_two_sources(site: Path) -> None:
    one_source = SITE[: SITE.index('[[sources]]\nname = "apc"')] + (
        '[linkage]\nlink_type = "link_only"\n')
    assert problems_of(one_source) == [
        'site.toml: linkage.link_type: link_only needs at least two sources; add a source or '
        'use link_type = "dedupe_only"'
    ]


@pytest.mark.parametrize(
    ("where", "typo", "message"),
    [
        ('version = 1', 'version = 1\nrefrence = 1', "refrence: unknown key; did you mean "
         "'reference_date'? allowed keys: version, reference_date, sources, linkage, risk, disclosure, validation, "
         "engine, output, monitor"),
        ('id = "Patient_ID"', 'idd = "Patient_ID"\nid = "Patient_ID"', "sources[0].idd: unknown "
         "key; did you mean 'id'? allowed keys: name, path, format, id, kind, delimiter, fields, "
         "events, attach"),
        ('part = "year"', 'part = "year", colum = "x"', "sources[1].fields.birth_year.colum: "
         "unknown key; did you mean 'column'? allowed keys: column, format, part, values, pattern, invalid"),
        ("threshold = 0.9", "threshold = 0.9\nthresold = 0.8", "linkage.thresold: unknown key; "
         "did you mean 'threshold'? allowed keys: link_type, threshold, deterministic, "
         "blocking, comparisons, model, labels, max_pairs, one_to_one, indexer, seed, chunk_pairs, "
         "pairs_min_probability, sorted_neighbourhood"),
        ('method = "exact"', 'method = "exact"\nterm_freq = true', "linkage.comparisons[1]."
         "term_freq: unknown key; did you mean 'term_frequency'? allowed keys: field, method, "
         "levels, term_frequency, given"),
        ('version = 1', 'version = 1\nzzz = 1', "zzz: unknown key; allowed keys: version, "
         "reference_date, sources, linkage, risk, disclosure, validation, engine, output, monitor"),
    ],
)
def test_unknown_key_suggests_the_closest(site: Path, where: str, typo: str, message: str) -> None:
    assert problems_of(_swap(where, typo)) == [f"site.toml: {message}"]


def test_every_problem_is_collected(site: Path) -> None:
    text = _swap("version = 1", "version = 0")
    text = text.replace('kind = "apc"', 'kind = "ap"').replace("threshold = 0.9", "threshold = 2")
    assert len(problems_of(text)) == 3


def test_docs_examples_are_valid_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    docs = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    blocks = re.findall(r"```toml\n(.*?)```", docs.read_text(), flags=re.S)
    examples = [b for b in blocks if b.startswith("version = 1")]
    assert len(examples) == 2
    for text in examples:
        assert problems_of(text) == []


# --- extract headers ---------------------------------------------------------------------------


def _source(site: Path, name: str = "gp") -> Source:
    return {s.name: s for s in load_config("site.toml").sources}[name]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty (0 bytes); the extract needs at least a header row"),
        (b"Patient_ID,Caf\xe9\n", "the header is not UTF-8 (bad byte at position 14); re-export "
         "the extract as UTF-8"),
        (b"Patient_ID;NHS;Sex\n1;2;3\n", "the header has one column but looks delimited by ';'; "
         'the delimiter seems wrong: set delimiter = ";" for this source'),
        (b"Patient_ID\tNHS\n", "the header has one column but looks delimited by '\\t'; the "
         'delimiter seems wrong: set delimiter = "\\t" for this source'),
        (b"A|B\n", "the header has one column but looks delimited by '|'; the delimiter seems "
         'wrong: set delimiter = "|" for this source'),
        (b"\n1,2\n", "the first line is blank; the first line must be the header row"),
        (b"A,B,A\n", "the header repeats column(s) 'A'; each column needs a unique name"),
    ],
)
def test_read_header_names_the_problem(site: Path, content: bytes, message: str) -> None:
    (site / "gp.csv").write_bytes(content)
    with pytest.raises(DataError) as info:
        read_header(_source(site))
    assert str(info.value) == f"{site / 'gp.csv'}: {message}"


def test_read_header_reads_only_the_first_line(site: Path) -> None:
    (site / "gp.csv").write_bytes(b'\xef\xbb\xbf"Patient_ID","A, B"\r\n\xff\xfe not utf-8\n')
    assert read_header(_source(site)) == ["Patient_ID", "A, B"]


def test_read_header_of_a_missing_file(site: Path) -> None:
    (site / "gp.csv").unlink()
    with pytest.raises(DataError, match=r"gp\.csv: file not found; check the source's path"):
        read_header(_source(site))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_read_header_of_an_unreadable_file(site: Path) -> None:
    (site / "gp.csv").chmod(0)
    with pytest.raises(DataError) as info:
        read_header(_source(site))
    assert str(info.value) == f"{site / 'gp.csv'}: cannot be read (permission denied); ask for " \
        "read access"


def test_read_header_when_permission_is_denied(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check as above, for runs as root (which can read anything)."""
    monkeypatch.setattr("linkcare.io.extracts.os.access", lambda *_: False)
    with pytest.raises(DataError) as info:
        read_header(_source(site))
    assert str(info.value) == f"{site / 'gp.csv'}: cannot be read (permission denied); ask for " \
        "read access"


def test_read_header_of_parquet(site: Path) -> None:
    pl.DataFrame({"EPIKEY": ["1"], "ADMIDATE": ["x"]}).write_parquet(site / "apc.parquet")
    Path("site.toml").write_text(SITE.replace("data/apc.csv", "apc.parquet"))
    assert read_header(_source(site, "apc")) == ["EPIKEY", "ADMIDATE"]
    (site / "apc.parquet").write_text("EPIKEY,ADMIDATE\n")
    with pytest.raises(DataError, match=r"apc\.parquet: is not a readable Parquet file"):
        read_header(_source(site, "apc"))


def test_kinds_and_globs() -> None:
    assert required_events("apc") == {"start_date", "admission_method"}
    assert required_events("gp_registrations") == {"practice", "registration_date"}
    assert required_events("social_care") == {"start_date", "event_type"}
    assert default_events("other") == {}
    assert match_columns("DIAG_4_*", ["X", "DIAG_4_02", "DIAG_4_01"]) == ["DIAG_4_02", "DIAG_4_01"]
    assert match_columns("ADMIDATE", ["admidate"]) == []


# --- linkcare validate -------------------------------------------------------------------------


def test_validate_returns_a_report(site: Path) -> None:
    report = validate_site("site.toml")
    gp, apc = report.sources
    assert (gp.name, gp.kind, gp.n_columns, gp.fields) == (
        "gp", "gp_registrations", 7, ("nhs", "birth_year", "sex", "area"))
    assert (apc.path, apc.n_columns) == (site / "data" / "apc.csv", 8)
    assert report.notes == ()


def test_validate_notes_missing_optional_event_columns(site: Path) -> None:
    Path("site.toml").write_text(SITE.replace("events = { ethnicity = [], death_date = [] }", ""))
    report = validate_site("site.toml")
    assert report.notes == (
        "source 'gp': optional column 'Date_Of_Death' for events.death_date not found; that "
        "attribute will be empty (set events.death_date = [] to silence)",
        "source 'gp': optional column 'Ethnic_Category' for events.ethnicity not found; that "
        "attribute will be empty (set events.ethnicity = [] to silence)",
    )


def test_validate_cli_prints_sources_and_ok(site: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "source  kind              columns  fields                      path",
        "gp      gp_registrations  7        nhs, birth_year, sex, area  gp.csv",
        "apc     apc               8        nhs, birth_year, sex        data/apc.csv",
        "OK: site.toml and its 2 source(s) are valid",
    ]


def test_validate_reports_config_and_data_problems_in_one_run(site: Path) -> None:
    """A mistyped key, a missing file and a missing column: all in one run, then fixed in turn."""
    (site / "gp.csv").unlink()
    Path("site.toml").write_text(
        SITE.replace('id = "EPIKEY"', 'idd = "EPIKEY"\nid = "EPIKEY"')
        .replace('column = "SEX"', 'column = "GENDER"')
    )
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert error_lines(result.stderr) == [
        "Error: site.toml: sources[1].idd: unknown key; did you mean 'id'? allowed keys: name, "
        "path, format, id, kind, delimiter, fields, events, attach",
        f"Error: source 'gp': {site / 'gp.csv'}: file not found; check the source's path "
        "(relative to the config)",
        f"Error: source 'apc': fields.sex: column 'GENDER' not found in {site / 'data/apc.csv'} "
        "(8 columns); fix the name in the config or the extract",
    ]

    Path("site.toml").write_text(SITE.replace('column = "SEX"', 'column = "GENDER"'))
    result = runner.invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 1
    assert len(error_lines(result.stderr)) == 2

    (site / "gp.csv").write_text(GP_CSV)
    Path("site.toml").write_text(SITE.replace('column = "SEX"', 'column = "Sex"'))
    result = runner.invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [
        f"Error: source 'apc': fields.sex: column 'Sex' not found in {site / 'data/apc.csv'}; "
        "did you mean 'SEX'?"
    ]


def test_validate_reports_missing_required_event_columns(site: Path) -> None:
    (site / "data" / "apc.csv").write_text("EPIKEY,Pseudo_NHS_Number,MYDOB,SEX,ADMIDATE\n")
    Path("site.toml").write_text(SITE.replace("end_date = []", 'end_date = [], diagnoses = []'))
    with pytest.raises(ProblemList) as info:
        validate_site("site.toml")
    assert info.value.exit_code == 1
    assert [str(p) for p in info.value.problems] == [
        f"source 'apc': events.admission_method (the default for kind 'apc'): column 'ADMIMETH' "
        f"not found in {site / 'data/apc.csv'}; did you mean 'ADMIDATE'?"
    ]


def test_validate_of_bad_toml_is_one_error(site: Path) -> None:
    Path("site.toml").write_text("version = 1\nreference_date = \n")
    result = CliRunner().invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 2
    (line,) = error_lines(result.stderr)
    assert line.startswith("Error: site.toml: not valid TOML: ")
    assert "line 2" in line


def test_validate_of_a_missing_config(site: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "nope.toml"])
    assert result.exit_code == 2
    assert error_lines(result.stderr) == ["Error: nope.toml: config file not found; check the path"]


def test_validate_never_prints_cell_values(site: Path) -> None:
    (site / "gp.csv").write_text("Patient_ID;Secret\nP1;VALUE-9434765919\n")
    result = CliRunner().invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 1
    assert "9434765919" not in result.output


# --- [risk] and [disclosure] -------------------------------------------------------------------

RISK_RULES = [
    ("[risk]\nhorizon = 365", "risk.horizon: unknown key; did you mean 'horizon_days'? allowed keys: horizon_days, "
     "lookback_days, spine, model, seed, tiers, worklist_tiers, deprivation, fields"),
    ("[risk]\nhorizon_days = 0", "risk.horizon_days: must be a whole number above 0, e.g. horizon_days = 365"),
    ("[risk]\nlookback_days = [365, 90]", "risk.lookback_days: must be an increasing array of whole numbers of "
     "days, e.g. lookback_days = [90, 365, 730]"),
    ('[risk]\nspine = "apc"', "risk.spine: 'apc' is not a source of kind gp_registrations; name one of: gp"),
    ('[risk]\nmodel = "forest"', "risk.model: 'forest' is not a risk model; use one of: auto, "
     "gradient_boosting, logistic"),
    ('[[risk.tiers]]\nname = "top"\nshare = 0.5\n[[risk.tiers]]\nname = "rest"\nshare = 0.4',
     "risk.tiers: shares add up to 0.9, not 1; adjust them or leave out the last tier's share"),
    ('[[risk.tiers]]\nname = "top"\nshare = 1.5', "risk.tiers[0].share: must be a number above 0 and at most 1, "
     "the share of people in this tier; e.g. share = 0.045 (only the last tier may leave it out and take the rest)"),
    ('[risk]\ndeprivation = { path = "imd.csv", area = "LSOA" }', "risk.deprivation.decile: missing; add it, e.g. "
     'deprivation = { path = "imd_by_lsoa.csv", area = "LSOA11CD", decile = "IMD_Decile" }'),
    ('[risk]\nfields = { birth_year = "yob" }', "risk.fields.birth_year: must name a field that a source maps; "
     "fields are: area, birth_year, nhs, sex"),
    ("[risk]\nworklist_tiers = []", 'risk.worklist_tiers: must be a non-empty array of tier names, e.g. '
     'worklist_tiers = ["case management", "high risk", "moderate risk"]'),
    ('[risk]\nworklist_tiers = "high risk"', 'risk.worklist_tiers: must be a non-empty array of tier names, e.g. '
     'worklist_tiers = ["case management", "high risk", "moderate risk"]'),
    ('[risk]\nworklist_tiers = ["high risk", "high risk"]', "risk.worklist_tiers: names a tier twice; name each "
     "tier once"),
    ('[risk]\nworklist_tiers = ["high risk", "top"]', "risk.worklist_tiers: 1 name(s) are not tiers of "
     "[[risk.tiers]] ('top'); tiers are: 'case management', 'high risk', 'moderate risk', 'low risk'"),
    ('[risk]\nworklist_tiers = ["high risk"]\n[[risk.tiers]]\nname = "top"\nshare = 0.1\n[[risk.tiers]]\n'
     'name = "rest"', "risk.worklist_tiers: 1 name(s) are not tiers of [[risk.tiers]] ('high risk'); tiers are: "
     "'top', 'rest'"),
    ("[disclosure]\nthreshold = -1", "disclosure.threshold: must be a whole number of 0 or more, e.g. threshold = 8"),
    ("[disclosure]\nrounding = 0", "disclosure.rounding: must be a whole number above 0, e.g. rounding = 5"),
]


@pytest.mark.parametrize(("table", "message"), RISK_RULES, ids=[m.split(":")[0] for _, m in RISK_RULES])
def test_each_risk_rule_gives_its_message(site: Path, table: str, message: str) -> None:
    assert problems_of(SITE + "\n" + table + "\n") == [f"site.toml: {message}"]


def test_risk_tables_load_with_defaults_and_overrides(site: Path) -> None:
    Path("site.toml").write_text(SITE + '\n[risk]\nhorizon_days = 180\n[[risk.tiers]]\nname = "top"\nshare = 0.1\n'
                                 '[[risk.tiers]]\nname = "rest"\n[disclosure]\nthreshold = 10\n')
    config = load_config("site.toml")
    assert config.risk.horizon_days == 180 and config.risk.lookback_days == (90, 365, 730)
    assert [(t.name, t.share) for t in config.risk.tiers] == [("top", 0.1), ("rest", 0.9)]
    assert (config.disclosure.threshold, config.disclosure.rounding) == (10, 5)
    Path("site.toml").write_text(SITE)
    default = load_config("site.toml")
    assert [t.share for t in default.risk.tiers] == [0.005, 0.045, 0.15, 0.8]


def test_worklists_list_every_tier_but_the_lowest_unless_configured(site: Path) -> None:
    Path("site.toml").write_text(SITE)
    assert load_config("site.toml").risk.listed_tiers == ("case management", "high risk", "moderate risk")
    # Named in any order, kept in tier order.
    Path("site.toml").write_text(SITE + '\n[risk]\nworklist_tiers = ["high risk", "case management"]\n')
    assert load_config("site.toml").risk.listed_tiers == ("case management", "high risk")
    Path("site.toml").write_text(SITE + '\n[risk]\nworklist_tiers = ["top", "rest"]\n[[risk.tiers]]\nname = "top"\n'
                                 'share = 0.1\n[[risk.tiers]]\nname = "rest"\n')
    assert load_config("site.toml").risk.listed_tiers == ("top", "rest")
    Path("site.toml").write_text(SITE + '\n[[risk.tiers]]\nname = "top"\nshare = 0.1\n[[risk.tiers]]\nname = "rest"\n')
    assert load_config("site.toml").risk.listed_tiers == ("top",)
    Path("site.toml").write_text(SITE + '\n[[risk.tiers]]\nname = "everyone"\n')
    assert load_config("site.toml").risk.listed_tiers == ("everyone",)
