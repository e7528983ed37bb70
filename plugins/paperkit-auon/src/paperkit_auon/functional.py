"""AuON's math as plain functions and a ``torch.optim.Optimizer``, usable without paperkit's engine.

AuON (Maity, 2025) replaces Muon's Newton–Schulz orthogonalization of the
momentum by one global, linear-time rescaling. For a weight ``W`` with gradient
``g`` (any shape, one tensor at a time):

1. momentum, EMA form: ``m ← lerp(m, g, 1 − β)``; Nesterov look-ahead
   ``G = lerp(g, m, β)`` — :func:`momentum_direction`;
2. (Hybrid-AuON only) ``k`` Newton–Schulz iterations on ``G``
   (``X ← X/‖X‖_F``; ``A = X Xᵀ``, ``X ← aX + (bA + cA²)X``) — :func:`newton_schulz`;
3. the hyperbolic-cosine RMS scale ``r = sqrt(mean(cosh(γ·X/‖X‖_F)²))``
   (paper Sec. 3.1, "Nonlinear reshaping via hyperbolic cosine RMS scaling") —
   :func:`cosh_rms`;
4. the update ``U = X / (r + 10⁻⁸)`` and the step ``W ← (1 − ηλ)W − η·s·U``
   with decoupled weight decay — :func:`auon_update`, :class:`AuON`.

Two forms of step 4 exist in the authors' repository (ryyzn9/AuON), and they
differ by the factor ``‖G‖_F``:

- ``normalize=False`` (default; the released package, ``auon/optimizer.py`` at
  commit bba2e82, class ``AuON``/``HybridAuON``): ``X = G`` (or its
  Newton–Schulz image), ``γ = 1.5``, ``U = X/(r + 10⁻⁸)``, ``s = 1``. The
  update keeps the momentum's magnitude.
- ``normalize=True`` (the paper's equations, Sec. 3.1 and 3.2, and the code
  the paper's experiments ran, ``Auon_Adam_train.py`` at commit c87b862):
  ``X = G/(‖G‖_F + 10⁻⁷)`` first, ``r = sqrt(mean(cosh(γX)²))`` with
  ``γ = 1`` (the paper writes no γ), so ``‖U‖_F = 1/r ≤ 1``: the update is
  scale invariant and lies inside the unit spectral-norm ball (the paper's
  "spectral-norm trust region"). That code also multiplies the step by
  ``s = sqrt(max(1, rows/cols))`` (``shape_scale=True``).

Because ``cosh`` is convex, ``r`` lies between ``cosh(γ/√N)`` and
``sqrt(1 + sinh²(γ)/N)`` for a tensor of ``N`` entries (see :func:`cosh_rms_bounds`):
for any matrix of realistic size ``r`` is within a fraction ``γ²/N`` of 1.

Only hidden matrices take AuON in the authors' training code (``training/trainer.py``
at bba2e82: "Adam for scalars, embeddings, and head"); :func:`auon_for` uses
the same split as paperkit-normuon's Muon (:func:`paperkit_normuon.functional.split_parameters`)
and its AdamW step for the rest, so an AuON run and a Muon run optimize the same tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from paperkit_normuon.functional import adamw_update, split_parameters
from torch import nn

#: Keller Jordan's quintic Newton–Schulz coefficients (a, b, c), as in HybridAuON.
NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
#: Added to the Frobenius norm before dividing by it (reference code and paper Sec. 3.1).
NORM_EPS = 1e-7
#: Added to the cosh RMS before dividing by it (reference code and paper Sec. 3.1).
RMS_EPS = 1e-8


# -- the update, step by step ---------------------------------------------------------
def momentum_direction(grad: torch.Tensor, buffer: torch.Tensor, momentum: float, nesterov: bool) -> torch.Tensor:
    """Update the momentum ``buffer`` in place and return the direction ``G`` to rescale.

    ``m ← m + (1 − β)(g − m)`` (an EMA), then Nesterov's ``G = g + β(m − g)``,
    or ``G = m`` without it. The reference writes the look-ahead into ``p.grad``
    in place; here ``grad`` is left untouched (same numbers).
    """
    buffer.lerp_(grad, 1 - momentum)
    return grad.lerp(buffer, momentum) if nesterov else buffer


def newton_schulz(
    matrix: torch.Tensor, steps: int, coefficients: tuple[float, float, float] = NS_COEFFICIENTS
) -> torch.Tensor:
    """``steps`` quintic Newton–Schulz iterations, as HybridAuON runs them (paper Sec. 3.2).

    Works on the last two dimensions (leading ones are a batch: a 4-D conv
    filter is treated as ``out × in`` separate ``k × k`` matrices, as the
    reference does), on the wide orientation, in the tensor's own dtype (float32
    in the reference, unlike Muon's bfloat16), after dividing each matrix by its
    Frobenius norm plus 1e-7. The result is not renormalized.
    """
    if matrix.ndim < 2:
        raise ValueError(f"newton_schulz needs at least 2 dimensions, got shape {tuple(matrix.shape)}")
    a, b, c = coefficients
    x = matrix
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + NORM_EPS)
    for _ in range(steps):
        gram = x @ x.mT
        poly = b * gram + c * (gram @ gram)
        x = a * x + poly @ x
    return x.mT if tall else x


def cosh_rms(update: torch.Tensor, gamma: float, normalized: bool) -> torch.Tensor:
    """The scalar ``r = sqrt(mean(cosh(γ·x)²))`` of paper Sec. 3.1, a 0-d tensor.

    ``x = update/(‖update‖_F + 1e-7)`` unless ``normalized`` says the update
    has already been divided by its norm (the paper form, where ``cosh`` is
    applied to the update itself). ``cosh`` only sets the scale: the update
    is divided by ``r``, never passed through ``cosh``.
    """
    x = update if normalized else update / (update.norm() + NORM_EPS)
    return torch.sqrt(torch.mean(torch.cosh(x * gamma) ** 2))


def cosh_rms_bounds(numel: int, gamma: float) -> tuple[float, float]:
    """The range of :func:`cosh_rms` over unit-norm tensors of ``numel`` entries.

    ``cosh²(γ√s)`` is convex in ``s = x²``, so with ``Σ x² = 1`` the mean is
    smallest when all ``|x|`` are equal (``cosh²(γ/√N)``) and largest when one
    entry holds all the norm (``1 + sinh²(γ)/N``).
    """
    return math.cosh(gamma / math.sqrt(numel)), math.sqrt(1.0 + math.sinh(gamma) ** 2 / numel)


def shape_factor(shape: torch.Size | tuple[int, ...]) -> float:
    """``sqrt(max(1, rows/cols))`` of the last two dimensions (Muon's factor, in the paper's code); 1 for vectors."""
    if len(shape) < 2:
        return 1.0
    return max(1, shape[-2] / shape[-1]) ** 0.5


def auon_update(
    grad: torch.Tensor, state: dict[str, torch.Tensor], *, momentum: float = 0.95, nesterov: bool = True,
    gamma: float = 1.5, ns_steps: int = 0, ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    normalize: bool = False,
) -> torch.Tensor:
    """The direction ``U`` that AuON (``ns_steps=0``) or Hybrid-AuON subtracts, times the learning rate.

    ``state`` holds ``momentum_buffer`` (created when missing). Newton–Schulz
    runs only on tensors of 2 or more dimensions (vectors get the cosh scale
    alone, as in HybridAuON). See the module docstring for ``normalize``.
    """
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(grad)
    x = momentum_direction(grad, state["momentum_buffer"], momentum, nesterov)
    if normalize:
        x = x / (x.norm() + NORM_EPS)  # paper Sec. 3.1: X = G / (||G|| + 1e-7)
    if ns_steps > 0 and x.ndim >= 2:
        x = newton_schulz(x, ns_steps, ns_coefficients)
    return x / (cosh_rms(x, gamma, normalized=normalize) + RMS_EPS)


# -- the optimizer --------------------------------------------------------------------
class AuON(torch.optim.Optimizer):
    """AuON for groups with ``use_auon=True`` (the default) and AdamW for groups with ``use_auon=False``.

    ``AuON(model.parameters())`` behaves like the reference class ``auon.AuON``
    (every tensor takes AuON). One optimizer rather than two, so that
    ``param_groups[*]["lr"]`` drives both parts (schedules, clipping and
    ``state_dict`` work as for any torch optimizer). Group keys not given take
    the constructor's defaults (AuON keys for AuON groups, ``adamw_*`` for the others).
    """

    def __init__(
        self, params: Iterable[Any], *, lr: float = 0.24, momentum: float = 0.95, nesterov: bool = True,
        weight_decay: float = 0.0, gamma: float = 1.5, ns_steps: int = 0,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS, normalize: bool = False,
        shape_scale: bool = False, adamw_lr: float = 0.008, adamw_betas: tuple[float, float] = (0.8, 0.95),
        adamw_eps: float = 1e-10, adamw_weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or adamw_lr < 0:
            raise ValueError(f"learning rates must be >= 0, got lr={lr}, adamw_lr={adamw_lr}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if weight_decay < 0 or adamw_weight_decay < 0:
            raise ValueError("weight decay must be >= 0")
        if ns_steps < 0:
            raise ValueError(f"ns_steps must be >= 0, got {ns_steps}")
        auon = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, gamma=gamma,
                    ns_steps=ns_steps, ns_coefficients=tuple(ns_coefficients), normalize=normalize,
                    shape_scale=shape_scale)
        adamw = dict(lr=adamw_lr, betas=tuple(adamw_betas), eps=adamw_eps, weight_decay=adamw_weight_decay)
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        groups = [{**(auon if g.get("use_auon", True) else adamw), "use_auon": g.get("use_auon", True), **g}
                  for g in groups]
        super().__init__(groups, {})

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
                if group["use_auon"]:
                    self._auon_step(param, group)
                else:
                    adamw_update(param, param.grad, self.state[param], lr=group["lr"], betas=group["betas"],
                                 eps=group["eps"], weight_decay=group["weight_decay"])
        return loss

    def _auon_step(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        lr = group["lr"]
        if group["weight_decay"] != 0:
            param.mul_(1 - lr * group["weight_decay"])  # decoupled, before the update (reference order)
        update = auon_update(
            param.grad, self.state[param], momentum=group["momentum"], nesterov=group["nesterov"],
            gamma=group["gamma"], ns_steps=group["ns_steps"], ns_coefficients=group["ns_coefficients"],
            normalize=group["normalize"],
        )
        scale = shape_factor(param.shape) if group["shape_scale"] else 1.0
        param.add_(update, alpha=-lr * scale)  # the reference's order: U = X / (r + 1e-8), then W += -lr*s*U


def auon_for(model: nn.Module, *, input_layer: Literal["adamw", "muon"] = "adamw", **options: Any) -> AuON:
    """An :class:`AuON` over ``model``'s trainable parameters: hidden matrices on AuON, the rest on AdamW.

    The split is paperkit-normuon's (:func:`~paperkit_normuon.functional.split_parameters`):
    embeddings, the input layer (unless ``input_layer="muon"``), the ``head`` and
    every vector go to AdamW, like the authors' ``training/trainer.py``.
    """
    hidden, other = split_parameters(model, input_layer)
    groups = [{"params": [p for _n, p in params], "use_auon": flag}
              for params, flag in ((hidden, True), (other, False)) if params]
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return AuON(groups, **options)
