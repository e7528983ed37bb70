"""SGD, Adam and AdamW over the model's trainable parameters."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import hookimpl
from paperkit.context import Optimization
from paperkit.step import trainable


class SGD:
    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        return Optimization(
            torch.optim.SGD(
                trainable(model), lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
            )
        )


class Adam:
    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        return Optimization(
            torch.optim.Adam(trainable(model), lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay)
        )


class AdamW:
    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        return Optimization(
            torch.optim.AdamW(trainable(model), lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay)
        )
