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


class Maxout(nn.Module):
    """The maximum over consecutive groups of ``pieces`` units (Goodfellow et al., 2013): width ``k·n`` -> ``n``."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (-1, self.pieces)).amax(-1)


class Sine(nn.Module):
    """``sin(ω0 · x)``, the SIREN activation (Sitzmann et al., 2020; ω0 = 30 in the paper)."""

    def __init__(self, w0: float) -> None:
        super().__init__()
        self.w0 = w0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)


class GhostBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over "ghost" batches of ``virtual`` samples while training (Hoffer et al., 2017).

    Each chunk of the batch is normalized with its own statistics and updates the
    running statistics in turn; evaluation uses the running statistics as usual.
    """

    def __init__(self, width: int, virtual: int) -> None:
        super().__init__(width)
        self.virtual = virtual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or len(x) <= self.virtual:
            return super().forward(x)
        return torch.cat([super(GhostBatchNorm1d, self).forward(chunk) for chunk in x.split(self.virtual)])


class Square(nn.Module):
    """``x²``, the quadratic activation of the grokking literature (Gromov, 2023; Doshi et al., 2024)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
    "square": Square,
}


def _activation(config: Any) -> nn.Module:
    if config.activation == "maxout":
        return Maxout(config.maxout_pieces)
    if config.activation == "sine":
        return Sine(config.sine_w0)
    return ACTIVATIONS[config.activation]()


def _expansion(config: Any) -> int:
    """How many pre-activation units a hidden unit needs (``pieces`` for maxout, 1 otherwise)."""
    return config.maxout_pieces if config.activation == "maxout" else 1


def _norm(kind: str, width: int, config: Any = None) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "ghost-batch":
        return GhostBatchNorm1d(width, config.ghost_batch)
    return {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}[kind](width)


class Block(nn.Module):
    """``act(norm(W x))``, or residual ``x + W2 act(norm(W1 x))``; with maxout, ``W`` has ``pieces`` rows per unit."""

    def __init__(self, width: int, config: Any) -> None:
        super().__init__()
        self.residual = config.residual
        k = _expansion(config)
        self.linear1 = nn.Linear(width, width * k, bias=config.bias)
        self.norm = _norm(config.norm, width * k, config)
        self.act = _activation(config)
        self.drop = nn.Dropout(config.dropout)
        self.linear2 = nn.Linear(width, width, bias=config.bias) if config.residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.norm(self.linear1(x))))
        return x + self.linear2(h) if self.linear2 is not None else h


class MLP(Classifier):
    def __init__(self, input_dim: int, num_classes: int, config: Any) -> None:
        super().__init__()
        k = _expansion(config)
        self.stem = nn.Sequential(
            nn.Linear(input_dim, config.width * k, bias=config.bias),
            _norm(config.norm, config.width * k, config),
            _activation(config),
        )
        self.blocks = nn.Sequential(*[Block(config.width, config) for _ in range(config.depth)])
        self.head = nn.Linear(config.width, num_classes, bias=config.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x.flatten(1)))


def build(config: Any, info: Any) -> MLP:
    if info.input_kind != "features":
        raise ValueError('mlp needs feature inputs; use encoding = "one-hot" or the transformer')
    return MLP(info.input_dim, info.num_classes, config)
