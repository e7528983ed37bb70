"""The ``optimize`` hook: a thin shell that builds :class:`~paperkit_fadam.functional.FAdam` over the trainable parameters."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import Optimization, hookimpl, trainable
from paperkit_fadam.functional import FAdam


class FAdamMethod:
    """Provides the run's optimizer: FAdam on every trainable parameter (biases and norms included, as in Algorithm 1)."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_fadam import FAdamConfig

            config = FAdamConfig()
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        optimizer = FAdam(
            trainable(model), lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay, clip=c.clip, p=c.p,
            eps=c.eps, eps2=c.eps2, adaptive_eps=c.adaptive_eps, fisher_weight_decay=c.fisher_weight_decay,
            clip_gradient=c.clip_gradient,
        )
        return Optimization(optimizer=optimizer)
