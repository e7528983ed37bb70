"""Prediction metrics per target kind, shared by the built-in evaluate methods and ``ctx.evaluate``.

Each function takes the predictions and targets of a whole evaluation set (gathered over every
process) and returns plain floats. Definitions follow scikit-learn's, and the tests pin them to it:
``average_precision_score`` (per label, then the mean over labels that have a positive: mAP),
``f1_score(average="micro")`` and ``r2_score`` (the mean of per-output R²).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy."""
    return {
        "accuracy": (logits.argmax(-1) == targets).float().mean().item(),
        "loss": F.cross_entropy(logits, targets).item(),
    }


def group_accuracies(logits: torch.Tensor, targets: torch.Tensor, groups: dict[str, list[int]]) -> dict[str, float]:
    """Accuracy on the test samples of each group of classes (long-tailed tasks: head, medium, tail)."""
    correct = logits.argmax(-1) == targets
    out = {}
    for name, classes in groups.items():
        members = torch.isin(targets, torch.tensor(classes, dtype=targets.dtype))
        if bool(members.any()):
            out[f"{name}_accuracy"] = correct[members].float().mean().item()
    return out


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """AP of one label: the mean, over its positives, of the precision at each positive's rank
    (scikit-learn's step-wise definition for untied scores)."""
    order = torch.argsort(scores, descending=True, stable=True)
    hits = positives[order].double()
    if hits.sum() == 0:
        return float("nan")
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return (precision * hits).sum().item() / hits.sum().item()


def multilabel_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """mAP over labels with at least one positive, micro F1 at probability 0.5, and the mean binary cross-entropy."""
    positives = targets > 0.5
    aps = [
        average_precision(logits[:, j], positives[:, j]) for j in range(targets.shape[1]) if bool(positives[:, j].any())
    ]
    predicted = logits > 0
    tp = (predicted & positives).sum().item()
    fp = (predicted & ~positives).sum().item()
    fn = (~predicted & positives).sum().item()
    return {
        "mAP": sum(aps) / len(aps) if aps else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "loss": F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype)).item(),
    }


def regression_scores(predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean squared and absolute error over every output, and R² averaged over outputs."""
    predictions, targets = (
        predictions.double().reshape(len(predictions), -1),
        targets.double().reshape(len(targets), -1),
    )
    residual = ((targets - predictions) ** 2).sum(0)
    total = ((targets - targets.mean(0)) ** 2).sum(0)
    r2 = torch.where(total > 0, 1 - residual / total.clamp_min(1e-300), torch.zeros_like(total))
    return {
        "mse": ((targets - predictions) ** 2).mean().item(),
        "mae": (targets - predictions).abs().mean().item(),
        "r2": r2.mean().item(),
    }


def language_model_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Mean next-token cross-entropy over every position (nats), its perplexity ``exp(loss)`` and top-1 accuracy."""
    flat, tokens = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    loss = F.cross_entropy(flat, tokens).item()
    return {
        "loss": loss,
        "perplexity": float(torch.tensor(loss).exp()),
        "accuracy": (flat.argmax(-1) == tokens).float().mean().item(),
    }


#: The scores of each target kind (``paperkit.spec.KINDS``), as ``ctx.evaluate`` reports them.
SCORES = {
    "class": classification_scores,
    "multi-label": multilabel_scores,
    "regression": regression_scores,
    "next-token": language_model_scores,
}
