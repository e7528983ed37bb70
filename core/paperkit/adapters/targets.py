"""Which layers a plan's ``target`` names, and replacing them by adapter layers.

**Target patterns** are shell-style globs (``fnmatch``, case-sensitive) matched
against the full dotted module name, e.g. ``"blocks.*.linear1"`` or ``"head"``;
``*`` also crosses dots. The special pattern ``"all-linear"`` (PEFT's name)
selects every ``nn.Linear`` except a :class:`~paperkit.models.base.Classifier`'s
output layer ``head`` (PEFT excludes the classifier head the same way). Layers
inside ``nn.MultiheadAttention`` are never targets: that module reads its
``out_proj.weight`` directly, so a wrapper there would be silently bypassed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable

from torch import nn

from paperkit.adapters.layers import AdaptedLinear
from paperkit.errors import PlanError

#: PEFT's shorthand for "every linear layer but the output layer".
ALL_LINEAR = "all-linear"


def linear_layers(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` layers an adapter may wrap, in module order."""
    inside_attention = {
        f"{name}.{child}" if name else child
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
        for child, _ in module.named_modules()
        if child
    }
    adapter_bases = {f"{name}.base" for name, module in model.named_modules() if isinstance(module, AdaptedLinear)}
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name not in inside_attention and name not in adapter_bases
    ]


def find_targets(model: nn.Module, patterns: Iterable[str], where: str = "target") -> list[str]:
    """The linear layers matching any of ``patterns`` (globs or ``"all-linear"``), in module order.

    A pattern that matches nothing is an error (a typo would otherwise train no
    adapter at all); the message lists the layers there are.
    """
    patterns = list(patterns)
    if not patterns:
        raise PlanError('no target layers given; name some, e.g. target = ["all-linear"]', where)
    layers = linear_layers(model)
    output_layer = _output_layer(model)
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern == ALL_LINEAR:
            hits = [n for n in layers if n != output_layer]
        else:
            hits = [n for n in layers if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise PlanError(
                f"pattern '{pattern}' matches no linear layer (layers: {', '.join(layers) or 'none'})", where
            )
        chosen.update(hits)
    return [n for n in layers if n in chosen]


def _output_layer(model: nn.Module) -> str | None:
    from paperkit.models.base import Classifier

    return "head" if isinstance(model, Classifier) and isinstance(getattr(model, "head", None), nn.Linear) else None


def wrap(
    model: nn.Module,
    patterns: Iterable[str],
    factory: Callable[[str, nn.Linear], nn.Module],
    where: str = "target",
) -> dict[str, nn.Module]:
    """Replace every target layer by ``factory(name, layer)`` in place; ``{name: wrapper}``."""
    wrapped: dict[str, nn.Module] = {}
    for name in find_targets(model, patterns, where):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped[name] = factory(name, getattr(parent, attr))
        setattr(parent, attr, wrapped[name])
    return wrapped


#: The public name of :func:`wrap` (``paperkit.wrap_low_rank``, its first name): any layer wrapper.
wrap_low_rank = wrap
