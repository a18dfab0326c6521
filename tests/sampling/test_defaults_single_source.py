"""Every place that samples without being told how takes its defaults from `finetune.diffusion.defaults`.

The CLI's parsers, the studio's form, the trainer's sample grid, the quickstart, the quality bench, the model
core's `sample()` and the README are compared with that one table, so a value re-declared anywhere fails here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

from finetune.diffusion import defaults
from finetune.diffusion.samplers import DEFAULT_STEPS, SAMPLERS, sample
from finetune.train.config import TrainConfig
from sampling.commands import comic, generate, inpaint
from sampling.commands.common import sampler_settings
from sampling.settings import BASE_DEFAULTS, UPSAMPLER_DEFAULTS
from sampling.studio.settings import (
    DEFAULT_STEPS as STUDIO_STEPS,
)
from sampling.studio.settings import (
    SAMPLERS as STUDIO_SAMPLERS,
)
from sampling.studio.settings import (
    GenerateSettings,
    clamp_settings,
    step_count,
    steps_spec,
)

REPO = Path(__file__).resolve().parents[2]
BASE = (defaults.SAMPLER, defaults.STEPS[defaults.SAMPLER], defaults.GUIDANCE)
UPSAMPLER = (
    defaults.UPSAMPLER_SAMPLER,
    defaults.UPSAMPLER_STEPS,
    defaults.UPSAMPLER_GUIDANCE,
    defaults.UPSAMPLER_TEMPERATURE,
    defaults.UPSAMPLER_START_STEP,
)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"defaults_{name}", REPO / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_covers_every_sampler_and_the_model_core_reads_it():
    assert set(defaults.STEPS) == set(SAMPLERS) and DEFAULT_STEPS is defaults.STEPS
    assert defaults.SAMPLER in SAMPLERS and defaults.UPSAMPLER_SAMPLER in SAMPLERS
    assert inspect.signature(sample).parameters["sampler"].default == defaults.SAMPLER


def test_sampling_settings_are_built_from_the_table():
    base = BASE_DEFAULTS.resolved()
    assert (base.sampler, base.steps, base.guidance) == BASE
    up = UPSAMPLER_DEFAULTS
    assert (up.sampler, up.steps, up.guidance, up.temperature, up.start_step) == UPSAMPLER


@pytest.mark.parametrize(
    "module, argv",
    [(generate, ["a boat"]), (comic, ["shapes_story"]), (inpaint, ["--image", "i.png", "--mask", "m.png"])],
)
def test_cli_parsers_default_to_the_table(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    base, up = sampler_settings(parser.parse_args(argv))
    base, up = base.resolved(), up.resolved()
    assert (base.sampler, base.steps, base.guidance) == BASE
    assert (up.sampler, up.steps, up.guidance, up.temperature, up.start_step) == UPSAMPLER


def test_studio_form_defaults_stand_for_the_table():
    settings = GenerateSettings()
    assert (settings.sampler, settings.guidance) == (defaults.SAMPLER, defaults.GUIDANCE)
    assert STUDIO_SAMPLERS[0] == defaults.SAMPLER and set(STUDIO_SAMPLERS) == set(SAMPLERS)
    for name in SAMPLERS:  # the form's number for each sampler means the table's own steps
        assert steps_spec(defaults.STEPS[name], STUDIO_STEPS[name]) == defaults.STEPS[name]
    assert steps_spec(defaults.STEPS[settings.sampler], settings.steps) == defaults.STEPS[defaults.SAMPLER]
    assert steps_spec(defaults.UPSAMPLER_STEPS, settings.upsample_steps) == defaults.UPSAMPLER_STEPS
    clamped, messages = clamp_settings("not a number", "x", "no such sampler", 1, upsample_steps="x")
    assert clamped.sampler == defaults.SAMPLER and clamped.guidance == defaults.GUIDANCE
    assert clamped.steps == STUDIO_STEPS[defaults.SAMPLER] and clamped.upsample_steps == settings.upsample_steps
    assert len(messages) == 4
    assert inspect.signature(clamp_settings).parameters["upsample_steps"].default == settings.upsample_steps


def test_step_count_reads_every_kind_of_steps_value():
    assert [step_count(v) for v in (30, "100", "fast27", "ddim25", "10,10,3,2,2")] == [30, 100, 27, 25, 27]
    assert steps_spec("fast27", 27) == "fast27" and steps_spec("fast27", 26) == 26


def test_trainer_sample_grid_defaults_to_the_table():
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert (fields["sample_sampler"], fields["sample_steps"], fields["guidance_scale"]) == (
        defaults.SAMPLER,
        str(defaults.STEPS[defaults.SAMPLER]),
        defaults.GUIDANCE,
    )


def test_quickstart_samples_with_the_table():
    quickstart = _script("scripts/quickstart.py")
    args = quickstart.parse_args([])
    assert (defaults.SAMPLER, args.sample_steps, args.guidance) == BASE
    assert quickstart.sampler_flags(args)[:2] == ["--sampler", defaults.SAMPLER]


def test_quality_bench_defaults_to_the_table():
    bench = _script("bench/quality.py")
    args = bench.build_parser().parse_args([])
    sampler, _, steps = args.fast_sampler.partition(":")
    assert (sampler, steps) == (defaults.SAMPLER, str(defaults.STEPS[defaults.SAMPLER]))
    assert bench.comparison_scale(args, []) == defaults.GUIDANCE
    (up,) = bench.parse_upsamplers(args.upsamplers)
    assert (up.sampler, up.steps, up.guidance, up.temperature, up.start_step) == UPSAMPLER


def test_readme_states_the_table():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"`(\w+)` \([^()]*the default, (\d+) steps\)", readme)
    assert stated, "the README no longer names the default sampler as '`NAME` (..., the default, N steps)'"
    assert (stated[1], int(stated[2])) == (defaults.SAMPLER, defaults.STEPS[defaults.SAMPLER])
    samplers = readme[readme.index("Samplers: ") :].split("\n\n")[0]
    stated_steps = dict(re.findall(r"`(\w+)`\s\([^()]*?(\d+) steps\)", samplers))
    stated_steps |= dict(re.findall(r"`(\w+)`\s\((?:[^()]*?, )?`(\w+)` default", samplers))
    assert stated_steps == {name: str(steps) for name, steps in defaults.STEPS.items()}
    guidance = re.search(r"the default, ([\d.]+), suits", readme)
    assert guidance and float(guidance[1]) == defaults.GUIDANCE
    start = re.search(r"The upsampler starts half-way \(t = (\d+)\)", readme)
    assert start and int(start[1]) == defaults.UPSAMPLER_START_STEP
    assert f"DDIM `{defaults.UPSAMPLER_STEPS}`" in readme
