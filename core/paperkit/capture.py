"""Every layer's inputs and outputs during a forward pass, for any model (core or a plugin's).

Rank and lazy-versus-rich measures, neural-collapse statistics, data-dependent
initializations and activation regularizers read what each layer computed.
:func:`capture` records it with forward hooks for the duration of a ``with``
block and removes them afterwards, so nothing is paid outside it::

    with paperkit.capture(model) as seen:
        model(x)
    seen.outputs["blocks.0.linear1"]   # that layer's output for x

Only leaf modules (those without children) are recorded unless ``names`` picks
others. Tensors are kept as the forward pass produced them: inside ``no_grad``
they carry no graph; under ``enable_grad`` a regularizer may differentiate
through them. ``detach=True`` keeps plain values for statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import torch
from torch import nn

from paperkit.step import unwrapped


@attrs.define
class Captured:
    """What :func:`capture` recorded: ``inputs[name]`` (the first positional input) and ``outputs[name]`` per
    module name, in the order the modules ran (``order``); a module called twice keeps its last call."""

    inputs: dict[str, torch.Tensor] = attrs.Factory(dict)
    outputs: dict[str, Any] = attrs.Factory(dict)
    order: list[str] = attrs.Factory(list)


@contextlib.contextmanager
def capture(model: nn.Module, names: Iterable[str] | None = None, detach: bool = False) -> Iterator[Captured]:
    """Record the inputs and outputs of ``model``'s leaf modules (or of the modules ``names``) inside the block."""
    module = unwrapped(model)
    wanted = set(names) if names is not None else None
    modules = dict(module.named_modules())
    if wanted is not None:
        unknown = sorted(wanted - set(modules))
        if unknown:
            raise KeyError(f"the model has no module '{unknown[0]}'")
    seen = Captured()
    handles = []

    def keep(value: Any) -> Any:
        return value.detach() if detach and isinstance(value, torch.Tensor) else value

    for name, sub in modules.items():
        if (wanted is None and (next(sub.children(), None) is not None or not name)) or (
            wanted is not None and name not in wanted
        ):
            continue

        def hook(_m: nn.Module, args: tuple[Any, ...], output: Any, name: str = name) -> None:
            if args and isinstance(args[0], torch.Tensor):
                seen.inputs[name] = keep(args[0])
            seen.outputs[name] = keep(output)
            if name in seen.order:
                seen.order.remove(name)
            seen.order.append(name)

        handles.append(sub.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()
