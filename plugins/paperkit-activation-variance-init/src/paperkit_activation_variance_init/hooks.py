"""The ``init`` hook: a thin shell over :mod:`paperkit_activation_variance_init.functional`."""

from __future__ import annotations

import json
from typing import Any

import attrs
from torch import nn

from paperkit import PlanError, PluginError, hookimpl
from paperkit_activation_variance_init.functional import (
    NAMED,
    LayerRecord,
    Resolved,
    UnsupportedActivation,
    detect_activation,
    init_model_,
    resolve,
)


class ActivationVarianceInit:
    """Resolves ``N·v²`` for the model's activation, then draws every chosen layer from the method's own
    generator (``ctx.generator("weights")``, seeded by the run seed).

    What was resolved (activation, ``g(0)``, ``g'(0)``, rule, ``N·v²``) and what each layer received
    are kept on ``self.resolved`` / ``self.report`` and written to
    ``<run_dir>/activation-variance-init.json``. An activation the formula does not cover is a
    :class:`paperkit.PlanError` naming the reason.
    """

    def __init__(self, config: Any) -> None:
        from paperkit_activation_variance_init import ActivationVarianceInitConfig

        self.config = config if config is not None else ActivationVarianceInitConfig()
        self.resolved: Resolved | None = None
        self.layers: list[LayerRecord] = []
        self.report: dict[str, Any] = {}

    def resolve(self, model: nn.Module) -> Resolved:
        """What the config asks for, for this model (:class:`UnsupportedActivation` if the formula does not apply)."""
        c = self.config
        if c.sigma_w is not None:
            return Resolved("set directly", float("nan"), float("nan"), "sigma_w", c.sigma_w**2)
        if c.activation == "auto":
            name, fn = detect_activation(model)
        else:
            name, fn = c.activation, NAMED[c.activation]
        return resolve(fn, name)

    @hookimpl
    def init(self, model: nn.Module, ctx: Any) -> None:
        where = f"{getattr(getattr(ctx, 'plan', None), 'path', 'plan')}: [init] activation-variance-init"
        try:
            resolved = self.resolve(model)
        except UnsupportedActivation as exc:
            raise PlanError(str(exc), f"{where} activation") from None
        c = self.config
        try:
            self.layers = init_model_(
                model, resolved.n_var, layers=c.layers, zero_bias=c.zero_bias, generator=ctx.generator("weights")
            )
        except ValueError as exc:
            raise PluginError(f"activation-variance-init: {exc}") from None
        self.resolved = resolved
        self.report = {
            **{k: (v if v == v else None) for k, v in attrs.asdict(resolved).items()},  # nan -> null
            "sigma_w": resolved.sigma_w,
            "zero_bias": c.zero_bias,
            "layers": [attrs.asdict(layer) for layer in self.layers],
        }
        if ctx.is_main_process:
            ctx.run_dir.mkdir(parents=True, exist_ok=True)
            path = ctx.run_dir / "activation-variance-init.json"
            path.write_text(json.dumps(self.report, indent=2), encoding="utf-8")
