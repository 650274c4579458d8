"""Pseudonymisation for a data controller: NHS number checks, keyed tokens, coarsened dates and
postcodes.

`linkcare synth` tokenises its NHS numbers with these same functions, so synthetic extracts look
exactly like pseudonymised real ones. The key is never logged, echoed or written.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from linkcare.errors import ConfigError, DataError
from linkcare.io.parquet import write_parquet

#: A token is the keyed HMAC-SHA256 of the ten-digit NHS number, truncated to its first 128 bits
#: (RFC 2104 allows truncation to half the hash) and written as 32 lower-case hex characters.
TOKEN_HEX_CHARS = 32
TOKEN_PATTERN = rf"^[0-9a-f]{{{TOKEN_HEX_CHARS}}}$"
MIN_KEY_BYTES = 16
_WEIGHTS = np.arange(10, 1, -1)  # weights 10..2 for the first nine digits


def nhs_check_digit(first_nine: np.ndarray) -> np.ndarray:
    """Return the modulus-11 check digit for rows of nine digits; 10 means no valid number."""
    total = (np.asarray(first_nine, dtype=np.int64) * _WEIGHTS).sum(axis=1)
    check = 11 - total % 11
    return np.where(check == 11, 0, check)


def valid_nhs_mask(numbers: pl.Series) -> pl.Series:
    """Return True where a cleaned string is ten digits whose last digit passes modulus 11."""
    s = numbers.cast(pl.String)
    # [0-9], not \d: \d also matches other scripts' digits, which are not NHS numbers.
    well_formed = s.str.contains(r"^[0-9]{10}$").fill_null(False)
    digits = s.fill_null("0000000000").str.replace_all(r"[^0-9]", "").str.pad_end(10, "0")
    frame = pl.DataFrame(
        {f"d{i}": digits.str.slice(i, 1).cast(pl.Int64, strict=False) for i in range(10)}
    )
    arr = frame.fill_null(0).to_numpy()
    check = nhs_check_digit(arr[:, :9])
    passes = (check != 10) & (check == arr[:, 9])
    return well_formed & pl.Series(passes)


def clean_nhs_numbers(numbers: pl.Series) -> tuple[pl.Series, int]:
    """Return the numbers with spaces and dashes removed and invalid ones set to null, and how many
    non-empty values were invalid."""
    s = numbers.cast(pl.String).str.replace_all(r"[\s\-]", "")
    s = pl.Series(numbers.name, s).replace("", None)
    ok = valid_nhs_mask(s)
    n_invalid = int((s.is_not_null() & ~ok).sum())
    blank = pl.Series([None] * len(s), dtype=pl.String)
    return pl.Series(numbers.name, s).zip_with(ok, blank), n_invalid


def tokenise(values: pl.Series, key: bytes) -> pl.Series:
    """Return keyed HMAC-SHA256 tokens (32 lower-case hex characters) per value; nulls stay null.

    Each distinct value is hashed once, so the cost follows the number of people, not of records.
    """
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"the pseudonymisation key is too short: it needs at least {MIN_KEY_BYTES} bytes"
        )
    s = values.cast(pl.String)
    distinct = s.drop_nulls().unique(maintain_order=True)
    digests = [
        hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:TOKEN_HEX_CHARS]
        for v in distinct.to_list()
    ]
    mapping = pl.DataFrame({"v": distinct, "t": pl.Series(digests, dtype=pl.String)})
    out = pl.DataFrame({"v": s}).join(mapping, on="v", how="left", maintain_order="left")["t"]
    return out.alias(values.name)


def read_key(key_file: Path | None = None, key_env: str | None = None) -> bytes:
    """Return the pseudonymisation key from a file or an environment variable, never echoed."""
    if key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the key file {key_file}: {exc.strerror}") from None
        source = f"the key file {key_file}"
    elif key_env is not None:
        value = os.environ.get(key_env)
        if value is None:
            raise ConfigError(f"the environment variable {key_env} holding the key is not set")
        key = value.strip().encode()
        source = f"the environment variable {key_env}"
    else:
        raise ConfigError("no pseudonymisation key: give --key-file or --key-env")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{source} holds a key shorter than {MIN_KEY_BYTES} bytes; use a longer random key"
        )
    return key


def postcode_district(postcodes: pl.Series) -> pl.Series:
    """Return the postcode district (the outward code: 'LS1' of 'LS1 4AP'); null if malformed."""
    s = postcodes.cast(pl.String).str.to_uppercase().str.replace_all(r"\s+", "")
    # A full UK postcode is the outward code followed by a three-character inward code.
    outward = s.str.extract(r"^([A-Z]{1,2}[0-9][0-9A-Z]?)[0-9][A-Z]{2}$", 1)
    return outward.alias(postcodes.name)


@dataclass(frozen=True)
class PseudonymiseSpec:
    """Which input columns hold what; every column is optional but at least one must be given."""

    nhs: str | None = None
    dob: str | None = None
    postcode: str | None = None
    birth_year: str = "Birth_Year"
    birth_month: str = "Birth_Month"
    dob_format: str | None = None


@dataclass(frozen=True)
class PseudonymiseReport:
    """Counts from one pseudonymisation run; never any values."""

    rows: int
    nhs_invalid: int
    nhs_missing: int
    dob_unparsed: int
    postcode_unparsed: int


_SPEC_KEYS = {"nhs", "dob", "postcode", "birth_year", "birth_month", "dob_format"}


def load_spec(path: Path) -> PseudonymiseSpec:
    """Return the column spec read from a small TOML file such as `nhs = "NHS_NUMBER"`."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the spec file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text; save the spec as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - _SPEC_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_SPEC_KEYS))
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {allowed}")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"{path}: key(s) {', '.join(sorted(bad))} must be strings")
    return PseudonymiseSpec(**data)


def _read_table(path: Path) -> pl.DataFrame:
    fmt = "parquet" if path.suffix.lower() == ".parquet" else "csv"
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: is empty (0 bytes); it needs at least a header row")
    try:
        if fmt == "parquet":
            return pl.read_parquet(path)
        # Every column as text: NHS numbers and codes keep their leading zeros.
        return pl.read_csv(path, infer_schema=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a file") from None
    except PermissionError:
        raise DataError(f"{path}: cannot be read (permission denied)") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        hint = "; re-export it as UTF-8" if "utf-8" in str(exc).lower() else ""
        raise DataError(f"{path}: cannot be read as {fmt} ({type(exc).__name__}){hint}") from None


def _parse_dob(column: pl.Series, dob_format: str | None) -> pl.Series:
    """Return dates of birth as dates: native dates as they are, text by format or common ones."""
    if column.dtype == pl.Date:
        return column
    if isinstance(column.dtype, pl.Datetime):
        return column.dt.date()
    raw = column.cast(pl.String).str.strip_chars()
    if dob_format:
        return raw.str.to_date(dob_format, strict=False)
    dob = raw.str.to_date("%Y-%m-%d", strict=False)
    for fmt in ("%Y%m%d", "%d/%m/%Y"):
        dob = dob.fill_null(raw.str.to_date(fmt, strict=False))
    return dob


def pseudonymise_table(
    frame: pl.DataFrame, spec: PseudonymiseSpec, key: bytes, *, name: str = "input"
) -> tuple[pl.DataFrame, PseudonymiseReport]:
    """Return the frame with NHS numbers tokenised, dates of birth cut to year and month and
    postcodes cut to their district, and the counts of what could not be used."""
    wanted = [c for c in (spec.nhs, spec.dob, spec.postcode) if c is not None]
    if not wanted:
        raise ConfigError(
            "nothing to pseudonymise: name at least one of the NHS number, date of birth "
            "or postcode columns"
        )
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: column(s) {', '.join(missing)} not found")
    if spec.dob is not None:
        targets = (spec.birth_year, spec.birth_month)
        clash = [c for c in targets if c in frame.columns and c != spec.dob]
        if clash:
            raise DataError(
                f"{name}: column(s) {', '.join(clash)} already exist, so the year and month of "
                "birth cannot be written there; choose other names with birth_year and birth_month"
            )
    nhs_invalid = nhs_missing = dob_unparsed = postcode_unparsed = 0
    out = frame
    if spec.nhs is not None:
        cleaned, nhs_invalid = clean_nhs_numbers(frame[spec.nhs])
        nhs_missing = int(cleaned.is_null().sum()) - nhs_invalid
        out = out.with_columns(tokenise(cleaned, key).alias(spec.nhs))
    if spec.dob is not None:
        raw = frame[spec.dob].cast(pl.String).str.strip_chars()
        dob = _parse_dob(frame[spec.dob], spec.dob_format)
        dob_unparsed = int((raw.is_not_null() & (raw != "") & dob.is_null()).sum())
        position = out.columns.index(spec.dob)
        out = out.drop(spec.dob)
        out = out.insert_column(position, dob.dt.month().alias(spec.birth_month))
        out = out.insert_column(position, dob.dt.year().alias(spec.birth_year))
    if spec.postcode is not None:
        raw_pc = frame[spec.postcode].cast(pl.String)
        district = postcode_district(raw_pc)
        given = raw_pc.is_not_null() & (raw_pc.str.strip_chars() != "")
        postcode_unparsed = int((given & district.is_null()).sum())
        out = out.with_columns(district.alias(spec.postcode))
    report = PseudonymiseReport(
        len(frame), nhs_invalid, nhs_missing, dob_unparsed, postcode_unparsed
    )
    return out, report


def pseudonymise_file(
    input_path: Path, output_path: Path, spec: PseudonymiseSpec, key: bytes
) -> PseudonymiseReport:
    """Pseudonymise one CSV or Parquet file into another, written whole or not at all."""
    from linkcare.io.atomic import atomic_path

    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.resolve() == output_path.resolve():
        raise ConfigError(
            "OUTPUT must differ from INPUT: pseudonymising in place would destroy the original"
        )
    frame = _read_table(input_path)
    out, report = pseudonymise_table(frame, spec, key, name=str(input_path))
    with atomic_path(output_path) as tmp:
        if output_path.suffix.lower() == ".parquet":
            write_parquet(out, tmp)
        else:
            out.write_csv(tmp)
    return report


__all__ = [
    "TOKEN_PATTERN",
    "PseudonymiseReport",
    "PseudonymiseSpec",
    "clean_nhs_numbers",
    "load_spec",
    "nhs_check_digit",
    "postcode_district",
    "pseudonymise_file",
    "pseudonymise_table",
    "read_key",
    "tokenise",
    "valid_nhs_mask",
]

