"""The ``init`` hook: a thin shell over :mod:`paperkit_eoc_init.functional`."""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
from torch import nn

from paperkit import PluginError, hookimpl
from paperkit_eoc_init.functional import (
    DEFAULT_SIGMA_B,
    EocPoint,
    LayerRecord,
    correlation_depth_scale,
    detect_activation,
    eoc_point,
    eoc_rate,
    init_model_,
    point_for,
)


def _number(x: float) -> float | str:
    """JSON-safe: inf and nan as strings."""
    return x if math.isfinite(x) else str(x)


class EocInit:
    """Resolves the point (σ_b, σ_w) for the model's activation, then draws every chosen layer from
    the method's own generator (``ctx.generator("weights")``, seeded by the run seed).

    The point, its phase, the predicted correlation depth scale ξ_c and the EoC rate constant are
    kept on ``self.point`` / ``self.report`` and written to ``<run_dir>/eoc-init.json``.
    """

    def __init__(self, config: Any) -> None:
        from paperkit_eoc_init import EocInitConfig

        self.config = config if config is not None else EocInitConfig()
        self.point: EocPoint | None = None
        self.layers: list[LayerRecord] = []
        self.report: dict[str, Any] = {}

    def resolve(self, model: nn.Module) -> EocPoint:
        """The point the config asks for, for this model's activation (``ValueError`` if there is none)."""
        c = self.config
        activation = detect_activation(model) if c.activation == "auto" else c.activation
        sigma_b = DEFAULT_SIGMA_B[activation] if c.sigma_b is None else c.sigma_b
        if c.sigma_w is not None:
            return point_for(c.sigma_w, sigma_b, activation)
        return eoc_point(activation, sigma_b, c.chi)

    @hookimpl
    def init(self, model: nn.Module, ctx: Any) -> None:
        try:
            point = self.resolve(model)
            self.layers = init_model_(
                model, point.sigma_w, point.sigma_b, layers=self.config.layers, generator=ctx.generator("weights")
            )
            xi = correlation_depth_scale(point)
            rate = eoc_rate(point) if point.phase == "edge of chaos" else math.nan
        except ValueError as exc:
            raise PluginError(f"eoc-init: {exc}") from None
        self.point = point
        self.report = {
            "activation": point.activation,
            "sigma_b": point.sigma_b,
            "sigma_w": point.sigma_w,
            "q_star": _number(point.q),
            "chi1": _number(point.chi),
            "phase": point.phase,
            "depth_scale_xi_c": _number(xi),
            "eoc_rate": _number(rate),
            "layers": [attrs.asdict(layer) for layer in self.layers],
        }
        if ctx.is_main_process:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            (ctx.run_dir / "eoc-init.json").write_text(json.dumps(self.report, indent=2), encoding="utf-8")
