"""Multi-layer perceptron with optional normalization and residual blocks.

Layout: ``stem`` (input -> width), ``blocks`` (``depth`` hidden blocks), ``head``.
Without normalization and with large depth it is the deep un-normalized network
that initialization papers (LSUV, ZerO) are about.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit.models.base import Classifier

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "identity": nn.Identity}


def _norm(kind: str, width: int) -> nn.Module:
    return (
        {"none": nn.Identity, "batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](width)
        if kind != "none"
        else nn.Identity()
    )


class Block(nn.Module):
    """``act(norm(W x))``, or residual ``x + W2 act(norm(W1 x))``."""

    def __init__(self, width: int, config: Any) -> None:
        super().__init__()
        self.residual = config.residual
        self.linear1 = nn.Linear(width, width, bias=config.bias)
        self.norm = _norm(config.norm, width)
        self.act = ACTIVATIONS[config.activation]()
        self.drop = nn.Dropout(config.dropout)
        self.linear2 = nn.Linear(width, width, bias=config.bias) if config.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.norm(self.linear1(x))))
        return x + self.linear2(h) if self.linear2 is not None else h


class MLP(Classifier):
    def __init__(self, input_dim: int, num_classes: int, config: Any) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Linear(input_dim, config.width, bias=config.bias),
            _norm(config.norm, config.width),
            ACTIVATIONS[config.activation](),
        )
        self.blocks = nn.Sequential(*[Block(config.width, config) for _ in range(config.depth)])
        self.head = nn.Linear(config.width, num_classes, bias=config.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x.flatten(1)))


def build(config: Any, info: Any) -> MLP:
    if info.input_kind != "features":
        raise ValueError('mlp needs feature inputs; use encoding = "one-hot" or the transformer')
    return MLP(info.input_dim, info.num_classes, config)
