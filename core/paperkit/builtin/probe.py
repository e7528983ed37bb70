"""What fine-tuning forgets: a nearest-class-mean probe of the model's features on a held-out text task.

A pretrained encoder is worth adapting because its features serve tasks it was
never fine-tuned on. This evaluation measures how much of that a run keeps: on
a text task *other* than the plan's (``topics`` while fine-tuning on
``sentiment``, or the reverse), it classifies each held-out test sentence by
the nearest class mean (cosine similarity) of the model's features over that
task's training sentences. Nothing is trained for it, so the probe sees the
features as they are: the metric before training (``results.initial``) minus
the metric after is what fine-tuning forgot.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import hookimpl


def centroid_accuracy(
    train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor, classes: int
) -> float:
    """Accuracy of the nearest class mean by cosine similarity (means of L2-normalized training features)."""
    train, test = F.normalize(train.double(), dim=1), F.normalize(test.double(), dim=1)
    means = torch.zeros(classes, train.shape[1], dtype=train.dtype).index_add_(0, train_y, train)
    means = F.normalize(means, dim=1)
    return float(((test @ means.T).argmax(1) == test_y).double().mean())


class HeldOutProbe:
    def __init__(self, config: Any) -> None:
        self.config = config
        self._task: Any = None

    def _held_out(self, ctx: Any) -> Any:
        if self._task is None:
            from paperkit.tasks.loading import load_task

            c = self.config
            length = getattr(ctx.plan.task.config, "max_length", 32)
            self._task = load_task(c.task, per_class=c.per_class, max_length=length, seed=c.seed)
        return self._task

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float] | None:
        if data.split != "test" or data.experience.index != 0:  # once per evaluation round
            return None
        task = self._held_out(ctx)
        experience = task.experiences[0]
        train = ctx.eval_set(model, experience.train, "held-out train")
        test = ctx.eval_set(model, experience.test, "held-out test")
        accuracy = centroid_accuracy(
            train.features().cpu(),
            train.predictions()[1].cpu(),
            test.features().cpu(),
            test.predictions()[1].cpu(),
            task.info.num_classes,
        )
        return {"accuracy": accuracy}
