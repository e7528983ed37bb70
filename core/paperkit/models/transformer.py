"""A tiny pre-norm transformer encoder.

Token inputs (``modular-arithmetic`` with ``encoding = "tokens"``) are embedded;
feature inputs are cut into patches of ``patch`` features (the digits' rows)
and projected. A learned position embedding is added; the mean over positions
feeds the head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit.models.base import Classifier


class Transformer(Classifier):
    def __init__(self, info: Any, config: Any) -> None:
        super().__init__()
        if config.d_model % config.heads:
            raise ValueError("transformer: heads must divide d_model")
        self.tokens = info.input_kind == "tokens"
        if self.tokens:
            self.embed: nn.Module = nn.Embedding(info.vocab_size, config.d_model)
            seq = info.seq_len
        else:
            if info.input_dim % config.patch:
                raise ValueError(f"transformer: patch {config.patch} must divide the input size {info.input_dim}")
            self.embed = nn.Linear(config.patch, config.d_model)
            seq = info.input_dim // config.patch
        self.patch = config.patch
        self.position = nn.Parameter(torch.zeros(1, seq, config.d_model))
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.heads,
            config.ff_mult * config.d_model,
            config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, info.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.long()) if self.tokens else self.embed(x.reshape(x.shape[0], -1, self.patch))
        h = self.encoder(h + self.position)
        return self.norm(h).mean(dim=1)


def build(config: Any, info: Any) -> Transformer:
    return Transformer(info, config)
