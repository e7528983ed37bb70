"""Hook shells over :mod:`paperkit_sgd_stability_trace.functional`.

``after_run`` measures tr(H), λ_max(H) and the training loss on the final experience's training set and sets them
against the run's learning rate; ``after_step`` does the same every ``every`` steps (off by default). Both take the
Hessian of the plan's own training loss (``mse`` or ``cross-entropy``), on the training samples without any batch
transform, in evaluation mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import paperkit
from paperkit import PluginError, hookimpl
from paperkit_sgd_stability_trace.functional import loss_function, plan_learning_rate, stability_report

#: what ``after_step`` logs every ``every`` steps (the full report goes to ``results.json``)
LOGGED = ("loss", "trace", "trace_ratio", "lambda_max", "lambda_ratio", "mixture_ratio")


class SgdStabilityTrace:
    """The stability diagnostic of Wu & Su (2023): sharpness against 2/η."""

    def __init__(self, config: Any) -> None:
        from paperkit_sgd_stability_trace import SgdStabilityTraceConfig

        self.config = config if config is not None else SgdStabilityTraceConfig()
        self._loss: Any = None

    # -- what to measure --------------------------------------------------------------------------
    def _loss_fn(self, ctx: Any) -> Any:
        """The plan's training loss as a function of (logits, targets), resolved once per run."""
        if self._loss is None:
            name, smoothing = self.config.loss, 0.0
            uses = ctx.plan.methods_for("loss")
            if name == "auto":
                keys = [u.key for u in uses]
                if keys not in (["mse"], ["cross-entropy"]):
                    raise PluginError(
                        f"sgd-stability-trace: the plan's loss is {keys or 'none'}; the Hessian is measured for the "
                        "built-in 'mse' or 'cross-entropy' only: set loss = 'mse' or 'cross-entropy' to measure one "
                        "of them anyway"
                    )
                name = keys[0]
            if name == "cross-entropy":
                smoothing = next(
                    (float(getattr(u.config, "label_smoothing", 0.0)) for u in uses if u.key == "cross-entropy"), 0.0
                )
            self._loss = loss_function(name, smoothing)
        return self._loss

    def _lr(self, ctx: Any) -> float:
        lr = self.config.lr if self.config.lr is not None else plan_learning_rate(ctx.plan)
        if lr is None or lr <= 0:
            raise PluginError(
                "sgd-stability-trace: the plan's optimizer has no numeric 'lr'; set the learning rate η with lr = ..."
            )
        return float(lr)

    def _data(self, ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        experience = ctx.experience if ctx.experience is not None else ctx.task.experiences[-1]
        dataset = experience.train
        n = len(dataset) if not self.config.samples else min(self.config.samples, len(dataset))
        return dataset.x[:n].to(ctx.device), dataset.y[:n].to(ctx.device)

    def _report(self, model: nn.Module, ctx: Any, generator: torch.Generator) -> dict[str, float]:
        x, y = self._data(ctx)
        c = self.config
        return stability_report(
            paperkit.unwrapped(model),
            x,
            y,
            self._loss_fn(ctx),
            self._lr(ctx),
            int(ctx.plan.run.batch_size),
            generator,
            probes=c.probes,
            power_iters=c.power_iters,
            tol=c.tol,
            forward=lambda m, inputs: paperkit.forward(m, inputs, ctx).logits,
        )

    # -- hooks ------------------------------------------------------------------------------------
    @hookimpl
    def after_step(self, model: nn.Module, ctx: Any) -> dict[str, float] | None:
        if self.config.bound_only:
            return None
        self._loss_fn(ctx)  # a plan loss the diagnostic cannot measure fails at the first step, not after training
        every = self.config.every
        if not every or ctx.step % every:
            return None
        report = self._report(model, ctx, ctx.generator("during"))  # checkpointed: a resumed run draws the same
        return {name: report[name] for name in LOGGED}

    @hookimpl
    def after_run(self, model: nn.Module, ctx: Any) -> dict[str, float]:
        if self.config.bound_only:  # the reference arm of a bound claim: the paper's bound, nothing measured
            return {"trace_ratio": 1.0, "lambda_ratio": 1.0, "mixture_ratio": 1.0, "lr": self._lr(ctx)}
        # the same probes whatever ran before (after_step draws from its own generator)
        generator = torch.Generator().manual_seed(ctx.generator("final").initial_seed())
        return self._report(model, ctx, generator)
