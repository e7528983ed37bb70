"""G-ACIL as a paperkit method.

``adapt`` wraps the model's linear head in an :class:`AnalyticHead` holding the
fixed random buffer layer; until the first closed-form fit it computes the
linear head, so experience 0 trains the whole model by backpropagation (the
paper's base training). From then on the backbone is frozen:
``before_experience`` returns False, so no gradient step runs, and
``after_experience`` learns each experience in closed form (the first one too,
ACIL's re-alignment of the classifier on the base data) and switches the head
to the analytic classifier. The engine's forward,
``model(x, return_features=True)``, then predicts through it unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from paperkit import PluginError, hookimpl
from paperkit_g_acil.functional import AnalyticHead, RecursiveClassifier, expansion_weight


class GACIL:
    #: the adapted model computes what the base model computed (the head is still linear)
    preserves_output = True

    def __init__(self, config: Any) -> None:
        self.config = config
        self.classifier: RecursiveClassifier | None = None
        self.fitted: list[int] = []

    @hookimpl
    def adapt(self, model: nn.Module, ctx: Any) -> None:
        net = ctx.accelerator.unwrap_model(model)
        head = getattr(net, "head", None)
        if not isinstance(head, nn.Linear) or not hasattr(net, "features"):
            raise PluginError("g-acil needs a classifier model with features(x) and a linear 'head' (every embedded model is one)")
        # The same buffer layer on every process: drawn on the CPU from the run seed.
        generator = torch.Generator().manual_seed(ctx.seed)
        expansion = expansion_weight(head.in_features, self.config.expansion, generator).to(head.weight.device)
        net.head = AnalyticHead(head, expansion)

    @hookimpl
    def before_experience(self) -> bool | None:
        """Gradient training only until the backbone is frozen (the first experience)."""
        return False if self.fitted else None

    @hookimpl
    def after_experience(self, model: nn.Module, experience: Any, ctx: Any) -> None:
        net = ctx.accelerator.unwrap_model(model)
        head = net.head
        if not isinstance(head, AnalyticHead):
            raise PluginError("g-acil: the model's head is not the one its adapt hook installed (another method replaced it)")
        if self.classifier is None:
            self.classifier = RecursiveClassifier(head.expansion.shape[0], head.out_features, self.config.gamma, head.expansion.device)
        elif self.classifier.R.device != head.expansion.device:  # restored from a checkpoint, which holds it on the CPU
            self.classifier.to(head.expansion.device)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            for batch in DataLoader(experience.train, batch_size=self.config.fit_batch, shuffle=False):
                self.classifier.fit(head.expand(net.features(batch["x"].to(head.expansion.device))), batch["y"])
        net.train(was_training)
        self.fitted.append(experience.index)
        head.load(self.classifier.W, self.classifier.seen)

    def state_dict(self) -> dict[str, Any]:
        return {"classifier": None if self.classifier is None else self.classifier.state_dict(), "fitted": list(self.fitted)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fitted = list(state["fitted"])
        c = state["classifier"]
        if c is None:
            self.classifier = None
            return
        self.classifier = RecursiveClassifier(c["W"].shape[0], c["W"].shape[1], c["gamma"], c["W"].device)
        self.classifier.load_state_dict(c)
