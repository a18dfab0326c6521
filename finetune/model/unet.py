"""GLIDE's text-conditioned ADM UNet, one class for all four variants (base, super-resolution,
inpainting, super-resolution inpainting); the variant only changes how the input is assembled."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from .layers import (
    AttentionBlock,
    Downsample,
    GroupNorm32,
    ResBlock,
    TimestepEmbedSequential,
    Upsample,
    timestep_embedding,
    zero_,
)
from .options import architecture
from .text_encoder import LayerNorm32, TextEmbedding, Transformer


def pixel_coordinates(x: torch.Tensor) -> torch.Tensor:
    """[batch, 2, H, W]: each pixel's x (left -1 .. right 1) and y (top -1 .. bottom 1) at its centre."""
    batch, _, height, width = x.shape
    ys = torch.linspace(-1.0 + 1.0 / height, 1.0 - 1.0 / height, height, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0 + 1.0 / width, 1.0 - 1.0 / width, width, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).expand(batch, 2, height, width)


class _BlockFactory:
    """Builds the UNet's encoder, middle and decoder blocks in order, tracking the running width (`ch`) and the
    downsampling stride (`ds`) from one stage to the next."""

    def __init__(self, options: dict[str, Any], arch: dict[str, Any], emb_dim: int, encoder_channels: int | None):
        self.options, self.arch, self.emb_dim, self.encoder_channels = options, arch, emb_dim, encoder_channels
        self.mc = int(options["num_channels"])
        self.num_res_blocks = int(options["num_res_blocks"])
        self.dropout = float(options["dropout"])
        self.scale_shift = bool(options["use_scale_shift_norm"])
        self.updown = bool(options["resblock_updown"])
        self.channel_mult = arch["channel_mult"]
        self.ch = self.input_ch = int(self.channel_mult[0] * self.mc)
        self.ds = 1

    def _res(self, ch: int, out: int | None, **updown) -> ResBlock:
        return ResBlock(ch, self.emb_dim, self.dropout, out, self.scale_shift, **updown)

    def _attention(self, heads: int) -> AttentionBlock:
        return AttentionBlock(self.ch, heads, int(self.options["num_head_channels"]), self.encoder_channels)

    def encoder(self, in_channels: int) -> tuple[nn.ModuleList, list[int]]:
        blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, self.ch, 3, padding=1))])
        skip_channels = [self.ch]
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                layers: list[nn.Module] = [self._res(self.ch, int(mult * self.mc))]
                self.ch = int(mult * self.mc)
                if self.ds in self.arch["attention_strides"]:
                    layers.append(self._attention(int(self.options["num_heads"])))
                blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(self.ch)
            if level != len(self.channel_mult) - 1:
                down = self._res(self.ch, self.ch, down=True) if self.updown else Downsample(self.ch, True)
                blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(self.ch)
                self.ds *= 2
        return blocks, skip_channels

    def middle(self) -> TimestepEmbedSequential:
        heads = int(self.options["num_heads"])
        return TimestepEmbedSequential(self._res(self.ch, None), self._attention(heads), self._res(self.ch, None))

    def decoder(self, skip_channels: list[int]) -> nn.ModuleList:
        blocks = nn.ModuleList()
        for level, mult in list(enumerate(self.channel_mult))[::-1]:
            for i in range(self.num_res_blocks + 1):
                layers = [self._res(self.ch + skip_channels.pop(), int(self.mc * mult))]
                self.ch = int(self.mc * mult)
                if self.ds in self.arch["attention_strides"]:
                    layers.append(self._attention(self.arch["num_heads_upsample"]))
                if level and i == self.num_res_blocks:
                    layers.append(self._res(self.ch, self.ch, up=True) if self.updown else Upsample(self.ch, True))
                    self.ds //= 2
                blocks.append(TimestepEmbedSequential(*layers))
        return blocks


class Text2ImUNet(nn.Module):
    """Build with `finetune.model.build_model(options)`; `options` are OpenAI's option names."""

    def __init__(self, options: dict[str, Any]):
        super().__init__()
        arch = architecture(options)
        self.options = dict(options)
        self.image_size = arch["image_size"]
        self.in_channels = arch["in_channels"]
        self.super_res = bool(options["super_res"])
        self.inpaint = bool(options["inpaint"])
        self.coord_channels = bool(options.get("coord_channels", False))
        self.text_ctx = int(options["text_ctx"])
        self.xf_width = arch["xf_width"]
        self.xf_padding = bool(options["xf_padding"])
        self.vocab_size = arch["vocab_size"]
        self.tokenizer_name = options["tokenizer"]
        self.model_channels = mc = int(options["num_channels"])
        # Each side of an input must halve cleanly at every level; any such H x W works (convolutions, and attention
        # over the flattened feature map): the square image_size is the training size, not the only one.
        self.downsampling_factor = 2 ** (len(arch["channel_mult"]) - 1)
        self._fp16_blocks = False
        self.gradient_checkpointing = False

        # Built in GLIDE's order (the parameters' random initialisation follows it).
        blocks = _BlockFactory(options, arch, emb_dim=mc * 4, encoder_channels=self.xf_width or None)
        self.time_embed = nn.Sequential(
            nn.Linear(mc, blocks.emb_dim), nn.SiLU(), nn.Linear(blocks.emb_dim, blocks.emb_dim)
        )
        self.input_blocks, skip_channels = blocks.encoder(self.in_channels)
        self.middle_block = blocks.middle()
        self.output_blocks = blocks.decoder(skip_channels)
        self.out = nn.Sequential(
            GroupNorm32(blocks.ch, swish=True), nn.Identity(), zero_(nn.Conv2d(blocks.input_ch, 6, 3, padding=1))
        )
        if self.xf_width:
            self._build_text_side(options, blocks.emb_dim)

        if options["use_fp16"]:
            self.convert_to_fp16()

    # ----------------------------------------------------------------------------------- set-up
    def _build_text_side(self, options: dict[str, Any], emb_dim: int) -> None:
        w = self.xf_width
        self.transformer = Transformer(w, int(options["xf_layers"]), int(options["xf_heads"]))
        self.final_ln = LayerNorm32(w) if options["xf_final_ln"] else None
        self.token_embedding = nn.Embedding(self.vocab_size, w)
        self.positional_embedding = nn.Parameter(torch.empty(self.text_ctx, w))
        self.transformer_proj = nn.Linear(w, emb_dim)
        if self.xf_padding:
            self.padding_embedding = nn.Parameter(torch.empty(self.text_ctx, w))
        self._init_text_parameters()

    def _init_text_parameters(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if self.xf_padding:
            nn.init.normal_(self.padding_embedding, std=0.01)

    def convert_to_fp16(self) -> None:
        """GLIDE's `use_fp16`: UNet-block convolutions and the text transformer's linears in float16;
        norms, embeddings and the output layer stay float32. (Autocast is the better choice for training.)"""

        def half_(module: nn.Module, kinds: tuple[type, ...]) -> None:
            for m in module.modules():
                if isinstance(m, kinds):
                    m.half()

        for blocks in (self.input_blocks, self.middle_block, self.output_blocks):
            half_(blocks, (nn.Conv1d, nn.Conv2d))
        if self.xf_width:
            half_(self.transformer, (nn.Linear, nn.Conv1d, nn.Conv2d))
            self.transformer_proj.half()
            self.token_embedding.half()
        self._fp16_blocks = True

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the UNet blocks' activations: float16 after convert_to_fp16, else the weights' dtype."""
        return torch.float16 if self._fp16_blocks else self.input_blocks[0][0].weight.dtype

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each UNet block and transformer layer in the backward pass (less memory, ~30% more compute)."""
        self.gradient_checkpointing = bool(enabled)
        if self.xf_width:
            self.transformer.gradient_checkpointing = bool(enabled)

    # ----------------------------------------------------------------------------------- text
    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> TextEmbedding:
        """Run the caption transformer once; pass the result to forward as `text_emb=`."""
        if not self.xf_width:
            raise ValueError("this model has no text transformer (xf_width is 0)")
        tokens, mask = self._check_tokens(tokens, mask)
        xf_in = self.token_embedding(tokens) + self.positional_embedding[None]
        if self.xf_padding:
            xf_in = torch.where(mask[..., None], xf_in, self.padding_embedding[None])
        xf_out = self.transformer(xf_in.to(self.compute_dtype))
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        # GLIDE pools the last position (a padding slot for short captions), not the end token.
        return TextEmbedding(pooled=self.transformer_proj(xf_out[:, -1]), sequence=xf_out)

    def _check_tokens(self, tokens, mask):
        if tokens is None:
            raise ValueError("tokens are required (or pass text_emb= from model.encode_text)")
        if not torch.is_tensor(tokens) or tokens.dim() != 2 or tokens.shape[1] != self.text_ctx:
            shape = tuple(tokens.shape) if torch.is_tensor(tokens) else type(tokens).__name__
            raise ValueError(f"tokens must be a [batch, text_ctx={self.text_ctx}] tensor, got {shape}")
        if tokens.is_floating_point():
            raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        tokens = tokens.long()
        # Checked only on the host: on an accelerator reading the range would stall every forward on a sync
        # (callers there pass ids from our tokenizers, which are in range by construction).
        if tokens.numel() and tokens.device.type == "cpu" and not torch.compiler.is_compiling():
            low, high = (int(v) for v in torch.aminmax(tokens))
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f"token ids must lie in [0, {self.vocab_size}) for the {self.tokenizer_name} "
                    f"vocabulary; got range [{low}, {high}]"
                )
        if self.xf_padding:
            if mask is None:
                raise ValueError("mask is required with tokens (False marks padding positions)")
            if mask.shape != tokens.shape:
                raise ValueError(f"mask shape {tuple(mask.shape)} must equal tokens shape {tuple(tokens.shape)}")
            mask = mask.to(device=tokens.device, dtype=torch.bool)
        return tokens, mask

    # ----------------------------------------------------------------------------------- forward
    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        tokens: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        text_emb: TextEmbedding | None = None,
        low_res: torch.Tensor | None = None,
        inpaint_image: torch.Tensor | None = None,
        inpaint_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B,3,H,W] and timesteps [B] -> [B,6,H,W] (eps in channels 0-2, variance values in 3-5).
        H and W are multiples of `downsampling_factor`; they need not equal each other or image_size."""
        h = self._assemble_input(x, low_res, inpaint_image, inpaint_mask)
        batch = x.shape[0]
        timesteps = self._check_timesteps(timesteps, batch, x.device)
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))
        encoder_seq = None
        if self.xf_width:
            if text_emb is None:
                text_emb = self.encode_text(tokens, mask)
            elif tokens is not None:
                raise ValueError("pass either tokens/mask or text_emb, not both")
            elif not isinstance(text_emb, TextEmbedding):
                raise TypeError(f"text_emb must come from model.encode_text, got {type(text_emb).__name__}")
            if len(text_emb) != batch:
                raise ValueError(f"text batch size {len(text_emb)} does not match image batch size {batch}")
            emb = emb + text_emb.pooled.to(emb)
            encoder_seq = text_emb.sequence

        h = h.to(self.compute_dtype)
        skips = []
        for block in self.input_blocks:
            h = self._run(block, h, emb, encoder_seq)
            skips.append(h)
        h = self._run(self.middle_block, h, emb, encoder_seq)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb, encoder_seq)
        return self.out(h.to(self.out[2].weight.dtype)).to(x.dtype)

    def _run(self, block, h, emb, encoder_seq):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, h, emb, encoder_seq, use_reentrant=False)
        return block(h, emb, encoder_seq)

    def _check_timesteps(self, timesteps, batch: int, device) -> torch.Tensor:
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor(timesteps, device=device)
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(batch)
        if timesteps.dim() != 1 or timesteps.shape[0] != batch:
            raise ValueError(f"timesteps must be a 1-D tensor of {batch} values, got shape {tuple(timesteps.shape)}")
        return timesteps

    def _check_image(self, name: str, t, batch: int, channels: int, size: tuple[int, int] | None) -> None:
        if not torch.is_tensor(t) or t.dim() != 4 or t.shape[0] != batch or t.shape[1] != channels:
            shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise ValueError(f"{name} must be a [{batch}, {channels}, H, W] tensor, got {shape}")
        if size is not None and tuple(t.shape[2:]) != size:
            raise ValueError(f"{name} must be {size[0]}x{size[1]} pixels, got {t.shape[2]}x{t.shape[3]}")

    def _check_sample_size(self, size: tuple[int, int]) -> None:
        factor = self.downsampling_factor
        if size[0] < factor or size[1] < factor or size[0] % factor or size[1] % factor:
            raise ValueError(
                f"x is {size[0]}x{size[1]} pixels; height and width must be positive multiples of {factor} "
                f"(this model halves them {factor.bit_length() - 1} times)"
            )

    def _assemble_input(self, x, low_res, inpaint_image, inpaint_mask) -> torch.Tensor:
        if not torch.is_tensor(x) or x.dim() != 4:
            raise ValueError(
                f"x must be a [batch, 3, H, W] tensor, got {tuple(x.shape) if torch.is_tensor(x) else x!r}"
            )
        batch, size = x.shape[0], tuple(x.shape[2:])
        self._check_image("x", x, batch, 3, None)
        self._check_sample_size(size)
        parts = [x]
        if self.inpaint:
            if inpaint_image is None:
                inpaint_image = torch.zeros_like(x)
            if inpaint_mask is None:
                inpaint_mask = torch.zeros_like(x[:, :1])
            self._check_image("inpaint_image", inpaint_image, batch, 3, size)
            self._check_image("inpaint_mask", inpaint_mask, batch, 1, size)
            parts += [inpaint_image * inpaint_mask, inpaint_mask]
        elif inpaint_image is not None or inpaint_mask is not None:
            raise ValueError("inpaint_image/inpaint_mask were given but this is not an inpainting model")
        if self.super_res:
            if low_res is None:
                raise ValueError("low_res is required by a super-resolution model")
            self._check_image("low_res", low_res, batch, 3, None)
            parts.append(F.interpolate(low_res, size, mode="bilinear", align_corners=False))
        elif low_res is not None:
            raise ValueError("low_res was given but this is not a super-resolution model")
        if self.coord_channels:
            parts.append(pixel_coordinates(x))
        return torch.cat(parts, dim=1) if len(parts) > 1 else x
