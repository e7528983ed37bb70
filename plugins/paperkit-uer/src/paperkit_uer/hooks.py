"""UER as a paperkit method: reservoir replay (the core's) plus the UER loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit import Replay

from paperkit_uer.functional import uer_loss


class UER(Replay):
    """Experience replay (``continual_step`` joins each incoming batch with as many
    reservoir samples and marks them with the ``replay`` mask; ``after_step``
    adds the incoming samples to the reservoir) whose loss scores incoming
    samples on cosine logits and replayed samples on dot-product logits."""

    @hookimpl
    def loss(self, model: nn.Module, batch: dict, outputs: Any, ctx: Any) -> torch.Tensor:
        head = getattr(ctx.accelerator.unwrap_model(model), "head", None)
        if outputs.features is None or not isinstance(head, nn.Linear):
            raise PluginError("uer needs a classifier model with features and a linear 'head' (every embedded model is one)")
        weight = head.weight
        if ctx.task.scenario == "task" and ctx.experience is not None:
            # The engine masks the dot-product logits to the experience's classes;
            # mask the angle factor the same way by zeroing other classes' rows.
            keep = torch.zeros(weight.shape[0], dtype=torch.bool, device=weight.device)
            keep[list(ctx.experience.classes)] = True
            return uer_loss(outputs.features, outputs.logits, weight, batch["y"], batch.get("replay"), self.config.temperature, keep)
        return uer_loss(outputs.features, outputs.logits, weight, batch["y"], batch.get("replay"), self.config.temperature)
