"""Building blocks of GLIDE's ADM UNet: normalisation, timestep embedding, residual and attention blocks.

Module and parameter names follow OpenAI's layout so released checkpoints load with strict=True.
Attention runs through ``scaled_dot_product_attention``; normalisation layers compute in float32
(also under autocast), as GLIDE does.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class GroupNorm32(nn.GroupNorm):
    """32-group GroupNorm with float32 statistics and float32 affine parameters, returning the input
    dtype, with an optional fused SiLU."""

    def __init__(self, channels: int, swish: bool = False, eps: float = 1e-5):
        super().__init__(num_groups=32, num_channels=channels, eps=eps)
        self.swish = swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 and x.device.type == "cpu":
            # The CPU kernel takes half-precision input with float32 weights and accumulates in float32:
            # the same numbers as an explicit float32 round trip, without the two copies.
            with torch.autocast(device_type="cpu", enabled=False):
                y = F.group_norm(x, self.num_groups, self.weight.float(), self.bias.float(), self.eps)
                return F.silu(y) if self.swish else y
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
            if self.swish:
                y = F.silu(y)
        return y.to(x.dtype)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, shape [N, dim]."""
    half = dim // 2
    make = _timestep_frequencies if torch.compiler.is_compiling() else _cached_timestep_frequencies
    freqs = make(half, max_period, timesteps.device)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _timestep_frequencies(half: int, max_period: float, device: torch.device) -> torch.Tensor:
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(device)


@functools.lru_cache(maxsize=16)
def _cached_timestep_frequencies(half: int, max_period: float, device: torch.device) -> torch.Tensor:
    """Built on the CPU once per device: a fresh host-to-device copy on every forward would stall on a sync."""
    with torch.inference_mode(False):  # usable by training forwards even when first built under inference mode
        return _timestep_frequencies(half, max_period, device)


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 convolution."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """2x downsampling by a strided 3x3 convolution or by 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            if out_channels != channels:
                raise ValueError("average-pool downsampling cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep(+text) embedding, optionally up- or down-sampling."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.out_channels = out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(channels, swish=True),
            nn.Identity(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels, swish=not use_scale_shift_norm),
            nn.SiLU() if use_scale_shift_norm else nn.Identity(),
            nn.Dropout(p=dropout),
            zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[0](x)
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = torch.addcmul(shift, self.out_layers[0](h), 1 + scale)
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class PointwiseConv1d(nn.Conv1d):
    """A kernel-size-1 Conv1d (OpenAI's parameter layout: weight [C_out, C_in, 1]) applied to channels-last
    sequences [B, T, C_in] -> [B, T, C_out], as the linear map it is.

    Attention works on [B, T, C] sequences, where a matrix multiply is several times faster than a convolution
    over [B, C, T]. Applying the weight through this module's own forward (rather than `F.linear` on
    `conv.weight` from outside) is what lets a wrapper such as a LoRA layer see and change the computation."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.squeeze(-1), self.bias)


class AttentionBlock(nn.Module):
    """Self-attention over spatial positions; the text sequence joins as extra keys and values."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        encoder_channels: int | None = None,
    ):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            self.num_heads = channels // num_head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = PointwiseConv1d(channels, channels * 3)
        if encoder_channels is not None:
            self.encoder_kv = PointwiseConv1d(encoder_channels, channels * 2)
        self.proj_out = zero_(PointwiseConv1d(channels, channels))

    def forward(self, x: torch.Tensor, encoder_seq: torch.Tensor | None = None) -> torch.Tensor:
        b, c, height, width = x.shape
        heads = self.num_heads
        ch = c // heads
        # Work on [B, T, C] sequences; each head's channels are laid out [q | k | v] as in OpenAI's layout.
        h = self.norm(x).flatten(2).transpose(1, 2)
        qkv = self.qkv(h).view(b, -1, heads, 3 * ch)
        q, k, v = qkv.split(ch, dim=-1)
        if encoder_seq is not None:
            kv = self.encoder_kv(encoder_seq.to(h.dtype)).view(b, -1, heads, 2 * ch)
            ek, ev = kv.split(ch, dim=-1)
            k = torch.cat([ek.to(k.dtype), k], dim=1)
            v = torch.cat([ev.to(v.dtype), v], dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, -1, c)
        out = self.proj_out(out)
        return x + out.transpose(1, 2).reshape(b, c, height, width).to(x.dtype)


class TimestepEmbedSequential(nn.Sequential):
    """A sequence of layers; residual blocks get the embedding, attention blocks the text sequence."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, encoder_seq: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, encoder_seq)
            else:
                x = layer(x)
        return x
