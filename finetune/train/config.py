"""Trainer settings: one dataclass, exposed as CLI flags and as YAML/TOML config-file keys.

Precedence: dataclass defaults < config file (`--config`) < flags given on the command line.
The resolved settings are validated before any work and saved in the run folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import torch
import yaml

from data_pipeline.errors import UserError
from data_pipeline.fsutil import atomic_write_text
from finetune.adapters.errors import AdapterError
from finetune.adapters.settings import DEFAULT_RANK, DEFAULT_TARGETS, KNOWN_TARGETS, MAX_ALPHA, MAX_RANK, check_targets
from finetune.diffusion import defaults as sampling_defaults
from finetune.diffusion.samplers import SAMPLERS


class ConfigError(UserError, ValueError):
    """A setting is missing, unknown or out of range; raised before any work is done."""


# torch.compile is offered from the first release whose bf16 gradients matched eager here: torch 2.9.1's inductor
# gave NaN gradients (tests/train/test_train_speed_paths.py); 2.14.1 matches.
COMPILE_MIN_TORCH = (2, 14)


def compile_supported() -> bool:
    return torch.__version__ >= COMPILE_MIN_TORCH  # torch's own version type compares with a tuple


# Upper bounds: far above any real run (GLIDE's own fine-tunes are ~10^5 steps at batches of a few hundred), low
# enough that a typo or a hostile form value (batch 1e9, 1e15 steps) is refused before anything is allocated.
STEP_LIMIT = 100_000_000
BATCH_LIMIT = 4096
HELD_SAMPLES_LIMIT = 100_000  # samples held in memory at once (shuffle buffer, validation set)
IMAGE_SIZE_LIMIT = 4096


def _opt(
    default, help: str, *, choices=None, min=None, max=None, min_exclusive=False, flag_only=False, comma_list=False
):
    meta = {"help": help, "choices": choices, "min": min, "max": max, "min_exclusive": min_exclusive}
    if flag_only:
        meta["flag_only"] = True
    if comma_list:  # a list whose items may also be given as one comma-separated value ("a,b")
        meta["comma_list"] = True
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # --- what to train, where -------------------------------------------------------------------
    run_dir: str = _opt("", "Run folder: resolved config, checkpoints, TensorBoard logs, the exported model.")
    data: list[str] = _opt(
        [],
        "Dataset(s): a shard folder (DIR with <size>/ subfolders or tars), tar paths/globs "
        "(brace ranges allowed), or an imagefolder (metadata.jsonl with file_name,text).",
    )
    data_size: int = _opt(
        0,
        "Shard size folder to read (DIR/<size>/); 0 = the model's image size, or the "
        "smallest larger one (downscaled) when that size is missing.",
        min=0,
        max=IMAGE_SIZE_LIMIT,
    )
    buckets: str = _opt(
        "",
        "Aspect-ratio buckets: comma-separated shard sets, N or WxH (e.g. 32,64x32,32x64), read from every --data "
        "folder that has them (DIR/<set>/, as --sizes writes them). Each batch is one shape; buckets are drawn in "
        "proportion to their train samples. Empty: one square set (--data-size).",
    )
    init: str = _opt(
        "scratch",
        "Where the weights come from: 'scratch', a released model's name (glide-base, "
        "glide-upsample, glide-base-inpaint, glide-upsample-inpaint; fetched and cached on "
        "first use), 'bundled' (the bundled base), an OpenAI GLIDE .pt, or a model folder.",
    )
    preset: str = _opt(
        "",
        "Model preset (required with --init scratch; with a .pt it picks the architecture, "
        "detected from the weights when omitted; with a model folder it must match or be empty).",
    )
    tokenizer: str = _opt(
        "",
        "Tokenizer: 'clip' or 'gpt2'. Default: gpt2 for an OpenAI .pt, the folder's own "
        "for a model folder, clip from scratch. clip on a gpt2 checkpoint = vocabulary swap.",
        choices=["", "clip", "gpt2"],
    )
    vocab_path: str = _opt(
        "",
        "GPT-2 BPE folder (encoder.json[.gz] + vocab.bpe[.gz]) overriding the one shipped "
        "with the package (alias --vocab).",
    )
    resume: str = _opt("", "Resume from 'latest' (newest checkpoint in run_dir) or a checkpoint folder.")
    init_from_ema: bool = _opt(True, "When --init is a model folder holding EMA weights, start from them.")

    # --- data -----------------------------------------------------------------------------------
    batch_size: int = _opt(4, "Samples per process per micro-batch.", min=1, max=BATCH_LIMIT)
    num_workers: int = _opt(1, "Data-loading worker processes per training process (0 = in-process).", min=0, max=64)
    shuffle_buffer: int = _opt(
        1000,
        "Samples held in the shuffle buffer of each data stream (0/1 = no shuffle).",
        min=0,
        max=HELD_SAMPLES_LIMIT,
    )
    crop_scale_min: float = _opt(
        0.8,
        "Random resized crop: smallest crop area as a fraction of the largest square.",
        min=0.0,
        max=1.0,
        min_exclusive=True,
    )
    crop_scale_max: float = _opt(
        1.0, "Random resized crop: largest crop area fraction.", min=0.0, max=1.0, min_exclusive=True
    )
    flip_p: float = _opt(
        0.0, "Horizontal flip probability (off by default: captions say left/right).", min=0.0, max=1.0
    )
    uncond_p: float = _opt(
        0.2, "Probability of replacing the caption by the empty caption (CFG training).", min=0.0, max=1.0
    )
    lowres_blur_p: float = _opt(0.0, "Upsampler: probability of Gaussian-blurring the low-res input.", min=0.0, max=1.0)
    lowres_blur_sigma: float = _opt(
        0.6, "Upsampler: largest blur sigma (low-res pixels); drawn in [0.1, max].", min=0.1, max=5.0
    )
    lowres_noise_p: float = _opt(
        0.0, "Upsampler: probability of adding Gaussian noise to the low-res input.", min=0.0, max=1.0
    )
    lowres_noise_std: float = _opt(
        0.02, "Upsampler: largest noise std (in [-1,1] units); drawn in [0, max].", min=0.0, max=1.0
    )
    mask_kind: str = _opt(
        "mixed", "Inpainting masks: rectangles, free-form strokes, or a mix.", choices=["mixed", "rect", "strokes"]
    )
    val_samples: int = _opt(
        64, "Validation samples (from the dataset's val split; 0 = no validation).", min=0, max=HELD_SAMPLES_LIMIT
    )
    val_every: int = _opt(500, "Validation loss every N steps (0 = only at the end).", min=0, max=STEP_LIMIT)
    log_sample_keys: bool = _opt(False, "Write the keys of every training sample to run_dir/sample_keys-rank*.jsonl.")

    # --- objective and optimisation -------------------------------------------------------------
    loss_type: str = _opt(
        "hybrid", "hybrid = eps MSE + rescaled VLB for the variance (GLIDE); mse = eps only.", choices=["hybrid", "mse"]
    )
    mse_weighting: str = _opt(
        "eps",
        "Weight of the eps MSE over timesteps: eps = uniform (GLIDE); v = x (1 + 1/SNR), "
        "the v-prediction loss, which puts more weight on high noise, where global colour "
        "and layout are decided (capped by mse_weight_cap). Switching a running "
        "fine-tune raises its gradients ~10x, which Adam takes ~1k steps to absorb.",
        choices=["eps", "v"],
    )
    mse_weight_cap: float = _opt(
        100.0,
        "Largest MSE weight of the v weighting (its 1 + 1/SNR grows without bound at the noisiest timesteps).",
        min=1.0,
    )
    max_steps: int = _opt(10000, "Optimizer steps to train for (total, including resumed ones).", min=1, max=STEP_LIMIT)
    grad_accum: int = _opt(1, "Micro-batches per optimizer step.", min=1, max=1024)
    lr: float = _opt(1e-4, "Peak learning rate (AdamW).", min=0.0, max=1.0, min_exclusive=True)
    lr_schedule: str = _opt(
        "constant",
        "LR after warmup: constant, cosine or linear decay to min_lr_ratio * lr.",
        choices=["constant", "cosine", "linear"],
    )
    lr_warmup_steps: int = _opt(0, "Linear LR warmup steps.", min=0, max=STEP_LIMIT)
    min_lr_ratio: float = _opt(0.0, "Final LR as a fraction of lr for cosine/linear.", min=0.0, max=1.0)
    adam_beta1: float = _opt(0.9, "AdamW beta1.", min=0.0, max=1.0)
    adam_beta2: float = _opt(0.999, "AdamW beta2.", min=0.0, max=1.0)
    adam_eps: float = _opt(1e-8, "AdamW epsilon.", min=0.0, min_exclusive=True)
    weight_decay: float = _opt(0.0, "AdamW weight decay.", min=0.0, max=1.0)
    max_grad_norm: float = _opt(1.0, "Clip the gradient norm to this (0 = no clipping).", min=0.0)
    train_scope: str = _opt(
        "all", "What trains: all, unet (text side frozen) or text (UNet frozen).", choices=["all", "unet", "text"]
    )
    text_warmup_steps: int = _opt(
        -1,
        "Steps training only the text side after a vocabulary swap (-1 = 500 on a swap, else 0).",
        min=-1,
        max=STEP_LIMIT,
    )
    ema_decay: float = _opt(0.9999, "EMA decay (0 = no EMA). Ramped up as min(decay, (1+n)/(10+n)).", min=0.0, max=1.0)
    mixed_precision: str = _opt(
        "no", "Autocast precision: no, bf16 or fp16 (fp16 needs a GPU).", choices=["no", "bf16", "fp16"]
    )
    grad_checkpointing: bool = _opt(False, "Activation checkpointing (less memory, ~30% more compute).")
    channels_last: str = _opt(
        "auto",
        "channels_last memory format for the UNet: auto (off: it measured 8% slower on "
        "an H200 in bf16 and 10-15% slower on the CPU), yes or no.",
        choices=["auto", "yes", "no"],
    )
    compile: bool = _opt(
        False,
        "torch.compile the model's forward and backward (gradients checked against eager in "
        "bf16 by the tests; the first steps take minutes to compile).",
    )
    threads: int = _opt(0, "CPU threads for torch in each process (0 = torch's default).", min=0, max=1024)
    seed: int = _opt(0, "Seed for weights from scratch, data order, augmentation, timesteps and noise.", min=0)

    # --- adapter (LoRA) -------------------------------------------------------------------------
    adapter: str = _opt(
        "",
        "Train a LoRA adapter ('lora') on the frozen --init model instead of the model itself; the run exports "
        "an adapter folder (run_dir/adapter) that records the model it was trained on.",
        choices=["", "lora"],
    )
    lora_rank: int = _opt(DEFAULT_RANK, "LoRA rank (with --adapter lora).", min=1, max=MAX_RANK)
    lora_alpha: float = _opt(
        0.0, "LoRA alpha: the update is scaled by alpha/rank (0 = the rank, a scale of 1).", min=0.0, max=MAX_ALPHA
    )
    lora_targets: list[str] = _opt(
        list(DEFAULT_TARGETS),
        "Layers the adapter wraps, by name (space- or comma-separated): " + ", ".join(KNOWN_TARGETS) + ".",
        comma_list=True,
    )
    prior_target: str = _opt(
        "noise",
        "What the prior-preservation images (samples whose attributes say prior_preservation: on, as `adapter "
        "teach` stages the base model's own images) are trained towards: noise = their noise, like any sample "
        "(DreamBooth); base = the frozen base model's prediction for the same noisy input and caption (adapter "
        "runs only; one more forward pass without gradients per step), so the adapter learns to leave the base's "
        "output there as it was.",
        choices=["noise", "base"],
    )

    # --- checkpoints, logs, samples -------------------------------------------------------------
    checkpoint_every: int = _opt(
        500,
        "Checkpoint every N steps (0 = only at the end and on SIGTERM/SIGINT; "
        "-1 = never, for benchmarks and smoke tests).",
        min=-1,
        max=STEP_LIMIT,
    )
    keep_checkpoints: int = _opt(3, "Checkpoints kept (older ones are deleted).", min=1, max=1000)
    log_every: int = _opt(10, "TensorBoard scalars every N steps.", min=1, max=STEP_LIMIT)
    sample_every: int = _opt(
        1000, "Sample grid every N steps (0 = only at the end; -1 = never).", min=-1, max=STEP_LIMIT
    )
    sample_prompts: list[str] = _opt([], "Fixed prompts of the sample grid (default: the first val captions).")
    num_sample_prompts: int = _opt(4, "Prompts in the grid when sample_prompts is not given.", min=1, max=64)
    sample_seed: int = _opt(1234, "Seed of the sample grid (the same noise every time).", min=0)
    sample_sampler: str = _opt(sampling_defaults.SAMPLER, "Sampler of the grid.", choices=list(SAMPLERS))
    sample_steps: str = _opt(
        str(sampling_defaults.STEPS[sampling_defaults.SAMPLER]),
        "Steps of the grid's sampler: a respacing (50, fast27, ddim25) for "
        "ancestral/ddim, a number of model calls for dpmpp_2m(_sde).",
    )
    guidance_scale: float = _opt(
        sampling_defaults.GUIDANCE, "Classifier-free guidance scale of the sample grid.", min=0.0, max=100.0
    )
    nan_max_consecutive: int = _opt(
        5, "Stop after this many non-finite steps in a row (each one is skipped).", min=1, max=STEP_LIMIT
    )
    spike_factor: float = _opt(
        0.0, "Loss-spike guard: skip a step whose loss exceeds factor x the recent median (0 = off).", min=0.0
    )
    spike_window: int = _opt(
        100, "Loss-spike guard: number of recent steps forming the median.", min=5, max=HELD_SAMPLES_LIMIT
    )
    progress: bool = _opt(True, "Show a progress bar.")
    export_model: bool = _opt(True, "Export the final model (+EMA) as a model folder in run_dir/model.")
    export_dir: str = _opt(
        "",
        "Folder the export is written to (default: run_dir/model, or run_dir/adapter with --adapter); an "
        "existing folder is replaced only if it is of the same kind.",
    )

    # keys that may change when a run is resumed; anything else must match the checkpoint
    RESUMABLE_CHANGES = (
        "resume",
        "max_steps",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "sample_every",
        "val_every",
        "progress",
        "num_workers",
        "export_model",
        "export_dir",
        "log_sample_keys",
        "sample_prompts",
        "num_sample_prompts",
        "sample_sampler",
        "sample_steps",
        "guidance_scale",
        "nan_max_consecutive",
        "val_samples",
        "data",
        "threads",
        "channels_last",
        "compile",  # speed only: the same numbers either way
        # the optimum stays the same, so a running fine-tune may change how it weighs or paces its steps
        "lr",
        "ema_decay",
        "mse_weighting",
        "mse_weight_cap",
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


def _field_type(f: dataclasses.Field):
    return get_type_hints(TrainConfig)[f.name]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; defaults are SUPPRESSed so only flags the user typed override the config file."""
    parser.add_argument(
        "--config",
        help="YAML or TOML file with any of the settings below (keys as flag names with _ or -).",
        default=argparse.SUPPRESS,
    )
    groups = {}
    for f in _fields():
        meta = f.metadata
        tp = _field_type(f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{meta['help']} (default: {default!r})".replace("%", "%%")
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text, "dest": f.name}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(tp) is list:
            kwargs["nargs"] = "+"
            kwargs["type"] = get_args(tp)[0]
            kwargs["metavar"] = f.name.upper()
        else:
            kwargs["type"] = tp
            if meta["choices"]:
                kwargs["choices"] = [c for c in meta["choices"] if c]
        section = groups.setdefault(_section_of(f.name), parser.add_argument_group(_section_of(f.name)))
        section.add_argument(_flag(f.name), *FLAG_ALIASES.get(f.name, ()), **kwargs)


# Other spellings accepted for a setting's flag (the sampling and convert commands say --vocab too).
FLAG_ALIASES = {"vocab_path": ("--vocab",)}

_SECTIONS = [
    ("run", ("run_dir", "data", "data_size", "init", "preset", "tokenizer", "vocab_path", "resume", "init_from_ema")),
    (
        "optimisation",
        (
            "loss_type",
            "mse_weighting",
            "mse_weight_cap",
            "max_steps",
            "grad_accum",
            "lr",
            "lr_schedule",
            "lr_warmup_steps",
            "min_lr_ratio",
            "adam_beta1",
            "adam_beta2",
            "adam_eps",
            "weight_decay",
            "max_grad_norm",
            "train_scope",
            "text_warmup_steps",
            "ema_decay",
            "mixed_precision",
            "grad_checkpointing",
            "channels_last",
            "compile",
            "threads",
            "seed",
        ),
    ),
    ("adapter (LoRA)", ("adapter", "lora_rank", "lora_alpha", "lora_targets", "prior_target")),
    (
        "checkpoints, logs, samples",
        (
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
            "sample_every",
            "sample_prompts",
            "num_sample_prompts",
            "sample_seed",
            "sample_sampler",
            "sample_steps",
            "guidance_scale",
            "nan_max_consecutive",
            "spike_factor",
            "spike_window",
            "progress",
            "export_model",
            "export_dir",
        ),
    ),
]


def _section_of(name: str) -> str:
    for title, names in _SECTIONS:
        if name in names:
            return title
    return "data"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) settings file into a flat dict with canonical key names."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            raw = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            raw = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file must end in .yaml, .yml, .json or .toml: {path}")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, got {type(raw).__name__}")
    return {str(k).replace("-", "_"): v for k, v in raw.items()}


def build_config(values: dict[str, Any]) -> TrainConfig:
    """Make a validated TrainConfig from a flat dict (unknown keys and bad values raise ConfigError)."""
    known = {f.name: f for f in _fields()}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(known[name], value)
    config = TrainConfig(**kwargs)
    validate(config)
    return config


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = dict(vars(args))
    given.pop("command", None)
    given.pop("func", None)
    given.pop("_run", None)  # set by the command line runner
    values: dict[str, Any] = {}
    config_path = given.pop("config", None)
    if config_path:
        values.update(load_config_file(config_path))
    values.update(given)
    return build_config(values)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    tp = _field_type(f)
    name = _flag(f.name)
    if get_origin(tp) is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        if f.metadata.get("comma_list"):
            return [part.strip() for v in value for part in str(v).split(",") if part.strip()]
        return [str(v) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if value is None:
        return ""
    return str(value)


def validate(config: TrainConfig) -> None:
    """Range and consistency checks that need no files (files are checked by the data and init code)."""
    check_adapter_settings(config)
    problems = []
    if config.compile and not compile_supported():
        problems.append(
            f"--compile needs torch >= {'.'.join(map(str, COMPILE_MIN_TORCH))} (torch {torch.__version__} "
            "gave wrong bf16 gradients when compiled); train without it or upgrade torch"
        )
    for f in _fields():
        meta, value = f.metadata, getattr(config, f.name)
        name = _flag(f.name)
        if meta["choices"] and value not in meta["choices"]:
            problems.append(f"{name} must be one of {[c for c in meta['choices'] if c]}, got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value != value or value in (float("inf"), float("-inf")):
                problems.append(f"{name} must be finite, got {value!r}")
                continue
            lo, hi = meta["min"], meta["max"]
            if lo is not None and (value < lo or (meta["min_exclusive"] and value == lo)):
                op = ">" if meta["min_exclusive"] else ">="
                problems.append(f"{name} must be {op} {lo}, got {value!r}")
            if hi is not None and value > hi:
                problems.append(f"{name} must be <= {hi}, got {value!r}")
    if not config.run_dir:
        problems.append("--run-dir is required")
    if not config.data and not config.resume:
        problems.append("--data is required (shard folder, tar paths/globs, or an imagefolder)")
    if config.crop_scale_min > config.crop_scale_max:
        problems.append(
            f"--crop-scale-min ({config.crop_scale_min}) must not exceed --crop-scale-max ({config.crop_scale_max})"
        )
    if config.init == "scratch" and not config.preset and not config.resume:
        problems.append("--preset is required when training from scratch (e.g. --preset tiny-base)")
    if config.lr_warmup_steps >= config.max_steps and config.lr_schedule != "constant":
        problems.append("--lr-warmup-steps must be smaller than --max-steps for a decaying schedule")
    if config.resume and config.resume != "latest" and not Path(config.resume).is_dir():
        problems.append(f"--resume must be 'latest' or an existing checkpoint folder, got {config.resume!r}")
    if problems:
        raise ConfigError("invalid settings:\n  - " + "\n  - ".join(problems))


def check_adapter_settings(config: TrainConfig) -> None:
    """The LoRA settings fit together with the rest (one line each, before anything else is checked)."""
    defaults = TrainConfig()
    if not config.adapter:
        given = [
            _flag(n)
            for n in ("lora_rank", "lora_alpha", "lora_targets", "prior_target")
            if getattr(config, n) != getattr(defaults, n)
        ]
        if given:
            raise ConfigError(f"{given[0]} has no effect without --adapter lora")
        return
    if config.train_scope != defaults.train_scope:
        raise ConfigError(
            f"--adapter trains only the adapter on a frozen model; --train-scope {config.train_scope} cannot be "
            f"combined with it (leave --train-scope at {defaults.train_scope})"
        )
    if config.init == "scratch" and not config.resume:
        raise ConfigError("--adapter adapts a trained model: give it as --init (a model folder, name or .pt)")
    try:
        check_targets(config.lora_targets)
    except AdapterError as exc:
        raise ConfigError(f"--lora-targets: {exc}") from None


def save_resolved(config: TrainConfig, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the resolved settings (plus derived facts such as model options) as YAML, atomically."""
    payload = {"trainer": config.to_dict()}
    if extra:
        payload.update(json.loads(json.dumps(extra)))
    atomic_write_text(path, yaml.safe_dump(payload, sort_keys=False))


def merge_for_resume(saved: dict[str, Any], given: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """The saved run's settings, with the given ones that may change on resume; other changes are refused.

    A given setting counts when it differs from the default (flags left out never override the saved run).
    Returns the merged config and a list of the settings that changed.
    """
    defaults = TrainConfig()
    known = {f.name for f in _fields()}
    base = build_config({k: v for k, v in saved.items() if k in known})
    merged = dataclasses.replace(base)
    changed, refused = [], []
    for f in _fields():
        value = getattr(given, f.name)
        if value == getattr(defaults, f.name) or value == getattr(base, f.name):
            continue
        if f.name in TrainConfig.RESUMABLE_CHANGES or f.name in (
            "init",
            "preset",
            "tokenizer",
            "vocab_path",
            "init_from_ema",
            "run_dir",
        ):
            # the weights come from the checkpoint, so init settings are ignored rather than refused
            if f.name in TrainConfig.RESUMABLE_CHANGES:
                setattr(merged, f.name, value)
                if f.name != "resume":
                    changed.append(f"{_flag(f.name)}={value!r}")
            continue
        refused.append(f"{_flag(f.name)}: checkpoint has {getattr(base, f.name)!r}, given {value!r}")
    if refused:
        raise ConfigError(
            "these settings differ from the run being resumed (start a new --run-dir to change "
            "them):\n  - " + "\n  - ".join(refused)
        )
    merged.resume = given.resume
    merged.run_dir = given.run_dir
    validate(merged)
    return merged, changed
