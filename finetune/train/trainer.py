"""The training loop: `train(config)` fine-tunes (or trains from scratch) a GLIDE base, upsampler or inpainting
model with Accelerate, one code path for every variant and any number of processes.

Reading order: `train` (set up or resume -> loop: one optimizer step, then the periodic log / validation / sample
grid / checkpoint -> export), then the set-up in the order it runs, then one step, then what follows a step. The
parts share one `Run`: the settings, what trains, the data and where the run stands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from finetune.diffusion import GaussianDiffusion, diffusion_from_options
from finetune.model import build_model
from finetune.model_folder import save_model_folder
from finetune.tokenizers import get_tokenizer

from . import adapter_run
from .adapter_run import AdapterRun
from .augment import SampleMaker
from .buckets import BucketLoader, bucket_tracker, check_bucket_shapes, open_bucket_loader, resolve_buckets
from .config import ConfigError, TrainConfig, merge_for_resume, save_resolved
from .dataset_discovery import Dataset, precheck, resolve_dataset
from .ema import EMA
from .guards import StepGuard, lr_factor
from .model_init import ModelSetup, is_text_side, planned_image_size, setup_model
from .monitor import IntervalStats, Monitor, _truncate_metrics
from .resume_state import (
    Checkpointer,
    ResumeStateError,
    find_checkpoint,
    list_checkpoints,
    read_state,
    restore_rng,
    rng_state,
)
from .samples import GridSpec, draw_grid, grid_spec, save_png
from .stream import (
    BucketTracker,
    PositionTracker,
    StreamLayout,
    TrainStream,
    collate,
    decode_rgb,
    find_records,
    make_loader,
    val_samples,
)

SWAP_WARMUP_DEFAULT = 500
VAL_QUARTILE_TIMESTEPS = 4


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted: bool = False
    signal: int | None = None
    model_dir: Path | None = None
    last_checkpoint: Path | None = None
    val_history: list[dict] = field(default_factory=list)
    is_main: bool = True
    adapter_dir: Path | None = None  # the exported adapter folder of an --adapter run (model_dir is None then)


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop after the current step; a second one kills."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: give up at once (the last checkpoint is intact)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class Resume:
    """The checkpoint a resumed run continues from."""

    path: Path
    state: dict
    changed: list[str]  # the settings given now that differ from the saved run's


@dataclass
class Run:
    """The state the loop's parts share: settings, what trains, the data, and where the run stands."""

    config: TrainConfig
    accelerator: Accelerator
    setup: ModelSetup  # the model as built (unwrapped), its options, tokenizer, preset and origin
    diffusion: GaussianDiffusion
    dataset: Dataset
    maker: SampleMaker
    text_warmup: int  # the first steps train only the text side
    channels_last: bool
    adapter: AdapterRun | None = None  # an --adapter run: only the adapter trains (`_choose_what_trains`)
    # made once the model is ready (`_make_optimizer`)
    model: torch.nn.Module | None = None  # as prepared by Accelerate (DDP-wrapped with several processes)
    unwrapped: torch.nn.Module | None = None  # the model itself: what is saved, validated and sampled
    unet_params: list[torch.nn.Parameter] = field(default_factory=list)  # cleared during the text warm-up
    optimizer: torch.optim.Optimizer | None = None  # Accelerate's wrapper (it knows when fp16 skipped a step)
    ema: EMA | None = None
    guard: StepGuard | None = None
    generator: torch.Generator | None = None  # timesteps and noise; its state is saved per process
    tracker: PositionTracker | BucketTracker | None = None  # where each data stream stands, for an exact resume
    checkpointer: Checkpointer | None = None
    # the data and the logs (`_open_data`, `_open_logs`)
    loader: DataLoader | BucketLoader | None = None
    batches: Iterator | None = None
    pending: list = field(default_factory=list)  # inputs fetched ahead while the previous step waited on its sync
    val_all: list[dict] = field(default_factory=list)
    grid: GridSpec | None = None
    monitor: Monitor | None = None
    stats: IntervalStats | None = None
    key_log: IO[str] | None = None
    stop: _StopFlag = field(default_factory=_StopFlag)
    # where the run stands
    step: int = 0
    val_history: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    last_checkpoint: Path | None = None
    interrupted: bool = False

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def autocast(self):
        return self.accelerator.autocast()

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(t, "sum") if self.accelerator.num_processes > 1 else t

    def text_only(self, step: int) -> bool:
        """Whether optimizer step `step` (counted from 0) trains only the text side."""
        return step < self.text_warmup


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) a training run described by `config`; see `python -m finetune train --help`."""
    config, resume = _resume_or_fresh(config)
    accelerator = _make_accelerator(config)
    run = _set_up(config, resume, accelerator)
    exported = None
    try:
        if run.step == 0 and config.val_every:
            _validate(run)
        run.batches = iter(run.loader)
        while run.step < config.max_steps and not run.interrupted:
            stop_requested = _train_step(run)
            _after_step(run, stop_requested)
        if not run.interrupted:
            exported = _export(run)
    finally:
        _close(run)
    result = TrainResult(
        run.run_dir,
        run.step,
        run.interrupted,
        run.stop.signum,
        None if run.adapter else exported,
        run.last_checkpoint,
        run.val_history,
        run.is_main,
        exported if run.adapter else None,
    )
    accelerator.wait_for_everyone()
    return result


# ---- set-up, in the order it runs ----------------------------------------------------------------------------


def _resume_or_fresh(config: TrainConfig) -> tuple[TrainConfig, Resume | None]:
    """The settings to run with: the saved run's (with the changes allowed on resume) or the given ones."""
    run_dir = Path(config.run_dir)
    if config.resume:
        path = find_checkpoint(run_dir, config.resume)
        state = read_state(path)
        config, changed = merge_for_resume(state["config"], config)
        return config, Resume(path, state, changed)
    if list_checkpoints(run_dir):
        raise ConfigError(
            f"{run_dir} already holds checkpoints of a run: pass --resume latest to continue it, "
            "or choose a new --run-dir"
        )
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if config.mixed_precision == "no" and launcher_precision in ("bf16", "fp16"):
        config = dataclasses.replace(config, mixed_precision=launcher_precision)  # accelerate launch's flag
    return config, None


def _make_accelerator(config: TrainConfig) -> Accelerator:
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("--mixed-precision fp16 needs a GPU; use bf16 (or no) on the CPU")
    if config.threads:
        torch.set_num_threads(config.threads)
    # Launched as several processes (accelerate launch --multi_gpu / torchrun) on a machine without CUDA:
    # Accelerate only forms a process group on the CPU (gloo) when told so.
    cpu_group = not torch.cuda.is_available() and int(os.environ.get("LOCAL_RANK", -1)) != -1
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # a second train() in one process (notebook, tests) may change precision
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return Accelerator(mixed_precision=config.mixed_precision, cpu=cpu_group)


def _set_up(config: TrainConfig, resume: Resume | None, accelerator: Accelerator) -> Run:
    setup, dataset = _model_and_data(config, resume)
    run = Run(
        config,
        accelerator,
        setup,
        diffusion_from_options(setup.options, timestep_respacing=""),
        dataset,
        _sample_maker(config, setup.options),
        _text_warmup_steps(config, setup),
        use_channels_last(config.channels_last),
        notes=list(setup.notes),
    )
    _choose_what_trains(run)
    _write_run_folder(run)
    _make_optimizer(run)
    if resume is not None:
        _restore(run, resume)
    _open_data(run)
    _open_logs(run)
    return run


def _model_and_data(config: TrainConfig, resume: Resume | None) -> tuple[ModelSetup, Dataset]:
    """The model and tokenizer to train, and the dataset, checked before the model is built when its image size
    is known up front."""
    if resume is not None:
        image_size = resume.state["model_options"]["image_size"]
    else:
        image_size = planned_image_size(config.init, config.preset)
    if image_size:
        dataset = _resolve_data(config, image_size)
    setup = _build_model(config, resume)
    if image_size != setup.options["image_size"]:
        image_size = setup.options["image_size"]
        dataset = _resolve_data(config, image_size)
    return setup, dataset


def _build_model(config: TrainConfig, resume: Resume | None) -> ModelSetup:
    """The model to train: from --init, or from the checkpoint's options (its weights are loaded later). An
    adapter run's checkpoint holds only the adapter, so its base is rebuilt from --init."""
    if resume is not None and not config.adapter:
        return _model_from_resume(resume.state, Path(config.run_dir), config.vocab_path)
    setup = setup_model(
        config.init, config.preset, config.tokenizer, config.vocab_path, config.seed, config.init_from_ema
    )
    return setup if resume is None else dataclasses.replace(setup, source="resume")


def _resolve_data(config: TrainConfig, image_size: int) -> Dataset:
    """The training data, checked: one square shard set, or the aspect-ratio buckets of --buckets."""
    if config.buckets:
        if config.data_size:
            raise ConfigError("give --buckets or --data-size, not both (a bucket names its shard set)")
        return resolve_buckets(config.data, config.buckets, decode_rgb)
    dataset = resolve_dataset(config.data, image_size, config.data_size)
    precheck(dataset, image_size, decode_rgb)
    return dataset


def _model_from_resume(state: dict, run_dir: Path, vocab_path: str) -> ModelSetup:
    options = state["model_options"]
    tok_dir = run_dir / "tokenizer"
    vocab = str(tok_dir) if tok_dir.is_dir() and any(tok_dir.iterdir()) else (vocab_path or None)
    tokenizer = get_tokenizer(options["tokenizer"], options["text_ctx"], vocab)
    return ModelSetup(
        build_model(options),
        options,
        tokenizer,
        state.get("preset", ""),
        "resume",
        bool(state.get("vocab_swapped", False)),
    )


def _sample_maker(config: TrainConfig, options: dict) -> SampleMaker:
    return SampleMaker(
        image_size=options["image_size"],
        lowres_size=options["image_size"] // 4 if options["super_res"] else 0,
        inpaint=bool(options["inpaint"]),
        crop_scale=(config.crop_scale_min, config.crop_scale_max),
        flip_p=config.flip_p,
        uncond_p=config.uncond_p,
        lowres_blur_p=config.lowres_blur_p,
        lowres_blur_sigma=config.lowres_blur_sigma,
        lowres_noise_p=config.lowres_noise_p,
        lowres_noise_std=config.lowres_noise_std,
        mask_kind=config.mask_kind,
    )


def _text_warmup_steps(config: TrainConfig, setup: ModelSetup) -> int:
    text_warmup = config.text_warmup_steps
    if text_warmup < 0:
        text_warmup = SWAP_WARMUP_DEFAULT if setup.vocab_swapped else 0
    if text_warmup and config.train_scope == "unet":
        raise ConfigError("--text-warmup-steps trains only the text side, but --train-scope unet freezes it")
    return text_warmup


def _choose_what_trains(run: Run) -> None:
    """Freeze what --train-scope leaves out, and put the model in its training form (memory format, compile)."""
    config, model = run.config, run.setup.model
    has_text = any(is_text_side(n) for n, _ in model.named_parameters())
    if config.train_scope == "text" and not has_text:
        raise ConfigError("--train-scope text: this model has no text transformer")
    for name, p in model.named_parameters():
        frozen = (config.train_scope == "unet" and is_text_side(name)) or (
            config.train_scope == "text" and not is_text_side(name)
        )
        p.requires_grad_(not frozen)
    if config.adapter:  # before compile, so that the adapter's layers are compiled with the model
        run.adapter = adapter_run.start(config, run.setup)
        if config.sample_every >= 0:
            run.notes.append(adapter_run.GRID_LAYOUT_NOTE)
    if config.grad_checkpointing:
        model.set_gradient_checkpointing(True)
    if run.channels_last:
        model.to(memory_format=torch.channels_last)  # in place, like every Module.to
    model.train()
    if config.compile:
        model.compile()  # in place: parameter names (checkpoints, EMA) stay those of the eager model


def _write_run_folder(run: Run) -> None:
    """The tokenizer files (fresh runs) and the resolved settings, written by the main process."""
    setup, config = run.setup, run.config
    if run.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        if setup.source != "resume":
            tok_dir = run.run_dir / "tokenizer"
            tok_dir.mkdir(exist_ok=True)
            setup.tokenizer.save_files(tok_dir)
        resolved = {
            "model_options": setup.options,
            "preset": setup.preset,
            "init_source": setup.source,
            "vocab_swapped": setup.vocab_swapped,
            "text_warmup_steps": run.text_warmup,
            "dataset": run.dataset.description,
            "dataset_manifest_sha256": run.dataset.manifest_sha256,
            "processes": run.accelerator.num_processes,
            **adapter_run.checkpoint_fields(run.adapter),
        }
        save_resolved(config, run.run_dir / "config.yaml", resolved)
    run.accelerator.wait_for_everyone()


def _make_optimizer(run: Run) -> None:
    """AdamW over the trainable parameters, EMA, the step guard, the RNG and the checkpointer."""
    config, accelerator = run.config, run.accelerator
    optimizer = torch.optim.AdamW(
        [p for p in run.setup.model.parameters() if p.requires_grad],
        lr=config.lr,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
        fused=fused_adamw_available(run.device),
    )
    run.model, run.optimizer = accelerator.prepare(run.setup.model, optimizer)
    run.unwrapped = accelerator.unwrap_model(run.model)
    run.unet_params = [p for n, p in run.unwrapped.named_parameters() if p.requires_grad and not is_text_side(n)]
    ema_filter = adapter_run.ema_filter() if run.adapter else None
    run.ema = EMA(run.unwrapped, config.ema_decay, ema_filter) if config.ema_decay > 0 else None
    run.guard = StepGuard(config.nan_max_consecutive, config.spike_factor, config.spike_window)
    set_seed(config.seed, device_specific=True)
    rank = accelerator.process_index
    run.generator = torch.Generator(device=run.device).manual_seed(config.seed * 1_000_003 + rank)
    run.tracker = PositionTracker(_stream_layout(run))
    run.checkpointer = Checkpointer(
        run.run_dir, config.keep_checkpoints, rank, run.is_main, accelerator.wait_for_everyone
    )
    run.checkpointer.clean_partial()


def _stream_layout(run: Run) -> StreamLayout:
    accelerator = run.accelerator
    return StreamLayout(accelerator.num_processes, accelerator.process_index, max(1, run.config.num_workers))


def _restore(run: Run, resume: Resume) -> None:
    """Weights, optimizer, EMA, guard, grad scaler, this process's RNG and data position, from the checkpoint."""
    accelerator, rank = run.accelerator, run.accelerator.process_index
    ckpt = run.checkpointer.load(resume.path, accelerator.num_processes)
    if run.adapter:
        adapter_run.check_resumed_base(run.adapter, resume.state, run.config)
        adapter_run.load_trained_weights(run.unwrapped, ckpt["model"])
    else:
        run.unwrapped.load_state_dict(ckpt["model"], strict=True)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    state = ckpt["state"]
    if run.ema is not None:
        if ckpt["ema"] is None:
            raise ResumeStateError(f"{resume.path} has no EMA weights but --ema-decay is set")
        run.ema.load_state_dict(ckpt["ema"], state["ema_updates"])
    run.step = int(state["step"])
    run.guard.load_state_dict(state.get("guard", {}))
    run.val_history = state.get("val_history", [])
    if accelerator.scaler is not None and state.get("grad_scaler"):
        accelerator.scaler.load_state_dict(state["grad_scaler"])
    if ckpt["rank_tensors"] is not None:
        restore_rng(run.generator, ckpt["rank_tensors"], ckpt["rank_plain"]["rng"])
        run.tracker, note = PositionTracker.from_state(ckpt["rank_plain"]["data"], _stream_layout(run))
        if note:
            run.notes.append(note)
    else:
        run.notes.append(
            f"process {rank} has no saved RNG/data state (more processes than before): its data "
            "starts from the beginning"
        )
    changed = f" ({', '.join(resume.changed)})" if resume.changed else ""
    run.notes.insert(0, f"resumed from {resume.path} at step {run.step}{changed}")


def _open_data(run: Run) -> None:
    """The training stream from where the tracker stands, the val samples, and the sample grid's prompts."""
    config, tracker = run.config, run.tracker
    if run.dataset.buckets:
        _open_buckets(run)
    else:
        stream = TrainStream(
            run.dataset.shards,
            run.maker,
            run.setup.tokenizer,
            config.batch_size,
            config.shuffle_buffer,
            config.seed,
            tracker.layout,
            start=dict(tracker.places),
            worker_offset=tracker.loader_offset(),
        )
        run.loader = make_loader(stream, config.num_workers, pin_memory=run.device.type == "cuda")
    if config.val_samples:
        run.val_all = val_samples(find_records(run.dataset, "val", config.val_samples), run.maker, config.seed)
        if not run.val_all:
            run.notes.append("the dataset has no val split: validation loss is off")
    if run.is_main and config.sample_every >= 0:
        grid_source = run.val_all or val_samples(
            find_records(run.dataset, "train", config.num_sample_prompts), run.maker, config.seed
        )
        prompts = config.sample_prompts or [s["caption"] for s in grid_source[: config.num_sample_prompts]]
        options = run.setup.options
        run.grid = grid_spec(prompts, grid_source, bool(options["super_res"]), bool(options["inpaint"]))


def _open_buckets(run: Run) -> None:
    """The aspect-ratio buckets' mixed loader; the tracker becomes (or stays) one position per bucket."""
    check_bucket_shapes(run.dataset.buckets, run.setup.model.downsampling_factor)
    run.tracker = bucket_tracker(run.tracker, run.dataset.buckets)
    run.loader = open_bucket_loader(
        run.dataset.buckets, run.tracker, run.maker, run.setup.tokenizer, run.config, run.device.type == "cuda"
    )
    run.notes.append(f"training on aspect-ratio {run.dataset.description}")


def _open_logs(run: Run) -> None:
    """The monitor (metrics, TensorBoard, progress), the optional sample-key log, the notes, the stop flag."""
    config = run.config
    run.monitor = Monitor(run.run_dir, run.is_main, config.progress, run.step, config.max_steps)
    if config.log_sample_keys:
        key_path = run.run_dir / f"sample_keys-rank{run.accelerator.process_index}.jsonl"
        _truncate_metrics(key_path, run.step)
        run.key_log = open(key_path, "a", encoding="utf-8")
    for note in run.notes:
        run.monitor.message(note)
    if run.is_main and run.grid is not None and run.step == 0:
        run.monitor.text(0, "samples/prompts", "\n".join(f"{i}. {p}" for i, p in enumerate(run.grid.prompts)))
    run.stop.install()
    run.stats = IntervalStats(run.diffusion.num_timesteps, run.device)


def _close(run: Run) -> None:
    run.stop.restore()
    run.monitor.close()
    if run.key_log is not None:
        run.key_log.close()
    run.batches = run.loader = None  # the loader's worker processes end with it
    run.pending.clear()


# ---- one optimizer step --------------------------------------------------------------------------------------


def _train_step(run: Run) -> bool:
    """Accumulate the micro-batches, clip, check the guards, step the optimizer and EMA; record the step.
    Returns whether a stop signal reached any process (they all agree, through the one reduction)."""
    config = run.config
    text_only = run.text_only(run.step)
    for group in run.optimizer.param_groups:
        group["lr"] = config.lr * lr_factor(
            run.step, config.lr_warmup_steps, config.max_steps, config.lr_schedule, config.min_lr_ratio
        )
    step_loss = _accumulate_gradients(run)
    if text_only:
        for p in run.unet_params:
            p.grad = None
    grad_norm = run.accelerator.clip_grad_norm_(
        [p for p in run.unwrapped.parameters() if p.grad is not None],
        config.max_grad_norm if config.max_grad_norm > 0 else float("inf"),
    )
    flags = torch.stack(
        [
            step_loss.float(),
            torch.as_tensor(grad_norm, device=run.device).float(),
            torch.full((), float(run.stop.signum is not None), device=run.device),
        ]
    )
    if run.accelerator.num_processes > 1:
        flags = run.accelerator.reduce(flags, "mean")
    if run.step + 1 < config.max_steps:
        run.pending.append(_next_inputs(run))  # the loader and the copy overlap the device's work before the sync
    loss, grad_norm, stop = flags.tolist()  # the one host sync of a step: the guards need these
    skipped = _optimizer_step(run, loss, grad_norm)
    _record_step(run, loss, grad_norm, skipped)
    return stop > 0


def _next_inputs(run: Run) -> tuple[dict, torch.Tensor, dict]:
    """The next batch and its model inputs on the device (fetched ahead during the previous step, if so)."""
    if run.pending:
        return run.pending.pop()
    batch = next(run.batches)
    return (batch, *model_inputs(batch, run.device, run.channels_last))


def _accumulate_gradients(run: Run) -> torch.Tensor:
    """Forward and backward over --grad-accum micro-batches (gradients sync only on the last); the mean loss."""
    config, diffusion = run.config, run.diffusion
    step_loss = torch.zeros((), device=run.device)
    for micro in range(config.grad_accum):
        batch, x0, kwargs = _next_inputs(run)
        run.tracker.update(batch)  # only once used, so a checkpoint never counts a fetched-ahead batch
        run.stats.add_skipped(int(batch["skipped"]))
        if run.key_log is not None:
            run.key_log.write(json.dumps({"step": run.step + 1, "micro": micro, "keys": batch["keys"]}) + "\n")
        t = diffusion.sample_timesteps(x0.shape[0], device=run.device, generator=run.generator)
        noise = torch.randn(x0.shape, generator=run.generator, device=run.device)
        if run.channels_last:
            noise = noise.contiguous(memory_format=torch.channels_last)
        last = micro == config.grad_accum - 1
        eps_target = _prior_eps_target(run, batch, x0, t, noise, kwargs)
        with contextlib.nullcontext() if last else run.accelerator.no_sync(run.model):
            losses = diffusion.training_losses(
                run.model,
                x0,
                t,
                model_kwargs=kwargs,
                noise=noise,
                loss_type=config.loss_type,
                mse_weighting=config.mse_weighting,
                mse_weight_cap=config.mse_weight_cap,
                eps_target=eps_target,
            )
            loss = losses["loss"].mean()
            run.accelerator.backward(loss / config.grad_accum)
        run.stats.add_micro_batch(losses, t)
        step_loss += loss.detach() / config.grad_accum
    return step_loss


def _prior_eps_target(
    run: Run, batch: dict, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, kwargs: dict
) -> torch.Tensor | None:
    """With --prior-target base, what the eps MSE regresses to: the frozen base model's own prediction (the
    adapter switched off) for the batch's prior-preservation samples, the noise for the others. None otherwise."""
    prior = batch.get("prior")
    if run.config.prior_target != "base" or prior is None or not bool(prior.any()):
        return None
    prior = prior.to(run.device)
    x_t = run.diffusion.q_sample(x0[prior], t[prior], noise[prior])
    prior_kwargs = {name: value[prior] for name, value in kwargs.items()}
    with torch.no_grad(), adapter_run.base_only(run.unwrapped):
        out = run.model(x_t, run.diffusion.model_timesteps(t[prior]), **prior_kwargs)
    out = out[0] if isinstance(out, tuple) else out
    target = noise.clone()
    target[prior] = out[:, : noise.shape[1]].to(noise.dtype)
    return target


def _optimizer_step(run: Run, loss: float, grad_norm: float) -> str | None:
    """Step unless a guard skips it; returns why the step was skipped, if it was."""
    optimizer = run.optimizer
    if run.config.mixed_precision == "fp16" and math.isfinite(loss) and not math.isfinite(grad_norm):
        optimizer.step()  # the grad scaler skips this step and lowers its scale
        skipped = "fp16_overflow"
    else:
        skipped = run.guard.check(run.step + 1, loss, grad_norm)
        if skipped is None:
            optimizer.step()
            if optimizer.step_was_skipped:
                skipped = "fp16_overflow"
            elif run.ema is not None:
                run.ema.update(run.unwrapped)
    optimizer.zero_grad(set_to_none=True)
    return skipped


def _record_step(run: Run, loss: float, grad_norm: float, skipped: str | None) -> None:
    run.step += 1
    run.stats.steps += 1
    run.stats.samples += run.config.batch_size * run.config.grad_accum * run.accelerator.num_processes
    if math.isfinite(grad_norm):
        run.stats.grad_norms.append(grad_norm)
    run.monitor.step(
        {
            "step": run.step,
            "loss": loss if math.isfinite(loss) else None,
            "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
            "lr": run.optimizer.param_groups[0]["lr"],
            "skipped": skipped,
            "time": round(time.time(), 4),
        }
    )
    if skipped in ("nonfinite", "spike"):
        run.monitor.message(f"step {run.step}: skipped ({skipped}; loss {loss}, grad norm {grad_norm})")


# ---- after a step: log, validate, sample, checkpoint, stop -----------------------------------------------------


def _after_step(run: Run, stop_requested: bool) -> None:
    config, step = run.config, run.step
    last = step == config.max_steps
    if step % config.log_every == 0 or last:
        _log_interval(run)
    if (config.val_every and step % config.val_every == 0) or last:
        _validate(run)
    if (config.sample_every > 0 and step % config.sample_every == 0) or (config.sample_every >= 0 and last):
        _sample_grid(run)
    periodic = config.checkpoint_every and step % config.checkpoint_every == 0
    if config.checkpoint_every >= 0 and (stop_requested or last or periodic):
        run.last_checkpoint = _save_checkpoint(run)
    if stop_requested:
        run.interrupted = True
        run.monitor.message(f"stopped by signal at step {step}; resume with --resume latest")


def _log_interval(run: Run) -> None:
    values = run.stats.summary(run.reduce_sum)
    values.update(
        {
            "train/lr": run.optimizer.param_groups[0]["lr"],
            "train/skipped_nonfinite": run.guard.skipped_nonfinite,
            "train/skipped_spikes": run.guard.skipped_spikes,
            "train/text_only": float(run.text_only(run.step - 1)),  # the step just taken
        }
    )
    run.monitor.scalars(run.step, values)
    run.stats.reset()


def _validate(run: Run) -> None:
    if not run.val_all:
        return
    world, rank = run.accelerator.num_processes, run.accelerator.process_index
    result = validate(
        run.unwrapped,
        run.diffusion,
        run.setup.tokenizer,
        run.val_all[rank::world],
        run.config.batch_size,
        run.config.seed,
        run.device,
        run.autocast,
        run.reduce_sum,
        run.config.loss_type,
        run.channels_last,
    )
    run.monitor.scalars(run.step, result)
    run.val_history.append({"step": run.step, **result})
    run.monitor.message(f"step {run.step}: val loss {result['val/loss']:.4f} (mse {result['val/mse']:.4f})")


def _sample_grid(run: Run) -> None:
    """The fixed prompts drawn with the EMA weights, to TensorBoard and run_dir/samples/ (main process)."""
    if run.grid is None:
        return
    if run.is_main:
        model, config = run.unwrapped, run.config

        def draw(model):
            return draw_grid(
                model,
                run.diffusion,
                run.setup.tokenizer,
                run.grid,
                guidance_scale=config.guidance_scale,
                sampler=config.sample_sampler,
                steps=config.sample_steps,
                seed=config.sample_seed,
                device=run.device,
                autocast=run.autocast,
            )

        with run.ema.swapped_in(model) if run.ema is not None else contextlib.nullcontext():
            model.eval()
            image = adapter_run.side_by_side(run.adapter, model, draw) if run.adapter else draw(model)
            model.train()
        run.monitor.image(run.step, "samples/grid", image)
        save_png(run.run_dir / "samples" / f"step-{run.step:08d}.png", image)
        run.monitor.flush()
    run.accelerator.wait_for_everyone()


def _save_checkpoint(run: Run) -> Path:
    rank_tensors, rank_rng = rng_state(run.generator)
    scaler, ema, setup = run.accelerator.scaler, run.ema, run.setup
    state = {
        "step": run.step,
        "config": run.config.to_dict(),
        "model_options": setup.options,
        "preset": setup.preset,
        "vocab_swapped": setup.vocab_swapped,
        "ema_updates": ema.updates if ema is not None else 0,
        "guard": run.guard.state_dict(),
        "val_history": run.val_history,
        "text_warmup_steps": run.text_warmup,
        "grad_scaler": scaler.state_dict() if scaler is not None else None,
        "time": time.time(),
        **adapter_run.checkpoint_fields(run.adapter),
    }
    weights = adapter_run.trained_weights(run.unwrapped) if run.adapter else run.unwrapped.state_dict()
    path = run.checkpointer.save(
        run.step,
        weights,
        ema.state_dict() if ema is not None else None,
        run.optimizer.state_dict(),
        state,
        rank_tensors,
        {"rng": rank_rng, "data": run.tracker.state()},
    )
    run.monitor.message(f"checkpoint saved: {path}")
    return path


def _export(run: Run) -> Path | None:
    if not run.config.export_model:
        return None
    if run.adapter:
        return _export_adapter(run)
    model_dir = export_model_folder(
        Path(run.config.export_dir or run.run_dir / "model"),
        run.unwrapped,
        run.setup.options,
        run.setup.tokenizer,
        run.ema,
        run.setup,
        run.config,
        run.dataset,
        run.step,
        run.is_main,
    )
    run.accelerator.wait_for_everyone()
    return model_dir


def _export_adapter(run: Run) -> Path:
    out = Path(run.config.export_dir or run.run_dir / adapter_run.EXPORT_DIR)
    if run.is_main:
        adapter_run.export(run.adapter, out, run.unwrapped, run.ema, run.config, run.dataset, run.step)
        run.monitor.message(f"adapter saved: {out} (trained on {run.adapter.base_model_id})")
    run.accelerator.wait_for_everyone()
    return out


def use_channels_last(setting: str) -> bool:
    """`auto` means off on every device: measured in bf16 on an H200 (GLIDE base) channels_last was 8% slower,
    and on the CPU 10-15% slower, so only an explicit `yes` turns it on."""
    return setting == "yes"


def fused_adamw_available(device: torch.device) -> bool:
    """AdamW's fused kernel (one launch for all parameters) exists for CUDA and the CPU."""
    return device.type in ("cpu", "cuda")


def model_inputs(batch: dict, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, dict]:
    """x0 and the model kwargs of a batch, on the device."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x0 = batch["image"].to(device, non_blocking=True).contiguous(memory_format=fmt)
    kwargs = {
        "tokens": batch["tokens"].to(device, non_blocking=True),
        "mask": batch["mask"].to(device, non_blocking=True),
    }
    if "low_res" in batch:
        kwargs["low_res"] = batch["low_res"].to(device, non_blocking=True).contiguous(memory_format=fmt)
    if "inpaint_mask" in batch:
        kwargs["inpaint_image"] = x0
        kwargs["inpaint_mask"] = batch["inpaint_mask"].to(device, non_blocking=True).contiguous(memory_format=fmt)
    return x0, kwargs


@torch.no_grad()
def validate(
    model,
    diffusion,
    tokenizer,
    samples: list[dict],
    batch_size: int,
    seed: int,
    device,
    autocast,
    reduce,
    loss_type: str,
    channels_last: bool,
) -> dict[str, float]:
    """Loss on the val split at fixed timesteps (the middle of each quarter of 0..T-1) with fixed noise, so
    successive validations are comparable. Every process evaluates its share; the sums are reduced."""
    was_training = model.training
    model.eval()

    def model_fn(*args, **kwargs):
        with autocast():
            return model(*args, **kwargs).float()

    T = diffusion.num_timesteps
    quarter_t = [int((q + 0.5) * T / VAL_QUARTILE_TIMESTEPS) for q in range(VAL_QUARTILE_TIMESTEPS)]
    sums = torch.zeros(3 + 2 * VAL_QUARTILE_TIMESTEPS, device=device, dtype=torch.float64)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        batch = collate([{**s, "uncond": False} for s in chunk], tokenizer)
        x0, kwargs = model_inputs(batch, device, channels_last)
        g = torch.Generator(device="cpu").manual_seed(seed * 7919 + start + 17)
        for q, tq in enumerate(quarter_t):
            t = torch.full((x0.shape[0],), tq, dtype=torch.long, device=device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            losses = diffusion.training_losses(model_fn, x0, t, model_kwargs=kwargs, noise=noise, loss_type=loss_type)
            sums[0] += losses["loss"].double().sum()
            sums[1] += losses["mse"].double().sum()
            sums[2] += losses["vb"].double().sum()
            sums[3 + q] += losses["loss"].double().sum()
            sums[3 + VAL_QUARTILE_TIMESTEPS + q] += x0.shape[0]
    totals = reduce(sums).tolist()
    if was_training:
        model.train()
    n = max(sum(totals[3 + VAL_QUARTILE_TIMESTEPS :]), 1.0)
    result = {"val/loss": totals[0] / n, "val/mse": totals[1] / n, "val/vb": totals[2] / n}
    for q in range(VAL_QUARTILE_TIMESTEPS):
        count = totals[3 + VAL_QUARTILE_TIMESTEPS + q]
        if count:
            result[f"val/loss_q{q}"] = totals[3 + q] / count
    return result


def export_model_folder(
    final: Path,
    model,
    options,
    tokenizer,
    ema,
    setup: ModelSetup,
    config: TrainConfig,
    dataset,
    step: int,
    is_main: bool,
) -> Path:
    """The final weights (+EMA) as a model folder the samplers read, written atomically to `final`."""
    if not is_main:
        return final
    provenance = {
        "init_checkpoint": config.init if setup.source != "resume" else "(resumed run)",
        "init_source": setup.source,
        "dataset": dataset.description,
        "dataset_manifest_sha256": dataset.manifest_sha256,
        "trainer_config": config.to_dict(),
        "steps": step,
        "vocab_swapped": setup.vocab_swapped,
    }
    # save_model_folder builds the folder beside `final` and swaps it in
    save_model_folder(
        final,
        model,
        options,
        tokenizer,
        ema_state_dict=ema.full_state_dict(model) if ema is not None else None,
        provenance=provenance,
        preset=setup.preset or None,
    )
    return final
