"""The hooks of weight balancing: thin shells over :mod:`paperkit_weight_balancing.functional`.

Three implementations, one per record:

* :class:`WeightBalancing` (``weight-balancing``): WB's second stage. ``adapt`` freezes all but the
  classifier and sets the MaxNorm radius from the loaded (stage-1) classifier, ``optimize`` adds the
  weight decay to the gradients, ``loss`` is the class-balanced loss, ``after_step`` projects the
  classifier's rows onto the MaxNorm ball at the end of every epoch.
* :class:`OneStage` (``weight-balancing-one-stage``): Hasegawa & Sato's one-stage recipe. ``adapt``
  installs the fixed ETF classifier, ``optimize`` adds the weight decay (not on the classifier),
  ``regularize`` is the feature-norm penalty.
* :class:`LogitAdjustment` (``multiplicative-logit-adjustment``): the recipe's post-hoc step; ``adapt``
  folds ``z_c <- π_c^(-τ) z_c`` into the classifier of a trained model (a run with ``train = false``
  that loads it, as the reference's ``second.py`` runs 0 epochs).
* :class:`FisherRatio` (``fisher-discriminant-ratio``): ``evaluate`` reports the Fisher discriminant
  ratio of the penultimate features on the test and training sets.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from paperkit import Optimization, PluginError, hookimpl, per_sample_targets, unwrapped, weighted_mean
from paperkit_weight_balancing import functional


def _head(model: nn.Module, name: str, key: str) -> nn.Linear:
    try:
        return functional.classifier_head(unwrapped(model), name)
    except (AttributeError, TypeError) as exc:
        raise PluginError(f"{key}: the model needs a linear classifier '{name}' ({exc})") from None


def _train_counts(task: Any, experiences: list[Any]) -> torch.Tensor:
    """``n_c`` over the training sets of ``experiences`` (what the model is trained on)."""
    num_classes = int(task.info.num_classes)
    counts = torch.zeros(num_classes, dtype=torch.long)
    for experience in experiences:
        counts += functional.class_counts(experience.train.y, num_classes)
    return counts


class WeightBalancing:
    """WB's stage 2: retrain the classifier with the class-balanced loss, weight decay and MaxNorm."""

    #: Freezing changes no value: before training the adapted model computes what the stage-1 model did.
    preserves_output = True

    def __init__(self, config: Any) -> None:
        from paperkit_weight_balancing import WeightBalancingConfig

        self.config = config if config is not None else WeightBalancingConfig()
        self.threshold: float | None = None
        self._weights: tuple[int, torch.Tensor] | None = None  # (experience index, class weights), from the data

    # -- adapt: what trains, and the MaxNorm radius ---------------------------------------------------
    @hookimpl
    def adapt(self, model: nn.Module) -> nn.Module:
        head = _head(model, self.config.head, "weight-balancing")
        if self.config.retrain == "classifier":
            functional.freeze_all_but(model, self.config.head)
        if self.config.max_norm_every != "never":
            self.threshold = functional.max_norm_threshold(head.weight, self.config.max_norm)
        return model

    def adapter_parameters(self, model: nn.Module) -> list[str]:
        """The parameters that train: the classifier's (``retrain = "classifier"``) or all of them."""
        if self.config.retrain == "all":
            return [name for name, _ in model.named_parameters()]
        prefix = self.config.head
        return [n for n, _ in model.named_parameters() if n == prefix or n.startswith(prefix + ".")]

    # -- optimize: weight decay -------------------------------------------------------------------------
    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization | None:
        decay = self.config.weight_decay
        if decay == 0.0:
            return None
        return Optimization(
            grad_transform=lambda m: functional.add_weight_decay_((p for p in m.parameters() if p.requires_grad), decay)
        )

    # -- loss: class-balanced ---------------------------------------------------------------------------
    def class_weights(self, ctx: Any) -> torch.Tensor:
        """The class-balanced weights of the current experience's training set (computed once per experience)."""
        index = ctx.experience_index
        if self._weights is None or self._weights[0] != index:
            counts = _train_counts(ctx.task, [ctx.task.experiences[index]])
            self._weights = (index, functional.class_balanced_weights(counts, self.config.cb_beta))
        return self._weights[1]

    @hookimpl
    def loss(self, batch: dict, outputs: Any, ctx: Any) -> torch.Tensor:
        logits = outputs.logits.float()
        targets = per_sample_targets(batch, logits.shape[-1]).float()
        losses = functional.class_balanced_loss(logits, targets, self.class_weights(ctx), self.config.cb_form)
        return weighted_mean(losses, batch)

    # -- after_step: MaxNorm by projected gradient descent -----------------------------------------------
    def _projects_now(self, ctx: Any) -> bool:
        every = self.config.max_norm_every
        if every == "never":
            return False
        if every == "step":
            return True
        per_epoch = max(int(ctx.steps_per_epoch or 0), 1)
        return ctx.experience_step % per_epoch == 0 or ctx.experience_step == ctx.total_steps

    @hookimpl
    def after_step(self, model: nn.Module, ctx: Any) -> dict[str, float] | None:
        if not self._projects_now(ctx):
            return None
        head = _head(model, self.config.head, "weight-balancing")
        if self.threshold is None:  # the references set the radius at the first projection when not set before
            self.threshold = functional.max_norm_threshold(head.weight, self.config.max_norm)
        rows = functional.max_norm_project_(head.weight, self.threshold)
        return {"max_norm_projected_rows": float(rows)}

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        threshold = state.get("threshold")
        self.threshold = None if threshold is None else float(threshold)


class OneStage:
    """Hasegawa & Sato's one-stage recipe: WD + feature regularization + fixed ETF classifier, then multiplicative LA."""

    def __init__(self, config: Any) -> None:
        from paperkit_weight_balancing import OneStageConfig

        self.config = config if config is not None else OneStageConfig()

    @hookimpl
    def adapt(self, model: nn.Module, ctx: Any) -> nn.Module:
        head = _head(model, self.config.head, "weight-balancing-one-stage")
        if self.config.etf == "draw":
            try:
                functional.install_fixed_etf_(head, ctx.generator("etf"))
            except ValueError as exc:
                raise PluginError(f"weight-balancing-one-stage: {exc}") from None
        elif self.config.etf == "keep":
            head.weight.requires_grad_(False)
        return model

    def adapter_parameters(self, model: nn.Module) -> list[str]:
        """Every parameter but the fixed classifier weight (``etf`` draw or keep)."""
        frozen = f"{self.config.head}.weight" if self.config.etf != "off" else None
        return [n for n, _ in model.named_parameters() if n != frozen]

    def _decayed(self, model: nn.Module) -> list[nn.Parameter]:
        """Trainable parameters that take weight decay: all of them, except the classifier when it is a fixed ETF."""
        skip: set[int] = set()
        if self.config.etf != "off":
            skip = {id(p) for p in _head(model, self.config.head, "weight-balancing-one-stage").parameters()}
        return [p for p in model.parameters() if p.requires_grad and id(p) not in skip]

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization | None:
        decay = self.config.weight_decay
        if decay == 0.0:
            return None
        return Optimization(grad_transform=lambda m: functional.add_weight_decay_(self._decayed(m), decay))

    @hookimpl
    def regularize(self, outputs: Any) -> dict[str, torch.Tensor] | None:
        if self.config.feature_regularization == 0.0:
            return None
        if outputs.features is None:
            raise PluginError("weight-balancing-one-stage: feature_regularization needs a model that returns features")
        return {"features": functional.feature_regularization(outputs.features, self.config.feature_regularization)}


class LogitAdjustment:
    """The post-hoc multiplicative logit adjustment ``z_c <- π_c^(-τ) z_c``, folded into the loaded classifier in ``adapt``."""

    def __init__(self, config: Any) -> None:
        from paperkit_weight_balancing import LogitAdjustmentConfig

        self.config = config if config is not None else LogitAdjustmentConfig()

    @hookimpl
    def adapt(self, model: nn.Module, ctx: Any) -> nn.Module:
        if self.config.tau != 0.0:
            counts = _train_counts(ctx.task, list(ctx.task.experiences))
            head = _head(model, self.config.head, "multiplicative-logit-adjustment")
            functional.fold_logit_adjustment_(head, functional.logit_adjustment_scales(counts, self.config.tau))
        return model


class FisherRatio:
    """Fisher's discriminant ratio of the penultimate features, on the evaluation set and the training set."""

    def __init__(self, config: Any) -> None:
        from paperkit_weight_balancing import FisherRatioConfig

        self.config = config if config is not None else FisherRatioConfig()

    @staticmethod
    @torch.no_grad()
    def features(model: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
        """Penultimate features of every row of ``x`` (the whole set on every process, in eval mode)."""
        inner = unwrapped(model)
        if not hasattr(inner, "features"):
            raise PluginError("fisher-discriminant-ratio: the model has no features(x) (use a paperkit Classifier)")
        was_training = inner.training
        inner.eval()
        try:
            parts = [
                inner.features(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)
            ]
        finally:
            inner.train(was_training)
        return torch.cat(parts)

    def ratio(self, model: nn.Module, dataset: Any, ctx: Any) -> float:
        size = int(ctx.plan.run.eval_batch_size)
        return functional.fisher_discriminant_ratio(self.features(model, dataset.x, size, ctx.device), dataset.y)

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float]:
        """``test``: FDR on this evaluation set; ``train``: on its experience's training set (NaN values are left out)."""
        experience = data.experience
        dataset = experience.test if data.split == "test" else experience.ood[data.split.partition(":")[2]]
        out = {"test": self.ratio(model, dataset, ctx)}
        if self.config.train_set and data.split == "test" and len(experience.train):
            out["train"] = self.ratio(model, experience.train, ctx)
        return {name: value for name, value in out.items() if value == value and abs(value) != float("inf")}
