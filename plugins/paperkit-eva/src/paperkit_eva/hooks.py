"""The EVA hooks: LoRA's adapter shell whose ``A`` and ranks come from the data (see :mod:`paperkit_eva.functional`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from paperkit import AdaptedLinear, LowRankAdapterMethod, LowRankLinear, PlanError, hookimpl, wrap_low_rank, write_peft
from paperkit_eva.functional import EvaResult, eva_alpha, eva_components, eva_init_


def token_rows(padding_id: int | None) -> Any:
    """The activation matrix of a layer input: token positions whose id is ``padding_id`` are left out (PEFT's
    ``attention_mask`` filtering, ``prepare_layer_inputs_fn_language_modeling``); other inputs are flattened."""

    def rows(layer_input: torch.Tensor, batch: Any) -> torch.Tensor:
        x = batch["x"] if isinstance(batch, dict) else batch
        if (
            padding_id is not None
            and not torch.is_floating_point(x)
            and layer_input.ndim == 3
            and tuple(layer_input.shape[:2]) == tuple(x.shape)
        ):
            return layer_input[x != padding_id]
        return layer_input.reshape(-1, layer_input.shape[-1]) if layer_input.ndim > 2 else layer_input

    return rows


def peft_eva_export(
    model: nn.Module, directory: Path, rank: int, alpha: float, dropout: float, modules_to_save: list[str]
) -> Path:
    """Write EVA's adapters as PEFT's LoRA (``r``, ``lora_alpha``, and per layer ``rank_pattern``/``alpha_pattern``,
    as ``peft.tuners.lora.eva._load_eva_state_dict`` records them after redistribution)."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, AdaptedLinear)]
    if not layers or not all(isinstance(m, LowRankLinear) for _n, m in layers):
        raise ValueError("EVA's PEFT export needs low-rank adapters on every adapted layer")
    if any(m.merged for _n, m in layers):
        raise ValueError("unmerge the adapters before exporting them")
    tensors: dict[str, torch.Tensor] = {}
    rank_pattern, alpha_pattern = {}, {}
    for name, layer in layers:
        tensors[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A.detach()
        tensors[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B.detach()
        layer_alpha = layer.scaling * layer.rank
        if layer.rank != rank:
            rank_pattern[name] = layer.rank
        if abs(layer_alpha - alpha) > 1e-9 * max(1.0, abs(alpha)):
            alpha_pattern[name] = layer_alpha
    for module_name in modules_to_save:
        for pname, value in model.get_submodule(module_name).state_dict().items():
            tensors[f"base_model.model.{module_name}.{pname}"] = value
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": float(dropout),
        "target_modules": [name for name, _layer in layers],
        "rank_pattern": rank_pattern,
        "alpha_pattern": alpha_pattern,
        "modules_to_save": list(modules_to_save) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,  # the tensors are stored: loading needs no EVA pass
        "inference_mode": True,
        "task_type": None,
        "base_model_name_or_path": None,
    }
    return write_peft(directory, config, tensors)


class Eva(LowRankAdapterMethod):
    """Wraps the target layers; before wrapping, :meth:`prepare` runs EVA's incremental SVD on training batches.

    ``A`` = the top right-singular vectors of each layer's input activations,
    ``B = 0`` (the model starts at the base model, hence ``preserves_output``);
    a layer whose redistributed rank is 0 stays a plain frozen layer, as in
    PEFT. Training, merging, saving and the frozen/trainable split are the
    shared :class:`paperkit.LowRankAdapterMethod`'s.
    """

    def __init__(self, config: object) -> None:
        super().__init__(config)
        self.result: EvaResult | None = None

    @property
    def alpha(self) -> float:
        c = self.config
        return float(c.rank if c.alpha is None else c.alpha)

    def prepare(self, model: nn.Module, ctx: Any) -> None:
        c = self.config
        # the targets' names, through the public wrapper with an identity factory (nothing is replaced)
        targets = list(wrap_low_rank(model, c.target, lambda name, linear: linear, f"{self.where} target"))
        for name in targets:
            layer = model.get_submodule(name)
            if round(c.rank * c.rho) > layer.in_features:
                raise PlanError(
                    f"rank {c.rank} × rho {c.rho} exceeds layer '{name}''s {layer.in_features} input features; "
                    "EVA keeps up to round(rank·rho) right-singular vectors of its inputs: lower rank or rho",
                    f"{self.where} rank",
                )
        batches = ctx.batch_sampler(c.batches)
        self.result = eva_components(
            model, batches, targets, c.rank, c.rho, c.tau, c.whiten,
            forward=lambda m, batch: m(batch["x"]),
            rows=token_rows(c.padding_id),
            max_iterations=c.max_iterations,
        )

    def make_layer(self, name: str, linear: nn.Linear) -> nn.Module:
        assert self.result is not None, "prepare() runs before make_layer()"
        c = self.config
        layer_rank = self.result.ranks[name]
        if layer_rank == 0:
            return linear  # not adapted: the redistribution gave its rank to other layers
        layer_alpha = eva_alpha(self.alpha, c.rank, layer_rank, c.adjust_scaling)
        layer = LowRankLinear(linear, layer_rank, layer_alpha / layer_rank, c.dropout)
        eva_init_(layer, self.result.components[name])
        return layer

    @hookimpl
    def adapt(self, model: nn.Module, ctx: Any) -> nn.Module:
        model = super().adapt(model, ctx)
        self.layers = [n for n in self.layers if isinstance(model.get_submodule(n), AdaptedLinear)]
        return model

    @hookimpl
    def after_run(self, model: nn.Module, ctx: Any) -> dict[str, float]:
        summary = super().after_run(model, ctx)
        if self.result is not None:
            ranks = self.result.ranks
            summary.update(
                eva_batches=float(self.result.iterations),
                eva_converged=float(self.result.converged),
                eva_total_rank=float(sum(ranks.values())),
                eva_max_rank=float(max(ranks.values())),
                eva_min_rank=float(min(ranks.values())),
            )
        return summary

    def export(self, model: nn.Module, directory: Path) -> None:
        c = self.config
        peft_eva_export(model, directory, c.rank, self.alpha, c.dropout, self.modules_to_save)
