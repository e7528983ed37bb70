"""Loss-based reweighting as paperkit's ``loss`` hook: a thin shell over :mod:`paperkit_loss_reweighting.functional`.

Why a ``loss`` and not a batch transform writing ``batch["weight"]``: the weights are a
function of the per-sample losses of the current model on the current batch, which exist
only after the forward pass, while transforms run before it. So the method computes the
task's per-sample losses itself (:func:`~paperkit_loss_reweighting.functional.per_sample_loss`),
weighs them, and reduces them as the batch contract says (``paperkit.weighted_mean``: sample
weights another method put in ``batch["weight"]`` multiply this method's).

Several processes: the weights are one softmax over the global batch, as in the reference
(which all-gathers the losses). Each process gathers the batch's detached losses, computes
the weights of every sample and keeps its own, scaled by the global batch size ``n`` so
that they average to one; its loss is ``mean_local(n w_i ℓ_i)``, and the engine's share
scaling and DDP's average make the gradient that of ``Σ_global w_i ℓ_i``, as one process
computes it.
"""

from __future__ import annotations

from typing import Any

import torch

from paperkit import hookimpl, weighted_mean
from paperkit_loss_reweighting.functional import per_sample_loss, sample_weights


def global_weights(losses: torch.Tensor, accelerator: Any, strategy: str, delta: float, r: float) -> torch.Tensor:
    """This process's samples' weights times the global batch size: ``n w_i``, with ``w`` one softmax over every
    process's samples (``accelerator``: Accelerate's ``pad_across_processes`` and ``gather``)."""
    detached = losses.detach()
    if accelerator is None or accelerator.num_processes == 1:
        return len(detached) * sample_weights(detached, strategy, delta, r)
    padded = accelerator.pad_across_processes(detached, dim=0, pad_index=float("-inf"))
    gathered = accelerator.gather(padded)
    valid = ~torch.isneginf(gathered)  # padding rows (no loss is -inf); a NaN loss stays and fails the run
    weights = torch.zeros_like(gathered)
    weights[valid] = sample_weights(gathered[valid], strategy, delta, r)
    start = accelerator.process_index * len(padded)
    return int(valid.sum()) * weights[start : start + len(detached)]


class LossReweighting:
    """``Σ w_i ℓ_i`` with ``w = softmax(g(normalized ℓ) / r)`` over the batch, uniform during the warm-up."""

    def __init__(self, config: Any) -> None:
        from paperkit_loss_reweighting import LossReweightingConfig

        self.config = config if config is not None else LossReweightingConfig()

    def reweighting(self, ctx: Any) -> bool:
        """Whether this step reweights: not for the ``uniform`` strategy, nor during the first ``warmup`` of the
        experience's planned steps (the reference's ``burnout_steps``: ``global_step < burnout_steps`` is uniform)."""
        if self.config.strategy == "uniform":
            return False
        return ctx.experience_step >= self.config.warmup * ctx.total_steps

    @hookimpl
    def loss(self, batch: dict, outputs: Any, ctx: Any) -> torch.Tensor:
        losses = per_sample_loss(outputs.logits, batch, ctx.plan.task.kind)
        if not self.reweighting(ctx):
            return weighted_mean(losses, batch)
        c = self.config
        scale = global_weights(losses, ctx.accelerator, c.strategy, c.delta, c.r).to(losses.dtype)
        return weighted_mean(scale * losses, batch)
