"""A small causal (decoder-only) transformer for next-token tasks, with attention written out here.

Pre-norm blocks: ``h + attn(norm(h))``, then ``h + mlp(norm(h))``. The attention is our own
(query, key and value projections, an optional per-head LayerNorm of queries and keys — "QK-norm",
Dehghani et al., 2023 — then ``scaled_dot_product_attention`` with the causal mask), so methods can
reach every projection (``blocks[i].attn.q``, ``.k``, ``.v``, ``.out``). ``features(x)`` is the
final normalized hidden state of every position, shape ``(B, T, d)``; the head maps it to logits
``(B, T, vocabulary)``. ``hidden_states(x)`` returns the input of every block and the output.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit.models.base import Classifier


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, qk_norm: bool, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError("causal-transformer: heads must divide d_model")
        self.heads, self.head_dim, self.dropout = heads, d_model // heads, dropout
        self.q, self.k, self.v = (nn.Linear(d_model, d_model, bias=False) for _ in range(3))
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.q_norm: nn.Module = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(h: torch.Tensor) -> torch.Tensor:
            return h.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = self.q_norm(split(self.q(x))), self.k_norm(split(self.k(x))), split(self.v(x))
        h = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.out(h.transpose(1, 2).reshape(b, t, d))


class DecoderBlock(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        d = config.d_model
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, config.heads, config.qk_norm, config.dropout)
        self.mlp = nn.Sequential(nn.Linear(d, config.ff_mult * d), nn.GELU(), nn.Linear(config.ff_mult * d, d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class CausalTransformer(Classifier):
    def __init__(self, info: Any, config: Any) -> None:
        super().__init__()
        if info.input_kind != "tokens" or info.vocab_size is None or info.seq_len is None:
            raise ValueError("causal-transformer needs a token task (next-token)")
        self.embed = nn.Embedding(info.vocab_size, config.d_model)
        self.position = nn.Parameter(torch.zeros(1, info.seq_len, config.d_model))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, info.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input of every block and the last block's output, each ``(B, T, d)``."""
        h = self.embed(x.long()) + self.position[:, : x.shape[1]]
        states = [h]
        for block in self.blocks:
            h = block(h)
            states.append(h)
        return states

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.long()) + self.position[:, : x.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.norm(h)


def build(config: Any, info: Any) -> CausalTransformer:
    return CausalTransformer(info, config)
