"""The command line: version, help, verbosity, and how errors are shown."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import linkcare
from conftest import log_lines
from linkcare.cli import cli, main
from linkcare.errors import ConfigError, DataError, ProblemList

V = linkcare.__version__


def _framed(command: str, arguments: str, *middle: str, exit_code: int = 0, error: str = "") -> list[str]:
    """The lines of standard error of a run: its start line, `middle`, and its end line."""
    why = f" ({error})" if error else ""
    return [f"INFO linkcare {V} {command} started: {arguments}",
            f"INFO linkcare {command} ended: exit {exit_code}{why} in <s> s, peak memory <mib> MiB", *middle]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"linkcare {linkcare.__version__}\n"


def test_main_is_the_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"linkcare {linkcare.__version__}\n"


def test_group_help_lists_commands_and_exit_codes(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("validate", "pseudonymise"):
        assert name in result.stdout
    assert "Exit codes: 0 success" in result.stdout
    assert "-v, --verbose" in result.stdout and "-q, --quiet" in result.stdout


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help(runner: CliRunner, name: str) -> None:
    command = cli.commands[name]
    assert command.help and len(command.help.strip()) > 40
    result = runner.invoke(cli, [name, "--help"], prog_name="linkcare")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: linkcare {name} ")
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts[0]} has no help"


def test_unknown_command_and_option_are_usage_errors(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "Error: No such command 'frobnicate'." in result.stderr
    result = runner.invoke(cli, ["validate"])
    assert result.exit_code == 2
    assert "Error: Missing argument 'CONFIG'." in result.stderr


def test_quiet_and_verbose_set_the_log_level(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    levels: list[int] = []
    monkeypatch.setattr("linkcare.cli.configure_logging", levels.append)
    # --help exits before the group runs, so use a command that reaches it.
    for args in (["-q"], [], ["-v"], ["-vv"]):
        runner.invoke(cli, [*args, "validate", "missing.toml"])
    assert levels == [-1, 0, 1, 2]
    result = runner.invoke(cli, ["-v", "-q", "validate", "x.toml"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == "Error: use -v or -q, not both"


def test_verbose_logs_debug_lines_and_quiet_hides_info(runner: CliRunner, tmp_path: Path) -> None:
    args = ["validate", str(tmp_path / "missing.toml")]
    assert "DEBUG" not in runner.invoke(cli, args).stderr
    # validate_site logs a debug line per source only once the config loads, so check the level.
    import logging

    runner.invoke(cli, ["-v", *args])
    assert logging.getLogger("linkcare").level == logging.DEBUG
    runner.invoke(cli, ["-q", *args])
    assert logging.getLogger("linkcare").level == logging.WARNING


def _fail_with(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def boom(_config: object) -> None:
        raise exc

    monkeypatch.setattr("linkcare.commands.validate.validate_site", boom)


def test_linkcare_error_is_one_line_with_its_exit_code(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_with(monkeypatch, DataError("apc.csv: 3 rows have no ADMIDATE"))
    result = runner.invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 1
    assert log_lines(result.stderr) == _framed("validate", "site.toml", "Error: apc.csv: 3 rows have no ADMIDATE",
                                               exit_code=1, error="DataError")
    assert result.stdout == ""

    _fail_with(monkeypatch, ConfigError("site.toml: version: missing"))
    result = runner.invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 2
    assert log_lines(result.stderr) == _framed("validate", "site.toml", "Error: site.toml: version: missing",
                                               exit_code=2, error="ConfigError")


def test_problem_list_is_one_line_per_problem(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_with(monkeypatch, ProblemList([DataError("a.csv: file not found"), DataError("b")]))
    result = runner.invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 1
    assert log_lines(result.stderr) == _framed("validate", "site.toml", "Error: a.csv: file not found", "Error: b",
                                               exit_code=1, error="ProblemList")
    _fail_with(monkeypatch, ProblemList([DataError("a"), ConfigError("c")]))
    assert runner.invoke(cli, ["validate", "site.toml"]).exit_code == 2


def test_internal_error_shows_no_traceback(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_with(monkeypatch, ZeroDivisionError("a value from a record: 9434765919"))
    result = runner.invoke(cli, ["validate", "site.toml"])
    assert result.exit_code == 1
    assert log_lines(result.stderr) == _framed(
        "validate", "site.toml", "Error: internal error: ZeroDivisionError; rerun with -v to see the traceback",
        exit_code=1, error="ZeroDivisionError")
    assert "Traceback" not in result.output
    assert "9434765919" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_internal_error_shows_the_traceback_with_verbose(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_with(monkeypatch, ZeroDivisionError("boom"))
    result = runner.invoke(cli, ["-v", "validate", "site.toml"])
    assert result.exit_code == 1
    lines = log_lines(result.stderr)
    assert lines[:2] == _framed("validate", "site.toml", exit_code=1, error="ZeroDivisionError")
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "Error: internal error: ZeroDivisionError; rerun with -v to see the traceback"


def test_another_module_can_register_a_command(runner: CliRunner) -> None:
    @click.command("hello")
    def hello() -> None:
        """Say hello; a stand-in for a command defined in another module."""
        raise DataError("hello.csv: empty")

    cli.add_command(hello)
    try:
        result = runner.invoke(cli, ["hello"])
    finally:
        cli.commands.pop("hello")
    assert result.exit_code == 1
    assert log_lines(result.stderr) == [f"INFO linkcare {V} hello started with no arguments",
                                        "INFO linkcare hello ended: exit 1 (DataError) in <s> s, peak memory <mib> MiB",
                                        "Error: hello.csv: empty"]
