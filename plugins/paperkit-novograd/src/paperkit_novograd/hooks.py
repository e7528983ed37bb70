"""The hooks of novograd: ``optimize`` builds :class:`~paperkit_novograd.functional.NovoGrad`, ``after_run`` reports its state size."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import Optimization, hookimpl, trainable
from paperkit_novograd.functional import NovoGrad, state_numel


class NovoGradMethod:
    """Provides the run's optimizer: NovoGrad over every trainable parameter, one "layer" per tensor."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_novograd import NovoGradConfig

            config = NovoGradConfig()
        self.config = config
        self.optimizer: NovoGrad | None = None

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        self.optimizer = NovoGrad(
            trainable(model), lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay,
            grad_averaging=c.grad_averaging, eps_inside_sqrt=c.eps_inside_sqrt, amsgrad=c.amsgrad,
        )
        return Optimization(optimizer=self.optimizer)

    @hookimpl
    def after_run(self, model: nn.Module) -> dict[str, float] | None:
        """The optimizer state's size against the trainable parameters' (Adam keeps 2 elements per parameter)."""
        if self.optimizer is None:
            return None
        params = sum(p.numel() for p in trainable(model))
        state = state_numel(self.optimizer)
        return {"state_elements": float(state), "parameter_elements": float(params),
                "state_per_parameter": state / max(params, 1)}
