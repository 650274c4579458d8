"""Options more than one command takes: the as-of date and dated snapshots."""

from __future__ import annotations

from typing import Any

import click

as_of_option = click.option(
    "--as-of", "as_of", metavar="DATE",
    help="The date the data counts as complete up to: features, scores and checks are as of it (default: the "
         "config's reference_date; \"auto\" there means the last day of the last complete month).")


def snapshot_options(command: Any) -> Any:
    """Add --snapshot and --keep: dated snapshot folders under --out with a `latest` pointer."""
    command = click.option("--keep", type=click.IntRange(min=1), metavar="N",
                           help="With --snapshot: keep the N newest snapshots, deleting older ones "
                                "(default: keep all).")(command)
    return click.option("--snapshot", is_flag=True,
                        help="Write into OUT/<as-of date>/ and point OUT/latest at it once the run succeeds, "
                             "keeping earlier months beside it.")(command)


__all__ = ["as_of_option", "snapshot_options"]
