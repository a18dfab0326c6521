"""The shared subcommand runner: one-line errors, lazy imports, every entry point on the same protocol."""

from __future__ import annotations

import sys
import types

import pytest

from data_pipeline.commands import Command, run_command_line
from data_pipeline.errors import UserError


def _fake_module(monkeypatch, name: str, run) -> None:
    module = types.ModuleType(name)
    module.add_arguments = lambda parser: parser.add_argument("--value", type=int, default=1)
    module.run = run
    module.DESCRIPTION = "a test command"
    monkeypatch.setitem(sys.modules, name, module)


def test_runs_the_chosen_command_and_returns_its_status(monkeypatch):
    _fake_module(monkeypatch, "fake_ok", lambda args: args.value + 3)
    commands = [Command("ok", "fake_ok", "works"), Command("other", "module_that_does_not_exist", "never imported")]
    assert run_command_line("prog", "test", commands, ["ok", "--value", "4"]) == 7


def test_user_errors_and_os_errors_print_one_line(monkeypatch, capsys, tmp_path):
    def fail_user(args):
        raise UserError("--value must be small")

    def fail_disk(args):
        raise OSError(28, "No space left on device", str(tmp_path / "out.tar"))

    _fake_module(monkeypatch, "fake_user", fail_user)
    _fake_module(monkeypatch, "fake_disk", fail_disk)
    commands = [Command("user", "fake_user", "h"), Command("disk", "fake_disk", "h")]
    assert run_command_line("prog", "test", commands, ["user"]) == 2
    assert capsys.readouterr().err == "error: --value must be small\n"
    assert run_command_line("prog", "test", commands, ["disk"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "out.tar" in err and err.count("\n") == 1


def test_bugs_keep_their_traceback(monkeypatch):
    def broken(args):
        raise KeyError("a bug")

    _fake_module(monkeypatch, "fake_bug", broken)
    with pytest.raises(KeyError):
        run_command_line("prog", "test", [Command("bug", "fake_bug", "h")], ["bug"])


def test_top_level_help_lists_commands_without_importing_them(capsys):
    commands = [Command("a", "module_that_does_not_exist", "the a command")]
    with pytest.raises(SystemExit) as exc:
        run_command_line("prog", "test", commands, ["--help"])
    assert exc.value.code == 0
    assert "the a command" in capsys.readouterr().out
