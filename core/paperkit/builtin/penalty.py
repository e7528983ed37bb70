"""An L2 penalty as a named loss term (the simplest regularizer; a second term for per-term gradient methods)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import hookimpl
from paperkit.context import Batch, RunContext
from paperkit.step import forward, trainable


class L2:
    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def regularize(self, model: nn.Module) -> dict[str, torch.Tensor]:
        squares = torch.stack([p.pow(2).sum() for p in trainable(model)]).sum()
        return {"penalty": 0.5 * self.config.weight * squares}


class DoubleBackprop:
    """Drucker & LeCun's (1992) double backpropagation: penalize each sample's input gradient of its loss.

    The term is ``weight · mean_i ‖∂ℓ_i/∂x_i‖²``; differentiating it takes a
    second backward pass through the first (``create_graph=True``). Samples do
    not interact, so under several processes each process's share of the mean
    adds up to the global batch's term, as for any per-sample loss.
    """

    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def regularize(self, model: nn.Module, batch: Batch, ctx: RunContext) -> dict[str, torch.Tensor]:
        x = batch["x"].detach().requires_grad_(True)
        losses = F.cross_entropy(forward(model, x, ctx).logits, batch["y"], reduction="sum")
        (grad,) = torch.autograd.grad(losses, x, create_graph=True)
        return {"penalty": self.config.weight * grad.pow(2).flatten(1).sum(1).mean()}
