"""`python -m sampling` follows the shared subcommand protocol: lazy subcommands, UserError as one line."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from data_pipeline.errors import UserError
from sampling.__main__ import COMMANDS, main
from sampling.comic.book import ComicError
from sampling.comic.script import ScriptError
from sampling.commands.common import CommandError
from sampling.devices import DeviceError
from sampling.inpaint import InpaintInputError
from sampling.loading import ModelLoadError
from sampling.rerank import RerankUnavailable
from sampling.settings import SettingsError
from sampling.studio.access import AccessError
from sampling.studio.catalogue.errors import CatalogueError, InvalidInput
from sampling.studio.generation import GenerationError
from sampling.studio.models import UnknownModel
from sampling.studio.service import StudioError
from sampling.studio.training import TrainingError


@pytest.mark.parametrize(
    "error, kept_base",
    [
        (CommandError, Exception),
        (ComicError, ValueError),
        (ScriptError, ValueError),
        (InpaintInputError, ValueError),
        (ModelLoadError, ValueError),
        (SettingsError, ValueError),
        (DeviceError, ValueError),
        (RerankUnavailable, RuntimeError),
        (AccessError, ValueError),
        (UnknownModel, ValueError),
        (GenerationError, RuntimeError),
        (TrainingError, RuntimeError),
        (StudioError, Exception),
        (InvalidInput, CatalogueError),
    ],
)
def test_user_errors_share_the_one_base_and_keep_their_own(error, kept_base):
    assert issubclass(error, UserError) and issubclass(error, kept_base)


def test_every_subcommand_module_follows_the_protocol():
    for command in COMMANDS:
        module = importlib.import_module(command.module)
        assert callable(module.add_arguments) and callable(module.run), command.name


def test_settings_and_device_errors_are_one_line(capsys):
    assert main(["generate", "x", "--device", "tpu"]) == 2
    assert capsys.readouterr().err == "error: unknown device 'tpu'; use auto, cpu, cuda or cuda:N\n"
    assert main(["generate", "x", "--device", "cpu", "--steps", "0", "--sampler", "dpmpp_2m_sde"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: base: ") and err.count("\n") == 1


def test_top_level_help_imports_no_subcommand():
    code = (
        "import sys\nfrom sampling.__main__ import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('sampling.') or m == 'torch'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['sampling.__main__']"
