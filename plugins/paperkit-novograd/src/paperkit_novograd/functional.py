"""NovoGrad's math as plain functions and a ``torch.optim.Optimizer``, usable without paperkit's engine.

NovoGrad (Ginsburg et al., 2019, arXiv:1905.11286, Algorithm 1) keeps, for
every layer ``l`` (here: every parameter tensor, as in all reference code),

1. one scalar second moment, the running average of the layer's squared
   gradient norm (:func:`update_second_moment`)::

       v_t = beta2 * v_{t-1} + (1 - beta2) * ||g_t||^2,      v_1 = ||g_1||^2

2. a first moment of the gradient *normalized by that scalar*, plus the
   decoupled weight decay term ``d * w`` (:func:`normalized_gradient`,
   :func:`update_momentum`)::

       m_t = beta1 * m_{t-1} + (g_t / sqrt(v_t + eps) + d * w_t),
       m_1 = g_1 / sqrt(v_1) + d * w_1

3. the SGD-with-momentum step ``w_{t+1} = w_t - lr_t * m_t``.

Only ``m`` has the parameter's shape, so the state is half of Adam's (Adam
keeps two full-size moments): :func:`state_numel`.

Options that the reference implementations add (none changes the defaults):

- ``grad_averaging``: ``m_t = beta1 m_{t-1} + (1 - beta1)(...)`` (Adam-style
  averaging; OpenSeq2Seq, NeMo, timm, pytorch-optimizer; default off, as in the
  authors' code and Algorithm 1). The first step still copies the normalized
  gradient (the paper's moment initialization; pytorch-optimizer does the
  same, while OpenSeq2Seq, NeMo and timm start ``m`` at zero and so scale the
  first step by ``1 - beta1``).
- ``eps_inside_sqrt``: ``True`` (default) divides by ``sqrt(v + eps)``, as in
  Algorithm 1 and the authors' OpenSeq2Seq code; ``False`` divides by
  ``sqrt(v) + eps``, as in NeMo, timm, pytorch-optimizer and Apex.
- ``amsgrad``: divide by the running maximum of ``v`` (NeMo, timm; not in the
  paper).

Initialization: ``v`` takes ``||g||^2`` on the first step whose second moment
is still zero, as in the authors' OpenSeq2Seq code, NeMo and timm; a layer
whose first gradients are exactly zero (e.g. behind a zero-initialized head)
is therefore initialized by its first non-zero gradient instead of averaging
from zero (where Algorithm 1's ``g_1 / sqrt(v_1)`` would be 0/0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def update_second_moment(state: dict[str, Any], grad: torch.Tensor, beta2: float) -> torch.Tensor:
    """The layer's second moment ``v`` after this gradient (Algorithm 1, the line on ``v_t``).

    ``state["second_moment"]`` is a 0-d tensor: ``||g||^2`` on the first step
    (the paper's moment initialization ``v_1 = ||g_1||^2``), afterwards the EMA
    ``v <- beta2 v + (1 - beta2) ||g||^2`` (computed as ``lerp``, the form of
    pytorch-optimizer). While ``v`` is exactly zero (only zero gradients so
    far) the next gradient re-initializes it, as in the authors' code; the
    check costs one host sync per parameter, once.
    """
    squared_norm = grad.square().sum()
    second_moment = state.get("second_moment")
    if second_moment is None:
        state["second_moment"] = second_moment = squared_norm
        state["initialized"] = False
    elif state["initialized"]:
        second_moment.lerp_(squared_norm, 1.0 - beta2)
        return second_moment
    else:
        second_moment.copy_(squared_norm)
    state["initialized"] = bool(second_moment != 0)
    return second_moment


def denominator(second_moment: torch.Tensor, eps: float, eps_inside_sqrt: bool) -> torch.Tensor:
    """``sqrt(v + eps)`` (Algorithm 1, OpenSeq2Seq) or ``sqrt(v) + eps`` (NeMo, timm, pytorch-optimizer)."""
    if eps_inside_sqrt:
        return second_moment.add(eps).sqrt_()
    return second_moment.sqrt().add_(eps)


def normalized_gradient(
    grad: torch.Tensor, param: torch.Tensor, denom: torch.Tensor, weight_decay: float
) -> torch.Tensor:
    """``g / denom + d * w``: the layer's gradient normalized by its second moment, plus decoupled weight decay.

    The weight decay term is added after the normalization, so it is not
    rescaled by ``v`` (Sec. 3: "decoupled weight decay", as in AdamW). A new
    tensor: ``grad`` (``param.grad``) is left untouched.
    """
    update = grad / denom
    if weight_decay != 0:
        update.add_(param, alpha=weight_decay)
    return update


def update_momentum(
    state: dict[str, Any], update: torch.Tensor, beta1: float, grad_averaging: bool
) -> torch.Tensor:
    """The first moment ``m`` after this normalized gradient (Algorithm 1, the line on ``m_t``).

    First step: ``m_1 = update`` (the paper's moment initialization, which
    replaces Adam's bias correction). Then ``m <- beta1 m + update``, or
    ``m <- beta1 m + (1 - beta1) update`` with ``grad_averaging``. ``update``
    may be consumed (scaled in place or kept as the buffer).
    """
    momentum = state.get("momentum")
    if momentum is None:
        state["momentum"] = update
        return update
    if grad_averaging:
        update.mul_(1.0 - beta1)
    return momentum.mul_(beta1).add_(update)


@torch.no_grad()
def novograd_step(
    param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], *, lr: float, betas: tuple[float, float],
    eps: float, weight_decay: float, grad_averaging: bool, eps_inside_sqrt: bool, amsgrad: bool,
) -> None:
    """One NovoGrad step of one layer, in place: ``v``, ``m`` (in ``state``) and ``w <- w - lr * m``."""
    beta1, beta2 = betas
    second_moment = update_second_moment(state, grad, beta2)
    if amsgrad:
        running_max = state.get("max_second_moment")
        if running_max is None:
            state["max_second_moment"] = running_max = second_moment.clone()
        else:
            torch.maximum(running_max, second_moment, out=running_max)
        second_moment = running_max
    update = normalized_gradient(grad, param, denominator(second_moment, eps, eps_inside_sqrt), weight_decay)
    param.add_(update_momentum(state, update, beta1, grad_averaging), alpha=-lr)


def state_numel(optimizer: torch.optim.Optimizer) -> int:
    """Number of tensor elements in an optimizer's state (NovoGrad: one full moment + one scalar per tensor)."""
    return sum(v.numel() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))


def _betas(betas: Iterable[float]) -> tuple[float, float]:
    pair = tuple(float(b) for b in betas)
    if len(pair) != 2 or not all(0.0 <= b < 1.0 for b in pair):
        raise ValueError(f"betas must be two numbers in [0, 1): {list(pair)}")
    return pair  # type: ignore[return-value]


class NovoGrad(torch.optim.Optimizer):
    """NovoGrad (Ginsburg et al., 2019, Algorithm 1): layer-wise second moments, SGD-style momentum step.

    Every parameter tensor is one "layer" with its own scalar ``v``. Defaults
    are the authors' code (OpenSeq2Seq ``NovoGrad``, NeMo ``Novograd``):
    ``betas=(0.95, 0.98)``, ``eps=1e-8``, no weight decay, no gradient
    averaging; ``eps`` inside the square root as in Algorithm 1.
    ``state_dict``/``load_state_dict`` work as for any torch optimizer.
    """

    def __init__(
        self, params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-3,
        betas: tuple[float, float] = (0.95, 0.98), eps: float = 1e-8, weight_decay: float = 0.0,
        grad_averaging: bool = False, eps_inside_sqrt: bool = True, amsgrad: bool = False,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=_betas(betas), eps=eps, weight_decay=weight_decay,
                        grad_averaging=grad_averaging, eps_inside_sqrt=eps_inside_sqrt, amsgrad=amsgrad)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            options = dict(lr=group["lr"], betas=group["betas"], eps=group["eps"], weight_decay=group["weight_decay"],
                           grad_averaging=group["grad_averaging"], eps_inside_sqrt=group["eps_inside_sqrt"],
                           amsgrad=group["amsgrad"])
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("NovoGrad does not support sparse gradients")
                novograd_step(param, param.grad, self.state[param], **options)
        return loss
