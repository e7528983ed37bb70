"""Per-parameter learning rates and weight decay: layer-wise learning-rate decay through a parameter rule."""

from __future__ import annotations

import fnmatch
from typing import Any

from torch import nn

from paperkit import hookimpl
from paperkit.context import Optimization
from paperkit.step import unwrapped

#: modules whose parameters start a new layer; any other module with parameters (a norm) joins the layer before it
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def layer_depths(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{parameter name: (layer index, number of layers)}``, layers counted in registration order.

    A layer is a linear, convolution or embedding module; parameters of other
    modules (norms, a learned scale) belong to the layer registered before them
    (the first layer when none came before).
    """
    depth, owner = -1, {}
    for name, module in unwrapped(model).named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        if isinstance(module, LAYERS) or depth < 0:
            depth += 1
        for pname, _p in own:
            owner[f"{name}.{pname}" if name else pname] = depth
    total = depth + 1
    return {name: (d, total) for name, d in owner.items()}


class LayerLRDecay:
    """Learning rate ``lr · decay^(L − 1 − l)`` for layer ``l`` of ``L`` (the head keeps ``lr``), and no weight
    decay on the parameters ``no_decay`` names; any optimizer honours both through the parameter rule."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        depths = layer_depths(model)
        decay, exempt = self.config.decay, list(self.config.no_decay)

        def rule(name: str, _parameter: nn.Parameter) -> dict[str, float]:
            layer, total = depths[name]
            multipliers = {"lr": decay ** (total - 1 - layer)}
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in exempt):
                multipliers["weight_decay"] = 0.0
            return multipliers

        return Optimization(param_rule=rule)
