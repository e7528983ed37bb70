"""The hooks of low-rank-init: thin shells over :mod:`paperkit_low_rank_init.functional`.

``init`` redraws the chosen layers' weights as σ·G/√fan_in from the method's own generator and keeps their
top-r singular triplets at the same Frobenius norm (or aligns them with the task, ``aligned``). ``evaluate``
measures, on ``samples`` evenly spaced samples of each evaluation set, the tangent kernel of the chosen
weights and the penultimate features; the evaluation before training keeps them (and W_0) as the reference,
later ones report the weight, kernel and representation changes from it. Every process computes the same
numbers from the same parameters and samples, so nothing is gathered. The references are the method's
checkpointed state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import PluginError, capture, forward, hookimpl, parameter_jacobian, unwrapped
from paperkit_low_rank_init import functional


def evenly_spaced(total: int, n: int) -> torch.Tensor:
    """``n`` distinct indices spread evenly over ``range(total)`` (a set sorted by class is still covered)."""
    n = min(n, total)
    return torch.arange(n) * total // n


def take(dataset: Any, ids: torch.Tensor) -> torch.Tensor:
    """The inputs of samples ``ids`` of a dataset of dict items (sliced when it holds an ``x`` tensor)."""
    if hasattr(dataset, "x"):
        return dataset.x[ids]
    return torch.stack([dataset[int(i)]["x"] for i in ids])


def _dataset(data: Any) -> Any:
    found = getattr(data.loader, "dataset", None)
    if found is not None:
        return found
    if data.split == "test":
        return data.experience.test
    if data.split.startswith("ood:"):
        return data.experience.ood[data.split[4:]]
    return None


class LowRankInit:
    """Rank-r initial weights at the full-rank norm, and how far training moves weights, kernel and features."""

    def __init__(self, config: Any) -> None:
        from paperkit_low_rank_init import LowRankInitConfig

        self.config = config if config is not None else LowRankInitConfig()
        self.initial_weights: dict[str, torch.Tensor] | None = None  # W_0 of the chosen layers
        self.initial: dict[str, dict[str, torch.Tensor]] = {}  # K_0 and H_0 of each evaluation set

    # -- init -----------------------------------------------------------------------------
    def _layers(self, model: nn.Module) -> list[tuple[str, nn.Linear]]:
        layers = functional.select_layers(model, self.config.layers)
        if not layers:
            raise PluginError(f"low-rank-init: no nn.Linear module matches {self.config.layers}; set 'layers' to glob "
                              "patterns over this model's module names (the core mlp's hidden layers are blocks.N.linear1)")
        return layers

    @hookimpl
    def init(self, model: nn.Module, ctx: Any) -> None:
        c = self.config
        model = unwrapped(model)
        layers = self._layers(model)
        if not c.redraw:
            return None
        generator = ctx.generator("weights")
        batches: list[Any] | None = None
        for name, layer in layers:
            weight = functional.gaussian_weight(tuple(layer.weight.shape), c.sigma, generator)
            if c.aligned and c.rank is not None and c.rank < min(weight.shape):
                batches = batches if batches is not None else ctx.sample_batches(c.align_batches)
                w0 = functional.aligned_low_rank(weight, c.rank, self._task_directions(model, name, batches, ctx))
            else:
                w0 = functional.low_rank_like(weight, c.rank)
            with torch.no_grad():
                layer.weight.copy_(w0.to(layer.weight.dtype))
        return None

    def _task_directions(self, model: nn.Module, name: str, batches: list[Any], ctx: Any) -> torch.Tensor:
        """Layer ``name``'s input on the training batches → its top task directions (rank × fan_in).

        Layers are set in module order, so a later layer sees the activity of the already initialized ones."""
        x = torch.cat([b["x"] for b in batches])
        y = torch.cat([b["y"] for b in batches])
        training = model.training
        model.eval()
        try:
            with torch.no_grad(), capture(model, names=[name], detach=True) as seen:
                model(x)
        finally:
            model.train(training)
        classes = int(ctx.task.info.num_classes)
        return functional.task_directions(seen.inputs[name].cpu(), y.cpu(), classes, self.config.rank)

    # -- evaluate ---------------------------------------------------------------------------
    def _weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": layer.weight for name, layer in self._layers(model)}

    def _kernel_names(self, model: nn.Module, jac: dict[str, torch.Tensor]) -> list[str]:
        wanted = list(self._weights(model)) if self.config.kernel_params == "layers" else list(jac)
        names = [n for n in wanted if n in jac]
        if not names:
            raise PluginError("low-rank-init: none of the chosen layers' weights trains, so their tangent kernel is "
                              "empty; set kernel_params = 'all' or choose trainable layers")
        return names

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float] | None:
        dataset = _dataset(data)
        if dataset is None or len(dataset) < 1:
            return None
        module = unwrapped(model)
        device = next(module.parameters()).device
        x = take(dataset, evenly_spaced(len(dataset), self.config.samples)).to(device)
        training = module.training
        module.eval()
        try:
            with torch.enable_grad():
                jac = parameter_jacobian(module, x)
            with torch.no_grad():
                features = forward(module, x, ctx, data.experience).features
        finally:
            module.train(training)
        kernel = functional.tangent_kernel(jac, self._kernel_names(module, jac)).cpu()
        features = features.detach().double().cpu() if features is not None else None
        weights = {n: w.detach().double().cpu() for n, w in self._weights(module).items()}
        if self.initial_weights is None:  # the first evaluation, before training: W_0
            self.initial_weights = {n: w.clone() for n, w in weights.items()}
        key = f"{data.experience.index}/{data.split}"
        if data.phase == "initial" or key not in self.initial:
            self.initial[key] = {"kernel": kernel.clone()} | ({"features": features.clone()} if features is not None else {})
        ref = self.initial[key]
        out = functional.regime_measures(weights, self.initial_weights, kernel, ref["kernel"], features,
                                         ref.get("features"))
        out["effective_rank"] = sum(functional.effective_rank(w) for w in weights.values()) / len(weights)
        out["initial_effective_rank"] = sum(functional.effective_rank(w) for w in self.initial_weights.values()) / len(
            self.initial_weights)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"initial_weights": self.initial_weights, "initial": {k: dict(v) for k, v in self.initial.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.initial_weights = state.get("initial_weights")
        self.initial = {k: dict(v) for k, v in state.get("initial", {}).items()}

