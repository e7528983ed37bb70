"""PS-KD as a paperkit batch transform: thin shells over :mod:`paperkit_ps_kd.functional`.

``continual_step`` (section ``[transform]``) does two things on every training batch:

1. it writes ``batch["target"] = (1 − α_t)·y + α_t·p_{t−1}`` from the table of past
   predictions (``y``: the label vectors, or the soft targets an earlier method set),
   so the loss, paperkit's cross-entropy by default, trains on PS-KD's targets;
2. it records the model's current prediction on the batch (softmax of the logits,
   detached) into the table, for the same samples' targets in the next epoch.

The reference code records the softmax of the training forward pass itself. A
hook cannot see that forward's outputs before the step (``regularize`` sees them
but must return loss terms) nor after it (``after_step`` receives no outputs), so
the prediction is computed here by one more forward pass under ``no_grad``, with
the same weights the training step then uses (the optimizer has not stepped
yet). That pass runs in eval mode: the same outputs for models without dropout
or batch norm, and no second update of batch-norm statistics or draw of dropout
masks (which would change training); with dropout or batch norm the recorded
prediction is the eval-mode one, not the training pass's.

Several processes: every process holds the whole table. The global batch's
(index, prediction) pairs are gathered (slices padded to equal length, each
sample once), as the reference code all-gathers them.

``evaluate`` reports ECE (15 bins), AURC and E-AURC on every test set.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import Batch, RunContext, forward, hookimpl, per_sample_targets, unwrapped
from paperkit_ps_kd.functional import PastPredictions, alpha_at, calibration_scores


def table_shape(task: Any) -> tuple[int, int]:
    """(samples, classes): one row per training index of every experience of ``task``."""
    samples = max((int(e.train.index.max()) + 1 for e in task.experiences if len(e.train)), default=0)
    return samples, int(task.info.num_classes)


def epochs_of(ctx: Any) -> int:
    """T, the epochs of the current experience: its planned steps over its steps per epoch (``max_steps`` counts)."""
    if ctx.steps_per_epoch:
        return max(1, math.ceil(ctx.total_steps / ctx.steps_per_epoch))
    return max(1, int(ctx.plan.run.epochs))


@torch.no_grad()
def current_predictions(model: nn.Module, x: torch.Tensor, ctx: Any) -> torch.Tensor:
    """softmax(f(x)) with the model's current weights, in eval mode, without touching its training state."""
    module = unwrapped(model)
    training = module.training
    module.eval()
    try:
        logits = forward(module, x, ctx).logits
    finally:
        module.train(training)
    return F.softmax(logits.float(), dim=-1)


def first_occurrence(index: torch.Tensor) -> torch.Tensor:
    """Positions of the first occurrence of each distinct value of ``index``, in order of position."""
    if len(index) == 0:
        return index.new_zeros(0)
    values, inverse = torch.unique(index, return_inverse=True)
    order = torch.arange(len(index), device=index.device)
    first = torch.full((len(values),), len(index), device=index.device, dtype=order.dtype)
    return first.scatter_reduce(0, inverse, order, reduce="amin").sort().values


def gather_global_batch(
    accelerator: Any, index: torch.Tensor, probs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, probs)`` of the whole global batch on every process, each sample once (padding dropped)."""
    index = accelerator.pad_across_processes(index, dim=0, pad_index=-1)
    probs = accelerator.pad_across_processes(probs, dim=0, pad_index=0)
    index, probs = accelerator.gather((index, probs))
    keep = index >= 0
    index, probs = index[keep], probs[keep]
    first = first_occurrence(index)
    return index[first], probs[first]


class PsKd:
    """Per-sample past predictions, PS-KD's soft targets, and calibration metrics."""

    def __init__(self, config: Any) -> None:
        from paperkit_ps_kd import PsKdConfig

        self.config = config if config is not None else PsKdConfig()
        self.table: PastPredictions | None = None

    def _table(self, task: Any, device: torch.device) -> PastPredictions:
        if self.table is None:
            self.table = PastPredictions(*table_shape(task), device=device)
        elif self.table.probs.device != device:
            self.table.to(device)
        return self.table

    def alpha(self, ctx: Any) -> float:
        """α_t of the current epoch of the current experience."""
        return alpha_at(ctx.epoch, epochs_of(ctx), self.config.alpha_T)

    @hookimpl
    def continual_step(self, batch: Batch, model: nn.Module, ctx: RunContext) -> Batch | None:
        if self.config.alpha_T == 0.0:  # the labels as they are: plain cross-entropy, only the metrics remain
            return None
        table = self._table(ctx.task, batch["x"].device)
        experience, index = ctx.experience_index, batch["index"]
        labels = per_sample_targets(batch, ctx.task.info.num_classes)
        target = table.targets(index, labels, self.alpha(ctx), experience)
        probs = current_predictions(model, batch["x"], ctx)
        if ctx.accelerator.num_processes > 1:
            index, probs = gather_global_batch(ctx.accelerator, index, probs)
        table.record(index, probs, experience)
        return {**batch, "target": target}

    @hookimpl
    def evaluate(self, data: Any) -> dict[str, float]:
        logits, labels = data.predictions()  # gathered over every process
        return calibration_scores(logits, labels, self.config.ece_bins)

    def state_dict(self) -> dict[str, Any]:
        return {"table": None if self.table is None else self.table.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        table = state.get("table")
        self.table = None if table is None else PastPredictions.from_state(table)
