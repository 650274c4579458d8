"""Pseudonymisation: NHS number checks, keyed tokens, coarsened dates and postcodes, and the CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from linkcare.cli import cli
from linkcare.errors import ConfigError, DataError
from linkcare.sources.pseudonymise import (
    TOKEN_PATTERN,
    PseudonymiseSpec,
    clean_nhs_numbers,
    nhs_check_digit,
    postcode_district,
    pseudonymise_file,
    read_key,
    tokenise,
    valid_nhs_mask,
)

KEY = "correct-horse-battery-staple-0123456789"
OTHER_KEY = "another-secret-key-of-enough-length"
INPUT = (
    "Record,NHS_NUMBER,DOB,POSTCODE\n"
    "r1,9434765919,1948-03-12,LS1 4AP\n"
    "r2,943 476 5919,12/03/1948,ls14ap\n"
    "r3,4010232137,19700101,EC1A 1BB\n"
    "r4,9434765918,not a date,NOT A POSTCODE\n"
    "r5,,,\n"
)


def _digits(number: str) -> np.ndarray:
    return np.array([[int(c) for c in number[:9]]])


# --- NHS numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["9434765919", "4010232137"])
def test_known_valid_nhs_numbers_pass_modulus_11(number: str) -> None:
    assert nhs_check_digit(_digits(number))[0] == int(number[9])
    assert valid_nhs_mask(pl.Series([number])).to_list() == [True]


def test_invalid_nhs_numbers_fail() -> None:
    numbers = ["9434765918", "943476591", "94347659190", "943476591X", "٩٤٣٤٧٦٥٩١٩", None]
    assert valid_nhs_mask(pl.Series(numbers, dtype=pl.String)).to_list() == [False] * 6


def test_check_digit_of_10_means_no_valid_number() -> None:
    # 0*10 + ... + 6*2 = 12; 11 - 12 % 11 = 10, so no final digit makes this a valid number.
    assert nhs_check_digit(np.array([[0, 0, 0, 0, 0, 0, 0, 0, 6]]))[0] == 10
    candidates = pl.Series([f"000000006{d}" for d in range(10)])
    assert not valid_nhs_mask(candidates).any()


def test_check_digit_of_11_is_0() -> None:
    assert nhs_check_digit(np.array([[0, 0, 0, 0, 0, 0, 0, 1, 1]]))[0] == 6
    assert nhs_check_digit(np.zeros((1, 9), dtype=int))[0] == 0


def test_clean_nhs_numbers_strips_spaces_and_blanks_invalid() -> None:
    cleaned, n_invalid = clean_nhs_numbers(
        pl.Series("nhs", ["943 476 5919", "401-023-2137", "9434765918", "", None])
    )
    assert cleaned.to_list() == ["9434765919", "4010232137", None, None, None]
    assert n_invalid == 1


# --- tokens ------------------------------------------------------------------------------------


def test_tokens_are_hex_hmac_sha256_deterministic_and_keyed() -> None:
    values = pl.Series("nhs", ["9434765919", None, "4010232137", "9434765919"])
    tokens = tokenise(values, KEY.encode()).to_list()
    assert tokens[1] is None
    assert all(re.fullmatch(TOKEN_PATTERN, t) for t in tokens if t is not None)
    assert all(re.fullmatch(r"[0-9a-f]+", t) for t in tokens if t is not None)
    expected = hmac.new(KEY.encode(), b"9434765919", hashlib.sha256).hexdigest()
    assert expected.startswith(tokens[0])
    assert tokens[0] == tokens[3] != tokens[2]
    assert tokenise(values, KEY.encode()).to_list() == tokens
    assert tokenise(values, OTHER_KEY.encode()).to_list()[0] != tokens[0]


def test_short_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        tokenise(pl.Series(["9434765919"]), b"short")
    monkeypatch.setenv("LC_KEY", "short")
    with pytest.raises(ConfigError) as info:
        read_key(key_env="LC_KEY")
    assert str(info.value) == (
        "the environment variable LC_KEY holds a key shorter than 16 bytes; use a longer random key"
    )
    assert "short" not in str(info.value).replace("shorter", "")


def test_read_key_from_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    assert read_key(key_file=tmp_path / "key") == KEY.encode()
    monkeypatch.setenv("LC_KEY", KEY)
    assert read_key(key_env="LC_KEY") == KEY.encode()
    monkeypatch.delenv("LC_KEY")
    with pytest.raises(ConfigError, match="LC_KEY holding the key is not set"):
        read_key(key_env="LC_KEY")


# --- dates of birth and postcodes --------------------------------------------------------------


def test_postcode_district() -> None:
    series = pl.Series("pc", ["LS1 4AP", "ls14ap", "EC1A 1BB", "M1 1AE", "LS1", "XX 1", "", None])
    assert postcode_district(series).to_list() == [
        "LS1", "LS1", "EC1A", "M1", None, None, None, None
    ]


def test_pseudonymise_file_cuts_dob_and_postcode(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(INPUT)
    spec = PseudonymiseSpec(nhs="NHS_NUMBER", dob="DOB", postcode="POSTCODE")
    report = pseudonymise_file(tmp_path / "in.csv", tmp_path / "out.csv", spec, KEY.encode())
    assert (report.rows, report.nhs_invalid, report.nhs_missing) == (5, 1, 1)
    assert (report.dob_unparsed, report.postcode_unparsed) == (1, 1)
    out = pl.read_csv(tmp_path / "out.csv", infer_schema=False)
    assert out.columns == ["Record", "NHS_NUMBER", "Birth_Year", "Birth_Month", "POSTCODE"]
    assert out["Birth_Year"].to_list() == ["1948", "1948", "1970", None, None]
    assert out["Birth_Month"].to_list() == ["3", "3", "1", None, None]
    assert out["POSTCODE"].to_list() == ["LS1", "LS1", "EC1A", None, None]
    tokens = out["NHS_NUMBER"].to_list()
    assert tokens[0] == tokens[1] and tokens[3] is None and tokens[4] is None
    text = (tmp_path / "out.csv").read_text()
    for raw in ("9434765919", "4010232137", "1948-03-12", "12/03", "4AP", "1BB"):
        assert raw not in text


def test_native_dates_of_birth_from_parquet(tmp_path: Path) -> None:
    import datetime as dt

    pl.DataFrame({"DOB": [dt.date(1950, 7, 4), None]}).write_parquet(tmp_path / "in.parquet")
    spec = PseudonymiseSpec(dob="DOB")
    report = pseudonymise_file(tmp_path / "in.parquet", tmp_path / "out.parquet", spec, b"")
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out.to_dicts() == [{"Birth_Year": 1950, "Birth_Month": 7},
                              {"Birth_Year": None, "Birth_Month": None}]
    assert report.dob_unparsed == 0


def test_existing_birth_year_column_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("DOB,Birth_Year\n1950-01-01,1950\n")
    with pytest.raises(DataError, match="Birth_Year already exist"):
        pseudonymise_file(
            tmp_path / "in.csv", tmp_path / "out.csv", PseudonymiseSpec(dob="DOB"), b""
        )


# --- writing -----------------------------------------------------------------------------------


def test_input_equal_to_output_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(INPUT)
    spec = PseudonymiseSpec(nhs="NHS_NUMBER")
    with pytest.raises(ConfigError, match="OUTPUT must differ from INPUT"):
        pseudonymise_file(
            tmp_path / "in.csv", tmp_path / "sub" / ".." / "in.csv", spec, KEY.encode()
        )
    assert (tmp_path / "in.csv").read_text() == INPUT


def test_output_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in.csv").write_text(INPUT)
    (tmp_path / "out.csv").write_text("previous output\n")
    spec = PseudonymiseSpec(nhs="NHS_NUMBER")

    def fail_half_way(self: pl.DataFrame, file: Path, **_: object) -> None:
        Path(file).write_text("half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_csv", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        pseudonymise_file(tmp_path / "in.csv", tmp_path / "out.csv", spec, KEY.encode())
    assert (tmp_path / "out.csv").read_text() == "previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]

    monkeypatch.undo()
    pseudonymise_file(tmp_path / "in.csv", tmp_path / "out.csv", spec, KEY.encode())
    assert (tmp_path / "out.csv").read_text().startswith("Record,NHS_NUMBER,DOB,POSTCODE\n")
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o600


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def extract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text(INPUT)
    (tmp_path / "key.txt").write_text(KEY)
    return tmp_path


ARGS = ["in.csv", "out.csv", "--nhs-column", "NHS_NUMBER", "--dob-column", "DOB",
        "--postcode-column", "POSTCODE"]


@pytest.mark.parametrize("key_args", [["--key-file", "key.txt"], ["--key-env", "LC_TEST_KEY"]])
def test_cli_prints_counts_and_never_the_key(
    extract: Path, monkeypatch: pytest.MonkeyPatch, key_args: list[str]
) -> None:
    monkeypatch.setenv("LC_TEST_KEY", KEY)
    result = CliRunner().invoke(cli, ["-vv", "pseudonymise", *ARGS, *key_args])
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["rows", "count"],
        ["read", "5"],
        ["NHS", "numbers", "invalid", "(blanked)", "1"],
        ["NHS", "numbers", "missing", "1"],
        ["dates", "of", "birth", "not", "understood", "(blanked)", "1"],
        ["postcodes", "malformed", "(blanked)", "1"],
        ["wrote", "out.csv"],
    ]
    as_json = CliRunner().invoke(cli, ["-q", "pseudonymise", *ARGS, *key_args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == {"command": "pseudonymise", "output": "out.csv", "rows": 5, "nhs_invalid": 1,
                                          "nhs_missing": 1, "dob_unparsed": 1, "postcode_unparsed": 1}
    output = (extract / "out.csv").read_bytes()
    for secret in (KEY, KEY[:16], KEY.encode().hex()):
        assert secret not in result.stdout
        assert secret not in result.stderr
        assert secret.encode() not in output
    for raw in ("9434765919", "4010232137"):
        assert raw not in result.output


def test_cli_options_override_the_spec(extract: Path) -> None:
    (extract / "spec.toml").write_text('nhs = "WRONG"\npostcode = "POSTCODE"\n')
    result = CliRunner().invoke(cli, ["pseudonymise", "in.csv", "out.csv", "--key-file",
                                      "key.txt", "--spec", "spec.toml", "--nhs-column",
                                      "NHS_NUMBER"])
    assert result.exit_code == 0, result.output
    out = pl.read_csv(extract / "out.csv", infer_schema=False)
    assert out["POSTCODE"].to_list()[0] == "LS1"
    assert out["DOB"].to_list()[0] == "1948-03-12"


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["in.csv", "in.csv", "--key-file", "key.txt", "--nhs-column", "NHS_NUMBER"], 2,
         "Error: OUTPUT must differ from INPUT: pseudonymising in place would destroy the "
         "original"),
        (["in.csv", "out.csv", "--nhs-column", "NHS_NUMBER"], 2,
         "Error: no pseudonymisation key: give --key-file or --key-env"),
        (["in.csv", "out.csv", "--key-file", "key.txt"], 2,
         "Error: nothing to pseudonymise: name at least one of the NHS number, date of birth "
         "or postcode columns"),
        (["in.csv", "out.csv", "--key-file", "key.txt", "--nhs-column", "NHS"], 1,
         "Error: in.csv: column(s) NHS not found"),
        (["nope.csv", "out.csv", "--key-file", "key.txt", "--nhs-column", "NHS"], 1,
         "Error: nope.csv: file not found"),
        (["in.csv", "out.csv", "--key-env", "LC_UNSET_KEY", "--nhs-column", "NHS_NUMBER"], 2,
         "Error: the environment variable LC_UNSET_KEY holding the key is not set"),
        (["in.csv", "out.csv", "--key-file", "key.txt", "--key-env", "X"], 2,
         "Error: give --key-file or --key-env, not both"),
    ],
)
def test_cli_errors(extract: Path, args: list[str], code: int, error: str) -> None:
    result = CliRunner().invoke(cli, ["pseudonymise", *args])
    assert result.exit_code == code
    assert result.stderr.splitlines()[-1] == error
    assert not (extract / "out.csv").exists()
    assert (extract / "in.csv").read_text() == INPUT


def test_cli_empty_input_is_a_data_error(extract: Path) -> None:
    (extract / "in.csv").write_text("")
    result = CliRunner().invoke(cli, ["pseudonymise", "in.csv", "out.csv", "--key-file",
                                      "key.txt", "--nhs-column", "NHS_NUMBER"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: in.csv: is empty (0 bytes); it needs at least a header row"
    )
