"""Options more than one command takes: the group's own options (-q, -v, --version, and any added
later) accepted after the command name too (`linkcare link site.toml --out cohort -q` is `linkcare
-q link site.toml --out cohort`), the as-of date, and dated snapshots."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import click


def accept_group_options(group: click.Group, command: click.Command) -> None:
    """Give `command` (and each command of it, if it is a group) a copy of every option of `group` it
    does not define itself; given after the command name, each acts as if given before it."""
    names = {p.name for p in command.params}
    taken = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for option in group.params:
        if not isinstance(option, click.Option) or option.name in names or taken & {*option.opts}:
            continue
        trailing = copy.copy(option)
        if not option.is_eager:  # eager ones (--version) act at once, as on the group
            trailing.expose_value = False
            trailing.callback = _merge_into_group
        command.params.append(trailing)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_group_options(group, sub)


def _merge_into_group(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Add an option given after the command name to the group's own, then apply the group's options
    again (its callback), so that the two places give the same run."""
    if value is None or value == param.default or value in (False, 0, ()):
        return
    root = ctx.find_root()
    assert param.name is not None and root.command.callback is not None
    current = root.params.get(param.name)
    if isinstance(param, click.Option) and param.count:
        root.params[param.name] = (current or 0) + value
    else:
        root.params[param.name] = value
    root.invoke(root.command.callback, **root.params)


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


def parse_date(value: str | None, option: str) -> date | None:
    """Return an option's date (YYYY-MM-DD), or None when it was not given."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; write it as YYYY-MM-DD", param_hint=option) from None


__all__ = ["accept_group_options", "as_of_option", "parse_date", "snapshot_options"]
