"""The ``optimize`` hook: a thin shell that builds :class:`~paperkit_auon.functional.AuON` for the model."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import Optimization, RunContext, hookimpl
from paperkit_auon.functional import auon_for


class AuonMethod:
    """Provides the run's optimizer: AuON (or Hybrid-AuON) for hidden matrices, AdamW for the rest."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_auon import AuonConfig

            config = AuonConfig()
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module, ctx: RunContext) -> Optimization:
        c = self.config
        # Split by the unwrapped model (its `head` and layer order); the parameters are the same objects.
        optimizer = auon_for(
            ctx.accelerator.unwrap_model(model), input_layer=c.input_layer, lr=c.lr, momentum=c.momentum,
            nesterov=c.nesterov, weight_decay=c.weight_decay, gamma=c.gamma, ns_steps=c.ns_steps,
            normalize=c.normalize, shape_scale=c.shape_scale, adamw_lr=c.adamw_lr, adamw_betas=tuple(c.adamw_betas),
            adamw_eps=c.adamw_eps, adamw_weight_decay=c.adamw_weight_decay,
        )
        return Optimization(optimizer=optimizer)
