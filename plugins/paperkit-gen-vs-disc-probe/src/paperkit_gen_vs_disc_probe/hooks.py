"""The evaluate hook of gen-vs-disc-probe, a thin shell over :func:`paperkit_gen_vs_disc_probe.functional.probe`.

On every evaluation set the engine hands over (the test set and any out-of-distribution set), the hook takes the
model's penultimate features (``EvalSet.features()``) of the experience's training set (``ctx.eval_set``, gathered
over processes like the engine's own) and of the evaluation set, fits each head on ``m`` training samples per class
and reports its accuracy on the evaluation set: ``<head>/m<m>/accuracy`` and ``<head>/all/accuracy`` (with one head, also ``m<m>/accuracy`` and ``all/accuracy``,
the names a claim compares between a naive-Bayes and a logistic arm). The draws come
from a generator seeded by the run seed and the experience alone, so every evaluation, a resumed run and a plan
variant with other heads see the same subsets (the hook keeps no state).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_gen_vs_disc_probe import functional


class GenVsDiscProbe:
    """Few-shot linear evaluation of frozen features with Gaussian naive Bayes and logistic regression."""

    def __init__(self, config: Any) -> None:
        from paperkit_gen_vs_disc_probe import GenVsDiscProbeConfig

        self.config = config if config is not None else GenVsDiscProbeConfig()

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float]:
        cfg = self.config
        experience = data.experience
        try:
            train = ctx.eval_set(model, experience.train, "train")
            train_x = train.features()
            test_x = data.features()
        except ValueError as exc:
            raise PluginError(f"gen-vs-disc-probe needs a model with features and a head: {exc}") from None
        train_y, test_y = train.predictions()[1], data.predictions()[1]
        if train_y.ndim != 1 or test_y.ndim != 1:
            raise PluginError("gen-vs-disc-probe fits class heads: it needs integer class labels")
        if len(train_y) == 0 or len(test_y) == 0:
            return {}
        generator = torch.Generator().manual_seed(int(ctx.seed) * 1000 + int(experience.index))
        shots: list[int | None] = [*cfg.shots, *([None] if cfg.include_all else [])]
        accuracy = functional.probe(
            train_x.flatten(1).cpu(),
            train_y.cpu(),
            test_x.flatten(1).cpu(),
            test_y.cpu(),
            shots,
            cfg.repeats,
            generator,
            heads=tuple(cfg.heads),
            var_smoothing=cfg.var_smoothing,
            variance=cfg.variance,
            C=cfg.C,
            max_iter=cfg.max_iter,
            minmax=cfg.minmax,
        )
        out = {f"{head}/{m}/accuracy": value for head, row in accuracy.items() for m, value in row.items()}
        if len(accuracy) == 1:  # one head: its accuracies also under head-free names, which claims compare across arms
            out.update({f"{m}/accuracy": value for row in accuracy.values() for m, value in row.items()})
        return out
