"""The `[output]` table of a site config: how the commands write their output folders."""

from __future__ import annotations

from typing import Any

from linkcare.config.model import OUTPUT_MODES, Output
from linkcare.config.toml import KeyProblems, expect_choice, open_table

OUTPUT_KEYS = ("mode",)


def check_output(value: Any, p: KeyProblems) -> Output:
    """Return the `[output]` settings: `mode` "owner" (files 0600, folders 0700, the default) or
    "group" (files 0640, folders 0750, for a team's shared folder)."""
    value = open_table(value, "output", OUTPUT_KEYS, p)
    if value is None or "mode" not in value:
        return Output()
    mode = expect_choice(value["mode"], "output.mode", OUTPUT_MODES, "mode of [output]", p)
    return Output() if mode is None else Output(mode=mode)


__all__ = ["OUTPUT_KEYS", "check_output"]
