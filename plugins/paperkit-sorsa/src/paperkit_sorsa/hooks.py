"""The SORSA hooks: the shared adapter shell with SORSA's layer, plus the orthonormal regularizer.

The math is in :mod:`paperkit_sorsa.functional`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from paperkit import AdapterMethod, PlanError, hookimpl
from paperkit_sorsa import functional


def _optimizer_lr(ctx: Any) -> float | None:
    """The ``lr`` of the plan's optimizer (the method in ``[optimize]``), if it has one."""
    plan = getattr(ctx, "plan", None)
    for use in getattr(plan, "methods", None) or []:
        if use.section == "optimize":
            lr = getattr(use.config, "lr", None)
            if isinstance(lr, (int, float)) and lr > 0:
                return float(lr)
    return None


class Sorsa(AdapterMethod):
    """Wraps the target layers in :class:`~paperkit_sorsa.functional.SORSALinear` (SVD-initialized, residual frozen)
    and adds ``(γ / η) · L_reg`` to the loss every step.

    Training, merging, saving and the frozen/trainable split are the shared
    :class:`paperkit.AdapterMethod`'s; ``W_res + s·U_p diag(S_p) V_pᵀ = W`` at the start,
    hence ``preserves_output``. ``after_run`` also writes ``sorsa.safetensors``, the
    adapted layers in the reference code's checkpoint layout (PEFT has no SORSA format).
    """

    def __init__(self, config: object) -> None:
        super().__init__(config)
        #: γ / η, fixed when the model is adapted (η: the option ``lr`` or the plan's optimizer's)
        self.weight = 0.0

    def prepare(self, model: nn.Module, ctx: Any) -> None:
        c = self.config
        if c.gamma == 0.0:
            self.weight = 0.0
            return
        lr = c.lr if c.lr is not None else _optimizer_lr(ctx)
        if lr is None:
            raise PlanError(
                "gamma is the orthonormal regularizer's learning rate and the loss term is (gamma / lr) · L_reg, "
                "but the plan's optimizer has no 'lr': set lr in [adapt] (or gamma = 0)",
                f"{self.where} lr",
            )
        self.weight = functional.regularizer_weight(c.gamma, lr)

    def make_layer(self, name: str, linear: nn.Linear) -> functional.SORSALinear:
        c = self.config
        if c.rank > min(linear.in_features, linear.out_features):
            raise PlanError(
                f"rank {c.rank} exceeds layer '{name}' ({linear.out_features}×{linear.in_features}); "
                "SORSA needs rank <= min(out, in): lower rank or narrow target",
                f"{self.where} rank",
            )
        return functional.sorsa_linear(linear, c.rank, c.alpha, c.dropout)

    @hookimpl
    def regularize(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        if self.weight == 0.0:
            return None
        value = functional.orthonormality(m for _n, m in functional.sorsa_layers(model))
        if value is None:
            return None
        return {"orthonormal": self.weight * value}

    @hookimpl
    def after_run(self, model: nn.Module, ctx: Any) -> dict[str, float]:
        out = super().after_run(model, ctx)
        inner = ctx.accelerator.unwrap_model(model)
        if ctx.is_main_process:
            functional.export_sorsa(inner, Path(ctx.run_dir) / "sorsa.safetensors")
        value = functional.orthonormality(m for _n, m in functional.sorsa_layers(inner))
        if value is not None:
            out["orthonormality"] = float(value.detach())
        return out
