"""Hook shells over :mod:`paperkit_rank_increase.functional`.

``before_experience`` of the first experience (after ``init`` and ``adapt``, before the first optimizer
step) copies W_0 of every measured matrix; ``after_step`` logs the ranks of W_t − W_0 every ``every``
steps; ``after_run`` reports the final ranks, those at ``early_fraction`` of the run, and the first step
at which each rank level was reached. W_0 and the history are the method's checkpointed state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_rank_increase import functional

#: The means whose rank levels after_run dates (the per-head forms and the weights).
TRACKED = ("qk/stable_rank", "vo/stable_rank", "stable_rank", "effective_rank", "numerical_rank")


class RankIncrease:
    """Ranks of the learned perturbation W_t − W_0 during training."""

    def __init__(self, config: Any) -> None:
        from paperkit_rank_increase import RankIncreaseConfig

        self.config = config if config is not None else RankIncreaseConfig()
        self.initial: dict[str, torch.Tensor] | None = None
        self.history: list[tuple[int, dict[str, float]]] = []

    def _plan(self, model: nn.Module) -> tuple[list[str], dict[str, tuple[int, dict[str, str]]]]:
        weights = list(functional.select_weights(model, self.config.weights))
        attention = functional.attention_modules(model) if self.config.heads else {}
        return weights, attention

    def _measure(self, model: nn.Module) -> dict[str, float]:
        assert self.initial is not None
        weights, attention = self._plan(model)
        current = dict(model.named_parameters())
        weights = [w for w in weights if w in self.initial]
        attention = {k: a for k, a in attention.items() if all(n in self.initial for n in a[1].values())}
        return functional.perturbation_ranks(current, self.initial, weights, attention, self.config.rel_tol,
                                             self.config.per_layer)

    @hookimpl
    def before_experience(self, model: nn.Module, ctx: Any) -> None:
        if self.initial is not None:  # a later experience keeps the run's W_0
            return None
        model = ctx.accelerator.unwrap_model(model)
        weights, attention = self._plan(model)
        names = set(weights) | {n for _h, table in attention.values() for n in table.values()}
        if not names:
            raise PluginError(f"rank-increase: no 2-D weight matches {self.config.weights} and no attention layer was "
                              "found; set 'weights' to glob patterns over this model's parameter names")
        params = dict(model.named_parameters())
        self.initial = {n: params[n].detach().to(torch.float64).cpu().clone() for n in params if n in names}
        return None

    @hookimpl
    def after_step(self, model: nn.Module, ctx: Any) -> dict[str, float] | None:
        if self.initial is None or (ctx.step % self.config.every and ctx.experience_step < ctx.total_steps):
            return None
        ranks = self._measure(ctx.accelerator.unwrap_model(model))
        self.history.append((int(ctx.step), ranks))
        return ranks

    @hookimpl
    def after_run(self, model: nn.Module, ctx: Any) -> dict[str, float]:
        model = ctx.accelerator.unwrap_model(model)
        if self.initial is None:  # nothing trained (run.train = false): ΔW = 0
            self.before_experience(model=model, ctx=ctx)
        final = self._measure(model)
        if not self.history or self.history[-1][0] != ctx.step:
            self.history.append((int(ctx.step), final))
        out: dict[str, float] = {}
        early_step = self.config.early_fraction * max(int(ctx.step), 1)
        for key in TRACKED:
            if key not in final:
                continue
            out[f"final/{key}"] = final[key]
            early = functional.value_at_fraction(self.history, key, early_step)
            if early is not None:
                out[f"early/{key}"] = early
            for level, step in functional.first_reached(self.history, key, self.config.levels).items():
                out[f"first_step/{key}>={level:g}"] = float(step if step is not None else -1)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "history": [(s, dict(v)) for s, v in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = state.get("initial")
        self.history = [(int(s), {k: float(x) for k, x in v.items()}) for s, v in state.get("history", [])]
