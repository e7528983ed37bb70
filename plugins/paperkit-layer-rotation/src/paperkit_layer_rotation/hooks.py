"""Hook shells over :mod:`paperkit_layer_rotation.functional`.

``LayerRotation`` captures the kernels in ``before_experience`` of the first
experience (after ``init`` and ``adapt``, before the first optimizer step),
measures their cosine distance from there in ``after_step`` and, in
``after_run``, draws the curves and summarizes the final rotations.
``LaycaMethod`` provides the :class:`~paperkit_layer_rotation.functional.Layca` optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import Optimization, hookimpl
from paperkit_layer_rotation.functional import (
    Layca,
    layca_groups,
    layer_rotation,
    layer_weights,
    plot_layer_rotation,
    rotation_summary,
    step_decay,
)

PLOT_NAME = "layer-rotation.png"


class LayerRotation:
    """Layer rotation curves and their end-of-run summary."""

    def __init__(self, config: Any) -> None:
        from paperkit_layer_rotation import LayerRotationConfig

        self.config = config if config is not None else LayerRotationConfig()
        self.initial: dict[str, torch.Tensor] | None = None
        self.history: list[tuple[int, dict[str, float]]] = []

    def _unwrapped(self, model: nn.Module, ctx: Any) -> nn.Module:
        return ctx.accelerator.unwrap_model(model)

    def _due(self, ctx: Any) -> bool:
        if self.config.every:
            return ctx.step % self.config.every == 0
        per_epoch = max(int(ctx.steps_per_epoch or 0), 1)
        return ctx.experience_step % per_epoch == 0 or ctx.experience_step >= ctx.total_steps

    @hookimpl
    def before_experience(self, model: nn.Module, ctx: Any) -> None:
        if self.initial is None:
            self.initial = layer_weights(self._unwrapped(model, ctx))
            self.history.append((ctx.step, {name: 0.0 for name in self.initial}))
        return None

    @hookimpl
    def after_step(self, model: nn.Module, ctx: Any) -> dict[str, float] | None:
        if self.initial is None or not self._due(ctx):
            return None
        rotations = layer_rotation(self._unwrapped(model, ctx), self.initial)
        self.history.append((ctx.step, rotations))
        return rotations

    @hookimpl
    def after_run(self, model: nn.Module, ctx: Any) -> dict[str, float]:
        if self.initial is None:  # nothing trained (run.train = false): rotation is zero by definition
            self.initial = layer_weights(self._unwrapped(model, ctx))
        final = layer_rotation(self._unwrapped(model, ctx), self.initial)
        if not self.history or self.history[-1][0] != ctx.step:
            self.history.append((ctx.step, final))
        if self.config.plot and ctx.is_main_process:
            title = f"layer rotation ({ctx.plan.variant or ctx.plan.run.name}, seed {ctx.seed})"
            plot_layer_rotation(self.history, ctx.run_dir / PLOT_NAME, title)
        return {**rotation_summary(final), **{f"final/{name}": value for name, value in final.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = state.get("initial")
        self.history = [(int(s), dict(v)) for s, v in state.get("history", [])]


class LaycaMethod:
    """Builds Layca over the trainable parameters."""

    def __init__(self, config: Any) -> None:
        from paperkit_layer_rotation import LaycaConfig

        self.config = config if config is not None else LaycaConfig()

    @hookimpl
    def optimize(self, model: nn.Module, ctx: Any) -> Optimization:
        c = self.config
        total, milestones, factor = int(ctx.total_steps), list(c.decay_at), c.decay_factor
        schedule = (lambda step: step_decay(step, total, milestones, factor)) if milestones and factor != 1.0 else None
        groups = layca_groups(model, alpha=c.alpha, lr=c.lr)
        return Optimization(Layca(groups, lr=c.lr, momentum=c.momentum, others=c.others), lr_factor=schedule)
