"""Sampler settings for one stage (base or upsampler), with range checks that give clear messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from data_pipeline.errors import UserError
from finetune.diffusion import defaults
from finetune.diffusion.samplers import DEFAULT_STEPS, SAMPLERS, STEP_COUNT_SAMPLERS, dpm_solver_timesteps
from finetune.diffusion.schedules import space_timesteps

MAX_GUIDANCE = 50.0
PARTWAY_SAMPLERS = ("ancestral", "ddim")  # the samplers that can start part-way (start_step)


class SettingsError(UserError, ValueError):
    """Sampler settings out of range; the message names the stage and the value."""


@dataclass(frozen=True)
class SamplerSettings:
    """`steps`: a respacing spec for ancestral/ddim ("100", "50", "fast27", "ddim25", "10,10,3,2,2"),
    a number of model calls for dpmpp_2m(_sde); None takes the sampler's default. `guidance`: the
    classifier-free guidance scale, None for none (the conditional model alone). `start_step` (upsampler,
    ancestral/ddim): begin at this original timestep from the noised, upsampled low-res image instead of pure
    noise; 0 starts from pure noise as GLIDE does. `placement` (base stage): a caption that names a position ("in
    the top left") gets its subject moved there while the noise is high (`sampling.placement`), and one naming two
    subjects at two places has each half of the picture guided by its subject's own caption (`sampling.regions`)."""

    sampler: str = defaults.SAMPLER
    steps: str | int | None = None
    guidance: float | None = defaults.GUIDANCE
    eta: float = 0.0
    temperature: float = 1.0
    start_step: int = 0
    placement: bool = True

    def resolved(self) -> "SamplerSettings":
        steps = DEFAULT_STEPS.get(self.sampler) if self.steps is None else self.steps
        if self.sampler in STEP_COUNT_SAMPLERS and isinstance(steps, str) and steps.strip().isdigit():
            steps = int(steps)
        elif self.sampler not in STEP_COUNT_SAMPLERS and isinstance(steps, int):
            steps = str(steps)
        return replace(self, steps=steps)

    @property
    def guided(self) -> bool:
        return self.guidance is not None and self.guidance != 1.0

    def check(self, num_timesteps: int, stage: str = "base") -> "SamplerSettings":
        """The resolved settings, or SettingsError naming the stage and the bad value."""
        if self.sampler not in SAMPLERS:
            raise SettingsError(f"{stage}: unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        s = self.resolved()
        if s.sampler in STEP_COUNT_SAMPLERS:
            if not isinstance(s.steps, int) or isinstance(s.steps, bool):
                raise SettingsError(f"{stage}: {s.sampler} takes a number of steps, got {s.steps!r}")
            try:
                dpm_solver_timesteps(num_timesteps, s.steps)
            except ValueError as exc:
                raise SettingsError(f"{stage}: {exc}") from None
        else:
            try:
                space_timesteps(num_timesteps, s.steps)
            except ValueError as exc:
                raise SettingsError(
                    f"{stage}: steps {s.steps!r} is not a usable respacing for {num_timesteps} diffusion steps: {exc}"
                ) from None
        if s.guidance is not None and not 0.0 <= float(s.guidance) <= MAX_GUIDANCE:
            raise SettingsError(f"{stage}: guidance scale must be between 0 and {MAX_GUIDANCE:g}, got {s.guidance}")
        if not 0.0 <= s.eta <= 1.0:
            raise SettingsError(f"{stage}: eta must be between 0 and 1, got {s.eta}")
        if s.eta and s.sampler != "ddim":
            raise SettingsError(f"{stage}: eta applies to the ddim sampler only")
        if s.start_step:
            if s.sampler not in PARTWAY_SAMPLERS:
                raise SettingsError(f"{stage}: a start step applies to the ancestral and ddim samplers only")
            if not 0 < s.start_step < num_timesteps:
                raise SettingsError(
                    f"{stage}: start step must be between 1 and {num_timesteps - 1} "
                    f"(0 = from pure noise), got {s.start_step}"
                )
        if not 0.0 < s.temperature <= 2.0:
            raise SettingsError(f"{stage}: temperature must be in (0, 2], got {s.temperature}")
        return s

    def to_dict(self) -> dict:
        return asdict(self.resolved())


BASE_DEFAULTS = SamplerSettings()
UPSAMPLER_DEFAULTS = SamplerSettings(
    sampler=defaults.UPSAMPLER_SAMPLER,
    steps=defaults.UPSAMPLER_STEPS,
    guidance=defaults.UPSAMPLER_GUIDANCE,
    temperature=defaults.UPSAMPLER_TEMPERATURE,
    start_step=defaults.UPSAMPLER_START_STEP,
)
