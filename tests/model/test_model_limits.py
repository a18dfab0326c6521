"""Model options are typed and range-checked (finetune.model.limits) before anything is built or allocated.

Each hostile config.json below was found by a probe: one field made loading hang, exhaust memory or end in a
traceback. Now each fails at once with one line naming the file and the field.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from finetune.bundled_models import bundled_model_path
from finetune.diffusion import build_diffusion, diffusion_from_options
from finetune.model import build_model, get_preset, list_presets, resolve_options
from finetune.model.options import BASE_DEFAULTS
from finetune.model_folder import CONFIG_FILE, ModelFolderError, load_model_folder, read_config, save_model_folder

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny model folder (random weights, CLIP tokenizer) whose config.json the tests corrupt one field at a time."""
    from finetune.tokenizers import get_tokenizer

    options = get_preset("tiny-base")
    path = tmp_path_factory.mktemp("limits") / "model"
    save_model_folder(path, build_model(options), options, get_tokenizer("clip", options["text_ctx"]))
    return path


def folder_with(tiny_folder: Path, tmp_path: Path, field: str, value) -> Path:
    """A copy of the tiny folder whose config.json has options[field] = value (written as raw JSON: NaN stays NaN)."""
    path = tmp_path / "model"
    path.mkdir()
    for item in tiny_folder.iterdir():
        (path / item.name).symlink_to(item)
    (path / CONFIG_FILE).unlink()
    config = json.loads((tiny_folder / CONFIG_FILE).read_text())
    config["options"][field] = value
    (path / CONFIG_FILE).write_text(json.dumps(config))
    return path


# ------------------------------------------------------------------------ the probe's cases, loaded in-process
@pytest.mark.timeout(60)  # before the limits, some of these hung or ran out of memory
@pytest.mark.parametrize(
    "field, value, message",
    [
        ("diffusion_steps", 1e9, "options.diffusion_steps=1000000000.0 must be an integer in 1..10000"),
        ("diffusion_steps", 10**9, "options.diffusion_steps=1000000000 is out of range 1..10000"),
        ("num_heads", 0, "options.num_heads=0 is out of range 1..64"),
        ("num_heads", None, "options.num_heads=null must be an integer in 1..64"),
        ("xf_heads", 0, "options.xf_heads=0 is out of range 1..64"),
        ("dropout", math.nan, "options.dropout=NaN must be a finite number in 0..1"),
        ("dropout", math.inf, "options.dropout=Infinity must be a finite number in 0..1"),
        ("num_channels", True, "options.num_channels=true must be an integer in 1..512"),
        ("use_fp16", 1, "options.use_fp16=1 must be true or false"),
        ("noise_schedule", "cosine", 'options.noise_schedule="cosine" must be one of squaredcos_cap_v2, linear'),
        ("channel_mult", [1, 2, 10**6], "options.channel_mult=[1, 2, 1000000] holds 1000000, out of range 1..8"),
        ("text_ctx", 10**9, "options.text_ctx=1000000000 is out of range 1..1024"),
        ("num_head_channels", 0, "options.num_head_channels=0 is out of range 1..4096 or -1"),
        (
            "timestep_respacing",
            "1," * 1000,
            'options.timestep_respacing="' + "1," * 18 + "... must be text of at most 256 characters",
        ),
        ("xf_widht", 64, "unknown model option(s): xf_widht;"),
    ],
)
def test_bad_option_in_config_json_fails_fast_naming_the_field(tiny_folder, tmp_path, field, value, message):
    path = folder_with(tiny_folder, tmp_path, field, value)
    started = time.monotonic()
    with pytest.raises(ModelFolderError) as err:
        loaded = load_model_folder(path)
        diffusion_from_options(loaded.options)  # where diffusion_steps=1e9 used to run out of memory
    assert time.monotonic() - started < 5
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path / CONFIG_FILE}: ")
    assert message in text, text


# --------------------------------------------- the probe's hanging cases, through the CLI, each under a time limit
@pytest.mark.parametrize("field, limit", [("num_res_blocks", "1..8"), ("xf_layers", "0..64")])
def test_cli_reports_a_hanging_size_in_one_line(tiny_folder, tmp_path, field, limit):
    path = folder_with(tiny_folder, tmp_path, field, 10**7)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sampling",
            "generate",
            "--model",
            str(path),
            "--no-upsample",
            "--out",
            str(tmp_path / "out"),
            "a cat",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        f"error: {path}: could not load the model folder: {path / CONFIG_FILE}: "
        f"options.{field}=10000000 is out of range {limit}"
    )
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------- other entry points
@pytest.mark.timeout(60)
def test_presets_builders_and_diffusion_share_the_limits():
    with torch.device("meta"), pytest.raises(ValueError, match="options.num_res_blocks=10000000 is out of range 1..8"):
        build_model({**get_preset("tiny-base"), "num_res_blocks": 10**7})
    with pytest.raises(ValueError, match="diffusion steps=1000000000 is out of range 1..10000"):
        build_diffusion(10**9)
    with pytest.raises(ValueError, match="diffusion steps=1000.0 must be an integer"):
        build_diffusion(1000.0)
    with pytest.raises(ValueError, match="options.diffusion_steps=0 is out of range"):
        resolve_options({"diffusion_steps": 0})


def test_training_checkpoint_state_is_checked(tmp_path):
    from finetune.train.resume_state import RESUME_STATE_FORMAT_VERSION, ResumeStateError, read_state

    state = {
        "format_version": RESUME_STATE_FORMAT_VERSION,
        "step": 1,
        "model_options": {**get_preset("tiny-base"), "xf_layers": 10**7},
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(ResumeStateError, match=r"state.json: options.xf_layers=10000000 is out of range 0..64"):
        read_state(tmp_path)
    (tmp_path / "state.json").write_text("[1, 2]")
    with pytest.raises(ResumeStateError, match="expected a JSON object"):
        read_state(tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[]", "expected a JSON object, got list"),
        ('{"format_version": true, "options": {}}', "format_version True"),
        ('{"format_version": 1, "options": {}, "x": ' + '"' + "a" * (1 << 20) + '"}', "a model config is at most"),
    ],
)
def test_malformed_config_json(tiny_folder, tmp_path, text, message):
    path = folder_with(tiny_folder, tmp_path, "dropout", 0.0)
    (path / CONFIG_FILE).write_text(text)
    with pytest.raises(ModelFolderError, match=message):
        read_config(path)


def test_unknown_top_level_field_is_reported_not_refused(tiny_folder, tmp_path, caplog):
    path = folder_with(tiny_folder, tmp_path, "dropout", 0.0)
    config = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**config, "made_by": "another tool"}))
    assert read_config(path)["options"]["dropout"] == 0.0
    assert "ignoring unknown field(s) made_by" in caplog.text


# ------------------------------------------------------------------------- real configurations stay accepted
def test_limits_cover_every_option():
    from finetune.model.limits import OPTION_LIMITS

    assert list(OPTION_LIMITS) == list(BASE_DEFAULTS)


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_validates(name):
    from finetune.model.limits import check_options

    check_options(get_preset(name))
    resolve_options(get_preset(name))


@pytest.mark.parametrize("role", ["base", "upsampler"])
def test_bundled_model_folders_validate(role):
    config = read_config(bundled_model_path(role))
    assert config["options"]["super_res"] == (role == "upsampler")


def test_glide_fixture_configs_validate(glide_fixtures):
    """OpenAI's four released checkpoints (their reference options) and the tiny reference models."""
    manifests = json.loads((glide_fixtures / "checkpoint_manifests.json").read_text())
    cases = json.loads((glide_fixtures / "cases.json").read_text())
    option_sets = [m["options"] for m in manifests.values()]
    option_sets += [
        cases[k]["options"] for k in ("tiny_base", "tiny_upsample", "tiny_base_inpaint", "tiny_upsample_inpaint")
    ]
    assert len(option_sets) == 8
    for options in option_sets:
        resolved = resolve_options(options)
        build_diffusion(resolved["diffusion_steps"], resolved["noise_schedule"], resolved["timestep_respacing"])


def test_larger_real_world_values_are_admitted():
    """Room above GLIDE: 512 channels, a 2048-wide text transformer, 4000 diffusion steps (improved-diffusion)."""
    resolve_options(
        {
            "num_channels": 512,
            "xf_width": 2048,
            "xf_heads": 32,
            "diffusion_steps": 4000,
            "dropout": 0,
            "channel_mult": [1, 2, 3, 4],
        }
    )
