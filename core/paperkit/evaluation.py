"""Evaluation: predictions gathered over processes, the evaluate methods on every test set, and results.json.

The engine evaluates before training and after every experience
(:func:`evaluate_all`); methods measure other sets through
``ctx.eval_set`` (:func:`eval_set`). :func:`summarize` turns the evaluations into
``results.json``: final metrics, per-experience metrics and, for streams, the
matrix of the task kind's headline metric with its stream metrics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit.batches import EvalBatches
from paperkit.context import EvalSet, RunContext
from paperkit.dispatch import Methods
from paperkit.metrics import stream_metrics
from paperkit.plan import Plan
from paperkit.spec import KINDS
from paperkit.step import forward
from paperkit.tasks.base import Experience, Task


def _eval_loader(experience: Experience, plan: Plan, ctx: RunContext) -> EvalBatches:
    return EvalBatches(experience.test, plan.run.eval_batch_size, ctx.accelerator)


def predict(model: nn.Module, loader: Any, experience: Experience, ctx: RunContext, features: bool = False) -> Any:
    """Logits and targets over a whole evaluation set, gathered from every process, each sample once and in order;
    with ``features``, also the model's features (``Outputs.features``) as a third tensor."""
    was_training = model.training
    model.eval()
    logits_all, targets_all, features_all = [], [], []
    with torch.no_grad():
        for batch in loader:
            outputs = forward(model, batch["x"], ctx, experience)
            parts = [outputs.logits.contiguous(), batch["y"]]
            if features:
                if outputs.features is None:
                    raise ValueError("the model offers no features (it is not a paperkit Classifier)")
                parts.append(outputs.features.contiguous())
            if ctx.accelerator.num_processes > 1:
                *parts, valid = ctx.accelerator.gather((*parts, batch["valid"].long()))
                parts = [p[valid.bool()] for p in parts]
            logits_all.append(parts[0].float().cpu())
            targets_all.append(parts[1].cpu())
            if features:
                features_all.append(parts[2].float().cpu())
    model.train(was_training)
    if features:
        return torch.cat(logits_all), torch.cat(targets_all), torch.cat(features_all)
    return torch.cat(logits_all), torch.cat(targets_all)


def _predictor(model: nn.Module, loader: Any, experience: Experience, ctx: RunContext, features: bool = False) -> Any:
    """``predict`` for one evaluation set, deferred until an evaluate method asks for the predictions."""
    return lambda: predict(model, loader, experience, ctx, features)


def eval_set(
    model: nn.Module, dataset: Any, experience: Experience, ctx: RunContext, phase: str, split: str
) -> EvalSet:
    """An :class:`EvalSet` over any dataset (a test set, ``experience.ood[...]``, the training or validation set)."""
    loader = EvalBatches(dataset, ctx.plan.run.eval_batch_size, ctx.accelerator)
    return EvalSet(
        experience,
        loader,
        phase,
        _predictor(model, loader, experience, ctx),
        split=split,
        predict_features=_predictor(model, loader, experience, ctx, features=True),
    )


def evaluate_all(
    model: nn.Module, task: Task, methods: Methods, plan: Plan, ctx: RunContext, phase: str
) -> dict[int, dict[str, float]]:
    """Every evaluate method on every experience's test set: ``{experience: {metric: value}}``.

    An experience's out-of-distribution test sets (``experience.ood``) are evaluated
    the same way; their metrics sit beside the in-distribution ones as
    ``ood:<set>/<key>/<name>`` (so ``results.json`` reports both, and a claim can
    name either).
    """
    row: dict[int, dict[str, float]] = {}
    for experience in task.experiences:
        metrics: dict[str, float] = {}
        for split, dataset in (("test", experience.test), *((f"ood:{n}", d) for n, d in experience.ood.items())):
            data = eval_set(model, dataset, experience, ctx, phase, split)
            prefix = "" if split == "test" else f"{split}/"
            for key, out in methods.call("evaluate", model=model, data=data, ctx=ctx, step=ctx.step):
                for name, value in (out or {}).items():
                    metrics[f"{prefix}{key}/{name}"] = float(value)
        row[experience.index] = metrics
    return row


def _evaluate_accuracy(
    model: nn.Module, task: Task, experiences: list[int], plan: Plan, ctx: RunContext
) -> dict[int, dict[str, float]]:
    """The task kind's scores (accuracy and loss for class tasks) on the test sets of ``experiences``."""
    from paperkit.scores import SCORES

    scores = SCORES[plan.task.kind]
    out = {}
    for index in experiences:
        experience = task.experiences[index]
        out[index] = scores(*predict(model, _eval_loader(experience, plan, ctx), experience, ctx))
    return out


def summarize(
    task: Task,
    initial: dict[int, dict[str, float]],
    rows: list[dict[int, dict[str, float]]],
    summary: dict[str, Any],
    kind: str = "class",
) -> dict[str, Any]:
    """results.json content: final metrics, per-experience metrics, and for streams the matrix of the task kind's
    headline metric (``accuracy_matrix``, whatever the metric; ``headline`` names it) and the stream metrics on it."""
    headline = KINDS[kind]
    last = rows[-1] if rows else initial
    final = _mean_over_experiences(last)
    out: dict[str, Any] = {
        "final": final,
        "initial": _mean_over_experiences(initial),
        "per_experience": {str(k): v for k, v in last.items()},
        "summary": summary,
        "headline": {"metric": headline.headline, "direction": headline.direction},
    }
    if task.num_experiences > 1 and rows:
        R = [[row[j].get(headline.headline, float("nan")) for j in range(task.num_experiences)] for row in rows]
        b = [initial[j].get(headline.headline, float("nan")) for j in range(task.num_experiences)]
        out.update(accuracy_matrix=R, initial_accuracy=b, **stream_metrics(R, b, headline.direction))
    return out


def _mean_over_experiences(row: dict[int, dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the experiences that report it."""
    names = sorted({name for metrics in row.values() for name in metrics})
    return {
        name: sum(m[name] for m in row.values() if name in m) / sum(name in m for m in row.values()) for name in names
    }


def _flat(row: dict[int, dict[str, float]]) -> dict[str, float]:
    return {f"{name}@{exp}": value for exp, metrics in row.items() for name, value in metrics.items()}
