"""The hooks: the schedule (``optimize``), the budget checkpoints and measurements (``after_step``, ``after_run``).

What is measured, and why here: the paper's observation is that the loss stays
high on the main branch and drops sharply during the decay. To see it, the
training loss is measured on a fixed subset of the experience's training data
(``probe_batches`` batches, the same samples every time, so the numbers are
comparable and free of minibatch noise) at the start and at the end of every
decay window. The ``constant`` control computes the same windows without
decaying, so a plan can compare the drop with what the same steps give at a
constant learning rate. At the end of every budget the model is also evaluated
on the experience's test set and, for WSD-S, saved as ``budget-<step>``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import Optimization, RunContext, hookimpl
from paperkit_wsd.functional import Phases, lr_factor, phases


class WSD:
    """WSD / WSD-S / constant schedule plus the budget bookkeeping."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_wsd import WSDConfig

            config = WSDConfig()
        self.config = config
        self.phases: Phases | None = None
        self.offset = 0  # global step at the start of the current experience
        self.budgets: dict[str, dict[str, float]] = {}  # "budget-<global step>" -> measurements
        self.window_start: dict[str, float] = {}  # "<global step of the budget end>" -> probe loss at the decay start

    @hookimpl
    def optimize(self, model: nn.Module, ctx: RunContext) -> Optimization:
        c = self.config
        self.phases = phases(ctx.total_steps, c.schedule, c.warmup_fraction, c.decay_fraction, c.budgets)
        self.offset = ctx.step - ctx.experience_step
        if 0 in self.phases.decay_starts and ctx.experience_step == 0:  # a decay from the first update: measure its start now
            self.window_start[str(self.offset + self.phases.budgets[0])] = self._probe(model, ctx)
        return Optimization(lr_factor=lr_factor(self.phases, c.schedule, c.decay_shape, c.min_lr_ratio))

    @hookimpl
    def after_step(self, model: nn.Module, ctx: RunContext) -> dict[str, float] | None:
        p = self.phases
        if p is None:
            return None
        s = ctx.experience_step
        out: dict[str, float] = {}
        if s in p.decay_starts:
            end = p.budgets[p.decay_starts.index(s)]
            self.window_start[str(self.offset + end)] = out["probe_loss"] = self._probe(model, ctx)
        if s in p.budgets:
            out.update(self._budget_end(model, ctx))
        return out or None

    def _budget_end(self, model: nn.Module, ctx: RunContext) -> dict[str, float]:
        """Measure (and save) the model at the end of a budget's decay."""
        probe = self._probe(model, ctx)
        scores = ctx.evaluate(model, [ctx.experience_index])[ctx.experience_index]
        start = self.window_start.get(str(ctx.step), probe)
        record = {"probe_loss": probe, "decay_drop": start - probe, "test_loss": scores["loss"], "test_accuracy": scores["accuracy"]}
        name = f"budget-{ctx.step}"
        self.budgets[name] = record
        if self.config.save_checkpoints:
            ctx.save_weights(model, name)
        return record

    def _probe(self, model: nn.Module, ctx: RunContext) -> float:
        """Mean cross-entropy on the fixed probe subset of the current experience's training data."""
        from paperkit import forward

        data = ctx.experience.train if ctx.experience is not None else ctx.task.experiences[0].train
        n = min(len(data), self.config.probe_batches * ctx.plan.run.batch_size)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(ctx.seed + 104729))[:n]
        batch = data[order]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = forward(model, batch["x"].to(ctx.device), ctx).logits
                loss = F.cross_entropy(logits.float(), batch["y"].to(ctx.device)).item()
        finally:
            model.train(was_training)
        return loss

    @hookimpl
    def after_run(self, model: nn.Module, ctx: RunContext) -> dict[str, Any] | None:
        """``decay_drop`` and ``test_loss`` of the last budget, their means over budgets, and each budget's record."""
        if not self.budgets:
            return None
        records = list(self.budgets.values())
        out: dict[str, Any] = {
            "decay_drop": records[-1]["decay_drop"],
            "decay_drop_mean": sum(r["decay_drop"] for r in records) / len(records),
            "budget_probe_loss_mean": sum(r["probe_loss"] for r in records) / len(records),
            "budget_test_loss_mean": sum(r["test_loss"] for r in records) / len(records),
            "budgets": len(records),
        }
        for name, record in self.budgets.items():
            out.update({f"{name}/{key}": value for key, value in record.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"budgets": {k: dict(v) for k, v in self.budgets.items()}, "window_start": dict(self.window_start)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.budgets = {k: dict(v) for k, v in state.get("budgets", {}).items()}
        self.window_start = dict(state.get("window_start", {}))
