"""Default init, cross-entropy, classification metrics and naive fine-tuning."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import hookimpl
from paperkit.scores import (
    classification_scores,
    group_accuracies,
    language_model_scores,
    multilabel_scores,
    regression_scores,
)
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
        if outputs.logits.ndim == 3:  # next-token: every position is a prediction
            return self._sequence_loss(batch, outputs.logits)
        target = batch.get("target")
        smoothing = self.config.label_smoothing
        if "weight" not in batch:  # the common case: torch's reduction, one kernel
            return F.cross_entropy(outputs.logits, batch["y"] if target is None else target, label_smoothing=smoothing)
        losses = F.cross_entropy(
            outputs.logits, batch["y"] if target is None else target, label_smoothing=smoothing, reduction="none"
        )
        return weighted_mean(losses, batch)

    def _sequence_loss(self, batch: dict, logits: torch.Tensor) -> torch.Tensor:
        """Mean over positions per sequence, then the (weighted) mean over sequences; soft targets per position."""
        target = batch.get("target")
        losses = F.cross_entropy(
            logits.transpose(1, 2),
            batch["y"] if target is None else target.transpose(1, 2),
            label_smoothing=self.config.label_smoothing,
            reduction="none",
        ).mean(-1)
        return weighted_mean(losses, batch)


class LanguageModel:
    """Next-token loss, perplexity and accuracy over every position of the test sequences."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def evaluate(self, data: Any) -> dict[str, float]:
        return language_model_scores(*data.predictions())


class Classification:
    """Top-1 accuracy and mean cross-entropy over the gathered predictions; per class group (head, medium,
    tail) when the task names groups (``task.extras["class_groups"]``, long-tailed tasks)."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def evaluate(self, data: Any, ctx: Any) -> dict[str, float]:
        logits, targets = data.predictions()
        out = classification_scores(logits, targets)
        groups = ctx.task.extras.get("class_groups")
        if groups:
            out.update(group_accuracies(logits, targets, groups))
        return out


class MultiLabel:
    """mAP, micro F1 and binary cross-entropy of multi-label predictions."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def evaluate(self, data: Any) -> dict[str, float]:
        return multilabel_scores(*data.predictions())


class Regression:
    """MSE, MAE and R² of regression predictions (the model's outputs are the predictions)."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def evaluate(self, data: Any) -> dict[str, float]:
        return regression_scores(*data.predictions())


class MeanSquaredError:
    """Squared error averaged over outputs, then over samples (weighted): ``mean_i w_i · mean_k (f_ik − y_ik)²``."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def loss(self, batch: dict, outputs: Any) -> torch.Tensor:
        prediction = outputs.logits
        target = batch["y"].to(prediction.dtype).reshape(prediction.shape)
        losses = (prediction - target).pow(2).reshape(len(prediction), -1).mean(-1)
        return weighted_mean(losses, batch)


class BinaryCrossEntropy:
    """Binary cross-entropy of every label's logit, averaged over labels (the observed ones when the batch has a
    ``label_mask``), then over samples (weighted)."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def loss(self, batch: dict, outputs: Any) -> torch.Tensor:
        logits = outputs.logits
        target = batch.get("target", batch["y"]).to(logits.dtype)
        entries = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        mask = batch.get("label_mask")
        if mask is None:
            return weighted_mean(entries.mean(-1), batch)
        observed = mask.to(entries.dtype)  # partial labels: the mean over the observed entries of each sample
        return weighted_mean((entries * observed).sum(-1) / observed.sum(-1).clamp_min(1.0), batch)


class Naive:
    """Trains on every experience with no protection against forgetting."""

    def __init__(self, config: Any) -> None:
        pass

    @hookimpl
    def before_experience(self) -> bool:
        return True
