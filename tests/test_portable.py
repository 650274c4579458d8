"""Portability (docs/operations.md, "Where flock or the one-step swap cannot be had"): the lock file
and the three-step folder swap that stand in for flock and renameat2, forced on Linux with
LINKCARE_PORTABLE_IO=1 or by a missing fcntl module; and `[output] mode = "group"`."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import error_lines, write_config
from linkcare.cli import cli
from linkcare.config import OUTPUT_MODES
from linkcare.errors import DataError
from linkcare.io import atomic
from linkcare.io.atomic import atomic_dir, output_lock, recover_target
from linkcare.io.lock import PORTABLE_ENV, OutputLocked, lock_path, process_alive
from linkcare.io.modes import GROUP, modes_for


@pytest.fixture
def portable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORTABLE_ENV, "1")


def _refusal(out: Path, holder: str) -> str:
    return (f"{out}: another linkcare run (process {holder}) is writing this output; wait for it to finish, or stop "
            f"it, then run again; if no linkcare run is going, delete {lock_path(out)}")


# --- the lock file ----------------------------------------------------------------------------------------

@pytest.mark.usefixtures("portable")
def test_the_lock_file_holds_the_run_and_refuses_a_second(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    with output_lock(out):
        pid, host, token = lock_path(out).read_text().split()
        assert (int(pid), host, len(token)) == (os.getpid(), socket.gethostname(), 16)
        with pytest.raises(OutputLocked) as info, output_lock(out):
            pass
        assert str(info.value) == _refusal(out, str(os.getpid()))
        assert lock_path(out).exists()  # the refused run leaves the holder's lock alone
    assert not lock_path(out).exists()


@pytest.mark.usefixtures("portable")
def test_a_dead_runs_lock_file_is_taken_over_and_another_hosts_is_not(tmp_path: Path) -> None:
    out, path = tmp_path / "cohort", lock_path(tmp_path / "cohort")
    dead = 999_999
    assert not process_alive(dead)
    for left in (f"{dead} {socket.gethostname()} 0123456789abcdef\n", f"{dead}\n"):  # either way's file
        path.write_text(left)
        with output_lock(out):
            assert path.read_text().split()[0] == str(os.getpid())
        assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the dead lock renamed aside is gone too

    path.write_text("4242 another-host 0123456789abcdef\n")
    with pytest.raises(OutputLocked) as info, output_lock(out):
        pass
    assert str(info.value) == _refusal(out, "4242 on host another-host")

    path.write_text("")  # a run making the file right now, or one that died making it
    with pytest.raises(OutputLocked), output_lock(out):
        pass
    old = time.time() - 60
    os.utime(path, (old, old))
    with output_lock(out):
        pass
    assert not path.exists()


def test_flock_and_the_lock_file_see_each_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cohort"
    monkeypatch.setenv(PORTABLE_ENV, "1")
    with output_lock(out):
        monkeypatch.delenv(PORTABLE_ENV)
        with pytest.raises(OutputLocked) as info, output_lock(out):
            pass
        assert str(info.value) == _refusal(out, str(os.getpid()))
    with output_lock(out):  # held by flock now
        monkeypatch.setenv(PORTABLE_ENV, "1")
        with pytest.raises(OutputLocked), output_lock(out):
            pass


@pytest.mark.usefixtures("portable")
def test_link_refused_with_exit_3_under_the_lock_file(small_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    with output_lock(out):
        result = CliRunner().invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 3
    assert error_lines(result.stderr) == [f"Error: {_refusal(out, str(os.getpid()))}"]
    assert not out.exists()


# --- the three-step swap ----------------------------------------------------------------------------------

def _folder(path: Path, text: str) -> None:
    path.mkdir()
    (path / "a.txt").write_text(text)


@pytest.mark.usefixtures("portable")
def test_the_three_step_swap_replaces_the_output_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cohort"
    _folder(out, "previous")
    steps: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(a: object, b: object) -> None:
        steps.append((Path(str(a)).name, Path(str(b)).name))
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(atomic.os, "replace", replace)
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (out / "a.txt").read_text() == "new"
    assert [(a.endswith(".old"), b.endswith(".old")) for a, b in steps] == [(False, True), (False, False)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_a_crash_between_the_renames_is_recovered(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    # What a run killed between the two renames leaves: no output, the previous one aside, a new one half-done.
    _folder(tmp_path / ".cohort.x1.old", "previous")
    (tmp_path / ".cohort.x2.tmp").mkdir()
    with output_lock(out):
        recover_target(out)
    assert (out / "a.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]
    # Killed after the second rename: the new output is in place, the old one is deleted.
    _folder(tmp_path / ".cohort.x3.old", "older")
    recover_target(out)
    assert (out / "a.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


@pytest.mark.usefixtures("portable")
def test_an_output_that_cannot_be_moved_in_keeps_the_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cohort"
    _folder(out, "previous")
    real_replace = os.replace

    def open_elsewhere(a: object, b: object) -> None:
        if Path(str(a)).name.endswith(".tmp"):
            raise PermissionError(13, "Permission denied")
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(atomic.os, "replace", open_elsewhere)
    with pytest.raises(DataError) as info, atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("new")
    assert str(info.value) == (f"{out}: could not be replaced (Permission denied); a file in it may be open in "
                               "another program: close it and run again (the previous output is unchanged)")
    assert (out / "a.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_link_with_the_fallbacks_replaces_an_output(small_site: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cohort"
    _folder(out, "previous month")
    monkeypatch.setenv(PORTABLE_ENV, "1")
    monkeypatch.setattr(atomic, "_libc", lambda: pytest.fail("the one-step swap was tried"))
    result = CliRunner().invoke(cli, ["-q", "link", str(small_site / "site.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "a.txt").exists() and (out / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "cohort.run.json"]


# --- no fcntl at all --------------------------------------------------------------------------------------

def test_linkcare_imports_and_links_without_fcntl_or_resource(small_site: Path, tmp_path: Path) -> None:
    # As on Windows: the modules do not exist. A fresh interpreter, since both are imported at start.
    out = tmp_path / "cohort"
    script = (
        "import sys\n"
        "sys.modules['fcntl'] = None\n"
        "sys.modules['resource'] = None\n"
        "import linkcare.io.lock, linkcare.log\n"
        "assert linkcare.io.lock.fcntl is None and linkcare.log.resource is None\n"
        "from linkcare.cli import main\n"
        f"main(['-q', 'link', {str(small_site / 'site.toml')!r}, '--out', {str(out)!r}])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != PORTABLE_ENV}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort", "cohort.run.json"]
    assert json.loads((tmp_path / "cohort.run.json").read_text())["exit_code"] == 0


# --- [output] mode ----------------------------------------------------------------------------------------

def test_output_mode_names_are_the_configs() -> None:
    assert tuple(modes_for(name).name for name in OUTPUT_MODES) == OUTPUT_MODES


def test_group_mode_makes_files_0640_and_folders_0750(small_site: Path, tmp_path: Path) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "site.toml", extra='\n[output]\nmode = "group"\n')
    out = tmp_path / "cohort"
    result = CliRunner().invoke(cli, ["-q", "link", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    paths = [out, *out.rglob("*"), tmp_path / "cohort.run.json"]
    assert len(paths) > 5
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}
    assert modes == {p.name: (GROUP.folder if p.is_dir() else GROUP.file) for p in paths}
    assert (GROUP.file, GROUP.folder) == (0o640, 0o750)


@pytest.mark.parametrize(("table", "message"), [
    ('[output]\nmode = "team"', "output.mode: 'team' is not a mode of [output]; use one of: owner, group"),
    ('[output]\nmode = "groups"', "output.mode: 'groups' is not a mode of [output]; did you mean 'group'? use one "
                                  "of: owner, group"),
    ('[output]\nmod = "group"', "output.mod: unknown key; did you mean 'mode'? allowed keys: mode"),
    ('output = "group"', 'output: must be a table, not a string; write it as [output]'),
])
def test_a_bad_output_table_is_a_config_error(small_site: Path, tmp_path: Path, table: str, message: str) -> None:
    config = write_config(small_site / "site.toml", tmp_path / "site.toml",
                          extra="\n" + table + "\n" if table.startswith("[") else "")
    if not table.startswith("["):  # a top-level key goes before the first table
        config.write_text(table + "\n" + config.read_text())
    result = CliRunner().invoke(cli, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    assert error_lines(result.stderr) == [f"Error: {config}: {message}"]


# --- peak memory and compare workers elsewhere ------------------------------------------------------------

def test_peak_memory_is_read_in_bytes_on_macos_and_kilobytes_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    from linkcare import log

    assert log._maxrss_mib(300 * 1024) == 300.0  # Linux: kilobytes
    monkeypatch.setattr(log.sys, "platform", "darwin")
    assert log._maxrss_mib(300 * 1024 * 1024) == 300.0  # macOS: bytes
    monkeypatch.setattr(log, "resource", None)
    assert log.peak_mib() == 0.0 and log.children_peak_mib() == 0.0  # no figure to be had


def test_compare_workers_are_forked_on_linux_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import polars as pl

    from linkcare.linkage import workers

    monkeypatch.setattr(workers.sys, "platform", "darwin")  # offers fork, but forking threads can hang there
    with workers.ComparePool([], "polars", pl.DataFrame(), [], workers=2) as pool:
        assert pool.executor is None
