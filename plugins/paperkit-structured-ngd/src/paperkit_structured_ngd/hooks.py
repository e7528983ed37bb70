"""The ``optimize`` hook: a thin shell that builds :class:`~paperkit_structured_ngd.functional.StructuredNGD`."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import Optimization, PluginError, RunContext, hookimpl, trainable
from paperkit_structured_ngd.functional import StructuredNGD


class StructuredNgd:
    """Provides the run's optimizer: structured NGD for linear and conv layers, SGD with momentum for the rest."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_structured_ngd import StructuredNgdConfig

            config = StructuredNgdConfig()
        self.config = config
        self._optimizer: StructuredNGD | None = None

    @hookimpl
    def optimize(self, model: nn.Module, ctx: RunContext) -> Optimization:
        if ctx.accelerator.num_processes > 1:
            raise PluginError(
                "structured-ngd: the Kronecker factors are estimated from each process's own batch and are not "
                "averaged across processes; run it in one process"
            )
        c = self.config
        if self._optimizer is not None:  # rebuilt (a grown model): the old optimizer stops observing the layers
            self._optimizer.remove_hooks()
        # Hooks go on the plain modules (the data-parallel wrapper's parameters are the same objects).
        optimizer = StructuredNGD(
            ctx.accelerator.unwrap_model(model), params=trainable(model), lr=c.lr, momentum=c.momentum,
            damping=c.damping, beta2=c.beta2, weight_decay=c.weight_decay, update_freq=c.update_freq,
            lr_cov=c.lr_cov, lr_cov_warmup=c.lr_cov_warmup, warmup_steps=tuple(c.warmup_steps),
            warmup_lrs=tuple(c.warmup_lrs), weight_decay_delay=c.weight_decay_delay,
            batch_averaged=c.batch_averaged, faster=c.faster,
        )
        self._optimizer = optimizer
        return Optimization(optimizer=optimizer)
