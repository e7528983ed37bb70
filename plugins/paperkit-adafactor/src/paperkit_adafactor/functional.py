"""Adafactor's math as plain functions and a ``torch.optim.Optimizer``, usable without paperkit's engine.

Adafactor (Shazeer & Stern, 2018) is an Adam-like adaptive method built to
save optimizer memory. For a weight matrix ``X ∈ R^{n×m}`` with gradient
``G_t`` (Algorithm 4 of the paper; vectors follow Algorithm 5):

1. decay ``β̂2t = 1 − t^(−c)``, ``c = 0.8`` (Sec. 7) — :func:`decay_rate`;
2. factored second moment (Sec. 3): the running *row* and *column* means of
   ``G_t² + ε1`` (Alg. 4 lines 4–5; the paper writes sums, every reference
   implementation keeps means, which gives the same ``V̂``), reconstructed as
   ``V̂_t = R_t C_t / mean(R_t)`` (line 6) — :func:`update_factored_`,
   :func:`factored_rsqrt`; a vector keeps a full EMA ``V̂_t`` (Alg. 5) —
   :func:`update_unfactored_`;
3. ``U_t = G_t / √V̂_t`` (line 7), clipped to an RMS of at most ``d``:
   ``Û_t = U_t / max(1, RMS(U_t)/d)`` (line 8, Sec. 6) — :func:`clip_denominator`;
4. relative step ``ρ_t = min(10⁻², 1/√t)`` scaled by the parameter's own RMS,
   ``α_t = max(ε2, RMS(X_{t−1})) ρ_t`` (line 9, Sec. 8) —
   :func:`relative_step_size`, :func:`step_size`;
5. ``X_t = X_{t−1} − α_t Û_t`` (line 10). Optional momentum (off in the paper's
   recommended setting, Sec. 9) averages the scaled update ``α_t Û_t``, as the
   authors' tensor2tensor code does.

Memory: a matrix keeps ``n + m`` numbers instead of ``n·m`` (Adam keeps ``2·n·m``).

Two options reproduce ``torch.optim.Adafactor`` (torch ≥ 2.5), which deviates
from the paper on purpose: ``eps1_placement="denominator"`` (``ε1`` clamps the
row mean and ``V̂`` instead of being added to ``G²``) and
``weight_decay_scale="lr"`` (decoupled decay ``θ ← θ(1 − lr·λ)``); there ``lr``
is also the cap of ``ρ_t``, as here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn

Eps1Placement = Literal["gradient", "denominator"]
EPS1_PLACEMENTS: tuple[str, ...] = ("gradient", "denominator")
WeightDecayScale = Literal["step", "lr"]
WEIGHT_DECAY_SCALES: tuple[str, ...] = ("step", "lr")


# -- schedules (scalars) --------------------------------------------------------------
def decay_rate(step: int, c: float) -> float:
    """The second-moment decay ``β̂2t = 1 − t^(−c)`` (Sec. 7; ``c = 0.8`` in Sec. 9).

    ``β̂21 = 0``: the first step sees only its own gradient, so no bias
    correction is needed, and the averaging window grows as ``t^c``.
    """
    return 1.0 - step ** (-c)


def relative_step_size(step: int, lr: float, relative_step: bool) -> float:
    """``ρ_t = min(lr, 1/√t)`` (Sec. 8 and 9, with ``lr = 10⁻²``), or the constant ``lr`` when not relative."""
    return min(lr, 1.0 / math.sqrt(step)) if relative_step else lr


def rms(x: torch.Tensor) -> float:
    """Root mean square ``RMS(x) = ‖x‖₂ / √numel`` (Sec. 6), as a Python float."""
    return x.norm(2).item() / math.sqrt(x.numel())


def step_size(param: torch.Tensor, rho: float, eps2: float, scale_parameter: bool) -> float:
    """The absolute step ``α_t = max(ε2, RMS(X_{t−1})) ρ_t`` (Alg. 4 line 9, Sec. 8); ``ρ_t`` when not scaled.

    ``ε2 = 10⁻³`` lets a zero-initialized parameter escape zero.
    """
    return max(eps2, rms(param)) * rho if scale_parameter else rho


def clip_denominator(update: torch.Tensor, d: float) -> float:
    """``max(1, RMS(U_t)/d)``, the divisor of update clipping (Alg. 4 line 8, Sec. 6)."""
    return max(1.0, update.norm(2).item() / (math.sqrt(update.numel()) * d))


# -- second-moment estimators ---------------------------------------------------------
def factored_shapes(shape: torch.Size | tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of the row and column statistics of a ``(..., n, m)`` tensor: ``(..., n)`` and ``(..., m)``.

    Tensors of more than two dimensions are factored over their last two (a
    batch of matrices), as in torch, transformers/fairseq and pytorch-optimizer.
    """
    return tuple(shape[:-1]), tuple(shape[:-2]) + tuple(shape[-1:])


def update_factored_(
    grad: torch.Tensor, row: torch.Tensor, col: torch.Tensor, beta2: float, eps1: float, placement: Eps1Placement,
) -> None:
    """EMA of the row and column means of the squared gradient, in place (Alg. 4 lines 4–5).

    ``placement="gradient"``: means of ``G² + ε1`` (the paper, tensor2tensor,
    fairseq). ``"denominator"``: means of ``G²`` (torch.optim.Adafactor, which
    computes them as squared norms so no ``G²`` of the full size is formed).
    """
    weight = 1.0 - beta2
    if placement == "gradient":
        squared = grad.square().add_(eps1)
        row.lerp_(squared.mean(dim=-1), weight)
        col.lerp_(squared.mean(dim=-2), weight)
    else:
        row.lerp_(torch.linalg.vector_norm(grad, dim=-1).square_().div_(grad.size(-1)), weight)
        col.lerp_(torch.linalg.vector_norm(grad, dim=-2).square_().div_(grad.size(-2)), weight)


def factored_rsqrt(row: torch.Tensor, col: torch.Tensor, eps1: float, placement: Eps1Placement) -> torch.Tensor:
    """``1/√V̂`` with ``V̂ = R Cᵀ / mean(R)``, the rank-1 reconstruction (Alg. 4 line 6, Sec. 3).

    ``"gradient"``: ``rsqrt(R / mean(R)) ⊗ rsqrt(C)`` (the statistics already
    hold ``ε1``). ``"denominator"``: ``rsqrt(max(R ⊗ C / max(mean(R), ε1), ε1²))``
    (torch.optim.Adafactor).
    """
    if placement == "gradient":
        r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
        return r_factor * col.unsqueeze(-2).rsqrt()
    estimate = row.unsqueeze(-1) @ col.unsqueeze(-2)
    estimate.div_(row.mean(dim=-1, keepdim=True).unsqueeze(-1).clamp_(min=eps1))
    return estimate.clamp_(min=eps1 * eps1).rsqrt_()


def update_unfactored_(grad: torch.Tensor, second_moment: torch.Tensor, beta2: float, eps1: float,
                       placement: Eps1Placement) -> torch.Tensor:
    """Full EMA ``V̂_t = β̂2t V̂_{t−1} + (1 − β̂2t)(G² + ε1)`` in place, and return ``1/√V̂_t`` (Alg. 5)."""
    if placement == "gradient":
        second_moment.lerp_(grad.square().add_(eps1), 1.0 - beta2)
        return second_moment.rsqrt()
    second_moment.lerp_(grad * grad, 1.0 - beta2)
    return second_moment.clamp(min=eps1 * eps1).rsqrt_()


def init_state(param: torch.Tensor, factored: bool, beta1: float) -> dict[str, Any]:
    """A parameter's optimizer state: step, row/column statistics (≥ 2-D, factored) or a full ``V̂``, momentum if ``β1 > 0``."""
    state: dict[str, Any] = {"step": 0}
    if factored and param.dim() >= 2:
        row_shape, col_shape = factored_shapes(param.shape)
        state["exp_avg_sq_row"] = param.new_zeros(row_shape)
        state["exp_avg_sq_col"] = param.new_zeros(col_shape)
    else:
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    if beta1 > 0.0:
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state


@torch.no_grad()
def adafactor_update(
    param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], *, lr: float, relative_step: bool,
    scale_parameter: bool, decay_c: float, beta1: float, clip_threshold: float, eps1: float, eps2: float,
    weight_decay: float, weight_decay_scale: WeightDecayScale, eps1_placement: Eps1Placement,
) -> None:
    """One Adafactor step of one parameter in place (Alg. 4 for ≥ 2-D state, Alg. 5 for a full ``V̂``).

    ``state`` comes from :func:`init_state` (its keys say whether the
    parameter is factored). Weight decay, absent from the paper, is
    decoupled: ``θ ← θ(1 − λ·α_t)`` (``"step"``, transformers/fairseq and
    pytorch-optimizer) or ``θ ← θ(1 − λ·lr)`` (``"lr"``, torch).
    """
    state["step"] += 1
    t = state["step"]
    beta2 = decay_rate(t, decay_c)
    alpha = step_size(param, relative_step_size(t, lr, relative_step), eps2, scale_parameter)
    if weight_decay != 0.0:
        param.mul_(1.0 - weight_decay * (alpha if weight_decay_scale == "step" else lr))
    if "exp_avg_sq_row" in state:
        row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
        update_factored_(grad, row, col, beta2, eps1, eps1_placement)
        update = factored_rsqrt(row, col, eps1, eps1_placement).mul_(grad)
    else:
        update = update_unfactored_(grad, state["exp_avg_sq"], beta2, eps1, eps1_placement).mul_(grad)
    scale = alpha / clip_denominator(update, clip_threshold)
    if beta1 > 0.0:
        momentum = state["exp_avg"]
        momentum.lerp_(update.mul_(scale), 1.0 - beta1)
        param.sub_(momentum)
    else:
        param.add_(update, alpha=-scale)


# -- the optimizer --------------------------------------------------------------------
class Adafactor(torch.optim.Optimizer):
    """Adafactor as a ``torch.optim.Optimizer``; defaults are the paper's recommended setting (Sec. 9).

    ``lr`` is the cap of the relative step ``ρ_t = min(lr, 1/√t)`` (the
    paper's 10⁻²; torch.optim.Adafactor's ``lr`` has the same role), or the
    constant ``ρ`` with ``relative_step=False``. ``decay_c`` is the exponent
    ``c`` of ``β̂2t = 1 − t^(−c)`` (torch's ``beta2_decay = −c``).
    ``factored=False`` keeps a full second moment for every parameter (the
    paper's unfactored ablation). State round-trips through ``state_dict``.
    """

    def __init__(
        self, params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], lr: float = 1e-2, *, relative_step: bool = True,
        scale_parameter: bool = True, decay_c: float = 0.8, beta1: float = 0.0, clip_threshold: float = 1.0,
        eps1: float = 1e-30, eps2: float = 1e-3, weight_decay: float = 0.0, weight_decay_scale: WeightDecayScale = "step",
        eps1_placement: Eps1Placement = "gradient", factored: bool = True,
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not decay_c >= 0.0:
            raise ValueError(f"decay_c must be >= 0, got {decay_c}")
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"beta1 must be in [0, 1), got {beta1}")
        if not clip_threshold > 0.0:
            raise ValueError(f"clip_threshold must be > 0, got {clip_threshold}")
        if not (eps1 >= 0.0 and eps2 >= 0.0 and weight_decay >= 0.0):
            raise ValueError(f"eps1, eps2 and weight_decay must be >= 0, got {eps1}, {eps2}, {weight_decay}")
        if eps1_placement not in EPS1_PLACEMENTS:
            raise ValueError(f"eps1_placement must be one of {EPS1_PLACEMENTS}, got {eps1_placement!r}")
        if weight_decay_scale not in WEIGHT_DECAY_SCALES:
            raise ValueError(f"weight_decay_scale must be one of {WEIGHT_DECAY_SCALES}, got {weight_decay_scale!r}")
        defaults = dict(lr=lr, relative_step=relative_step, scale_parameter=scale_parameter, decay_c=decay_c, beta1=beta1,
                        clip_threshold=clip_threshold, eps1=eps1, eps2=eps2, weight_decay=weight_decay,
                        weight_decay_scale=weight_decay_scale, eps1_placement=eps1_placement, factored=factored)
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
                if param.grad.is_sparse or torch.is_complex(param):
                    raise RuntimeError("Adafactor supports dense real parameters only")
                state = self.state[param]
                if not state:
                    state.update(init_state(param, group["factored"], group["beta1"]))
                adafactor_update(
                    param, param.grad, state, lr=group["lr"], relative_step=group["relative_step"],
                    scale_parameter=group["scale_parameter"], decay_c=group["decay_c"], beta1=group["beta1"],
                    clip_threshold=group["clip_threshold"], eps1=group["eps1"], eps2=group["eps2"],
                    weight_decay=group["weight_decay"], weight_decay_scale=group["weight_decay_scale"],
                    eps1_placement=group["eps1_placement"],
                )
        return loss


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in an optimizer's state tensors (the auxiliary storage the paper minimizes)."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
