"""The weight layers of any model, by kind: what an initialization method walks over.

Initialization papers draw "every linear and convolution weight" from some
distribution; :func:`weight_layers` is that walk, once, for every init plugin
(in module order, so draws from one generator land in the same place each run).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

#: The layer kinds a method option may name, and the modules each covers (torch's conv fan-in: in · kernel size).
LAYER_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "linear": (nn.Linear,),
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
}


def weight_layers(
    model: nn.Module, kinds: tuple[str, ...] | list[str] = ("linear", "conv")
) -> Iterator[tuple[str, nn.Module]]:
    """``(name, module)`` for every layer of the given kinds (:data:`LAYER_KINDS`) that has a weight, in module order."""
    unknown = [k for k in kinds if k not in LAYER_KINDS]
    if unknown:
        raise ValueError(f"unknown layer kind(s) {', '.join(map(repr, unknown))} (known: {', '.join(LAYER_KINDS)})")
    types = tuple(t for k in kinds for t in LAYER_KINDS[k])
    for name, module in model.named_modules():
        if isinstance(module, types) and isinstance(getattr(module, "weight", None), torch.Tensor):
            yield name, module
