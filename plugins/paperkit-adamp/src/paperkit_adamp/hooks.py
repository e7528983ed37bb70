"""The ``optimize`` hooks: thin shells that build :class:`~paperkit_adamp.functional.AdamP` or
:class:`~paperkit_adamp.functional.SGDP` over the model's trainable parameters."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import Optimization, hookimpl, trainable
from paperkit_adamp.functional import SGDP, AdamP


class AdamPMethod:
    """Provides the run's optimizer: AdamP over every trainable parameter (vectors are never projected)."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_adamp import AdamPConfig

            config = AdamPConfig()
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        return Optimization(optimizer=AdamP(trainable(model), lr=c.lr, betas=tuple(c.betas), eps=c.eps,
                                            weight_decay=c.weight_decay, delta=c.delta, wd_ratio=c.wd_ratio,
                                            nesterov=c.nesterov, numerics=c.numerics))


class SGDPMethod:
    """Provides the run's optimizer: SGDP over every trainable parameter (vectors are never projected)."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_adamp import SGDPConfig

            config = SGDPConfig()
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        return Optimization(optimizer=SGDP(trainable(model), lr=c.lr, momentum=c.momentum, dampening=c.dampening,
                                           weight_decay=c.weight_decay, nesterov=c.nesterov, eps=c.eps, delta=c.delta,
                                           wd_ratio=c.wd_ratio, numerics=c.numerics))
