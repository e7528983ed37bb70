"""SGDP and AdamP (Heo et al., ICLR 2021) as plain functions and ``torch.optim.Optimizer`` classes.

The paper's observation (Sec. 2): a weight ``w`` followed by a normalization layer
(BatchNorm, LayerNorm, weight norm) is *scale-invariant*, ``f(c w) = f(w)``, so its
gradient is orthogonal to it and its *effective* step size is ``lr / ‖w‖²``. A plain
gradient step then grows ``‖w‖`` only to second order, but a momentum step carries
a radial (norm-increasing) component, so momentum SGD and Adam inflate ``‖w‖`` much
faster and the effective step decays prematurely.

The remedy (Sec. 3): keep the optimizer's update ``p`` but remove its radial part
on scale-invariant weights,

    Π_w(p) = p − (ŵ · p) ŵ,        ŵ = w / ‖w‖,

applied only where ``w`` is detected as scale-invariant: ``max |cos(w, ∇f(w))| <
δ / √dim``, ``δ = 0.1``. Detection and projection are done per output channel first
(each row of ``w`` viewed as ``(out, rest)``: BatchNorm-type invariance), then for
the whole tensor (one row: LayerNorm-type invariance). A projected weight's
decoupled weight decay is multiplied by ``wd_ratio`` (0.1). Vectors (biases, norm
gains) are never projected.

Functions:

- :func:`channel_view`, :func:`layer_view` — the two groupings of a weight;
- :func:`cosine_to_weight` — ``|cos(grad, w)|`` per row of a view;
- :func:`scale_invariant_view` — which view (if any) passes the test ``max |cos| < δ/√dim``;
- :func:`project_radial_` — ``p ← Π_w(p)`` row-wise, in place;
- :func:`projection` — test then project, as both optimizers use it (returns the weight-decay ratio);
- :func:`adam_direction` / :func:`sgd_direction` — the base optimizers' updates before projection;
- :class:`AdamP`, :class:`SGDP` — the optimizers.

Two arithmetics are offered (``numerics``), each bit-for-bit equal to one published
implementation: ``"pytorch-optimizer"`` (pytorch-optimizer 4.x ``AdamP``/``SGDP``,
``foreach=False``; the default) and ``"authors"`` (clovaai/AdamP 0.3.0, copied
into timm). They differ in rounding order and in two places in the math:

- AdamP: the authors divide by ``√v/√(1−β2^t) + ε`` (as ``torch.optim.Adam`` does);
  pytorch-optimizer by ``(√v + ε)/√(1−β2^t)``, i.e. a larger effective ε early on.
- SGDP without Nesterov: the authors' update *is* the momentum buffer, so their
  in-place projection also projects the stored buffer; pytorch-optimizer projects a
  copy and the buffer keeps the raw momentum (as the paper's Algorithm 1 writes it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch

Numerics = Literal["pytorch-optimizer", "authors"]
NUMERICS: tuple[str, ...] = ("pytorch-optimizer", "authors")
View = Callable[[torch.Tensor], torch.Tensor]


# -- the scale-invariance test and the projection ---------------------------------------
def channel_view(x: torch.Tensor) -> torch.Tensor:
    """One row per output channel, ``(out, in·k·…)``: the grouping of BatchNorm-type invariance."""
    return x.reshape(x.size(0), -1)


def layer_view(x: torch.Tensor) -> torch.Tensor:
    """The whole tensor as one row, ``(1, numel)``: the grouping of LayerNorm-type invariance."""
    return x.reshape(1, -1)


#: The views tried in order; the first that passes the test is used (reference code order).
VIEWS: tuple[tuple[str, View], ...] = (("channel", channel_view), ("layer", layer_view))


def cosine_to_weight(grad: torch.Tensor, weight: torch.Tensor, view: View, eps: float) -> torch.Tensor:
    """``|cos(∇f, w)|`` for every row of ``view``: zero for an exactly scale-invariant group."""
    return torch.nn.functional.cosine_similarity(view(grad), view(weight), dim=1, eps=eps).abs_()


def scale_invariant_view(grad: torch.Tensor, weight: torch.Tensor, delta: float, eps: float) -> tuple[str, View] | None:
    """The first view in which every row passes ``|cos(∇f, w)| < δ/√dim`` (paper Sec. 3), or ``None``.

    ``dim`` is the length of a row of the view. The threshold scales like the
    cosine of two random vectors in that dimension, so ``δ = 0.1`` asks for a
    gradient ten times more orthogonal to ``w`` than chance.
    """
    for name, view in VIEWS:
        if cosine_to_weight(grad, weight, view, eps).max() < delta / math.sqrt(view(weight).size(1)):
            return name, view
    return None


def project_radial_(update: torch.Tensor, weight: torch.Tensor, view: View, eps: float) -> torch.Tensor:
    """``update ← Π_w(update) = update − (ŵ·update) ŵ`` for every row of ``view``, in place (paper Sec. 3).

    ``ŵ = w / (‖w‖ + eps)`` row by row. Returns ``update``.
    """
    shape = [-1] + [1] * (weight.dim() - 1)
    unit = weight / view(weight).norm(dim=1).view(shape).add_(eps)
    radial = view(unit * update).sum(dim=1).view(shape)
    return update.sub_(unit.mul_(radial))


def projection(
    weight: torch.Tensor, grad: torch.Tensor, update: torch.Tensor, delta: float, wd_ratio: float, eps: float
) -> tuple[torch.Tensor, float]:
    """Project ``update`` (in place) when ``weight`` is scale-invariant; return it and its weight-decay ratio.

    The ratio is ``wd_ratio`` for a projected weight and 1 otherwise. Tensors
    with fewer than two dimensions are left alone, as in the reference code.
    """
    if weight.dim() < 2:
        return update, 1.0
    found = scale_invariant_view(grad, weight, delta, eps)
    if found is None:
        return update, 1.0
    project_radial_(update, weight, found[1], eps)
    return update, wd_ratio


# -- the base optimizers' updates -------------------------------------------------------
def adam_direction(
    grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int, betas: tuple[float, float],
    eps: float, nesterov: bool, numerics: Numerics = "pytorch-optimizer",
) -> torch.Tensor:
    """Update the Adam moments in place and return ``p_t`` (before projection); the step is ``lr/(1−β1^t) · p_t``.

    ``pytorch-optimizer``: ``p_t = m_t · √(1−β2^t) / (√v_t + ε)``; ``authors``:
    ``p_t = m_t / (√v_t/√(1−β2^t) + ε)``. Nesterov replaces ``m_t`` by
    ``β1 m_t + (1−β1) g_t`` (reference code v0.2.0).
    """
    beta1, beta2 = betas
    bias_correction2 = 1.0 - math.pow(beta2, step)
    if numerics == "authors":
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
        return (beta1 * exp_avg + (1 - beta1) * grad) / denom if nesterov else exp_avg / denom
    exp_avg.lerp_(grad, weight=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    inverse = exp_avg_sq.sqrt().add_(eps).reciprocal_().mul_(math.sqrt(bias_correction2))
    return exp_avg.lerp(grad, weight=1.0 - beta1).mul_(inverse) if nesterov else inverse.mul_(exp_avg)


def sgd_direction(
    grad: torch.Tensor, buffer: torch.Tensor, momentum: float, dampening: float, nesterov: bool,
    numerics: Numerics = "pytorch-optimizer",
) -> torch.Tensor:
    """Update the momentum buffer in place, ``b ← μ b + (1−τ) g``, and return ``p_t`` (``g + μ b`` with Nesterov, else ``b``).

    With ``numerics="authors"`` and no Nesterov the returned tensor *is* the
    buffer, so a later in-place projection also projects the stored momentum
    (the authors' code); otherwise it is a new tensor.
    """
    buffer.mul_(momentum).add_(grad, alpha=1.0 - dampening)
    if nesterov:
        return buffer.mul(momentum).add_(grad)
    return buffer if numerics == "authors" else buffer.clone()


def decay_factor(lr: float, weight_decay: float, ratio: float, numerics: Numerics, momentum: float | None = None) -> float:
    """The multiplier of decoupled weight decay, ``1 − lr·λ·ratio`` (SGDP: ``… / (1−μ)``), in each reference's float order."""
    if momentum is None:
        return 1 - lr * weight_decay * ratio if numerics == "authors" else 1.0 - weight_decay * lr * ratio
    if numerics == "authors":
        return 1 - lr * weight_decay * ratio / (1 - momentum)
    return 1.0 - weight_decay * lr * (ratio / (1.0 - momentum))


# -- the optimizers ---------------------------------------------------------------------
def _check(numerics: str, delta: float, wd_ratio: float, eps: float, lr: float, weight_decay: float) -> None:
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {NUMERICS}, got {numerics!r}")
    if lr <= 0.0 or weight_decay < 0.0 or delta < 0.0 or eps < 0.0 or not 0.0 <= wd_ratio <= 1.0:
        raise ValueError(f"invalid AdamP/SGDP hyperparameters: lr={lr}, weight_decay={weight_decay}, delta={delta}, "
                         f"wd_ratio={wd_ratio}, eps={eps}")


class AdamP(torch.optim.Optimizer):
    """Adam with the radial component removed on scale-invariant weights (paper Algorithm 2).

    Weight decay is decoupled (``w ← w·(1 − lr·λ·ratio)``, AdamW style), as in the
    reference code. ``delta = 0`` switches the projection off (no cosine is below
    0): the optimizer is then Adam(W) with this class's arithmetic.
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0, delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False,
        numerics: Numerics = "pytorch-optimizer",
    ) -> None:
        _check(numerics, delta, wd_ratio, eps, lr, weight_decay)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1): {betas}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, delta=delta, wd_ratio=wd_ratio,
                        nesterov=nesterov, numerics=numerics)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamP does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                update = adam_direction(p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], group["betas"],
                                        group["eps"], group["nesterov"], group["numerics"])
                update, ratio = projection(p, p.grad, update, group["delta"], group["wd_ratio"], group["eps"])
                if group["weight_decay"] > 0:
                    p.mul_(decay_factor(group["lr"], group["weight_decay"], ratio, group["numerics"]))
                p.add_(update, alpha=-(group["lr"] / (1.0 - math.pow(group["betas"][0], state["step"]))))
        return loss


class SGDP(torch.optim.Optimizer):
    """SGD (momentum, optional Nesterov) with the radial component removed on scale-invariant weights (paper Algorithm 1).

    Weight decay is decoupled and divided by ``1 − μ`` (``w ← w·(1 − lr·λ·ratio/(1−μ))``),
    as in the reference code, so that its long-run strength matches coupled decay
    through momentum.
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 0.1, momentum: float = 0.9, dampening: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = True, eps: float = 1e-8, delta: float = 0.1, wd_ratio: float = 0.1,
        numerics: Numerics = "pytorch-optimizer",
    ) -> None:
        _check(numerics, delta, wd_ratio, eps, lr, weight_decay)
        if not 0.0 <= momentum < 1.0 or not 0.0 <= dampening <= 1.0:
            raise ValueError(f"momentum must be in [0, 1) and dampening in [0, 1]: {momentum}, {dampening}")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        eps=eps, delta=delta, wd_ratio=wd_ratio, numerics=numerics)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SGDP does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["momentum"] = torch.zeros_like(p)
                update = sgd_direction(p.grad, state["momentum"], group["momentum"], group["dampening"],
                                       group["nesterov"], group["numerics"])
                update, ratio = projection(p, p.grad, update, group["delta"], group["wd_ratio"], group["eps"])
                if group["weight_decay"] > 0:
                    p.mul_(decay_factor(group["lr"], group["weight_decay"], ratio, group["numerics"], group["momentum"]))
                p.add_(update, alpha=-group["lr"])
        return loss


# -- diagnostics ------------------------------------------------------------------------
@torch.no_grad()
def scale_invariant_weights(named_parameters: Iterable[tuple[str, torch.Tensor]], delta: float = 0.1,
                            eps: float = 1e-8) -> dict[str, str]:
    """``{name: "channel" | "layer"}`` for the parameters whose current ``.grad`` passes the test (after a backward)."""
    found = {}
    for name, p in named_parameters:
        if p.grad is not None and p.dim() > 1:
            view = scale_invariant_view(p.grad, p, delta, eps)
            if view is not None:
                found[name] = view[0]
    return found
