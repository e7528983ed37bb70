"""The BA-LoRA hooks: a frozen copy of the pretrained model, then the three output regularizers every step.

BA-LoRA is LoRA (or PiSSA) plus a loss; the adapter is the plan's own (``[adapt] use = "lora"`` or ``"pissa"``), so
this method only adds terms (see :mod:`paperkit_ba_lora.functional`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from paperkit import Batch, Outputs, RunContext, forward, hookimpl, unwrapped
from paperkit_ba_lora.functional import ba_lora_terms


def _frozen_copy(model: nn.Module) -> nn.Module:
    reference = copy.deepcopy(unwrapped(model))
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


class BaLora:
    """Regularizes the adapted model's logits towards the pretrained model's and towards diverse, low-rank outputs.

    ``init`` (once per run, after the plan's initialization and ``run.init_from``, before any adapter wraps the
    model) keeps a frozen copy of the model: the pretrained model ``F0`` of the consistency term. ``--resume``
    calls ``init`` again on the rebuilt model, before the checkpoint's weights are loaded, so the copy is the same
    and nothing needs to be checkpointed. ``regularize`` returns ``λ1·L_CR``, ``λ2·L_DR`` and ``λ3·L_SVDR``.
    """

    def __init__(self, config: Any) -> None:
        self.config = config
        self.reference: nn.Module | None = None

    @hookimpl
    def init(self, model: nn.Module) -> None:
        self.reference = _frozen_copy(model) if self.config.lambda1 else None

    @hookimpl
    def regularize(self, batch: Batch, outputs: Outputs, ctx: RunContext) -> dict[str, torch.Tensor]:
        logits = outputs.logits
        frozen = None
        if self.reference is not None:
            with torch.no_grad():
                frozen = forward(self.reference, batch["x"], ctx).logits
        if outputs.active is not None:  # task-incremental: only the experience's classes (the rest are masked)
            logits = logits[:, outputs.active]
            frozen = frozen[:, outputs.active] if frozen is not None else None
        c = self.config
        return ba_lora_terms(logits, frozen, c.k, c.lambda1, c.lambda2, c.lambda3, c.svd_gradient)
