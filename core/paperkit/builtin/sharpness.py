"""Sharpness-aware minimization (Foret et al., ICLR 2021) around any optimizer, through the closure step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from paperkit import hookimpl
from paperkit.context import Optimization


class SAM(torch.optim.Optimizer):
    """SAM's two-pass step around ``base``: ascend to ``w + ε̂(w)``, take the gradient there, descend from ``w``.

    ``ε̂(w) = ρ · g / ‖g‖₂`` (Foret et al., Eq. 2; with ``adaptive``, ASAM's
    ``ρ · T² g / ‖T g‖₂``, ``T = |w|``, Kwon et al., 2021), where ``g`` is the
    gradient the step was called with; the closure then recomputes the gradient
    at ``w + ε̂`` on the same batch, the weights go back to ``w`` and ``base``
    steps with that gradient (Eq. 3). The arithmetic follows
    pytorch-optimizer's ``SAM`` operation for operation (its tests compare them).

    The groups are ``base``'s own (``rho`` and ``adaptive`` are added to them), so
    a learning-rate schedule or a parameter rule acts on both; the state is
    ``base``'s, saved through ``base.state_dict()``.
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False, eps: float = 1e-12):
        if rho < 0 or eps < 0:
            raise ValueError("SAM needs rho >= 0 and eps >= 0")
        self.base, self.eps = base, eps
        super().__init__(base.param_groups, {"rho": rho, "adaptive": adaptive})
        self._link()

    def _link(self) -> None:
        self.param_groups, self.state = self.base.param_groups, self.base.state

    @torch.no_grad()
    def ascend(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Move to ``w + ε̂(w)`` and zero the gradients; returns ``(parameter, w)`` to restore."""
        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads.append(p.grad * p.abs() if group["adaptive"] else p.grad)
        if not grads:
            return []
        norm = torch.stack([g.norm() for g in grads]).float().square_().sum().reshape(1)
        norm = norm.sqrt_().squeeze_(0).add_(self.eps)
        saved = []
        for group in self.param_groups:
            scale = group["rho"] / norm
            for p in group["params"]:
                if p.grad is None:
                    continue
                saved.append((p, p.clone()))
                p.add_((torch.pow(p, 2) if group["adaptive"] else 1.0) * p.grad * scale.to(p))
        self.zero_grad()
        return saved

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is None:
            raise RuntimeError("SAM re-evaluates the loss: its method must ask for a closure step (closure=True)")
        saved = self.ascend()
        with torch.enable_grad():
            loss = closure()
        for p, w in saved:
            p.copy_(w)
        self.base.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
        self._link()


class SharpnessAware:
    def __init__(self, config: Any) -> None:
        self.config = config

    @hookimpl
    def optimize(self, model: nn.Module) -> Optimization:
        c = self.config
        return Optimization(wrap=lambda base: SAM(base, c.rho, c.adaptive, c.eps), closure=True)
