"""The hooks: ``optimize`` builds :class:`~paperkit_shampoo.functional.Shampoo` over the trainable parameters;
``after_run`` reports its state size and, when asked, the Kronecker diagnostic of Morwani et al. (2024)."""

from __future__ import annotations

from typing import Any

from torch import nn

from paperkit import Optimization, hookimpl, trainable
from paperkit_shampoo.functional import Shampoo, state_bytes


class ShampooMethod:
    """Provides the run's optimizer (one of the Shampoo family, by its options) and summarizes it after the run."""

    def __init__(self, config: Any) -> None:
        if config is None:
            from paperkit_shampoo import ShampooConfig

            config = ShampooConfig()
        self.config = config
        self.optimizer: Shampoo | None = None

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        exponent = None if c.exponent == "default" else -0.5 if c.exponent == "half" else -0.25
        self.optimizer = Shampoo(
            trainable(model), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
            weight_decouple=c.weight_decouple, fixed_decay=c.fixed_decay, update_interval=c.update_interval,
            statistics_interval=c.statistics_interval, epsilon=c.epsilon, damping=c.damping, beta2=c.beta2,
            preconditioner=c.preconditioner, exponent=exponent, state_bits=c.state_bits, block_size=c.block_size,
            rectify_steps=c.rectify_steps, root_rectify_steps=c.root_rectify_steps, grafting=c.grafting,
            bias_correction=c.bias_correction,
            track_covariance=c.diagnostic_max_numel if c.diagnostic != "off" else 0,
        )
        return Optimization(optimizer=self.optimizer)

    @hookimpl
    def after_run(self, model: nn.Module) -> dict[str, float] | None:
        """``state_bytes`` (optimizer state, the diagnostic's covariance left out), ``state_per_parameter`` (in
        float32 numbers per trained weight) and, with ``diagnostic`` on, ``kron_error_{square,sqrt,optimal}``
        and ``kron_error`` (the one ``diagnostic`` names)."""
        if self.optimizer is None:
            return None
        numbers = sum(p.numel() for p in trainable(model))
        held = state_bytes(self.optimizer)
        out = {"state_bytes": float(held), "state_per_parameter": held / 4 / max(numbers, 1)}
        if self.config.diagnostic != "off":
            errors = self.optimizer.kronecker_errors()
            out.update({f"kron_error_{k}": v for k, v in errors.items()})
            if errors:
                out["kron_error"] = errors[self.config.diagnostic]
        return out
