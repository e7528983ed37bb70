"""Hook shells over :mod:`paperkit_stablemax.functional`.

``StableMax`` answers the exclusive ``loss`` hook. ``OrthoGrad`` answers
``optimize`` with only a ``grad_transform``: the plan's optimizer method (SGD,
AdamW, ...) still provides the optimizer, and the engine applies the transform
after ``backward`` and before every step, which is what pytorch-optimizer's
``OrthoGrad`` wrapper does inside ``step``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import Optimization, hookimpl
from paperkit_stablemax.functional import orthogonalize_gradients_, softmax_cross_entropy, stablemax_cross_entropy


class StableMax:
    """-log StableMax(logits)_y, in the configured precision (or -log Softmax, the paper's baseline, with
    ``activation = "softmax"``)."""

    def __init__(self, config: Any) -> None:
        from paperkit_stablemax import StableMaxConfig

        self.config = config if config is not None else StableMaxConfig()
        self.dtype = getattr(torch, self.config.dtype)
        self.function = stablemax_cross_entropy if self.config.activation == "stablemax" else softmax_cross_entropy

    @hookimpl
    def loss(self, batch: dict, outputs: Any) -> torch.Tensor:
        return self.function(outputs.logits, batch["y"], dtype=self.dtype)


class OrthoGrad:
    """Projects every trainable parameter's gradient orthogonally to the parameter."""

    def __init__(self, config: Any) -> None:
        from paperkit_stablemax import OrthoGradConfig

        self.config = config if config is not None else OrthoGradConfig()

    def transform(self, model: nn.Module) -> None:
        """The grad transform the engine calls after backward (a bound method, so checkpoints need no state)."""
        orthogonalize_gradients_((p for p in model.parameters() if p.requires_grad), self.config.eps, self.config.rescale)

    @hookimpl
    def optimize(self) -> Optimization:
        return Optimization(grad_transform=self.transform)
