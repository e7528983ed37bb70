"""The hooks of ntk: thin shells over :mod:`paperkit_ntk.functional`.

``evaluate`` measures the chosen kernel on ``samples`` samples of the evaluation set it is handed (spread evenly
over the set, the same samples at every evaluation), keeps the kernel of the evaluation before training as
``K_0`` (per experience and set, in the method's state, so ``--resume`` keeps it), and reports the change from it
afterwards. Every process computes the same numbers from the same parameters and samples, so nothing is gathered.
``after_run`` reports the metrics of the evaluation before training as ``initial/<name>`` (a claim about the
kernel at initialization reads them there).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from paperkit import hookimpl, unwrapped
from paperkit_ntk import functional


def evenly_spaced(total: int, n: int) -> torch.Tensor:
    """``n`` distinct indices spread evenly over ``range(total)`` (a set sorted by class is still covered)."""
    n = min(n, total)
    return torch.arange(n) * total // n


def take(dataset: Any, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of the samples ``ids`` of any dataset of dict items (tensors sliced when it holds them)."""
    if hasattr(dataset, "x") and hasattr(dataset, "y"):
        return dataset.x[ids], dataset.y[ids]
    items = [dataset[int(i)] for i in ids]
    return torch.stack([item["x"] for item in items]), torch.stack([torch.as_tensor(item["y"]) for item in items])


def _dataset(data: Any) -> Any:
    found = getattr(data.loader, "dataset", None)
    if found is not None:
        return found
    if data.split == "test":
        return data.experience.test
    if data.split.startswith("ood:"):
        return data.experience.ood[data.split[4:]]
    return None


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """A singular kernel's infinite condition number is left out rather than reported."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


class Ntk:
    """The empirical NTK, the pseudo-NTK or the lpNTK on a few samples of every evaluation set."""

    def __init__(self, config: Any) -> None:
        from paperkit_ntk import NtkConfig

        self.config = config if config is not None else NtkConfig()
        self.initial: dict[str, torch.Tensor] = {}  # K_0 of each evaluation set, "<experience>/<split>"
        self.initial_metrics: dict[str, list[float]] = {}  # the test sets' metrics before training

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float] | None:
        dataset = _dataset(data)
        if dataset is None or len(dataset) < 2:
            return None
        cfg = self.config
        module = unwrapped(model)
        device = next(module.parameters()).device
        x, y = take(dataset, evenly_spaced(len(dataset), cfg.samples))
        x, y = x.to(device), y.to(device)
        regress = cfg.train_samples > 0 and cfg.kernel != "lp"
        if regress:
            train = data.experience.train
            xt, yt = take(train, evenly_spaced(len(train), cfg.train_samples))
            xt, yt = xt.to(device), yt.to(device)
        else:
            xt = yt = None
        task = getattr(ctx, "task", None)
        outputs = None
        if task is not None and task.scenario == "task":
            outputs = torch.tensor(sorted(data.experience.classes), device=device)
        training = module.training
        module.eval()
        try:
            with torch.enable_grad():
                metrics = self._measure(module, x, y, xt, yt, outputs, data)
        finally:
            module.train(training)
        if data.phase == "initial" and data.split == "test":
            for name, value in metrics.items():
                self.initial_metrics.setdefault(name, []).append(value)
        return _finite(metrics)

    def _measure(
        self,
        module: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        xt: torch.Tensor | None,
        yt: torch.Tensor | None,
        outputs: torch.Tensor | None,
        data: Any,
    ) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            logits = module(x)
            logits_train = module(xt) if xt is not None else None
        num_outputs = int(logits.shape[-1])
        m = len(x)
        both = x if xt is None else torch.cat([x, xt])
        if cfg.kernel == "full":
            theta = functional.empirical_ntk(module, both, outputs=outputs)
            kernel = theta[:m, :, :m, :]
            cross, gram = theta[:m, :, m:, :], theta[m:, :, m:, :]
        else:
            if cfg.kernel == "pseudo":
                w = functional.output_weights(len(both), num_outputs, outputs, x.device)
            else:
                w = functional.label_signs(y, num_outputs, outputs)
            full = functional.weighted_ntk(module, both, w)
            kernel, cross, gram = full[:m, :m], full[:m, m:], full[m:, m:]
        metrics = functional.spectrum(kernel)
        key = f"{data.experience.index}/{data.split}"
        if data.phase == "initial":
            self.initial[key] = kernel.detach().cpu().clone()
        elif key in self.initial and self.initial[key].shape == kernel.shape:
            k0 = self.initial[key].to(kernel.device)
            metrics["kernel_change"] = functional.relative_change(kernel, k0)
            metrics["kernel_distance"] = functional.kernel_distance(kernel, k0)
        if cfg.kernel == "pseudo" and (
            cfg.compare_full == "always" or (cfg.compare_full == "initial" and data.phase == "initial")
        ):
            theta = functional.empirical_ntk(module, x, outputs=outputs)
            metrics["approximation_error"] = functional.approximation_error(theta, kernel)
        if xt is not None and yt is not None and logits_train is not None:
            metrics["kernel_accuracy"] = self._accuracy(gram, cross, yt, y, logits_train, logits, outputs)
        return metrics

    def _accuracy(
        self,
        gram: torch.Tensor,
        cross: torch.Tensor,
        yt: torch.Tensor,
        y: torch.Tensor,
        logits_train: torch.Tensor,
        logits: torch.Tensor,
        outputs: torch.Tensor | None,
    ) -> float:
        """Kernel-regression accuracy on the measured samples, fitted on the training samples' one-hot labels."""
        cols = outputs if outputs is not None else torch.arange(logits.shape[-1], device=logits.device)
        targets = torch.nn.functional.one_hot(yt.long(), logits.shape[-1])[:, cols]
        f0_train = logits_train[:, cols] if self.config.linearized else None
        f0_test = logits[:, cols] if self.config.linearized else None
        pred = functional.kernel_regression(gram, cross, targets, self.config.ridge, f0_train, f0_test)
        return float((cols[pred.argmax(-1)] == y).double().mean())

    @hookimpl
    def after_run(self) -> dict[str, float]:
        """The metrics of the evaluation before training, averaged over the experiences' test sets."""
        return {
            f"initial/{name}": sum(values) / len(values)
            for name, values in self.initial_metrics.items()
            if values and math.isfinite(sum(values))
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "initial": dict(self.initial),
            "initial_metrics": {k: list(v) for k, v in self.initial_metrics.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial = dict(state.get("initial", {}))
        self.initial_metrics = {k: [float(x) for x in v] for k, v in state.get("initial_metrics", {}).items()}
