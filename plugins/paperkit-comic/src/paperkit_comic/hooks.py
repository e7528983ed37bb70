"""COMIC as paperkit's ``loss`` on multi-label tasks: a thin shell over :func:`paperkit_comic.functional.comic_loss`.

Why a ``loss`` and not a batch transform writing corrected targets: the correction is decided from the current
model's predictions on the current batch (after the forward pass), and the recalled labels feed a second term
with its own margin and weights rather than replacing the targets of the first.

State: the observed positives per label (``n_c``, counted once from the experience's training labels, which are
0 where unobserved) and the labels recalled so far in the current epoch (the corrector's weights use them; the
authors reset them every epoch). Both round-trip through ``state_dict``, so a resumed run recalls and weighs
exactly as the uninterrupted one.

Several processes: the batch statistics of the corrector (each label's mean prediction, the recall counts and the
number of corrected positives) are summed over processes (``accelerator.reduce``), so every process uses the
global batch's, as one process would.
"""

from __future__ import annotations

from typing import Any

import torch

from paperkit import PluginError, hookimpl, weighted_mean
from paperkit_comic.functional import comic_loss


def observed_counts(ctx: Any) -> torch.Tensor:
    """Observed training positives per label of the current experience (``n_c``): the column sums of its training
    labels (unobserved entries are 0 there), else the task's ``train_label_counts``."""
    train = getattr(ctx.experience, "train", None)
    labels = getattr(train, "y", None)
    if isinstance(labels, torch.Tensor) and labels.dim() == 2:
        return labels.double().sum(0).float()
    counts = ctx.task.extras.get("train_label_counts")
    if counts is None:
        raise PluginError("comic: the task gives no multi-hot training labels (experience.train.y) to count")
    return torch.as_tensor(counts, dtype=torch.float32)


class Comic:
    """``MFM + λ · RLC`` per sample, reduced with the batch's sample weights."""

    def __init__(self, config: Any) -> None:
        from paperkit_comic import ComicConfig

        self.config = config if config is not None else ComicConfig()
        self.counts: torch.Tensor | None = None
        self.recalled: torch.Tensor | None = None
        self.period: tuple[int, int] = (-1, -1)  # (experience, epoch) the recall counts belong to

    def _counts(self, ctx: Any, period: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.counts is None or period[0] != self.period[0]:
            self.counts = observed_counts(ctx)
        if self.recalled is None or period != self.period:
            self.recalled = torch.zeros_like(self.counts)
        self.period = period
        return self.counts, self.recalled

    @hookimpl
    def loss(self, batch: dict, outputs: Any, ctx: Any) -> torch.Tensor:
        logits = outputs.logits
        if logits.dim() != 2:
            raise PluginError(f"comic: expects multi-label logits of shape (batch, labels), got {tuple(logits.shape)}")
        counts, recalled = self._counts(ctx, (int(ctx.experience_index), int(ctx.epoch)))
        c = self.config
        mask = batch.get("label_mask")
        accelerator = ctx.accelerator
        many = accelerator is not None and accelerator.num_processes > 1
        losses, found = comic_loss(
            logits,
            batch.get("target", batch["y"]),
            counts.to(logits.device),
            observed=mask,
            recalled_so_far=recalled.to(logits.device),
            unobserved=c.unobserved,
            gamma_pos=c.gamma_pos,
            gamma_neg=c.gamma_neg,
            clip=c.clip,
            head_tail=c.head_tail,
            weight_exponent=c.weight_exponent,
            correction=c.correction,
            tau=c.tau,
            margin=c.margin,
            correction_weight=c.correction_weight,
            correction_exponent=c.correction_exponent,
            detach_focal=c.detach_focal,
            reduce=(lambda t: accelerator.reduce(t, reduction="sum")) if many else None,
        )
        if not ctx.reevaluating:  # a closure step's second look at the batch recalls nothing new
            self.recalled = recalled + found.detach().cpu()
        return weighted_mean(losses, batch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": None if self.counts is None else self.counts.clone(),
            "recalled": None if self.recalled is None else self.recalled.clone(),
            "period": list(self.period),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = None if state.get("counts") is None else state["counts"].clone()
        self.recalled = None if state.get("recalled") is None else state["recalled"].clone()
        self.period = tuple(int(x) for x in state.get("period", (-1, -1)))  # type: ignore[assignment]
