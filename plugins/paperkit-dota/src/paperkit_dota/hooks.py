"""The DoTA hooks: the shared adapter shell with DoTA's MPO layer (see :mod:`paperkit_dota.functional`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import AdapterMethod
from paperkit_dota.functional import MPOLinear, factorize


class DoTA(AdapterMethod):
    """Wraps the target layers in :class:`~paperkit_dota.functional.MPOLinear`.

    Training, merging, saving and the frozen/trainable split are the shared
    :class:`paperkit.AdapterMethod`'s. The base weight becomes the frozen residual
    ``W0 − MPO(G₀)``, so ``W_res + MPO(G₀) = W0``: ``preserves_output``. The
    random ablation draws its cores from the run's checkpointed generator
    ``ctx.generator("dota")``. PEFT has no MPO adapter, so nothing is exported
    beside ``adapter.safetensors``.
    """

    def __init__(self, config: object) -> None:
        super().__init__(config)
        self.generator = None

    def prepare(self, model: nn.Module, ctx: Any) -> None:
        self.generator = ctx.generator("dota") if self.config.init == "random" else None

    def make_layer(self, name: str, linear: nn.Linear) -> MPOLinear:
        c = self.config
        return MPOLinear(
            linear, factorize(linear.out_features, c.cores), factorize(linear.in_features, c.cores), c.bond,
            c.init, self.generator,
        )
