"""FAdam's math as plain functions and a ``torch.optim.Optimizer``, usable without paperkit's engine.

FAdam (Hwang, 2024) reads Adam as natural-gradient descent with a diagonal
empirical Fisher ``f`` (Adam's second moment) and changes the update where the
reading says Adam is off. One step for a parameter tensor ``θ`` with gradient
``g`` (Algorithm 1 as the reference implementations number and comment it —
lessw2020/FAdam_PyTorch cites Sec. 3.4.4 for step 1; the paper's PDF could
not be read here, see the method card):

1. debiased decay ``β̂2 = β2 (1 − β2^(t−1)) / (1 − β2^t)`` (Sec. 3.4.4): the
   Fisher EMA is unbiased at every step, so no separate bias correction —
   :func:`debiased_beta2`;
2. Fisher EMA ``f_t = β̂2 f_{t−1} + (1 − β̂2) g²`` — :func:`update_fisher_`;
3. adaptive epsilon ``ε' = min(ε, ε2·RMS(g))`` (RMS over the tensor), entering
   the denominator as ``ε'^(2p)`` so that it lives in the units of ``f^p``
   (``f ~ g²``) — :func:`adaptive_stabilizer`;
4. natural gradient ``ḡ = g / (f^p + ε'^(2p))``, ``p = 1/2`` —
   :func:`fisher_denominator`;
5. clip ``ḡ ← ḡ / max(1, RMS(ḡ)/c)`` (Sec. 3.4), *before* the momentum —
   :func:`rms_clip_`;
6. momentum on the clipped natural gradient, ``m_t = β1 m_{t−1} + (1 − β1) ḡ``,
   without bias correction (Sec. 3.4);
7. Fisher weight decay (Sec. 3.4): the decay direction is the natural
   gradient of ``½‖θ‖²``, ``ŵ = θ / (f^p + ε'^(2p))``, clipped like ``ḡ``;
8. ``θ ← θ − η (m_t + λ ŵ)``.

The operations, their order and dtypes are those of pytorch-optimizer's
``FAdam`` (v4.1), so the two agree bit for bit in its option set. Beyond it,
switches serve the ablations of the method card: ``clip_gradient = False``
drops the clip of step 5 only, ``clip = inf`` drops both clips (dividing by
``max(1, 0) = 1`` is exact; the Fisher weight decay then explodes on
parameters whose Fisher is tiny), ``fisher_weight_decay = False`` replaces
step 7 by AdamW's decoupled ``λ θ`` and ``adaptive_eps = False`` uses the
constant ``ε^(2p)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = [
    "FAdam",
    "adaptive_stabilizer",
    "debiased_beta2",
    "fadam_step_",
    "fisher_denominator",
    "rms",
    "rms_clip_",
    "update_fisher_",
]


# -- the update, step by step ---------------------------------------------------------
def debiased_beta2(beta2: float, step: int) -> float:
    """``β̂2 = β2 (1 − β2^(t−1)) / (1 − β2^t)`` (Algorithm 1, Sec. 3.4.4), written ``(β2^t − β2)/(β2^t − 1)``.

    With this decay the EMA of ``g²`` started at zero is already an unbiased
    average (``β̂2 = 0`` at ``t = 1``, so ``f_1 = g_1²``): FAdam's replacement for
    Adam's division by ``1 − β2^t``. The algebraically equal form used here is
    pytorch-optimizer's ``debias_beta``, kept for bit-exact parity.
    """
    beta_t = beta2**step
    return (beta_t - beta2) / (beta_t - 1.0)


def update_fisher_(fisher: torch.Tensor, grad: torch.Tensor, beta2_hat: float) -> torch.Tensor:
    """The diagonal empirical Fisher in place: ``f ← β̂2 f + (1 − β̂2) g²`` (Algorithm 1)."""
    return fisher.mul_(beta2_hat).addcmul_(grad, grad, value=1.0 - beta2_hat)


def rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over all entries of ``x`` (a 0-d tensor, no host sync)."""
    return x.pow(2).mean().sqrt_()


def adaptive_stabilizer(grad: torch.Tensor, eps: float, eps2: float, p: float, adaptive: bool = True) -> torch.Tensor | float:
    """The term added to ``f^p``: ``ε'^(2p)`` with the adaptive ``ε' = min(ε, ε2·RMS(g))`` (Algorithm 1).

    A fixed ``ε`` (Adam's 1e-8) dominates ``√f`` when gradients are tiny and the
    update silently turns into SGD; scaling it with the gradient's RMS keeps
    the update scale-free. An all-zero gradient (RMS 0) falls back to ``ε``.
    ``adaptive=False`` returns the constant ``ε^(2p)`` (an Adam-like ablation).
    The exponent ``2p`` puts ``ε'`` (gradient units) into the units of ``f^p``.
    """
    if not adaptive:
        return eps ** (2.0 * p)
    grad_rms = rms(grad)
    scaled = eps2 * grad_rms
    eps_dtype = torch.promote_types(grad.dtype, torch.float32)
    return torch.where((grad_rms > 0) & (scaled < eps), scaled.pow(2.0 * p).to(eps_dtype), eps ** (2.0 * p))


def fisher_denominator(fisher: torch.Tensor, stabilizer: torch.Tensor | float, p: float) -> torch.Tensor:
    """``f^p + ε'^(2p)``: dividing by it turns a gradient into FAdam's natural gradient (``p = 1/2``: Adam's ``√v``)."""
    eps_dtype = torch.promote_types(fisher.dtype, torch.float32)
    return fisher.pow(p).to(eps_dtype).add_(stabilizer).to(fisher.dtype)


def rms_clip_(x: torch.Tensor, clip: float) -> torch.Tensor:
    """``x ← x / max(1, RMS(x)/c)`` in place (Sec. 3.4): the RMS of ``x`` is at most ``c`` afterwards.

    FAdam clips the natural gradient (and the Fisher weight-decay direction),
    not the raw gradient: in the Fisher geometry an update of RMS above ``c``
    is a step too far. ``clip = inf`` leaves ``x`` unchanged (exactly).
    """
    if math.isinf(clip):
        return x
    return x.div_((rms(x) / clip).clamp_min_(1))


@torch.no_grad()
def fadam_step_(
    param: torch.Tensor, grad: torch.Tensor, momentum: torch.Tensor, fisher: torch.Tensor, step: int, *,
    lr: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.1, clip: float = 1.0,
    p: float = 0.5, eps: float = 1e-8, eps2: float = 0.01, adaptive_eps: bool = True,
    fisher_weight_decay: bool = True, clip_gradient: bool = True,
) -> None:
    """One FAdam step on ``param`` in place (Algorithm 1); ``momentum`` and ``fisher`` are its state.

    ``step`` is the 1-based count of this parameter's updates (it sets ``β̂2``).
    ``grad`` is read, never modified.
    """
    beta1, beta2 = betas
    update_fisher_(fisher, grad, debiased_beta2(beta2, step))
    denominator = fisher_denominator(fisher, adaptive_stabilizer(grad, eps, eps2, p, adaptive_eps), p)
    natural = grad / denominator
    if clip_gradient:
        rms_clip_(natural, clip)
    momentum.lerp_(natural, weight=1.0 - beta1)
    if fisher_weight_decay:
        torch.div(param, denominator, out=natural)  # reuse the buffer: ŵ = θ / (f^p + ε'^(2p))
        direction = rms_clip_(natural, clip).mul_(weight_decay).add_(momentum)
    else:
        direction = torch.add(momentum, param, alpha=weight_decay)  # AdamW's decoupled λθ (ablation)
    param.add_(direction, alpha=-lr)


# -- the optimizer --------------------------------------------------------------------
class FAdam(torch.optim.Optimizer):
    """FAdam (Hwang, 2024, Algorithm 1) as a torch optimizer; state: ``step``, ``momentum``, ``fim`` per parameter.

    The defaults are Algorithm 1's (``β = (0.9, 0.999)``, ``λ = 0.1``, ``c = 1``,
    ``p = 0.5``, ``ε = 1e-8``) and pytorch-optimizer's ``eps2 = 0.01`` for the
    adaptive epsilon. ``lr`` has pytorch-optimizer's default 1e-3 (the paper
    sets it per task). Every group key can be set per parameter group, so an
    LR schedule, gradient clipping and ``state_dict``/``load_state_dict`` work
    as for any torch optimizer.
    """

    def __init__(
        self, params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.1, clip: float = 1.0, p: float = 0.5,
        eps: float = 1e-8, eps2: float = 0.01, adaptive_eps: bool = True, fisher_weight_decay: bool = True,
        clip_gradient: bool = True, maximize: bool = False,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        for name, value, positive in (("weight_decay", weight_decay, False), ("clip", clip, True), ("p", p, True),
                                      ("eps", eps, False), ("eps2", eps2, False)):
            if not (value > 0.0 if positive else value >= 0.0):
                raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")
        defaults = dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay, clip=clip, p=p, eps=eps, eps2=eps2,
                        adaptive_eps=adaptive_eps, fisher_weight_decay=fisher_weight_decay, clip_gradient=clip_gradient,
                        maximize=maximize)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("FAdam does not support sparse gradients")
                if torch.is_complex(param):
                    raise RuntimeError("FAdam does not support complex parameters")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["momentum"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["fim"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                fadam_step_(
                    param, -grad if group["maximize"] else grad, state["momentum"], state["fim"], state["step"],
                    lr=group["lr"], betas=group["betas"], weight_decay=group["weight_decay"], clip=group["clip"],
                    p=group["p"], eps=group["eps"], eps2=group["eps2"], adaptive_eps=group["adaptive_eps"],
                    fisher_weight_decay=group["fisher_weight_decay"], clip_gradient=group["clip_gradient"],
                )
        return loss
