"""GLIDE's caption transformer (a CLIP-style pre-LN transformer without an attention mask) and the
`TextEmbedding` value that carries its output into the UNet."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


class LayerNorm32(nn.LayerNorm):
    """LayerNorm that always computes in float32 (also under autocast) and returns the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps)
        return y.to(x.dtype)


class MultiheadAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, width = x.shape
        ch = width // self.heads
        # OpenAI's layout: per head, channels [q | k | v].
        q, k, v = self.c_qkv(x).view(b, n, self.heads, 3 * ch).split(ch, dim=-1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.c_proj(out.transpose(1, 2).reshape(b, n, width))


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(width * 4, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm32(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm32(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


@dataclass(frozen=True)
class TextEmbedding:
    """Encoded captions: `pooled` [B, 4*num_channels] (added to the timestep embedding) and
    `sequence` [B, text_ctx, xf_width] (keys/values for every attention block).

    Produced by `model.encode_text(tokens, mask)` and accepted by `model(..., text_emb=...)`, so a
    sampler encodes a caption once rather than at every step.
    """

    pooled: torch.Tensor
    sequence: torch.Tensor

    def __len__(self) -> int:
        return self.pooled.shape[0]

    def __getitem__(self, index) -> "TextEmbedding":
        return index_text_emb(self, index)

    def to(self, *args, **kwargs) -> "TextEmbedding":
        return TextEmbedding(self.pooled.to(*args, **kwargs), self.sequence.to(*args, **kwargs))

    def detach(self) -> "TextEmbedding":
        return TextEmbedding(self.pooled.detach(), self.sequence.detach())


def concat_text_emb(embeddings: Sequence[TextEmbedding]) -> TextEmbedding:
    """Batch several TextEmbeddings along the batch dimension (like torch.cat)."""
    if not embeddings:
        raise ValueError("concat_text_emb needs at least one TextEmbedding")
    for e in embeddings:
        if not isinstance(e, TextEmbedding):
            raise TypeError(f"concat_text_emb expects TextEmbedding objects, got {type(e).__name__}")
    return TextEmbedding(
        torch.cat([e.pooled for e in embeddings], dim=0),
        torch.cat([e.sequence for e in embeddings], dim=0),
    )


def index_text_emb(embedding: TextEmbedding, index) -> TextEmbedding:
    """Select batch rows (an int, slice, list or index tensor); an int keeps the batch dimension."""
    if isinstance(index, int):
        index = slice(index, index + 1 if index != -1 else None)
    return TextEmbedding(embedding.pooled[index], embedding.sequence[index])
