"""The hooks of loki and loki-observed: thin shells over :mod:`paperkit_loki.functional`.

``Loki.evaluate`` takes the logits and labels the engine gathered for an evaluation set, restricts the logits to
the observed classes (softmax over them: a model that scores only Λ), and reports both prediction rules over the
task's whole label space (``paperkit_loki.functional.compare_rules``). The label metric is built once, at the first
evaluation (before training, so a class-name metric embeds with the pretrained encoder), and kept in the method's
state, so a resumed run uses the same metric. ``LokiObserved.continual_step`` sets the per-sample weight of every
training sample whose class is not observed to 0 (the built-in cross-entropy honours ``weight``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import paperkit
from paperkit import PluginError, hookimpl
from paperkit_loki import functional

MINILM_VOCABULARY = 30522  # all-MiniLM-L6-v2's WordPiece vocabulary (its config.json)


def observed_classes(config: Any, num_classes: int, seed: int) -> list[int]:
    """The observed classes Λ of a run: drawn from the run seed, listed in the plan, or every class."""
    try:
        if config.observed_count:
            return functional.draw_observed(num_classes, config.observed_count, seed)
    except ValueError as exc:
        raise PluginError(f"observed_count: {exc}") from None
    if config.observed:
        outside = [c for c in config.observed if c >= num_classes]
        if outside:
            raise PluginError(f"observed: class {outside[0]} is not a class of the task ({num_classes} classes)")
        return sorted(config.observed)
    return list(range(num_classes))


class Loki:
    """Loki's Fréchet-mean prediction rule beside argmax (Roberts et al., 2023, Sec. 3)."""

    def __init__(self, config: Any) -> None:
        from paperkit_loki import LokiConfig

        self.config = config if config is not None else LokiConfig()
        self.distances: torch.Tensor | None = None

    @hookimpl
    def evaluate(self, model: nn.Module, data: Any, ctx: Any) -> dict[str, float]:
        logits, targets = data.predictions()
        if targets.ndim != 1 or logits.ndim != 2:
            raise PluginError("loki needs class logits (N, C) and integer labels (N,)")
        if len(targets) == 0:
            return {}
        num_classes = logits.shape[1]
        observed = observed_classes(self.config, num_classes, ctx.seed)
        if self.distances is None:
            self.distances = self.metric(model, ctx, num_classes)
        out = functional.compare_rules(logits.cpu(), targets.cpu(), self.distances, observed)
        prefix = f"{self.config.rule}/"
        out.update({k[len(prefix) :]: value for k, value in list(out.items()) if k.startswith(prefix)})
        return out

    def metric(self, model: nn.Module, ctx: Any, num_classes: int) -> torch.Tensor:
        """The label metric ``d`` over the task's classes, as the config says."""
        cfg = self.config
        try:
            if cfg.metric == "discrete":
                return functional.discrete_metric(num_classes)
            if cfg.metric == "matrix":
                if not cfg.distances:
                    raise ValueError("metric = 'matrix' needs the 'distances' option")
                return functional.check_metric(torch.tensor(cfg.distances, dtype=torch.float64), num_classes)
            if cfg.metric == "graph":
                if not cfg.graph:
                    raise ValueError("metric = 'graph' needs the 'graph' option (edges)")
                return functional.graph_metric(cfg.graph, num_classes)
            return functional.embedding_metric(
                self.class_name_embeddings(model, ctx, num_classes), cfg.embedding_distance, cfg.normalize
            )
        except ValueError as exc:
            raise PluginError(f"loki: {exc}") from None

    def class_name_embeddings(self, model: nn.Module, ctx: Any, num_classes: int) -> torch.Tensor:
        names = ctx.task.extras.get("classes")
        if not names or len(names) != num_classes:
            raise ValueError(
                f"metric = 'class-names' needs the class names in task.extras['classes'] (task {ctx.task.name!r} has "
                "none): use a text task, or metric = 'matrix' / 'graph'"
            )
        ids = paperkit.tokenize([self.config.prompt.format(name) for name in names], self.config.max_length)
        net = paperkit.unwrapped(model)
        info = ctx.task.info
        reads_minilm = info.input_kind == "tokens" and info.vocab_size == MINILM_VOCABULARY
        embedder = self.config.embedder
        if embedder == "auto":
            embedder = (
                "model" if reads_minilm and hasattr(net, "encoder") and hasattr(net, "features") else "pretrained"
            )
        if embedder == "pretrained":
            return functional.pretrained_minilm_embeddings(ids)
        if not (reads_minilm and hasattr(net, "features")):
            raise ValueError("embedder = 'model' needs a model with features() over MiniLM token ids (model 'minilm')")
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                return net.features(ids.to(ctx.device)).detach().cpu()
        finally:
            net.train(was_training)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.distances is None else {"distances": self.distances.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        distances = state.get("distances")
        self.distances = None if distances is None else torch.as_tensor(distances, dtype=torch.float64).clone()


class LokiObserved:
    """Train on the observed classes only: samples of the other classes get per-sample weight 0."""

    def __init__(self, config: Any) -> None:
        from paperkit_loki import LokiObservedConfig

        self.config = config if config is not None else LokiObservedConfig()

    @hookimpl
    def continual_step(self, batch: dict[str, torch.Tensor], ctx: Any) -> dict[str, torch.Tensor]:
        observed = observed_classes(self.config, ctx.task.info.num_classes, ctx.seed)
        keep = torch.isin(batch["y"], torch.tensor(observed, device=batch["y"].device)).to(torch.float32)
        weight = batch.get("weight")
        return {**batch, "weight": keep if weight is None else weight * keep}
