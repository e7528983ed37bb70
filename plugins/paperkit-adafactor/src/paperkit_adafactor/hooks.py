"""The hooks: ``optimize`` builds :class:`~paperkit_adafactor.functional.Adafactor`; ``after_run`` reports its memory."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import Optimization, hookimpl
from paperkit_adafactor.functional import Adafactor, state_bytes


class AdafactorMethod:
    """Provides the run's optimizer (Adafactor over every trainable parameter) and reports its state size."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_adafactor import AdafactorConfig

            config = AdafactorConfig()
        self.config = config
        self.optimizer: Adafactor | None = None

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = Adafactor(
            params, lr=c.lr, relative_step=c.relative_step, scale_parameter=c.scale_parameter, decay_c=c.decay_c,
            beta1=c.beta1, clip_threshold=c.clip_threshold, eps1=c.eps1, eps2=c.eps2, weight_decay=c.weight_decay,
            weight_decay_scale=c.weight_decay_scale, eps1_placement=c.eps1_placement, factored=c.factored,
        )
        return Optimization(optimizer=self.optimizer)

    @hookimpl
    def after_run(self, model: nn.Module) -> dict[str, float] | None:
        """``state_bytes``: the optimizer's auxiliary storage; ``state_per_parameter``: its numbers per trained weight."""
        if self.optimizer is None:
            return None
        numbers = sum(p.numel() for p in model.parameters() if p.requires_grad)
        held = state_bytes(self.optimizer)
        element = next((p.element_size() for p in model.parameters()), 4)
        return {"state_bytes": float(held), "state_per_parameter": held / element / max(numbers, 1)}
