"""The ``optimize`` hook: a thin shell that builds :class:`~paperkit_normuon.functional.NorMuon` for the model."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import Optimization, RunContext, hookimpl
from paperkit_normuon.functional import normuon_for


class NorMuonMethod:
    """Provides the run's optimizer: (Nor)Muon for hidden matrices, AdamW for the rest."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_normuon import NorMuonConfig

            config = NorMuonConfig()
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module, ctx: RunContext) -> Optimization:
        c = self.config
        # Group by the unwrapped model (its `head` and layer order); the parameters are the same objects.
        optimizer = normuon_for(
            ctx.accelerator.unwrap_model(model), input_layer=c.input_layer, split_qkv=c.split_qkv, lr=c.lr, momentum=c.momentum,
            beta2=c.beta2, nesterov=c.nesterov, ns_steps=c.ns_steps, eps=c.eps, weight_decay=c.weight_decay,
            normalize=c.normalize, update_scale=c.update_scale, adamw_lr=c.adamw_lr, adamw_betas=tuple(c.adamw_betas),
            adamw_eps=c.adamw_eps, adamw_weight_decay=c.adamw_weight_decay,
        )
        return Optimization(optimizer=optimizer)
