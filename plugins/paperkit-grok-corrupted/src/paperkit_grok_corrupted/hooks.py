"""The hooks of grok-corrupted: thin shells that read what the engine hands them and call
:mod:`paperkit_grok_corrupted.functional`.

* ``evaluate``: on each experience's corrupted training set, the accuracy on clean and on
  corrupted samples (memorization, inversion), and the IPR distribution of the first
  layer's neurons;
* ``after_step`` (every ``every`` steps, off by default): the same accuracies and the mean
  IPR, logged to ``metrics.jsonl`` (the paper's training curves);
* ``after_run``: prune the memorizing (lowest-IPR) neurons of the trained network and
  report what the pruned network still fits; the whole pruning curve goes to
  ``pruning.json`` in the run directory.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from paperkit import PluginError, forward, hookimpl, unwrapped
from paperkit_grok_corrupted import functional

CURVE_FILE = "pruning.json"
KEY = "grok-corrupted"


class GrokCorrupted:
    """Memorization and generalization diagnostics of Doshi et al. (ICLR 2024)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.peak: dict[str, float] = {}  # the highest corrupted-sample accuracy seen by after_step, and its step

    # -- data ------------------------------------------------------------------------
    def _training_set(self, experience: Any, ctx: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x, noisy labels, clean labels)`` of ``experience``'s training set."""
        train = experience.train
        clean = (ctx.task.extras.get("clean_labels") or {}).get(experience.index)
        if clean is None:
            return train.x, train.y, train.y  # no label noise: every label is clean
        if len(clean) != len(train.y):
            raise PluginError(
                f"{KEY}: the task's clean labels ({len(clean)}) do not line up with experience {experience.index}'s "
                f"{len(train.y)} training samples (a [task] validation_fraction with label_noise?)"
            )
        return train.x, train.y, clean

    def _predict(self, model: nn.Module, x: torch.Tensor, experience: Any, ctx: Any) -> torch.Tensor:
        was_training = model.training
        model.eval()
        out = []
        with torch.no_grad():
            for chunk in x.split(max(1, ctx.plan.run.eval_batch_size)):
                out.append(forward(model, chunk.to(ctx.device), ctx, experience).logits.argmax(-1).cpu())
        model.train(was_training)
        return torch.cat(out)

    def _ipr(self, model: nn.Module, ctx: Any) -> torch.Tensor | None:
        """Per-neuron IPR, or ``None`` when the input is not the one-hot ``[e_a, e_b]`` of modular arithmetic."""
        p = ctx.task.info.num_classes
        try:
            first, second = functional.hidden_layers(unwrapped(model))
        except ValueError:
            return None
        if first.in_features != 2 * p:
            return None
        head = second.weight if second.out_features == p else None
        return functional.neuron_ipr(first.weight, p, head, self.config.r)

    def _measure(self, model: nn.Module, experience: Any, ctx: Any) -> dict[str, float]:
        x, labels, clean = self._training_set(experience, ctx)
        out = functional.label_accuracies(self._predict(model, x, experience, ctx), labels, clean)
        ipr = self._ipr(model, ctx)
        if ipr is not None:
            out.update(functional.ipr_statistics(ipr, self.config.ipr_threshold))
        return out

    # -- hooks -----------------------------------------------------------------------
    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float] | None:
        if data.split != "test":  # the training-set diagnostics do not depend on which test set is scored
            return None
        return self._measure(model, data.experience, ctx)

    @hookimpl
    def after_step(self, model: nn.Module, ctx: Any) -> dict[str, float] | None:
        every = self.config.every
        if not every or ctx.step % every:
            return None
        out = self._measure(model, ctx.experience, ctx)
        out["test_accuracy"] = float(ctx.evaluate(model, [ctx.experience.index])[ctx.experience.index]["accuracy"])
        corrupted = out.get("corrupted_accuracy")
        if corrupted is not None and corrupted > self.peak.get("peak_corrupted_accuracy", -1.0):
            self.peak = {"peak_corrupted_accuracy": corrupted, "peak_step": float(ctx.step)}
        return out

    @hookimpl
    def after_run(self, model: nn.Module, ctx: Any) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.peak)
        experience = ctx.task.experiences[-1]
        ipr = self._ipr(model, ctx)
        if ipr is None:
            out["pruning"] = "not computed: the first layer does not read the one-hot [a, b] of modular arithmetic"
            return out
        base = unwrapped(model)
        x, labels, clean = self._training_set(experience, ctx)
        test = experience.test
        n_memorizing = functional.memorizing_count(ipr, self.config.ipr_threshold)
        out.update(memorizing_neurons=float(n_memorizing), memorizing_fraction=n_memorizing / len(ipr))

        def scores(neurons: torch.Tensor) -> dict[str, float]:
            net = functional.pruned(base, neurons)
            row = functional.label_accuracies(self._predict(net, x, experience, ctx), labels, clean)
            row["test_accuracy"] = (self._predict(net, test.x, experience, ctx) == test.y.cpu()).double().mean().item()
            return row

        orders = {
            o: functional.pruning_order(ipr, o, ctx.generator("prune")) for o in ("low-ipr", "high-ipr", "random")
        }
        chosen = (
            orders[self.config.prune][:n_memorizing]
            if self.config.prune != "none"
            else torch.zeros(0, dtype=torch.long)
        )
        out.update({f"pruned/{name}": value for name, value in scores(chosen).items()})
        if self.config.curve_points and ctx.is_main_process:
            n = len(ipr)
            counts = sorted({round(n * i / self.config.curve_points) for i in range(self.config.curve_points + 1)})
            curve = {
                "neurons": n,
                "threshold": self.config.ipr_threshold,
                "memorizing_neurons": n_memorizing,
                "ipr": ipr.tolist(),
                "curves": {o: [{"pruned": k, **scores(order[:k])} for k in counts] for o, order in orders.items()},
            }
            (ctx.run_dir / CURVE_FILE).write_text(json.dumps(curve, indent=1), encoding="utf-8")
            out["curve"] = CURVE_FILE
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"peak": dict(self.peak)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.peak = dict(state["peak"])
