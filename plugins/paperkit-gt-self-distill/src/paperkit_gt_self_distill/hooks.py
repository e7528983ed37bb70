"""Self-distillation with ground-truth targets as a paperkit ``loss``: thin shells over :mod:`.functional`.

A round of the paper's iterative procedure is one run, and the rounds are a
chain of variants of one plan: ``round0`` trains on the labels (no
``teacher``), ``round1`` sets ``teacher = "variant:round0"``, ``round2``
``teacher = "variant:round1"``, and so on; the core runs each referenced
variant first (same seed) and hands its final weights back as a frozen,
same-architecture teacher (``ctx.teacher``).

``loss`` computes :func:`~paperkit_gt_self_distill.functional.self_distillation_losses`
against ``per_sample_targets`` (the labels, or soft targets an earlier method
set) and the teacher's logits, averaged with the batch's per-sample weights.

With ``alpha_from = ["variant:round0", "variant:roundK-zero"]`` the weight
``α`` is the paper's estimate instead of the option ``alpha``: on the first
training step both students (the ``α = 1`` one, which is the round-0 model,
and the ``α = 0`` one trained from the same teacher) predict the validation set
(``[task] validation_fraction``), and :func:`~paperkit_gt_self_distill.functional.estimate_alpha`
solves Algorithm 1's least-squares problem against its labels. The result is
kept in the method's state (a resumed run does not recompute it) and reported
under ``summary.gt-self-distill`` in ``results.json``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from paperkit import Batch, Outputs, PlanError, RunContext, Teacher, hookimpl, per_sample_targets, weighted_mean
from paperkit_gt_self_distill.functional import estimate_alpha, self_distillation_losses


class GtSelfDistill:
    """One round of self-distillation: the weighted MSE (or cross-entropy) to the labels and a frozen teacher."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.teacher: Teacher | None = None
        self.alpha: float | None = None  # the weight on the labels this run trains with, once known
        self.estimate: float | None = None  # Algorithm 1's unclipped estimate, when alpha_from is set

    def _where(self, ctx: RunContext, option: str) -> str:
        return f"{ctx.plan.path}: [regularize] gt-self-distill {option}"

    def _teacher(self, ctx: RunContext) -> Teacher:
        if self.teacher is None:  # built on first use: a variant reference runs that variant first
            self.teacher = ctx.teacher(self.config.teacher, self._where(ctx, "teacher"), cache=self.config.cache)
        return self.teacher

    def _alpha(self, ctx: RunContext) -> float:
        if self.alpha is None:
            c = self.config
            if not c.alpha_from:
                self.alpha = float(c.alpha)
            else:
                self.estimate = self._estimate(ctx)
                self.alpha = min(max(self.estimate, 0.0), 1.0) if c.clip_alpha else self.estimate
        return self.alpha

    def _estimate(self, ctx: RunContext) -> float:
        experience = ctx.experience
        valid = getattr(experience, "valid", None)
        if valid is None or len(valid) == 0:
            raise PlanError(
                "alpha_from estimates alpha on the validation set: set [task] validation_fraction > 0",
                self._where(ctx, "alpha_from"),
            )
        where = self._where(ctx, "alpha_from")
        first, second = (ctx.teacher(ref, where) for ref in self.config.alpha_from)
        x = valid.x.to(ctx.device)  # every process holds the whole (small) set and the same two models
        with_labels, without_labels = first.logits(x), second.logits(x)
        labels = F.one_hot(valid.y.long(), with_labels.shape[-1]).to(torch.float64)
        return estimate_alpha(labels.to(with_labels.device), with_labels, without_labels)

    @hookimpl
    def loss(self, batch: Batch, outputs: Outputs, ctx: RunContext) -> torch.Tensor:
        c = self.config
        logits = outputs.logits
        labels = per_sample_targets(batch, logits.shape[-1])
        teacher = None if c.teacher is None else self._teacher(ctx)(batch)
        alpha = 1.0 if teacher is None else self._alpha(ctx)
        return weighted_mean(self_distillation_losses(logits, labels, teacher, alpha, c.loss), batch)

    @hookimpl
    def after_run(self, ctx: RunContext) -> dict[str, Any]:
        """The weight on the labels the run trained with, and Algorithm 1's raw estimate when one was made."""
        used = 1.0 if self.config.teacher is None else self.alpha
        out: dict[str, Any] = {"alpha": used}
        if self.estimate is not None:
            out["alpha_estimate"] = self.estimate
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "estimate": self.estimate}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha, self.estimate = state.get("alpha"), state.get("estimate")
