"""The hooks: the schedule and optimizer (``optimize``), the per-cycle weight decay and anytime scores (``after_step``,
``after_run``). Thin shells over :mod:`paperkit_sgdw_restarts.functional`.

``optimize`` runs at the start of every experience that trains; the schedule, the
normalized decay and the evaluation points are those of that experience
(``ctx.total_steps`` steps). The engine turns ``lr_factor(step)`` into a
``LambdaLR`` over the optimizer, so the group's ``lr`` is ``α η_t`` and SGDW reads
``η_t = lr / α``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from paperkit import Optimization, RunContext, hookimpl, trainable
from paperkit_sgdw_restarts.functional import (
    SGDW,
    cycle_ends,
    cycle_position,
    first_cycle_length,
    normalized_weight_decay,
    warm_restarts_factor,
)


class WarmRestarts:
    """Cosine annealing with warm restarts as an ``lr_factor``; optionally the test score at the end of every cycle."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_sgdw_restarts import WarmRestartsConfig

            config = WarmRestartsConfig()
        self.config = config
        self.t_0 = 1.0  # first cycle, in steps, of the current experience
        self.total = 0
        self.ends: list[int] = []
        self.scores: dict[str, dict[str, float]] = {}  # "cycle-<i>" -> test scores at its end

    def _plan_cycles(self, ctx: RunContext) -> None:
        c = self.config
        self.total = ctx.total_steps
        if c.t_0 > 0:
            self.t_0 = c.t_0 * max(ctx.steps_per_epoch, 1)
        else:
            self.t_0 = first_cycle_length(max(self.total, 1), c.cycles, c.t_mult)
        self.ends = cycle_ends(self.total, self.t_0, c.t_mult) if c.anytime_eval else []

    def _lr_factor(self) -> Any:
        c = self.config
        if c.schedule == "restarts":
            return partial(warm_restarts_factor, t_0=self.t_0, t_mult=c.t_mult, min_ratio=c.min_lr_ratio)
        if c.schedule == "cosine":
            return partial(warm_restarts_factor, t_0=float(max(self.total, 1)), t_mult=1, min_ratio=c.min_lr_ratio)
        return None

    @hookimpl
    def optimize(self, model: nn.Module, ctx: RunContext) -> Optimization:
        self._plan_cycles(ctx)
        return Optimization(lr_factor=self._lr_factor())

    @hookimpl
    def after_step(self, model: nn.Module, ctx: RunContext) -> dict[str, float] | None:
        if ctx.experience_step not in self.ends:
            return None
        i = self.ends.index(ctx.experience_step)
        scores = ctx.evaluate(model, [ctx.experience_index])[ctx.experience_index]
        record = {"test_accuracy": scores["accuracy"], "test_loss": scores["loss"]}
        self.scores[f"e{ctx.experience_index}-cycle-{i}"] = record
        return {f"cycle_{k}": val for k, val in record.items()}

    @hookimpl
    def after_run(self, model: nn.Module, ctx: RunContext) -> dict[str, Any] | None:
        """``anytime_accuracy`` / ``anytime_loss``: means over the cycle ends; each cycle's scores."""
        if not self.scores:
            return None
        records = list(self.scores.values())
        out: dict[str, Any] = {
            "anytime_accuracy": sum(r["test_accuracy"] for r in records) / len(records),
            "anytime_loss": sum(r["test_loss"] for r in records) / len(records),
            "cycle_ends": len(records),
        }
        for name, record in self.scores.items():
            out.update({f"{name}/{k}": val for k, val in record.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"scores": {k: dict(val) for k, val in self.scores.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores = {k: dict(val) for k, val in state.get("scores", {}).items()}


class SGDWRestarts(WarmRestarts):
    """Provides the run's optimizer, :class:`~paperkit_sgdw_restarts.functional.SGDW`, with the restart schedule.

    With ``normalize_weight_decay`` the decay is ``λ_norm / √T_i`` for the cycle of the next step
    (``T_i`` in steps; the whole experience without restarts), set on the optimizer's groups before
    each step; the groups travel in the optimizer's checkpoint.
    """

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_sgdw_restarts import SGDWRestartsConfig

            config = SGDWRestartsConfig()
        super().__init__(config)
        self.optimizer: SGDW | None = None

    def _weight_decay(self, step: int) -> float:
        c = self.config
        if not c.normalize_weight_decay:
            return c.weight_decay
        if c.schedule == "restarts":
            _, t_i, _ = cycle_position(step, self.t_0, c.t_mult)
        else:
            t_i = float(max(self.total, 1))
        return normalized_weight_decay(c.weight_decay, t_i)

    @hookimpl
    def optimize(self, model: nn.Module, ctx: RunContext) -> Optimization:
        c = self.config
        self._plan_cycles(ctx)
        self.optimizer = SGDW(trainable(model), lr=c.lr, momentum=c.momentum, dampening=c.dampening,
                              weight_decay=self._weight_decay(0), nesterov=c.nesterov, decay_scaling=c.decay_scaling)
        return Optimization(optimizer=self.optimizer, lr_factor=self._lr_factor())

    @hookimpl
    def after_step(self, model: nn.Module, ctx: RunContext) -> dict[str, float] | None:
        if self.optimizer is not None and self.config.normalize_weight_decay and self.config.schedule == "restarts":
            decay = self._weight_decay(ctx.experience_step)  # the cycle of the next step
            for group in self.optimizer.param_groups:
                group["weight_decay"] = decay
        return super().after_step(model, ctx)
