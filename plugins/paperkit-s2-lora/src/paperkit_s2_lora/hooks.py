"""The S2-LoRA hooks: the shared adapter shell with S2-LoRA's layer, its L1 term and its rank report.

The math is in :mod:`paperkit_s2_lora.functional`; these are thin shells.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paperkit import AdapterMethod, adapter_layers, hookimpl, modules_to_save_tensors, shared_module, write_peft
from paperkit_s2_lora.functional import (
    S2LoRALinear,
    SharedFactors,
    coefficients,
    init_factors_,
    l1_penalty,
    lora_tensors,
    rank_allocation,
    s2_layers,
    shared_key,
)


class S2LoRA(AdapterMethod):
    """Wraps the target layers in :class:`~paperkit_s2_lora.functional.S2LoRALinear` sharing ``A``, ``B`` per shape.

    ``adapt`` (the shared :class:`paperkit.AdapterMethod`) wraps every target;
    the first layer of each ``(out, in)`` shape group builds and owns the
    group's :class:`SharedFactors`, the others refer to it. ``regularize`` adds
    ``λ Σ_i ‖c_i‖₁``; ``after_run`` reports the learned rank of every matrix
    (``rank_allocation.json`` in the run directory and counts in the summary)
    and exports the adapters as PEFT LoRA factors (``diag(c_i) A``, ``B``).
    """

    def make_layer(self, name: str, linear: nn.Linear) -> S2LoRALinear:
        c = self.config
        alpha = c.rank if c.alpha is None else c.alpha
        layer = S2LoRALinear(linear, c.rank, alpha / c.rank, c.dropout, c.init)
        dtype = layer.s2_coefficients.dtype
        device = linear.weight.device

        def build() -> SharedFactors:
            factors = SharedFactors(c.rank, linear.in_features, linear.out_features, device=device, dtype=dtype)
            return init_factors_(factors, c.init, c.std)

        assert self.model is not None
        return layer.attach(shared_module(self.model, shared_key(c.rank, linear.in_features, linear.out_features), build))

    @hookimpl
    def regularize(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {"l1": l1_penalty(coefficients(model).values(), self.config.l1)}

    @hookimpl
    def after_run(self, model: nn.Module, ctx: Any) -> dict[str, float]:
        summary = super().after_run(model, ctx)
        inner = ctx.accelerator.unwrap_model(model)
        ranks = rank_allocation(inner, self.config.threshold)
        groups = sum(1 for _n, layer in s2_layers(inner) if layer.owns_factors)
        if ctx.is_main_process:
            values = {name: [float(v) for v in c.detach().cpu()] for name, c in coefficients(inner).items()}
            report = {"threshold": self.config.threshold, "ranks": ranks, "coefficients": values}
            Path(ctx.run_dir, "rank_allocation.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        total = sum(ranks.values())
        summary.update(
            shared_groups=float(groups),
            active_ranks=float(total),
            active_fraction=float(total) / max(1, self.config.rank * len(ranks)),
            max_rank=float(max(ranks.values(), default=0)),
            min_rank=float(min(ranks.values(), default=0)),
        )
        return summary

    def export(self, model: nn.Module, directory: Path) -> None:
        export_lora(model, directory, self.modules_to_save)


def export_lora(model: nn.Module, directory: str | Path, modules_to_save: list[str] | tuple[str, ...] = ()) -> Path | None:
    """Write the S2-LoRA adapters of ``model`` in PEFT's LoRA format; ``None`` where that format cannot say them.

    PEFT has no S2-LoRA; its LoRA layer computes the same update with
    ``lora_A = diag(c_i) A`` and ``lora_B = B`` per layer (``lora_alpha = s · r``),
    so ``peft.PeftModel.from_pretrained(base, directory)`` rebuilds the adapted
    model (the sharing is lost in the file, not in the outputs). All layers must
    share one rank and scaling and be unmerged.
    """
    every = list(adapter_layers(model))
    layers = list(s2_layers(model))
    if not layers or len(layers) != len(every) or any(layer.merged for _n, layer in layers):
        return None
    kinds = {(layer.rank, layer.scaling, float(getattr(layer.dropout, "p", 0.0))) for _n, layer in layers}
    if len(kinds) != 1:
        return None
    ((rank, scaling, dropout),) = kinds
    tensors = lora_tensors(model)
    tensors.update({k: v.detach().cpu() for k, v in modules_to_save_tensors(model, list(modules_to_save)).items()})
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": scaling * rank,
        "lora_dropout": dropout,
        "target_modules": [name for name, _layer in layers],
        "modules_to_save": list(modules_to_save) or None,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "task_type": None,
        "base_model_name_or_path": None,
    }
    return write_peft(directory, config, tensors)

