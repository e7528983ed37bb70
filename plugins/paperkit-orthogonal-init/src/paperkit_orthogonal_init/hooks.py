"""The ``init`` hook: a thin shell over :func:`paperkit_orthogonal_init.functional.init_model_`."""

from __future__ import annotations

import json
from typing import Any

import attrs
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_orthogonal_init.functional import LayerRecord, critical_gain, detect_nonlinearity, init_model_


class OrthogonalInit:
    """Re-draws every chosen layer from the method's own generator (seeded by the run seed).

    What each layer received (shape, distribution, gain) is kept on ``self.layers`` and
    written to ``<run_dir>/orthogonal-init.json``, with the gain the run resolved.
    """

    def __init__(self, config: Any) -> None:
        from paperkit_orthogonal_init import OrthogonalInitConfig

        self.config = config if config is not None else OrthogonalInitConfig()
        self.layers: list[LayerRecord] = []

    def resolve_gain(self, model: nn.Module) -> tuple[float, str | None]:
        """The gain to use and, when it is the critical one, for which nonlinearity."""
        c = self.config
        if c.gain is not None:
            return c.gain, None
        nonlinearity = detect_nonlinearity(model) if c.nonlinearity == "auto" else c.nonlinearity
        return critical_gain(nonlinearity), nonlinearity

    @hookimpl
    def init(self, model: nn.Module, ctx: Any) -> None:
        c = self.config
        try:
            gain, nonlinearity = self.resolve_gain(model)
            self.layers = init_model_(model, distribution=c.distribution, gain=gain, layers=c.layers,
                                      zero_bias=c.zero_bias, generator=ctx.generator("weights"))
        except ValueError as exc:
            raise PluginError(f"orthogonal-init: {exc}") from None
        if ctx.is_main_process:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            report = {"distribution": c.distribution, "gain": gain, "critical_for": nonlinearity,
                      "layers": [attrs.asdict(layer) for layer in self.layers]}
            (ctx.run_dir / "orthogonal-init.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
