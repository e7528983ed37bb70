"""The ``init`` hook: a thin shell over :func:`paperkit_conv_aware_init.functional.init_model_`."""

from __future__ import annotations

import json
from typing import Any

import attrs
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_conv_aware_init.functional import LayerRecord, init_model_


class ConvAwareInit:
    """Re-draws every conv and Linear layer from the method's own generator (seeded by the run seed).

    What each layer received (shape, draw, variance after it) is kept on ``self.layers``
    and written to ``<run_dir>/conv-aware-init.json``.
    """

    def __init__(self, config: Any) -> None:
        from paperkit_conv_aware_init import ConvAwareInitConfig

        self.config = config if config is not None else ConvAwareInitConfig()
        self.layers: list[LayerRecord] = []

    @hookimpl
    def init(self, model: nn.Module, ctx: Any) -> None:
        c = self.config
        try:
            self.layers = init_model_(model, scheme=c.scheme, linear=c.linear, eps_std=c.eps_std,
                                      zero_bias=c.zero_bias, generator=ctx.generator("weights"))
        except ValueError as exc:
            raise PluginError(f"conv-aware-init: {exc}") from None
        if ctx.is_main_process:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            report = {"scheme": c.scheme, "linear": c.linear, "eps_std": c.eps_std, "zero_bias": c.zero_bias,
                      "layers": [attrs.asdict(layer) for layer in self.layers]}
            (ctx.run_dir / "conv-aware-init.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
