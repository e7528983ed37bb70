"""The hooks of neural-redshift: shells over :mod:`paperkit_neural_redshift.functional`.

``evaluate`` draws the slice once, at the run's first evaluation (the centre and scale of that evaluation set's
inputs, two orthonormal directions from the method's generator ``ctx.generator("slice")``), keeps it in the
method's state, and measures the model's outputs on that same grid at every evaluation: before training (the
accuracy matrix's row "initial": the random network, the paper's object) and after every experience. ``after_run``
writes the initial measurements into ``results.json`` as ``summary["neural-redshift"]["initial/<name>"]`` and,
when the model was measured after training too, ``change/<name>`` (last minus initial). Every process computes
the same numbers from the same parameters and the same grid, so nothing is gathered.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import PluginError, hookimpl, unwrapped
from paperkit_neural_redshift import functional


class NeuralRedshift:
    """Fourier and LZ complexity of the function the model implements on a fixed 2-D slice of its input space."""

    def __init__(self, config: Any) -> None:
        from paperkit_neural_redshift import NeuralRedshiftConfig

        self.config = config if config is not None else NeuralRedshiftConfig()
        self.slice: dict[str, Any] = {}  # center (dim,), basis (2, dim), radius, input_shape; fixed per run
        self.initial: dict[int, dict[str, float]] = {}  # per experience test set, before training
        self.last: dict[int, dict[str, float]] = {}  # per experience test set, the latest measurement
        self.after_initial = False  # whether any measurement was made after the initial one

    def _draw_slice(self, data: Any, ctx: Any) -> None:
        x = data.experience.test.x
        if not x.is_floating_point() or len(x) == 0:
            raise PluginError(
                "neural-redshift: needs real-valued model inputs to lay a grid over (this task's inputs are "
                f"{x.dtype} tokens); use a task with feature or image inputs"
            )
        flat = x.reshape(len(x), -1).to(torch.float64)
        if flat.shape[1] < 2:
            raise PluginError("neural-redshift: a 2-D slice needs inputs of at least 2 dimensions")
        center = flat.mean(0) if self.config.center == "mean" else torch.zeros(flat.shape[1], dtype=torch.float64)
        radius = self.config.radius
        if radius is None:  # the data's scale: root-mean-square distance of the inputs from the centre
            radius = float((flat - center).pow(2).sum(1).mean().sqrt())
            if not radius > 0.0:
                raise PluginError("neural-redshift: the evaluation inputs do not spread; set radius")
        self.slice = {
            "center": center,
            "basis": functional.slice_basis(flat.shape[1], ctx.generator("slice")),
            "radius": float(radius),
            "input_shape": [int(s) for s in x.shape[1:]],
        }

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float] | None:
        if data.split != "test" or (self.config.phases == "initial" and data.phase != "initial"):
            return None  # the grid does not depend on the evaluation set: one measurement per experience
        if not self.slice:
            self._draw_slice(data, ctx)
        module = unwrapped(model)
        task = getattr(ctx, "task", None)
        outputs = sorted(data.experience.classes) if task is not None and task.scenario == "task" else None
        training = module.training
        module.eval()
        try:
            maps = functional.slice_outputs(
                module,
                self.slice["center"],
                self.slice["basis"],
                self.config.grid,
                self.slice["radius"],
                input_shape=self.slice["input_shape"],
                outputs=outputs,
            )
        finally:
            module.train(training)
        metrics = functional.complexity_metrics(maps)
        metrics["radius"] = self.slice["radius"]
        index = int(data.experience.index)
        if data.phase == "initial":
            self.initial[index] = dict(metrics)
        else:
            self.after_initial = True
        self.last[index] = dict(metrics)
        return metrics

    @hookimpl
    def after_run(self) -> dict[str, float]:
        """Initial measurements (mean over test sets; ``@j`` per test set of a stream) and the change since."""
        if not self.initial:
            return {}
        sets = sorted(self.initial)
        names = [n for n in self.initial[sets[0]] if n != "radius"]
        out = {f"initial/{n}": sum(self.initial[j][n] for j in sets) / len(sets) for n in names}
        if len(sets) > 1:
            out.update({f"initial/{n}@{j}": self.initial[j][n] for j in sets for n in names})
        if self.after_initial:
            for n in (n for n in names if not n.endswith("_std")):
                out[f"change/{n}"] = sum(self.last[j][n] - self.initial[j][n] for j in sets) / len(sets)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "slice": dict(self.slice),
            "initial": {int(j): dict(m) for j, m in self.initial.items()},
            "last": {int(j): dict(m) for j, m in self.last.items()},
            "after_initial": self.after_initial,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.slice = dict(state.get("slice", {}))

        def _metrics(table: dict[Any, Any]) -> dict[int, dict[str, float]]:
            return {int(j): {str(n): float(v) for n, v in m.items()} for j, m in table.items()}

        self.initial = _metrics(state.get("initial", {}))
        self.last = _metrics(state.get("last", {}))
        self.after_initial = bool(state.get("after_initial", False))
