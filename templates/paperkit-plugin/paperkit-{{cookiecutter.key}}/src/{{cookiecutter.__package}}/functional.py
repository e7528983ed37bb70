"""The math of {{ cookiecutter.key }} as plain functions, usable without the engine.

Each function takes tensors or modules and returns tensors; none reads a plan
or a run context. The hook shells in :mod:`{{ cookiecutter.__package }}.hooks` call them, and
the tests in ``tests/`` check them against a reference implementation or an
invariant.

The functions below are the template's working examples, one per hook you
chose; replace them with the paper's equations and cite each (paper section,
equation number) in its docstring and in the README's equation table.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
{% set hooks = cookiecutter.hooks.replace(' ', '').split(',') %}
{%- if 'init' in hooks %}


@torch.no_grad()
def scaled_normal_(model: nn.Module, gain: float, generator: torch.Generator) -> nn.Module:
    """Draw every weight with a fan-in from N(0, (gain / sqrt(fan_in))^2) and zero every bias, in place.

    ``gain = 1`` keeps the variance of a linear layer's output equal to its
    input's (LeCun normal). Weights are drawn on the CPU from ``generator`` so
    a seed gives the same model on every device.
    """
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2:
            fan_in = weight[0].numel()
            weight.copy_(torch.randn(weight.shape, generator=generator) * (gain / math.sqrt(fan_in)))
            bias = getattr(module, "bias", None)
            if isinstance(bias, nn.Parameter):
                bias.zero_()
    return model
{%- endif %}
{%- if 'adapt' in hooks %}


def train_biases_only(model: nn.Module) -> list[str]:
    """Freeze every parameter but the biases (bias-only fine-tuning); returns the trainable names.

    Freezing changes no value, so the adapted model computes exactly what the
    base model computed.
    """
    names = []
    for name, parameter in model.named_parameters():
        trains = name.rsplit(".", 1)[-1] == "bias"
        parameter.requires_grad_(trains)
        if trains:
            names.append(name)
    if not names:
        raise ValueError("the model has no biases to train")
    return names
{%- endif %}
{%- if 'optimize' in hooks %}


@torch.no_grad()
def heavy_ball_step(param: torch.Tensor, grad: torch.Tensor, velocity: torch.Tensor, lr: float, momentum: float) -> None:
    """One heavy-ball step in place: ``v <- mu v + g``, ``p <- p - lr v`` (Polyak, 1964)."""
    velocity.mul_(momentum).add_(grad)
    param.add_(velocity, alpha=-lr)


class HeavyBall(torch.optim.Optimizer):
    """Gradient descent with heavy-ball momentum; its state (the velocities) round-trips through ``state_dict``."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float, momentum: float) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                heavy_ball_step(p, p.grad, state["velocity"], group["lr"], group["momentum"])
        return loss
{%- endif %}
{%- if 'loss' in hooks %}


def tempered_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample cross-entropy of ``softmax(logits / T)`` against ``targets``, one probability vector per sample."""
    return -(targets * torch.log_softmax(logits / temperature, dim=-1)).sum(-1)
{%- endif %}
{%- if 'regularize' in hooks %}


def l2_penalty(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """``sum ||p||^2`` over ``parameters``: its gradient is ``2 p``."""
    return sum((p.pow(2).sum() for p in parameters), torch.zeros(()))
{%- endif %}
{%- if 'evaluate' in hooks %}


def mean_confidence(logits: torch.Tensor) -> float:
    """Mean over samples of the largest softmax probability (1/C for uniform logits, 1 for certain ones)."""
    return logits.float().softmax(-1).max(-1).values.mean().item()
{%- endif %}
{%- if 'continual_step' in hooks %}


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``x + std * N(0, 1)``; the noise is drawn on the CPU from ``generator`` (reproducible on any device)."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return x + std * noise.to(x.device)
{%- endif %}
{%- if 'after_step' in hooks or 'after_run' in hooks %}


def weight_norm(model: nn.Module) -> float:
    """sqrt(sum ||p||^2) over the parameters that train: the template's example of a measured quantity."""
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters() if p.requires_grad))
{%- endif %}
