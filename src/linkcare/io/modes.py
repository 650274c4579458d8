"""Who may read an output: the permission modes linkcare gives the files and folders it writes.

`[output] mode` in the config picks one: "owner" (the default: files 0600, folders 0700, readable
by the account that ran linkcare only) or "group" (files 0640, folders 0750: the account's group
may read them too, for a team's shared folder). The modes are set explicitly, whatever the umask.
On Windows only the read-only flag follows a mode; the folder's own permissions (ACLs) decide who
may read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutputModes:
    """The permission bits of the files and of the folders of one output."""

    name: str
    file: int
    folder: int


OWNER = OutputModes("owner", 0o600, 0o700)
GROUP = OutputModes("group", 0o640, 0o750)
_BY_NAME = {m.name: m for m in (OWNER, GROUP)}


def modes_for(name: str) -> OutputModes:
    """Return the modes of an `[output] mode` name ("owner" or "group"; the config checks it)."""
    return _BY_NAME[name]


def apply_modes(path: Path, modes: OutputModes = OWNER) -> None:
    """Give a file its file mode, or a folder and everything in it the folder and file modes."""
    path = Path(path)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), modes.folder)
            for f in files:
                os.chmod(os.path.join(root, f), modes.file)
        os.chmod(path, modes.folder)
    else:
        os.chmod(path, modes.file)


__all__ = ["GROUP", "OWNER", "OutputModes", "apply_modes", "modes_for"]
