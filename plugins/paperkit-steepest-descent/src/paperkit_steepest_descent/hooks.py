"""The ``optimize`` hook: a thin shell that builds :class:`~paperkit_steepest_descent.functional.SteepestDescent`."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import Optimization, hookimpl, unwrapped
from paperkit_steepest_descent.functional import steepest_descent_for


class SteepestDescentMethod:
    """Provides the run's optimizer: steepest descent under the configured norm, for every trainable parameter."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_steepest_descent import SteepestDescentConfig

            config = SteepestDescentConfig()
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        # One group per role, read from the unwrapped model's modules (the parameters are the same objects).
        optimizer = steepest_descent_for(
            unwrapped(model), c.embedding_role, lr=c.lr, norm=c.norm, momentum=c.momentum, nesterov=c.nesterov,
            weight_decay=c.weight_decay, order=c.order, spectral_scale=c.spectral_scale, l2_scope=c.l2_scope, ns_steps=c.ns_steps,
            eps=c.eps,
        )
        return Optimization(optimizer=optimizer)
