"""mixup (Zhang, Cisse, Dauphin & Lopez-Paz, ICLR 2018) as a pure batch transform.

Each step draws ``λ ~ Beta(α, α)`` and a permutation ``π`` of the batch, and
trains on ``x̃ = λ·x + (1 − λ)·x[π]`` with soft targets
``t̃ = λ·t + (1 − λ)·t[π]`` (``t`` the batch's targets, one-hot labels unless a
method set soft ones). The paper's loss ``λ·ℓ(f(x̃), y) + (1 − λ)·ℓ(f(x̃), y[π])``
is cross-entropy against ``t̃``, because cross-entropy is linear in its target;
label smoothing acts on ``t̃`` the same way. So the method touches data only
and composes with any loss that honours soft targets.

One ``λ`` per batch and a permutation within the batch, as the authors'
reference code (facebookresearch/mixup-cifar10, ``mixup_data``) does. The draws
come from the method's own checkpointed generators (``ctx.generator``), so a
resumed run mixes exactly as the uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch

from paperkit import hookimpl
from paperkit.context import Batch, RunContext
from paperkit.step import per_sample_targets


def mixup_batch(batch: Batch, lam: float, permutation: torch.Tensor, num_classes: int) -> Batch:
    """``batch`` with ``x`` and ``target`` mixed: ``λ·v + (1 − λ)·v[π]``; every other key is the first sample's."""
    targets = per_sample_targets(batch, num_classes)
    out = dict(batch)
    out["x"] = lam * batch["x"] + (1.0 - lam) * batch["x"][permutation]
    out["target"] = lam * targets + (1.0 - lam) * targets[permutation]
    return out


class Mixup:
    """The ``continual_step`` hook under ``[transform]``: mixes every training batch."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def continual_step(self, batch: Batch, ctx: RunContext) -> Batch:
        alpha = self.config.alpha
        lam = float(ctx.numpy_generator("lambda").beta(alpha, alpha))
        permutation = torch.randperm(len(batch["y"]), generator=ctx.generator("permutation")).to(batch["y"].device)
        return mixup_batch(batch, lam, permutation, ctx.task.info.num_classes)
