"""The ``init`` hook: a thin shell over :mod:`paperkit_pseudo_iid_init.functional` and eoc-init's EoC solver."""

from __future__ import annotations

import json
from typing import Any

import attrs
from paperkit_eoc_init.functional import DEFAULT_SIGMA_B, detect_activation, eoc_point
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_pseudo_iid_init.functional import LayerRecord, init_model_


class PseudoIidInit:
    """Resolves (σ_b, σ_w) (default: the EoC of the model's activation), then draws every chosen layer
    from ``ctx.generator("weights")``; what it drew goes to ``<run_dir>/pseudo-iid-init.json``."""

    def __init__(self, config: Any) -> None:
        from paperkit_pseudo_iid_init import PseudoIidInitConfig

        self.config = config if config is not None else PseudoIidInitConfig()
        self.layers: list[LayerRecord] = []
        self.report: dict[str, Any] = {}

    def resolve(self, model: nn.Module) -> tuple[str, float, float]:
        """``(activation, σ_w, σ_b)`` the config asks for on this model."""
        c = self.config
        activation = detect_activation(model) if c.activation == "auto" else c.activation
        sigma_b = DEFAULT_SIGMA_B[activation] if c.sigma_b is None else c.sigma_b
        sigma_w = eoc_point(activation, sigma_b).sigma_w if c.sigma_w is None else c.sigma_w
        return activation, sigma_w, sigma_b

    @hookimpl
    def init(self, model: nn.Module, ctx: Any) -> None:
        c = self.config
        try:
            activation, sigma_w, sigma_b = self.resolve(model)
            self.layers = init_model_(
                model,
                sigma_w,
                sigma_b,
                c.structure,
                rank_fraction=c.rank_fraction,
                density=c.density,
                layers=c.layers,
                generator=ctx.generator("weights"),
            )
        except ValueError as exc:
            raise PluginError(f"pseudo-iid-init: {exc}") from None
        self.report = {
            "structure": c.structure,
            "activation": activation,
            "sigma_w": sigma_w,
            "sigma_b": sigma_b,
            "layers": [attrs.asdict(layer) for layer in self.layers],
        }
        if ctx.is_main_process:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            (ctx.run_dir / "pseudo-iid-init.json").write_text(json.dumps(self.report, indent=2), encoding="utf-8")
