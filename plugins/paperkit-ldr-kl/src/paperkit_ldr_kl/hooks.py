"""LDR-KL as a paperkit ``loss``: a thin shell over :mod:`paperkit_ldr_kl.functional`.

``loss`` replaces the task's cross-entropy with the per-sample LDR-KL (or, with
``adaptive = true``, ALDR-KL) loss, averaged with the batch's per-sample
weights. ALDR-KL keeps one temperature ``λ_i`` per training sample, found again
through ``batch["index"]``. ``loss`` only *computes* the new ``λ_i`` of the
batch; ``after_step`` writes them into the table once the step is taken, so a
loss evaluated twice in a step (a closure, a test) gives the same value twice.
Under several processes every process writes the whole global batch's new
values, gathered, so every process holds the same table as one process would.
"""

from __future__ import annotations

from typing import Any

import torch

from paperkit import hookimpl, weighted_mean
from paperkit_ldr_kl.functional import aldr_kl_loss, ldr_kl_loss


def class_mask(ctx: Any, labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """The classes taking part in each sample's loss, (B, K) bool, or None when all do.

    In a task-incremental stream (``task.scenario == "task"``) the engine masks the logits of the classes outside
    the current experience (``paperkit.forward``); LDR-KL then takes its maximum and mean over the experience's
    classes only, plus each sample's own label (a replayed sample of an earlier experience).
    """
    task, experience = getattr(ctx, "task", None), getattr(ctx, "experience", None)
    if task is None or experience is None or getattr(task, "scenario", "class") != "task":
        return None
    row = torch.zeros(num_classes, dtype=torch.bool, device=labels.device)
    row[list(experience.classes)] = True
    mask = row.expand(len(labels), num_classes).clone()
    mask.scatter_(1, labels.view(-1, 1), True)
    return mask


def gather_pending(accelerator: Any, index: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, λ)`` of the whole global batch, on every process; padding rows (index −1) dropped."""
    index = accelerator.pad_across_processes(index, dim=0, pad_index=-1)
    lam = accelerator.pad_across_processes(lam, dim=0, pad_index=0)
    index, lam = accelerator.gather((index, lam))
    keep = index >= 0
    return index[keep], lam[keep]


class LdrKl:
    """The LDR-KL loss; with ``adaptive``, ALDR-KL and its per-sample temperatures."""

    def __init__(self, config: Any) -> None:
        from paperkit_ldr_kl import LdrKlConfig

        self.config = config if config is not None else LdrKlConfig()
        self.lambdas: torch.Tensor | None = None  # ALDR-KL: λ_i per training index (λ_0 until first visited)
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's (index, new λ_i)

    @property
    def normalize(self) -> str:
        """``auto``: what the reference uses for the chosen loss (softplus for LDR-KL, L1 for ALDR-KL)."""
        if self.config.normalize != "auto":
            return self.config.normalize
        return "l1" if self.config.adaptive else "softplus"

    def _grow(self, size: int, device: torch.device) -> torch.Tensor:
        """The λ table, extended with ``λ_0`` to at least ``size`` entries and moved to ``device``."""
        if self.lambdas is None:
            self.lambdas = torch.full((size,), float(self.config.lam), device=device)
        elif len(self.lambdas) < size:
            grown = torch.full((size - len(self.lambdas),), float(self.config.lam), device=self.lambdas.device)
            self.lambdas = torch.cat([self.lambdas, grown])
        if self.lambdas.device != device:
            self.lambdas = self.lambdas.to(device)
        return self.lambdas

    @hookimpl
    def loss(self, batch: dict, outputs: Any, ctx: Any) -> torch.Tensor:
        c = self.config
        logits, labels = outputs.logits, batch["y"]
        mask = class_mask(ctx, labels, logits.shape[-1])
        if not c.adaptive:
            losses = ldr_kl_loss(logits, labels, c.lam, c.margin, self.normalize, mask)
            return weighted_mean(losses, batch)
        index = batch["index"]
        size = int(index.max()) + 1 if len(index) else 0
        previous = self._grow(size, logits.device)[index]
        losses, lam = aldr_kl_loss(logits, labels, previous, c.lam, c.alpha, c.margin, self.normalize, mask)
        self.pending = (index.detach(), lam.detach().to(previous.dtype))
        return weighted_mean(losses, batch)

    @hookimpl
    def after_step(self, ctx: Any) -> dict[str, float] | None:
        if self.pending is None:
            return None
        index, lam = self.pending
        self.pending = None
        accelerator = getattr(ctx, "accelerator", None)
        if accelerator is not None and accelerator.num_processes > 1:
            index, lam = gather_pending(accelerator, index, lam)
        if len(index) == 0:
            return None
        table = self._grow(int(index.max()) + 1, lam.device)
        table[index] = lam
        return {"lambda_mean": float(lam.mean()), "lambda_min": float(lam.min())}

    def state_dict(self) -> dict[str, Any]:
        return {"lambdas": None if self.lambdas is None else self.lambdas.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        lambdas = state.get("lambdas")
        self.lambdas = None if lambdas is None else lambdas.clone()
        self.pending = None
