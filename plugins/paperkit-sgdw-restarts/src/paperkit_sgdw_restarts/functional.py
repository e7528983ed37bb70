"""SGDW (Loshchilov & Hutter, ICLR 2019) and cosine annealing with warm restarts (SGDR, ICLR 2017) as plain code.

The paper's point (Sec. 2, Prop. 1, Algorithm 1): for SGD, adding ``λ'θ`` to the
gradient (L2 regularization) and shrinking the weights by ``λθ`` (weight decay) are
the same only when ``λ' = λ/α`` — the best L2 factor is tied to the learning rate
``α``. SGDW *decouples* them: the decay is applied to the weights outside the
gradient step, scaled by the schedule multiplier ``η_t`` only,

    m_t = β m_{t-1} + η_t α g_t,        θ_t = θ_{t-1} − m_t − η_t λ θ_{t-1}      (Algorithm 1, lines 8–9)

so the best ``λ`` no longer moves when ``α`` does. This module holds:

- :class:`SGDW` — momentum SGD with decoupled weight decay, a ``torch.optim.Optimizer``;
  ``η_t`` is read as ``lr / alpha`` (the group's current learning rate over the one it was
  built with, so any learning-rate scheduler is the paper's ``SetScheduleMultiplier``);
- :func:`normalized_weight_decay` — the paper's normalized weight decay ``λ = λ_norm √(b / (B T))``
  (its appendix; the authors' ``train.lua``), which in steps is ``λ_norm / √(steps in the run or the
  restart cycle)``;
- :func:`cycle_position`, :func:`cosine_annealing`, :func:`warm_restarts_factor` — SGDR's
  ``η_t = η_min + ½(η_max − η_min)(1 + cos(π T_cur / T_i))`` with ``T_i = T_0 · T_mult^i``
  (SGDR Eq. 5, Sec. 3), as a multiplier of the base learning rate;
- :func:`first_cycle_length`, :func:`cycle_ends` — the restart points of a run.

Where the published code and the paper differ (each choice is the runnable reference's):

- Momentum: Algorithm 1 puts ``η_t α`` inside the momentum (line 8); the authors' code
  (``UPDATETORCHFILES/sgd.lua``), ``torch.optim.SGD`` and pytorch-optimizer's ``SGDW`` keep a
  buffer of raw gradients, ``b ← μ b + (1 − τ) g`` (first step ``b = g``), and step
  ``θ ← θ − lr · b``. The two agree while the learning rate is constant; with a schedule the
  buffer's past gradients are rescaled by the current rate. :class:`SGDW` follows the code.
- Decay scale: the paper and the authors' code scale the decay by ``η_t`` (``weightDecaycurrent
  = multiplier · λ`` in ``train.lua``); pytorch-optimizer's ``SGDW`` (and ``torch.optim.AdamW``)
  by the whole learning rate ``α η_t``, which brings the coupling back. ``decay_scaling``
  chooses: ``"schedule"`` (the paper, default) or ``"lr"`` (pytorch-optimizer, bit for bit).
- Restart phase: the authors' ``learningRateCosineSGDR`` advances ``T_cur`` before the first
  step of a run (so step 0 of the first cycle is already slightly annealed); torch's
  ``CosineAnnealingWarmRestarts`` starts every cycle at ``T_cur = 0``. We follow torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch

DecayScaling = Literal["schedule", "lr"]
DECAY_SCALINGS: tuple[str, ...] = ("schedule", "lr")


# -- SGDW ---------------------------------------------------------------------------------
@torch.no_grad()
def decoupled_decay_(param: torch.Tensor, weight_decay: float, multiplier: float) -> None:
    """``θ ← θ − multiplier · λ · θ`` in place (Algorithm 1 line 9, the green term).

    ``multiplier`` is ``η_t`` for the paper's decay (``decay_scaling="schedule"``) or the
    learning rate ``α η_t`` for pytorch-optimizer's. Applied to ``θ_{t-1}``, before the gradient
    step, which is the same as the paper's ``− η_t λ θ_{t-1}`` after it.
    """
    if weight_decay != 0.0:
        param.mul_(1.0 - weight_decay * multiplier)


@torch.no_grad()
def momentum_direction(grad: torch.Tensor, state: dict[str, Any], momentum: float, dampening: float,
                       nesterov: bool) -> torch.Tensor:
    """The momentum step direction (not yet times the learning rate), as ``torch.optim.SGD`` computes it.

    ``b ← μ b + (1 − τ) g`` with ``b = g`` on the first step; the direction is ``b``, or
    ``g + μ b`` with Nesterov. Never writes into ``grad``.
    """
    if momentum == 0.0:
        return grad
    buf = state.get("momentum_buffer")
    if buf is None:
        state["momentum_buffer"] = buf = grad.clone()
    else:
        buf.mul_(momentum).add_(grad, alpha=1.0 - dampening)
    return grad.add(buf, alpha=momentum) if nesterov else buf


class SGDW(torch.optim.Optimizer):
    """SGD with momentum and decoupled weight decay (paper Algorithm 1, green line 9).

    Per step and parameter: ``θ ← θ (1 − s λ)`` with ``s = η_t = lr / alpha`` (``"schedule"``,
    the paper) or ``s = lr`` (``"lr"``, pytorch-optimizer ``SGDW``); then the momentum step
    ``θ ← θ − lr · d`` of :func:`momentum_direction`. ``alpha`` is each group's learning rate
    when it was added (the paper's ``α``); a scheduler that changes ``lr`` sets ``η_t``.
    Weight decay applies to every parameter of a group, as in the authors' code.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.05, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, decay_scaling: DecayScaling = "schedule") -> None:
        if not lr > 0.0:
            raise ValueError(f"SGDW: lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGDW: momentum must be in [0, 1), got {momentum}")
        if not 0.0 <= dampening <= 1.0:
            raise ValueError(f"SGDW: dampening must be in [0, 1], got {dampening}")
        if weight_decay < 0.0:
            raise ValueError(f"SGDW: weight_decay must be >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError("SGDW: Nesterov momentum needs momentum > 0 and no dampening")
        if decay_scaling not in DECAY_SCALINGS:
            raise ValueError(f"SGDW: decay_scaling must be one of {DECAY_SCALINGS}, got {decay_scaling!r}")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "decay_scaling": decay_scaling}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its ``alpha`` (the paper's base rate α) is its learning rate now unless given."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("alpha", group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            scale = lr / group["alpha"] if group["decay_scaling"] == "schedule" else lr
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SGDW does not support sparse gradients")
                decoupled_decay_(p, group["weight_decay"], scale)
                d = momentum_direction(p.grad, self.state[p], group["momentum"], group["dampening"], group["nesterov"])
                p.add_(d, alpha=-lr)
        return loss


def normalized_weight_decay(lambda_norm: float, steps: float) -> float:
    """``λ = λ_norm √(b / (B T))`` (the paper's normalized weight decay), with ``steps = B T / b``, the batches in ``T`` epochs.

    ``T`` is the run's length, or the current restart cycle's ``T_i`` with warm restarts: the
    authors' ``train.lua`` divides by ``√(trainSize · Te)`` (batches per epoch times the cycle's
    epochs). Normalizing makes the best ``λ_norm`` hold across budgets (Sec. 4, Fig. 3).
    """
    if steps <= 0:
        raise ValueError(f"normalized_weight_decay: steps must be > 0, got {steps}")
    return lambda_norm / math.sqrt(steps)


# -- cosine annealing with warm restarts (SGDR) ---------------------------------------------
def cycle_position(step: float, t_0: float, t_mult: float) -> tuple[float, float, int]:
    """``(T_cur, T_i, i)`` at ``step``: steps since the last restart, the cycle's length, its index.

    Cycle ``i`` lasts ``T_i = T_0 · T_mult^i`` steps (SGDR Sec. 3); the first starts at step 0.
    Exact for integer ``t_0`` and ``t_mult`` (as torch's ``CosineAnnealingWarmRestarts`` counts).
    """
    if t_0 <= 0 or t_mult < 1:
        raise ValueError(f"cycle_position: need t_0 > 0 and t_mult >= 1, got {t_0}, {t_mult}")
    start, length, index = 0.0, float(t_0), 0
    if t_mult == 1:
        index = int(step // length)
        return step - index * length, length, index
    while step >= start + length:
        start, length, index = start + length, length * t_mult, index + 1
    return step - start, length, index


def cosine_annealing(t_cur: float, t_i: float, min_ratio: float = 0.0) -> float:
    """SGDR Eq. 5 over ``η_max = 1``: ``m + (1 − m)(1 + cos(π T_cur / T_i)) / 2`` with ``m = η_min/η_max``."""
    return min_ratio + (1.0 - min_ratio) * (1.0 + math.cos(math.pi * t_cur / t_i)) / 2


def warm_restarts_factor(step: int, t_0: float, t_mult: float = 2, min_ratio: float = 0.0) -> float:
    """The learning-rate multiplier ``η_t`` at optimizer step ``step`` (0-based): cosine annealing, restarted."""
    t_cur, t_i, _ = cycle_position(step, t_0, t_mult)
    return cosine_annealing(t_cur, t_i, min_ratio)


def first_cycle_length(total_steps: int, cycles: int, t_mult: float) -> float:
    """``T_0`` such that ``cycles`` cycles of lengths ``T_0 · T_mult^i`` fill ``total_steps`` exactly.

    The paper's budgets end on a restart (the authors' README: ``Te = 100``, ``Tmult = 2`` for
    1500 epochs, four cycles of 100, 200, 400 and 800 epochs).
    """
    if cycles < 1 or total_steps < 1:
        raise ValueError(f"first_cycle_length: need cycles >= 1 and total_steps >= 1, got {cycles}, {total_steps}")
    return total_steps / sum(float(t_mult) ** k for k in range(cycles))


def cycle_ends(total_steps: int, t_0: float, t_mult: float) -> list[int]:
    """The step counts (optimizer steps done) at which a cycle ends, within ``total_steps``.

    Rounded to whole steps (cycles shorter than a step merge); the last is ``total_steps``
    when the cycles fill the run.
    """
    if t_0 <= 0 or t_mult < 1:
        raise ValueError(f"cycle_ends: need t_0 > 0 and t_mult >= 1, got {t_0}, {t_mult}")
    ends: list[int] = []
    end, length = 0.0, float(t_0)
    while (rounded := int(round(end + length))) <= total_steps:
        end += length
        if rounded >= 1 and (not ends or rounded > ends[-1]):
            ends.append(rounded)
        length *= t_mult
    return ends
