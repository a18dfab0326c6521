"""The `python -m data_pipeline` entry point: every subcommand documents itself; bad options fail clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest

from data_pipeline.__main__ import COMMANDS, build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert len(commands) >= len(COMMANDS)
    for name in commands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "data_pipeline", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for name in ("folder", "flickr30k", "inspect"):
        assert name in result.stdout


@pytest.mark.parametrize("bad", [["--sizes", "64,abc"], ["--sizes", "0"], ["--val-fraction", "1.5"]])
def test_bad_writer_options_are_rejected(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as info:
        main(["folder", str(tmp_path), "--out", str(tmp_path / "out"), *bad])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err
