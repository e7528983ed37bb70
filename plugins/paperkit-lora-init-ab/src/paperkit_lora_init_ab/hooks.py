"""The hooks of lora-init-ab: the shared LoRA shell with Init[A] or Init[B] (see :mod:`paperkit_lora_init_ab.functional`)."""

from __future__ import annotations

from paperkit import LowRankAdapterMethod, LowRankLinear
from paperkit_lora_init_ab.functional import init_lora_ab_


class LoraInitAB(LowRankAdapterMethod):
    """Wraps the target layers as LoRA layers; ``init = "A"``: A random, B = 0; ``init = "B"``: A = 0, B random.

    Wrapping, freezing, merging, saving and the PEFT export are the shared
    :class:`paperkit.LowRankAdapterMethod`'s. ``B A = 0`` under both schemes, so the
    adapted model starts as the base model (``preserves_output``). The draw uses
    torch's global generator (seeded by the engine with the run seed) in PEFT's
    order, so ``init = "A"`` is the built-in ``lora`` draw for draw.
    """

    def initialize(self, name: str, layer: LowRankLinear) -> None:
        init_lora_ab_(layer, self.config.init, self.config.distribution)
