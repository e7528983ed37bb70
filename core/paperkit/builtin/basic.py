"""Default init, cross-entropy, classification metrics and naive fine-tuning."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import hookimpl
from paperkit.step import weighted_mean


class DefaultInit:
    """Re-draws every module's default initialization (``reset_parameters``) from the run seed."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def init(self, model: nn.Module) -> None:
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


class CrossEntropy:
    """Softmax cross-entropy on the batch's targets: soft targets (``batch["target"]``) when a method set them,
    the labels otherwise; per-sample weights (``batch["weight"]``) when present; label smoothing on either."""

    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def loss(self, batch: dict, outputs: Any) -> torch.Tensor:
        target = batch.get("target")
        smoothing = self.config.label_smoothing
        if "weight" not in batch:  # the common case: torch's reduction, one kernel
            return F.cross_entropy(outputs.logits, batch["y"] if target is None else target, label_smoothing=smoothing)
        losses = F.cross_entropy(
            outputs.logits, batch["y"] if target is None else target, label_smoothing=smoothing, reduction="none"
        )
        return weighted_mean(losses, batch)


class Classification:
    """Top-1 accuracy and mean cross-entropy over the gathered predictions."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def evaluate(self, data: Any) -> dict[str, float]:
        logits, targets = data.predictions()
        return {
            "accuracy": (logits.argmax(-1) == targets).float().mean().item(),
            "loss": F.cross_entropy(logits, targets).item(),
        }


class Naive:
    """Trains on every experience with no protection against forgetting."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def before_experience(self) -> bool:
        return True
