"""The hooks of lazy-rich-grokking: thin shells over :mod:`paperkit_lazy_rich_grokking.functional`.

``adapt`` wraps the model so that it outputs ``α·(h − h₀)`` (or ``α·h``) and keeps θ₀; ``optimize`` multiplies the
gradients by ``1/α²`` (the gradient of the loss divided by α², for any optimizer); ``evaluate`` measures the
kernel–label alignment of the empirical NTK on a fixed probe set of the test and training sets, keeps the initial
kernel K₀ and reports the kernel distance and the relative parameter change from initialization; ``after_step``
records the training and test accuracy every ``every`` steps and ``after_run`` turns the curves into the steps at
which the training set was fitted and the test set generalized (the grokking delay). Everything kept between hooks
(θ₀, K₀, the curves) is the method's state and round-trips through ``state_dict``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import Optimization, hookimpl, unwrapped
from paperkit_lazy_rich_grokking import functional


def evenly_spaced(total: int, n: int) -> torch.Tensor:
    """``n`` distinct indices spread evenly over ``range(total)`` (a set sorted by class is still covered)."""
    n = min(n, total)
    return torch.arange(n) * total // n


def probe(dataset: Any, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of ``n`` evenly spaced samples of a dataset of dict items (sliced when it holds tensors)."""
    ids = evenly_spaced(len(dataset), n)
    if hasattr(dataset, "x") and hasattr(dataset, "y"):
        return dataset.x[ids], dataset.y[ids]
    items = [dataset[int(i)] for i in ids]
    return torch.stack([item["x"] for item in items]), torch.stack([torch.as_tensor(item["y"]) for item in items])


def is_class(y: torch.Tensor) -> bool:
    """Class labels are integers; regression targets are floats."""
    return not torch.is_floating_point(y)


class LazyRichGrokking:
    """The output scale α with centring and the 1/α² loss factor; the lazy/rich diagnostics."""

    def __init__(self, config: Any) -> None:
        from paperkit_lazy_rich_grokking import LazyRichGrokkingConfig

        self.config = config if config is not None else LazyRichGrokkingConfig()
        self.initial_parameters: dict[str, torch.Tensor] = {}
        self.initial_kernels: dict[str, torch.Tensor] = {}  # K₀ per "<experience>/<probe>"
        self.curve: list[tuple[int, float, float]] = []  # (step, train accuracy, test accuracy)

    # -- capabilities the conformance suite checks ---------------------------------------------------------------
    @property
    def identity(self) -> bool:
        """α = 1 without centring changes nothing: the method is then the diagnostics alone."""
        return self.config.alpha == 1.0 and not self.config.center

    @property
    def preserves_output(self) -> bool:
        return self.identity

    # -- hooks ---------------------------------------------------------------------------------------------------
    @hookimpl
    def adapt(self, model: nn.Module) -> nn.Module | None:
        cfg = self.config
        adapted = model if self.identity else functional.output_scale(model, cfg.alpha, cfg.center)
        self.initial_parameters = {
            n: p.detach().cpu().clone() for n, p in adapted.named_parameters() if p.requires_grad
        }
        return None if adapted is model else adapted

    @hookimpl
    def optimize(self) -> Optimization | None:
        cfg = self.config
        if cfg.loss_scale != "inverse-square" or cfg.alpha == 1.0:
            return None
        factor = functional.loss_factor(cfg.alpha)

        def transform(model: nn.Module) -> None:
            functional.scale_gradients(model.parameters(), factor)

        return Optimization(grad_transform=transform)

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float] | None:
        if data.split != "test" or self.config.samples < 2:
            return None
        experience = data.experience
        module = unwrapped(model)
        out: dict[str, float] = {}
        for name, dataset in (("test", experience.test), ("train", experience.train)):
            if dataset is None or len(dataset) < 2:
                continue
            out.update(self._kernel_metrics(module, dataset, f"{experience.index}/{name}", name, data.phase, ctx))
        current = {n: p for n, p in module.named_parameters()}
        out["relative_change"] = functional.relative_change(current, self.initial_parameters)
        return out

    def _kernel_metrics(
        self, module: nn.Module, dataset: Any, key: str, name: str, phase: str, ctx: Any
    ) -> dict[str, float]:
        cfg = self.config
        device = next(module.parameters()).device
        x, y = probe(dataset, cfg.samples)
        x = x.to(device)
        labels = functional.label_matrix(y, ctx.task.info.num_classes if is_class(y) else None)
        training = module.training
        module.eval()
        try:
            with torch.enable_grad():
                kernel = functional.traced_ntk(module, x).cpu()
        finally:
            module.train(training)
        prefix = "" if name == "test" else "train_"
        out = {f"{prefix}alignment": functional.kernel_alignment(kernel, labels, cfg.centering)}
        if phase == "initial":
            self.initial_kernels[key] = kernel.clone()
        k0 = self.initial_kernels.get(key)
        if k0 is not None and k0.shape == kernel.shape:
            out[f"{prefix}initial_alignment"] = functional.kernel_alignment(k0, labels, cfg.centering)
            out[f"{prefix}kernel_distance"] = functional.kernel_distance(kernel, k0)
        return out

    @hookimpl
    def after_step(self, model: nn.Module, ctx: Any) -> dict[str, float] | None:
        every = self.config.every
        last = ctx.experience_step >= ctx.total_steps
        if not every or (ctx.step % every and not last):
            return None
        logits, targets = ctx.eval_set(model, ctx.experience.train, "train").predictions()
        if not is_class(targets):
            return None  # the accuracy curves are for class tasks
        train = float((logits.argmax(-1) == targets).double().mean())
        index = ctx.experience.index
        test = float(ctx.evaluate(model, [index])[index]["accuracy"])
        if not self.curve or self.curve[-1][0] != ctx.step:
            self.curve.append((int(ctx.step), train, test))
        return {"train_accuracy": train, "test_accuracy": test}

    @hookimpl
    def after_run(self, ctx: Any) -> dict[str, float]:
        cfg = self.config
        out: dict[str, float] = {}
        if self.curve:
            steps = [s for s, _, _ in self.curve]
            out.update(
                functional.grokking_steps(
                    steps,
                    [a for _, a, _ in self.curve],
                    [b for _, _, b in self.curve],
                    cfg.fit_threshold,
                    cfg.test_threshold,
                    max(int(ctx.step), steps[-1]),
                )
            )
            out["mean_test_accuracy"] = sum(b for _, _, b in self.curve) / len(self.curve)
        return out

    # -- state ---------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "initial_parameters": dict(self.initial_parameters),
            "initial_kernels": dict(self.initial_kernels),
            "curve": [list(point) for point in self.curve],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial_parameters = dict(state.get("initial_parameters", {}))
        self.initial_kernels = dict(state.get("initial_kernels", {}))
        self.curve = [(int(s), float(a), float(b)) for s, a, b in state.get("curve", [])]
