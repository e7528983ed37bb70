"""The CorDA hooks: LoRA's adapter shell whose factors come from a context-oriented SVD (see
:mod:`paperkit_corda.functional`)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from paperkit import LowRankAdapterMethod, LowRankLinear, PlanError, tokenize, wrap_low_rank
from paperkit_corda.functional import context_covariances, corda_init_


class Corda(LowRankAdapterMethod):
    """Wraps the target layers; before wrapping, :meth:`prepare` collects each target's input covariance.

    The context is the run's own training samples (``ctx.batch_sampler``; the paper's IPA) or, when the config
    lists ``sentences``, those sentences tokenized for MiniLM (the knowledge context of the paper's KPA). Each
    target becomes a :class:`paperkit.LowRankLinear` whose factors hold the selected components of
    ``W = U Σ V̂ᵀ`` and whose base weight is the residual, so the model computes what it computed before
    (``preserves_output``). Training, merging, saving and the PEFT export (LoRA format, on the residual base
    weights) are the shared :class:`paperkit.LowRankAdapterMethod`'s.
    """

    def __init__(self, config: object) -> None:
        super().__init__(config)
        self.covariances: dict[str, torch.Tensor] = {}

    def context_inputs(self, ctx: Any) -> list[torch.Tensor]:
        """The model inputs the covariances are collected on (at most ``samples`` samples)."""
        c = self.config
        if c.sentences:
            length = getattr(getattr(ctx.plan.task, "config", None), "max_length", None) or 32
            ids = tokenize(list(c.sentences), int(length))[: c.samples].to(ctx.device)
            return list(ids.split(max(1, int(ctx.plan.run.batch_size))))
        size = max(1, int(ctx.plan.run.batch_size))
        batches = ctx.batch_sampler(math.ceil(c.samples / size))
        inputs, left = [], c.samples
        for batch in batches:
            x = batch["x"][:left]
            if len(x):
                inputs.append(x)
            left -= len(x)
        return inputs

    def prepare(self, model: nn.Module, ctx: Any) -> None:
        c = self.config
        # the targets' names, through the public wrapper with an identity factory (nothing is replaced)
        targets = list(wrap_low_rank(model, c.target, lambda name, linear: linear, f"{self.where} target"))
        for name in targets:
            layer = model.get_submodule(name)
            if c.rank > min(layer.in_features, layer.out_features):
                raise PlanError(
                    f"rank {c.rank} exceeds layer '{name}' ({layer.out_features}×{layer.in_features}); CorDA selects "
                    "rank of its min(out, in) components: lower rank or narrow target",
                    f"{self.where} rank",
                )
        if c.sentences and not hasattr(getattr(ctx.plan.task, "config", None), "max_length"):
            raise PlanError("'sentences' are tokenized for MiniLM: they need a text task (topics, sentiment...)",
                            f"{self.where} sentences")
        self.covariances = context_covariances(model, self.context_inputs(ctx), targets, padding_id=c.padding_id)

    def initialize(self, name: str, layer: LowRankLinear) -> None:
        corda_init_(layer, self.covariances[name], self.config.mode)
        del self.covariances[name]
