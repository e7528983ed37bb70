"""Net2WiderNet (Chen, Goodfellow & Shlens, ICLR 2016): widen every hidden layer of the MLP mid-run, keeping its function."""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

from paperkit import hookimpl
from paperkit.context import RunContext
from paperkit.errors import PlanError
from paperkit.models.mlp import MLP, Block


def widening_map(width: int, new_width: int, generator: torch.Generator) -> torch.Tensor:
    """Net2WiderNet's random mapping ``g`` (Sec. 3.2): unit ``j`` of the wide layer copies unit ``g(j)``, with
    ``g(j) = j`` for the original units and a uniform draw among them for each new one."""
    extra = torch.randint(0, width, (new_width - width,), generator=generator)
    return torch.cat([torch.arange(width), extra])


def _widened(
    layer: nn.Linear, rows: torch.Tensor | None, cols: torch.Tensor | None, counts: torch.Tensor | None
) -> nn.Linear:
    """``layer`` with output units ``rows`` (copies) and input units ``cols``, each input column divided by how
    often its unit was replicated (so the next layer's sum is unchanged)."""
    weight = layer.weight.detach()
    if cols is not None:
        assert counts is not None
        weight = weight[:, cols] / counts[cols].to(weight.dtype)
    if rows is not None:
        weight = weight[rows]
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=layer.bias is not None).to(weight.device, weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if layer.bias is not None:
            bias = layer.bias.detach()
            out.bias.copy_(bias[rows] if rows is not None else bias)
    return out


def widen_mlp(model: MLP, new_width: int, generator: torch.Generator, noise: float = 0.0) -> MLP:
    """A copy of ``model`` with every hidden layer ``new_width`` wide, computing the same function.

    One mapping serves every hidden layer, because residual blocks add their
    input to their output unit for unit. ``noise`` > 0 adds Gaussian noise of
    that standard deviation, relative to each new weight matrix's own standard
    deviation, to the replicated weights (symmetry breaking; the function then
    changes by that much).
    """
    _check_widenable(model)
    width = model.head.in_features
    if new_width <= width:
        raise PlanError(f"net2wider: the new width {new_width} must exceed the current width {width}")
    g = widening_map(width, new_width, generator)
    counts = torch.bincount(g, minlength=width)
    wide = copy.deepcopy(model)
    wide.stem[0] = _widened(cast(nn.Linear, model.stem[0]), g, None, None)
    layers = [cast(nn.Linear, wide.stem[0])]
    for block, original in zip(cast(list[Block], wide.blocks), cast(list[Block], model.blocks)):
        block.linear1 = _widened(original.linear1, g, g, counts)
        layers.append(block.linear1)
        if original.linear2 is not None:
            block.linear2 = _widened(original.linear2, g, g, counts)
            layers.append(block.linear2)
    wide.head = _widened(model.head, None, g, counts)
    layers.append(wide.head)
    if noise > 0:
        with torch.no_grad():
            for layer in layers:
                draw = torch.randn(layer.weight.shape, generator=generator, dtype=layer.weight.dtype)
                layer.weight.add_(noise * layer.weight.std() * draw.to(layer.weight.device))
    return wide


def _check_widenable(model: nn.Module) -> None:
    if not isinstance(model, MLP):
        raise PlanError(f"net2wider widens the core mlp model, not {type(model).__name__}", "[model] name")
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.LayerNorm)):
            raise PlanError(
                'net2wider needs norm = "none" (widening would change normalized statistics)', "[model] norm"
            )
        if type(module).__name__ == "Maxout":
            raise PlanError("net2wider does not widen maxout units", "[model] activation")
    if not all(isinstance(b, Block) for b in model.blocks):
        raise PlanError("net2wider found an unexpected block in the mlp", "[model]")


class Net2Wider:
    """Widen the hidden layers by ``factor`` after each of the steps ``at_steps`` (global optimizer steps)."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def grow(self, model: nn.Module, ctx: RunContext) -> nn.Module | None:
        if ctx.step == 1 or ctx.replaying:
            _check_widenable(model)  # a model it cannot widen fails at the first step, not mid-run
        if ctx.step not in self.config.at_steps:
            return None
        assert isinstance(model, MLP)
        width = model.head.in_features
        return widen_mlp(model, round(width * self.config.factor), ctx.generator("mapping"), self.config.noise)
