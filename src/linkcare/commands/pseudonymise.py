"""`linkcare pseudonymise`: for a data controller, check NHS numbers and replace them with keyed
tokens, cut dates of birth to year and month and postcodes to their district (the work is in
linkcare.sources.pseudonymise). The key is read from a file or an environment variable and never
printed or logged."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from linkcare.log import get_logger
from linkcare.sources.pseudonymise import (
    PseudonymiseReport,
    PseudonymiseSpec,
    load_spec,
    pseudonymise_file,
    read_key,
)

log = get_logger("cli")


def run_pseudonymise(input_path: Path, output_path: Path, spec_path: Path | None,
                     overrides: Mapping[str, str | None], key_file: Path | None,
                     key_env: str | None) -> tuple[PseudonymiseSpec, PseudonymiseReport]:
    """Pseudonymise INPUT into OUTPUT with the spec file's columns, options overriding them; return
    the spec used and what was done."""
    spec = load_spec(spec_path) if spec_path is not None else PseudonymiseSpec()
    spec = dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})
    key = read_key(key_file, key_env)
    log.info("pseudonymising %s into %s", input_path, output_path)
    return spec, pseudonymise_file(input_path, output_path, spec, key)


__all__ = ["run_pseudonymise"]
