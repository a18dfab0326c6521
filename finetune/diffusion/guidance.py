"""Classifier-free guidance as GLIDE does it.

The sampler works on a batch of B images; the guided model function runs ONE forward pass over
2B rows — the B images with their captions, then the same B images with the empty caption — and
returns eps = eps_uncond + scale * (eps_cond - eps_uncond) with the conditional rows' variance
channels.

Usage::

    kwargs = cond_uncond_kwargs({"text_emb": model.encode_text(tokens, mask)},
                                {"text_emb": model.encode_text(*tokenizer.empty(B))})
    model_fn = classifier_free_guidance(model, guidance_scale=3.0)
    samples = sample(diffusion, model_fn, (B, 3, 64, 64), model_kwargs=kwargs)
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def classifier_free_guidance(model: Callable[..., torch.Tensor], guidance_scale: float) -> Callable[..., torch.Tensor]:
    """A ``model_fn(x, t, **kwargs)`` for the samplers that guides ``model``.

    ``kwargs`` must hold 2B rows, conditional first (build them with ``cond_uncond_kwargs``);
    ``x`` and ``t`` hold B rows. Scale 1 gives the conditional model, 0 the unconditional one.
    """
    scale = float(guidance_scale)

    def guided(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        batch, channels = x.shape[:2]
        out = model(torch.cat([x, x]), torch.cat([t, t]), **kwargs)
        if isinstance(out, tuple):
            out = out[0]
        if out.shape[0] != 2 * batch:
            raise ValueError(f"guided model returned {out.shape[0]} rows for a doubled batch of {2 * batch}")
        return guided_output(out[:batch], out[batch:], scale, channels)

    guided.guidance_scale = scale
    # Lets the samplers find the model's device when no noise is given.
    if hasattr(model, "parameters"):
        guided.parameters = model.parameters
    return guided


def guided_output(cond: torch.Tensor, uncond: torch.Tensor, scale: float, channels: int) -> torch.Tensor:
    """GLIDE's guided model output from the conditional and unconditional outputs (eps channels first, then
    variance values): eps = uncond + scale * (cond - uncond), with the conditional variance channels."""
    eps = uncond[:, :channels] + scale * (cond[:, :channels] - uncond[:, :channels])
    return torch.cat([eps, cond[:, channels:]], dim=1)


def cond_uncond_kwargs(cond: dict, uncond: dict) -> dict:
    """Stack conditional and unconditional model kwargs into the 2B-row kwargs the guided model
    expects. Keys missing from ``uncond`` (e.g. ``low_res``, ``inpaint_image``, ``inpaint_mask``)
    are shared: the conditional value is repeated. ``text_emb`` objects are concatenated with the
    model core's ``concat_text_emb``; tensors with ``torch.cat``."""
    unknown = set(uncond) - set(cond)
    if unknown:
        raise ValueError(f"unconditional kwargs {sorted(unknown)} have no conditional counterpart")
    stacked = {}
    for key, value in cond.items():
        other = uncond.get(key, value)
        if isinstance(value, torch.Tensor):
            if not isinstance(other, torch.Tensor) or other.shape[1:] != value.shape[1:]:
                raise ValueError(f"kwarg {key!r}: conditional and unconditional values do not stack")
            stacked[key] = torch.cat([value, other.to(value.device)])
        elif value is None:
            stacked[key] = None
        else:
            from finetune.model import concat_text_emb  # not at the top: finetune.model imports finetune.diffusion

            stacked[key] = concat_text_emb([value, other])
    return stacked
