"""The qGOFT hooks: the shared adapter shell with the Givens layer, plus the soft orthogonality term."""

from __future__ import annotations

import torch
from torch import nn

from paperkit import AdapterMethod, PlanError, hookimpl
from paperkit_qgoft.functional import GivensLinear, givens_linear, model_penalty


class QGOFT(AdapterMethod):
    """Wraps the target layers in :class:`~paperkit_qgoft.functional.GivensLinear` (``R = I`` at the start) and adds
    ``λ Σ ‖BᵀB − I‖_F²`` over the quasi-Givens blocks to the loss every step.

    Training, merging, saving and the frozen/trainable split are the shared
    :class:`paperkit.AdapterMethod`'s. PEFT has no qGOFT format: the run keeps
    ``adapter.safetensors`` only.
    """

    def make_layer(self, name: str, linear: nn.Linear) -> GivensLinear:
        c = self.config
        width = linear.in_features if c.side == "input" else linear.out_features
        if width < 2:
            raise PlanError(
                f"layer '{name}' ({linear.out_features}×{linear.in_features}) has a {c.side} width of {width}: a Givens "
                "rotation needs at least 2; choose another target or side",
                f"{self.where} target",
            )
        return givens_linear(linear, c.quasi, c.layout, c.side)

    @hookimpl
    def regularize(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        c = self.config
        if not c.quasi or c.orth_weight == 0.0:
            return None
        value = model_penalty(model)
        return None if value is None else {"orthogonality": c.orth_weight * value}
