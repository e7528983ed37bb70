"""The hooks of {{ cookiecutter.key }}: thin shells that take what the engine hands them and call :mod:`{{ cookiecutter.__package }}.functional`.

A hook takes any subset of its spec's arguments, by name and without defaults
(``paperkit hooks`` lists them). State kept between steps lives on this object
and round-trips through ``state_dict`` / ``load_state_dict``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

{%- set hooks = cookiecutter.hooks.replace(' ', '').split(',') %}
from paperkit import hookimpl
{%- if 'continual_step' in hooks or 'loss' in hooks %}
from paperkit import Batch
{%- endif %}
{%- if 'loss' in hooks %}
from paperkit import Outputs, per_sample_targets, weighted_mean
{%- endif %}
{%- if 'init' in hooks or 'continual_step' in hooks or 'after_step' in hooks %}
from paperkit import RunContext
{%- endif %}
{%- if 'optimize' in hooks %}
from paperkit import Optimization, trainable
{%- endif %}

from {{ cookiecutter.__package }} import functional


class {{ cookiecutter.__class }}:
    """{{ cookiecutter.paper_title }} ({{ cookiecutter.year }})."""
{%- if 'adapt' in hooks %}

    #: Promise checked by the conformance suite: before training, the adapted model computes what the base model did.
    preserves_output = True
{%- endif %}

    def __init__(self, config: Any) -> None:
        self.config = config
{%- if 'init' in hooks %}

    @hookimpl
    def init(self, model: nn.Module, ctx: RunContext) -> None:
        functional.scaled_normal_(model, self.config.gain, torch.Generator().manual_seed(ctx.seed))
{%- endif %}
{%- if 'adapt' in hooks %}

    @hookimpl
    def adapt(self, model: nn.Module) -> nn.Module:
        functional.train_biases_only(model)
        return model

    def adapter_parameters(self, model: nn.Module) -> list[str]:
        """Names of exactly the parameters that train (checked by the conformance suite)."""
        return [name for name, _ in model.named_parameters() if name.rsplit(".", 1)[-1] == "bias"]
{%- endif %}
{%- if 'optimize' in hooks %}

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        return Optimization(optimizer=functional.HeavyBall(trainable(model), lr=self.config.lr, momentum=self.config.momentum))
{%- endif %}
{%- if 'loss' in hooks %}

    @hookimpl
    def loss(self, batch: Batch, outputs: Outputs) -> torch.Tensor:
        targets = per_sample_targets(batch, outputs.logits.shape[-1])  # soft targets if a method set them
        losses = functional.tempered_cross_entropy(outputs.logits, targets, self.config.temperature)
        return weighted_mean(losses, batch)  # honours per-sample weights
{%- endif %}
{%- if 'regularize' in hooks %}

    @hookimpl
    def regularize(self, model: nn.Module) -> dict[str, torch.Tensor]:
        trainable = (p for p in model.parameters() if p.requires_grad)
        return {"l2": self.config.weight * functional.l2_penalty(trainable)}
{%- endif %}
{%- if 'evaluate' in hooks %}

    @hookimpl
    def evaluate(self, data: Any) -> dict[str, float]:
        logits, _targets = data.predictions()  # gathered over every process
        return {"confidence": functional.mean_confidence(logits)}
{%- endif %}
{%- if 'continual_step' in hooks %}

    @hookimpl
    def continual_step(self, batch: Batch, ctx: RunContext) -> Batch:
        # ctx.generator: this method's own generator, seeded from the run seed and checkpointed by the engine
        noisy = functional.add_noise(batch["x"], self.config.noise_std, ctx.generator("noise"))
        return {**batch, "x": noisy}  # every other key of the batch kept (the batch contract)
{%- endif %}
{%- if 'after_step' in hooks %}

    @hookimpl
    def after_step(self, model: nn.Module, ctx: RunContext) -> dict[str, float] | None:
        if ctx.step % self.config.every:  # numbers returned here are logged as <key>/<name> in metrics.jsonl
            return None
        return {"weight_norm": functional.weight_norm(model)}
{%- endif %}
{%- if 'after_run' in hooks %}

    @hookimpl
    def after_run(self, model: nn.Module) -> dict[str, float]:
        return {"final_weight_norm": functional.weight_norm(model)}  # results.json, under summary
{%- endif %}
