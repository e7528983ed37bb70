"""Adapters in Hugging Face PEFT's on-disk format, so ``peft.PeftModel.from_pretrained`` loads our runs.

PEFT's format is a directory with ``adapter_config.json`` (the ``peft_type`` and
its options) and ``adapter_model.safetensors`` (tensors named
``base_model.model.<layer>.<PEFT's attribute>``). :func:`write_peft` writes any
such pair; :func:`export_peft` is the LoRA case. A plugin whose method PEFT
also implements (Bone, OFT, FourierFT...) builds its config and tensor names
and calls :func:`write_peft`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paperkit.adapters.layers import LowRankLinear
from paperkit.adapters.model import adapter_layers


def write_peft(directory: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``directory``; returns it.

    ``tensors`` are named as PEFT names them (``base_model.model.<layer>.<attr>``).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(directory / "adapter_model.safetensors"))
    return directory


def modules_to_save_tensors(model: nn.Module, modules_to_save: tuple[str, ...] | list[str]) -> dict[str, torch.Tensor]:
    """The whole state of each module that trains beside the adapters, named as PEFT stores it."""
    return {
        f"base_model.model.{module_name}.{pname}": value
        for module_name in modules_to_save
        for pname, value in model.get_submodule(module_name).state_dict().items()
    }


def export_peft(model: nn.Module, directory: str | Path, modules_to_save: tuple[str, ...] | list[str] = ()) -> Path:
    """Write the low-rank adapters in PEFT's on-disk format (``adapter_config.json`` and
    ``adapter_model.safetensors``), so ``peft.PeftModel.from_pretrained(base, directory)`` rebuilds the adapted
    model on the same base weights; ``modules_to_save`` (a trained head) are stored whole, as PEFT stores them.

    Every adapter must share one rank and one scaling (PEFT's ``r`` and ``lora_alpha = scaling · r``); the
    adapters must not be merged.
    """
    every = list(adapter_layers(model))
    layers = [(name, layer) for name, layer in every if isinstance(layer, LowRankLinear)]
    if not layers or len(layers) != len(every):
        raise ValueError("PEFT's LoRA format needs low-rank adapters (LowRankLinear) on every adapted layer")
    shapes = {(layer.rank, layer.scaling) for _name, layer in layers}
    if len(shapes) != 1:
        raise ValueError(f"PEFT's format needs one rank and scaling for every adapter, found {sorted(shapes)}")
    if any(layer.merged for _name, layer in layers):
        raise ValueError("unmerge the adapters before exporting them")
    ((rank, scaling),) = shapes
    tensors = {}
    for name, layer in layers:
        tensors[f"base_model.model.{name}.lora_A.weight"] = layer.lora_A.detach().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = layer.lora_B.detach().contiguous()
    tensors.update(modules_to_save_tensors(model, modules_to_save))
    dropout = next((getattr(layer.dropout, "p", 0.0) for _n, layer in layers), 0.0)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": scaling * rank,
        "lora_dropout": float(dropout),
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
