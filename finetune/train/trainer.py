"""The training loop: `train(config)` fine-tunes (or trains from scratch) a GLIDE base, upsampler or inpainting
model with Accelerate, one code path for every variant and any number of processes.

Reading order: set-up (run folder, resume, model, data, optimizer, state) -> loop (micro-batches, guards,
optimizer step, EMA, logs, validation, sample grid, checkpoints) -> export.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from finetune.diffusion import diffusion_from_options

from .augment import SampleMaker
from .config import ConfigError, TrainConfig, merge_for_resume, save_resolved
from .dataset_discovery import DatasetError, precheck, resolve_dataset
from .ema import EMA
from .guards import StepGuard, TrainingDiverged, lr_factor
from .model_init import InitError, ModelSetup, is_text_side, planned_image_size, setup_model
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
from .samples import draw_grid, grid_spec, save_png
from .stream import PositionTracker, StreamLayout, TrainStream, decode_rgb, find_records, make_loader, val_samples

SWAP_WARMUP_DEFAULT = 500
VAL_QUARTILE_TIMESTEPS = 4

# Everything that means "the user's input is wrong", reported without a traceback by the CLI.
USER_ERRORS = (ConfigError, DatasetError, InitError, ResumeStateError, TrainingDiverged)


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


class _StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop after the current step; a second one kills."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def install(self) -> None:
        if not _in_main_thread():
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


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _lowres_size(options: dict) -> int:
    return options["image_size"] // 4 if options["super_res"] else 0


def _model_from_resume(state: dict, run_dir: Path, vocab_path: str) -> ModelSetup:
    from finetune.model import build_model
    from finetune.tokenizers import get_tokenizer

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


def _reset_accelerate_state() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _reduce_sum(accelerator):
    def reduce(t: torch.Tensor) -> torch.Tensor:
        return accelerator.reduce(t, "sum") if accelerator.num_processes > 1 else t

    return reduce


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) a training run described by `config`; see `python -m finetune train --help`."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    run_dir = Path(config.run_dir)

    # ---- resume or fresh run -------------------------------------------------------------------------------
    resume_path, resume_state = None, None
    if config.resume:
        resume_path = find_checkpoint(run_dir, config.resume)
        resume_state = read_state(resume_path)
        config, changed = merge_for_resume(resume_state["config"], config)
    else:
        if list_checkpoints(run_dir):
            raise ConfigError(
                f"{run_dir} already holds checkpoints of a run: pass --resume latest to continue it, "
                "or choose a new --run-dir"
            )
        launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        if config.mixed_precision == "no" and launcher_precision in ("bf16", "fp16"):
            config = dataclasses.replace(config, mixed_precision=launcher_precision)  # accelerate launch's flag

    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("--mixed-precision fp16 needs a GPU; use bf16 (or no) on the CPU")
    if config.threads:
        torch.set_num_threads(config.threads)
    # Launched as several processes (accelerate launch --multi_gpu / torchrun) on a machine without CUDA:
    # Accelerate only forms a process group on the CPU (gloo) when told so.
    cpu_group = not torch.cuda.is_available() and int(os.environ.get("LOCAL_RANK", -1)) != -1
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        _reset_accelerate_state()  # a second train() in one process (notebook, tests) may change precision
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=cpu_group)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process

    # ---- data, checked before the model is built when its size is known up front -------------------------------
    image_size = (
        resume_state["model_options"]["image_size"]
        if resume_state is not None
        else planned_image_size(config.init, config.preset)
    )
    if image_size:
        dataset = resolve_dataset(config.data, image_size, config.data_size)
        precheck(dataset, image_size, decode_rgb)

    # ---- model and tokenizer ---------------------------------------------------------------------------------
    if resume_state is not None:
        setup = _model_from_resume(resume_state, run_dir, config.vocab_path)
    else:
        setup = setup_model(
            config.init, config.preset, config.tokenizer, config.vocab_path, config.seed, config.init_from_ema
        )
    model, options, tokenizer = setup.model, setup.options, setup.tokenizer
    diffusion = diffusion_from_options(options, timestep_respacing="")
    if image_size != options["image_size"]:
        image_size = options["image_size"]
        dataset = resolve_dataset(config.data, image_size, config.data_size)
        precheck(dataset, image_size, decode_rgb)
    maker = SampleMaker(
        image_size=image_size,
        lowres_size=_lowres_size(options),
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

    # ---- what trains ----------------------------------------------------------------------------------------
    text_warmup = config.text_warmup_steps
    if text_warmup < 0:
        text_warmup = SWAP_WARMUP_DEFAULT if setup.vocab_swapped else 0
    if text_warmup and config.train_scope == "unet":
        raise ConfigError("--text-warmup-steps trains only the text side, but --train-scope unet freezes it")
    has_text = any(is_text_side(n) for n, _ in model.named_parameters())
    if config.train_scope == "text" and not has_text:
        raise ConfigError("--train-scope text: this model has no text transformer")
    for name, p in model.named_parameters():
        frozen = (config.train_scope == "unet" and is_text_side(name)) or (
            config.train_scope == "text" and not is_text_side(name)
        )
        p.requires_grad_(not frozen)
    if config.grad_checkpointing:
        model.set_gradient_checkpointing(True)
    channels_last = use_channels_last(config.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    if config.compile:
        model.compile()  # in place: parameter names (checkpoints, EMA) stay those of the eager model

    # ---- run folder ------------------------------------------------------------------------------------------
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_state is None:
            tok_dir = run_dir / "tokenizer"
            tok_dir.mkdir(exist_ok=True)
            tokenizer.save_files(tok_dir)
        save_resolved(
            config,
            run_dir / "config.yaml",
            {
                "model_options": options,
                "preset": setup.preset,
                "init_source": setup.source,
                "vocab_swapped": setup.vocab_swapped,
                "text_warmup_steps": text_warmup,
                "dataset": dataset.description,
                "dataset_manifest_sha256": dataset.manifest_sha256,
                "processes": world,
            },
        )
    accelerator.wait_for_everyone()

    # ---- optimizer, EMA, state -------------------------------------------------------------------------------
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable,
        lr=config.lr,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
        fused=fused_adamw_available(device),
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    unet_params = [p for n, p in unwrapped.named_parameters() if p.requires_grad and not is_text_side(n)]
    ema = EMA(unwrapped, config.ema_decay) if config.ema_decay > 0 else None
    guard = StepGuard(config.nan_max_consecutive, config.spike_factor, config.spike_window)
    set_seed(config.seed, device_specific=True)
    generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + rank)
    layout = StreamLayout(world, rank, max(1, config.num_workers))
    tracker = PositionTracker(layout)
    checkpointer = Checkpointer(run_dir, config.keep_checkpoints, rank, is_main, accelerator.wait_for_everyone)
    checkpointer.clean_partial()
    step = 0
    val_history: list[dict] = []
    notes = list(setup.notes)

    if resume_path is not None:
        ckpt = checkpointer.load(resume_path, world)
        unwrapped.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        if ema is not None:
            if ckpt["ema"] is None:
                raise ResumeStateError(f"{resume_path} has no EMA weights but --ema-decay is set")
            ema.load_state_dict(ckpt["ema"], state["ema_updates"])
        step = int(state["step"])
        guard.load_state_dict(state.get("guard", {}))
        val_history = state.get("val_history", [])
        if accelerator.scaler is not None and state.get("grad_scaler"):
            accelerator.scaler.load_state_dict(state["grad_scaler"])
        if ckpt["rank_tensors"] is not None:
            restore_rng(generator, ckpt["rank_tensors"], ckpt["rank_plain"]["rng"])
            tracker, note = PositionTracker.from_state(ckpt["rank_plain"]["data"], layout)
            if note:
                notes.append(note)
        else:
            notes.append(
                f"process {rank} has no saved RNG/data state (more processes than before): its data "
                "starts from the beginning"
            )
        notes.insert(0, f"resumed from {resume_path} at step {step}" + (f" ({', '.join(changed)})" if changed else ""))

    # ---- data loaders ----------------------------------------------------------------------------------------
    stream = TrainStream(
        dataset.shards,
        maker,
        tokenizer,
        config.batch_size,
        config.shuffle_buffer,
        config.seed,
        layout,
        start=dict(tracker.places),
        worker_offset=tracker.loader_offset(),
    )
    loader = make_loader(stream, config.num_workers, pin_memory=device.type == "cuda")
    val_all = []
    if config.val_samples:
        val_all = val_samples(find_records(dataset, "val", config.val_samples), maker, config.seed)
        if not val_all:
            notes.append("the dataset has no val split: validation loss is off")
    val_mine = val_all[rank::world]
    grid = None
    if is_main and config.sample_every >= 0:
        grid_source = val_all or val_samples(
            find_records(dataset, "train", config.num_sample_prompts), maker, config.seed
        )
        prompts = config.sample_prompts or [s["caption"] for s in grid_source[: config.num_sample_prompts]]
        grid = grid_spec(prompts, grid_source, bool(options["super_res"]), bool(options["inpaint"]))

    monitor = Monitor(run_dir, is_main, config.progress, step, config.max_steps)
    key_log = None
    if config.log_sample_keys:
        key_path = run_dir / f"sample_keys-rank{rank}.jsonl"
        _truncate_metrics(key_path, step)
        key_log = open(key_path, "a", encoding="utf-8")
    for note in notes:
        monitor.message(note)
    if is_main and grid is not None and step == 0:
        monitor.text(0, "samples/prompts", "\n".join(f"{i}. {p}" for i, p in enumerate(grid.prompts)))

    stop = _StopFlag()
    stop.install()
    stats = IntervalStats(diffusion.num_timesteps, device)
    samples_per_step = config.batch_size * config.grad_accum * world
    fp16 = config.mixed_precision == "fp16"
    last_ckpt = None
    interrupted = False

    def autocast():
        return accelerator.autocast()

    def run_validation():
        if not val_all:
            return None
        result = validate(
            unwrapped,
            diffusion,
            tokenizer,
            val_mine,
            config.batch_size,
            config.seed,
            device,
            autocast,
            _reduce_sum(accelerator),
            config.loss_type,
            channels_last,
        )
        monitor.scalars(step, result)
        entry = {"step": step, **result}
        val_history.append(entry)
        monitor.message(f"step {step}: val loss {result['val/loss']:.4f} (mse {result['val/mse']:.4f})")
        return entry

    def sample_grid():
        if grid is None:
            return
        if is_main:
            with ema.swapped_in(unwrapped) if ema is not None else contextlib.nullcontext():
                unwrapped.eval()
                image = draw_grid(
                    unwrapped,
                    diffusion,
                    tokenizer,
                    grid,
                    guidance_scale=config.guidance_scale,
                    sampler=config.sample_sampler,
                    steps=config.sample_steps,
                    seed=config.sample_seed,
                    device=device,
                    autocast=autocast,
                )
                unwrapped.train()
            monitor.image(step, "samples/grid", image)
            save_png(run_dir / "samples" / f"step-{step:08d}.png", image)
            monitor.flush()
        accelerator.wait_for_everyone()

    def save_checkpoint():
        rank_tensors, rank_rng = rng_state(generator)
        state = {
            "step": step,
            "config": config.to_dict(),
            "model_options": options,
            "preset": setup.preset,
            "vocab_swapped": setup.vocab_swapped,
            "ema_updates": ema.updates if ema is not None else 0,
            "guard": guard.state_dict(),
            "val_history": val_history,
            "text_warmup_steps": text_warmup,
            "grad_scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "time": time.time(),
        }
        path = checkpointer.save(
            step,
            unwrapped.state_dict(),
            ema.state_dict() if ema is not None else None,
            optimizer.state_dict(),
            state,
            rank_tensors,
            {"rng": rank_rng, "data": tracker.state()},
        )
        monitor.message(f"checkpoint saved: {path}")
        return path

    data_iter = None
    pending = []  # inputs fetched and sent to the device while the previous step waited on its host sync

    def next_inputs():
        if pending:
            return pending.pop()
        batch = next(data_iter)  # noqa: F821 (bound below before the first call; `del`-ed after the loop)
        return (batch, *model_inputs(batch, device, channels_last))

    try:
        if step == 0 and config.val_every:
            run_validation()
        data_iter = iter(loader)
        while step < config.max_steps:
            text_only = step < text_warmup
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(
                    step, config.lr_warmup_steps, config.max_steps, config.lr_schedule, config.min_lr_ratio
                )
            step_loss = torch.zeros((), device=device)
            for micro in range(config.grad_accum):
                batch, x0, kwargs = next_inputs()
                tracker.update(batch)  # only once used, so a checkpoint never counts a fetched-ahead batch
                stats.add_skipped(int(batch["skipped"]))
                if key_log is not None:
                    key_log.write(json.dumps({"step": step + 1, "micro": micro, "keys": batch["keys"]}) + "\n")
                t = diffusion.sample_timesteps(x0.shape[0], device=device, generator=generator)
                noise = torch.randn(x0.shape, generator=generator, device=device)
                if channels_last:
                    noise = noise.contiguous(memory_format=torch.channels_last)
                last = micro == config.grad_accum - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(model):
                    losses = diffusion.training_losses(
                        model,
                        x0,
                        t,
                        model_kwargs=kwargs,
                        noise=noise,
                        loss_type=config.loss_type,
                        mse_weighting=config.mse_weighting,
                        mse_weight_cap=config.mse_weight_cap,
                    )
                    loss = losses["loss"].mean()
                    accelerator.backward(loss / config.grad_accum)
                stats.add_micro_batch(losses, t)
                step_loss += loss.detach() / config.grad_accum
            if text_only:
                for p in unet_params:
                    p.grad = None
            grad_norm = accelerator.clip_grad_norm_(
                [p for p in unwrapped.parameters() if p.grad is not None],
                config.max_grad_norm if config.max_grad_norm > 0 else float("inf"),
            )
            flags = torch.stack(
                [
                    step_loss.float(),
                    torch.as_tensor(grad_norm, device=device).float(),
                    torch.full((), float(stop.signum is not None), device=device),
                ]
            )  # no copy
            if world > 1:
                flags = accelerator.reduce(flags, "mean")
            if step + 1 < config.max_steps:
                pending.append(next_inputs())  # the loader and the copy overlap the device's work before the sync
            loss_v, gnorm_v, stop_v = flags.tolist()  # the one host sync of a step: the guards need these
            if fp16 and math.isfinite(loss_v) and not math.isfinite(gnorm_v):
                optimizer.step()  # the grad scaler skips this step and lowers its scale
                skipped = "fp16_overflow"
            else:
                skipped = guard.check(step + 1, loss_v, gnorm_v)
                if skipped is None:
                    optimizer.step()
                    if optimizer.step_was_skipped:
                        skipped = "fp16_overflow"
                    elif ema is not None:
                        ema.update(unwrapped)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            stats.steps += 1
            stats.samples += samples_per_step
            if math.isfinite(gnorm_v):
                stats.grad_norms.append(gnorm_v)
            monitor.step(
                {
                    "step": step,
                    "loss": loss_v if math.isfinite(loss_v) else None,
                    "grad_norm": gnorm_v if math.isfinite(gnorm_v) else None,
                    "lr": optimizer.param_groups[0]["lr"],
                    "skipped": skipped,
                    "time": round(time.time(), 4),
                }
            )
            if skipped in ("nonfinite", "spike"):
                monitor.message(f"step {step}: skipped ({skipped}; loss {loss_v}, grad norm {gnorm_v})")

            if step % config.log_every == 0 or step == config.max_steps:
                values = stats.summary(_reduce_sum(accelerator))
                values.update(
                    {
                        "train/lr": optimizer.param_groups[0]["lr"],
                        "train/skipped_nonfinite": guard.skipped_nonfinite,
                        "train/skipped_spikes": guard.skipped_spikes,
                        "train/text_only": float(text_only),
                    }
                )
                monitor.scalars(step, values)
                stats.reset()
            if (config.val_every and step % config.val_every == 0) or step == config.max_steps:
                run_validation()
            if (config.sample_every > 0 and step % config.sample_every == 0) or (
                config.sample_every >= 0 and step == config.max_steps
            ):
                sample_grid()
            stopping = stop_v > 0
            if config.checkpoint_every >= 0 and (
                stopping
                or step == config.max_steps
                or (config.checkpoint_every and step % config.checkpoint_every == 0)
            ):
                last_ckpt = save_checkpoint()
            if stopping:
                interrupted = True
                monitor.message(f"stopped by signal at step {step}; resume with --resume latest")
                break
        model_dir = None
        if not interrupted and config.export_model:
            model_dir = export_model_folder(
                run_dir, unwrapped, options, tokenizer, ema, setup, config, dataset, step, is_main
            )
            accelerator.wait_for_everyone()
    finally:
        stop.restore()
        monitor.close()
        if key_log is not None:
            key_log.close()
        del data_iter, loader
    result = TrainResult(
        run_dir, step, interrupted, stop.signum, model_dir if not interrupted else None, last_ckpt, val_history, is_main
    )
    accelerator.wait_for_everyone()
    return result


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
    from .stream import collate

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
    run_dir: Path,
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
    """The final weights (+EMA) as a model folder the samplers read, written atomically to run_dir/model."""
    from finetune.model_folder import save_model_folder

    final = run_dir / "model"
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
