"""The PiSSA hooks: LoRA's adapter shell with PiSSA's initialization (see :mod:`paperkit_pissa.functional`)."""

from __future__ import annotations

from paperkit import LowRankAdapterMethod, LowRankLinear, PlanError

from paperkit_pissa.functional import pissa_init_


class PiSSA(LowRankAdapterMethod):
    """Wraps the target layers; ``A``, ``B`` from the top-``rank`` singular triplets, base weight ← residual.

    Training, merging, saving and the frozen/trainable split are the shared
    :class:`paperkit.adapters.LowRankAdapterMethod`'s; the model computes what
    it computed before adaptation (``W_res + s·B A = W``), hence ``preserves_output``.
    """

    def initialize(self, name: str, layer: LowRankLinear) -> None:
        if self.config.rank > min(layer.in_features, layer.out_features):
            raise PlanError(
                f"rank {self.config.rank} exceeds layer '{name}' ({layer.out_features}×{layer.in_features}); "
                "PiSSA needs rank <= min(out, in): lower rank or narrow target",
                f"{self.where} rank",
            )
        pissa_init_(layer, self.config.niter)
