"""The adapted model as a whole: its adapter layers, what trains, merging, and adapter files.

A model's adapters are its :class:`~paperkit.adapters.layers.AdaptedLinear`
layers. Parameters shared by several layers (one pair of factors for a whole
model, as in VeRA or S2-LoRA) live in a *shared module* (:func:`shared_module`):
the first layer that uses it owns it (it is that layer's child, so its tensors
appear once in the model's parameters and state dict, under that layer's name),
the other layers reach the same object. Nothing is added to the model itself,
so any model (an ``nn.Sequential`` too) keeps its forward, and
:func:`merge_and_unload` leaves exactly the plan's architecture.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from paperkit.adapters.layers import AdaptedLinear

#: Where a model keeps its shared adapter modules by key (a plain dict attribute: not a submodule).
SHARED = "_paperkit_shared_adapters"


def shared_module(model: nn.Module, key: str, build: Callable[[], nn.Module]) -> nn.Module:
    """The model's shared adapter module ``key``, built by ``build()`` the first time it is asked for.

    A layer reaches it with :meth:`AdaptedLinear.use_shared`; its parameters
    train, save, load and unload with the adapters.
    """
    bank = model.__dict__.setdefault(SHARED, {})
    if key not in bank:
        bank[key] = build()
    return bank[key]


def adapter_layers(model: nn.Module) -> Iterator[tuple[str, AdaptedLinear]]:
    """Every adapter layer (:class:`AdaptedLinear`, LoRA's included) of ``model`` with its name."""
    for name, module in model.named_modules():
        if isinstance(module, AdaptedLinear):
            yield name, module


def adapter_parameter_items(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """Every trainable adapter tensor by full name, in module order (a shared one under its owner's name)."""
    for name, layer in adapter_layers(model):
        for attr, p in layer.adapter_parameters().items():
            yield (f"{name}.{attr}" if name else attr), p


def mark_adapters_trainable(model: nn.Module) -> int:
    """Freeze every parameter except the adapters' own; returns the number of trainable values.

    Adapter methods train only their parameters: base weights, biases,
    normalization and unwrapped layers stay frozen (PEFT's ``bias="none"``).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    count = 0
    for _name, p in adapter_parameter_items(model):
        p.requires_grad_(True)
        count += p.numel()
    return count


def merge_all(model: nn.Module) -> None:
    for _name, layer in adapter_layers(model):
        layer.merge()


def unmerge_all(model: nn.Module) -> None:
    for _name, layer in adapter_layers(model):
        layer.unmerge()


@torch.no_grad()
def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every adapter by its base ``nn.Linear`` with ``W'`` folded in; returns ``model``.

    Afterwards the model has the architecture the plan built, so its state dict
    loads with ``run.init_from``. The restored layers' parameters stay frozen.
    """
    for name, layer in list(adapter_layers(model)):
        layer.merge()
        base = layer.base
        layer._unmerged_weight = None
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, base)
    model.__dict__.pop(SHARED, None)
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' trainable tensors by full name (``blocks.0.linear1.lora_A``), detached on the CPU."""
    return {name: p.detach().cpu().contiguous() for name, p in adapter_parameter_items(model)}


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Write the adapter tensors (and what each layer is, :meth:`AdaptedLinear.describe`) to a safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {name: layer.describe() for name, layer in adapter_layers(model)}
    save_file(adapter_state_dict(model), str(path), metadata={"paperkit.adapters": json.dumps(meta)})
    return path


@torch.no_grad()
def load_adapter(model: nn.Module, path: str | Path) -> None:
    """Load adapter tensors written by :func:`save_adapter` into an identically wrapped model."""
    from paperkit.errors import CheckpointError
    from paperkit.weights import read_weights

    state = read_weights(path)
    own = dict(adapter_parameter_items(model))
    if set(state) != set(own):
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        what = f"missing '{missing[0]}'" if missing else f"unexpected '{extra[0]}'"
        raise CheckpointError(f"{path}: does not fit this model's adapters ({what})")
    for name, p in own.items():  # every shape first: a file that does not fit changes nothing
        if state[name].shape != p.shape:
            raise CheckpointError(
                f"{path}: '{name}' has shape {tuple(state[name].shape)}, the adapter expects {tuple(p.shape)}"
            )
    unmerge_all(model)
    for name, p in own.items():
        p.copy_(state[name])
