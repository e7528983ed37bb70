"""Projecting conflicting gradients (PCGrad, Yu et al., NeurIPS 2020) over the plan's named loss terms."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import hookimpl
from paperkit.context import Optimization, RunContext


def project_conflicting(
    grads: dict[str, list[torch.Tensor]], generator: torch.Generator, reduction: str = "sum"
) -> list[torch.Tensor]:
    """PCGrad (Yu et al., Algorithm 1): each term's gradient ``g_i`` loses its component along every other
    term's gradient ``g_j`` it conflicts with (``g_i·g_j < 0``: ``g_i ← g_i − (g_i·g_j / ‖g_j‖²) g_j``), taking the
    others in a random order; the projected gradients are summed (the paper's update) or averaged.

    ``g_j`` is always the original gradient of term ``j``, as in the paper and
    its reference implementations; with two terms the order does not matter.
    """
    names = list(grads)
    shapes = [g.shape for g in grads[names[0]]]
    flats = {n: torch.cat([g.reshape(-1) for g in grads[n]]) for n in names}
    projected = []
    for name in names:
        g = flats[name].clone()
        others = [names[int(k)] for k in torch.randperm(len(names), generator=generator) if names[int(k)] != name]
        for other in others:
            reference = flats[other]
            dot = torch.dot(g, reference)
            if dot < 0:
                g -= dot * reference / reference.norm() ** 2
        projected.append(g)
    merged = torch.stack(projected).sum(0)
    if reduction == "mean":
        merged = merged / len(projected)
    out, offset = [], 0
    for shape in shapes:
        size = shape.numel()
        out.append(merged[offset : offset + size].view(shape))
        offset += size
    return out


class PCGrad:
    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module, ctx: RunContext) -> Optimization:
        generator, reduction = ctx.generator("order"), self.config.reduction
        return Optimization(term_gradients=lambda grads: project_conflicting(grads, generator, reduction))
