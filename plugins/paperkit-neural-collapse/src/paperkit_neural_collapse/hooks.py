"""Hook shells over :mod:`paperkit_neural_collapse.functional`.

``NeuralCollapse.evaluate`` measures the penultimate features (``Outputs.features``) and the classifier head of the
model on the experience's training set (``train/<metric>``: neural collapse is a training-set phenomenon, which is
what the paper's theorems and experiments measure) and on the evaluation set it is handed (``test/<metric>``, or
the out-of-distribution set). The engine's ``EvalSet`` carries logits and targets only, so the hook runs the model
itself over ordered batches, split over the processes and padded the way the engine's evaluation loader does, and
gathers the features from every process (every process then computes the same metrics). ``after_run`` reports the
per-class lengths of the last training-set measurement (class sizes, classifier-row norms, class-mean norms).

``NeuralCollapseMSE`` is the paper's training objective for class tasks: the squared error against one-hot (or
soft) targets as the ``loss``, and the feature decay ``λ_H/2 ‖H‖²`` as a ``regularize`` term.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from paperkit import PluginError, forward, hookimpl, per_sample_targets, unwrapped, weighted_mean
from paperkit_neural_collapse import functional


def classifier_weight(model: nn.Module) -> torch.Tensor | None:
    """The last layer's weight (``C × d``): ``model.head`` as a plain linear layer or a low-rank adapter around one."""
    head = getattr(unwrapped(model), "head", None)
    if isinstance(head, nn.Linear):
        return head.weight.detach()
    base, delta = getattr(head, "base", None), getattr(head, "delta_weight", None)
    if isinstance(base, nn.Linear) and callable(delta):
        return (base.weight + delta()).detach()
    return None


def train_batches(dataset: Any, batch_size: int, rank: int, world: int) -> Iterator[dict[str, torch.Tensor]]:
    """This process's share of ``dataset`` in order, as ``paperkit.engine.EvalBatches`` serves a test set: each
    global batch split into ``world`` contiguous parts, each part padded to the first one's length by repeating its
    last sample, ``valid`` false on the padding rows."""
    n = len(dataset)
    for start in range(0, n, batch_size):
        ids = torch.arange(start, min(n, start + batch_size))
        pieces = torch.tensor_split(ids, world)
        mine, width = pieces[rank], len(pieces[0])
        pad = (mine[-1:] if len(mine) else ids[:1]).repeat(width - len(mine))
        take = torch.cat([mine, pad])
        yield {"x": dataset.x[take], "y": dataset.y[take], "valid": torch.arange(len(take)) < len(mine)}


def gather_features(model: nn.Module, batches: Any, ctx: Any, experience: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (float64) and labels of every sample the ``batches`` hold, in order, gathered from every
    process and without the padding rows (what ``paperkit.engine.predict`` does with the logits)."""
    accelerator = ctx.accelerator
    was_training = model.training
    model.eval()
    features, labels = [], []
    try:
        with torch.no_grad():
            for batch in batches:
                out = forward(model, batch["x"].to(accelerator.device), ctx, experience)
                if out.features is None:
                    raise PluginError("neural-collapse needs a model with features and a head (a paperkit.Classifier)")
                h, y = out.features.flatten(1).contiguous(), batch["y"].to(accelerator.device)
                if accelerator.num_processes > 1:
                    valid = batch["valid"].to(accelerator.device).long()
                    h, y, valid = accelerator.gather((h, y, valid))
                    h, y = h[valid.bool()], y[valid.bool()]
                features.append(h.double().cpu())
                labels.append(y.cpu())
    finally:
        model.train(was_training)
    if not features:  # an empty set
        return torch.zeros(0, 0, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    return torch.cat(features), torch.cat(labels)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """NaN or infinite values (a degenerate set) are left out rather than reported."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


class NeuralCollapse:
    """NC1, NC2 and NC3 of the penultimate features and the head, on the training set and the evaluation set."""

    def __init__(self, config: Any) -> None:
        from paperkit_neural_collapse import NeuralCollapseConfig

        self.config = config if config is not None else NeuralCollapseConfig()
        self.last: dict[str, Any] = {}

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float]:
        experience = data.experience
        train = experience.train
        if not hasattr(train, "x") or not hasattr(train, "y"):
            raise PluginError("neural-collapse reads the training set's tensors (an IndexedDataset with x and y)")
        sizes = torch.bincount(train.y.long().cpu(), minlength=ctx.task.info.num_classes)
        weight = classifier_weight(model)
        w = None if weight is None else weight.double().cpu()
        rank, world = ctx.accelerator.process_index, ctx.accelerator.num_processes
        out: dict[str, float] = {}
        if data.split == "test" and "train" in self.config.sets:
            batches = train_batches(train, ctx.plan.run.eval_batch_size, rank, world)
            h, y = gather_features(model, batches, ctx, experience)
            out.update({f"train/{k}": v for k, v in functional.collapse_metrics(h, y, w, sizes).items()})
            if len(y):
                self.last = self._per_class(h, y, w, sizes, data.phase, experience.index)
        if "test" in self.config.sets:
            h, y = gather_features(model, data.loader, ctx, experience)
            out.update({f"test/{k}": v for k, v in functional.collapse_metrics(h, y, w, sizes).items()})
        return _finite(out)

    @staticmethod
    def _per_class(
        h: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, sizes: torch.Tensor, phase: str, index: int
    ) -> dict[str, Any]:
        stats = functional.class_statistics(h, y)
        classes = stats.classes
        record: dict[str, Any] = {
            "phase": phase,
            "experience": int(index),
            "classes": classes.tolist(),
            "train_sizes": sizes[classes].tolist(),
            "feature_mean_norms": stats.means.norm(dim=1).tolist(),
            "centred_mean_norms": stats.centred_means.norm(dim=1).tolist(),
        }
        if w is not None:
            record["classifier_norms"] = w[classes].norm(dim=1).tolist()
        return record

    @hookimpl
    def after_run(self) -> dict[str, Any]:
        """The per-class lengths of the last training-set measurement (for a plot of norm against class size)."""
        return dict(self.last)

    def state_dict(self) -> dict[str, Any]:
        return {"last": dict(self.last)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last = dict(state.get("last", {}))


class NeuralCollapseMSE:
    """The paper's squared-error loss for class tasks: ``½‖z − y‖²`` per sample against one-hot or soft targets."""

    def __init__(self, config: Any) -> None:
        from paperkit_neural_collapse import NeuralCollapseMSEConfig

        self.config = config if config is not None else NeuralCollapseMSEConfig()

    @hookimpl
    def loss(self, batch: dict, outputs: Any) -> torch.Tensor:
        targets = per_sample_targets(batch, outputs.logits.shape[-1])
        return weighted_mean(functional.one_hot_mse(outputs.logits, targets, self.config.reduction), batch)


class FeatureDecay:
    """The feature decay ``λ_H/2 ‖H‖²_F`` of the paper's objectives, as a regularize term, with any loss."""

    def __init__(self, config: Any) -> None:
        from paperkit_neural_collapse import FeatureDecayConfig

        self.config = config if config is not None else FeatureDecayConfig()

    @hookimpl
    def regularize(self, batch: dict, outputs: Any, ctx: Any) -> dict[str, torch.Tensor]:
        if outputs.features is None:
            raise PluginError("neural-collapse-feature-decay needs a model with features (a paperkit.Classifier)")
        size = len(ctx.experience.train) if ctx.experience is not None else len(batch["y"])
        penalty = functional.feature_penalty(outputs.features, self.config.feature_decay, size)
        return {"feature_decay": weighted_mean(penalty, batch)}
