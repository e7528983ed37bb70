"""Loss-based instance reweighting (Sow et al., ICLR 2025) as plain functions.

The paper (Algorithm 1, "Fully Online Instance Reweighting") trains on a
weighted mean of the minibatch's per-sample losses whose weights are computed
from the losses themselves, at every step and for every sample of the batch:

1. min-max normalize the batch's losses to ``[-δ, δ]``:
   ``h_i = δ (2 ℓ_i - (ℓ_max + ℓ_min)) / max(ℓ_max - ℓ_min, 1e-6)`` (:func:`normalize_losses`);
2. map them through a strategy ``g`` (:func:`apply_strategy`); LinUpper
   ``g = min(h + δ, δ)`` is flat on the upper half of the losses and falls to 0 at the
   lowest one, so the most redundant (lowest-loss) samples count least;
3. weight the samples by the solution of the KL-regularized problem
   ``max_{w ∈ Δ} Σ w_i g_i - r KL(w || uniform)``, ``w = softmax(g / r)`` (:func:`sample_weights`);
4. train on ``Σ_i w_i ℓ_i`` with the weights held constant (no gradient through them).

The reference code (sowmaster/Sample-Level-Loss-Reweighting-ICLR-2025, ``src/trainer.py``
``training_step`` and the README's multi-GPU listing) computes the weights under
``torch.no_grad`` from the losses gathered over every GPU (one softmax over the global
batch), uses the plain mean of the per-sequence losses (each the mean over its tokens)
for the first ``burnout_steps`` (1000 of 20000) steps, and ``δ = 1`` throughout.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Strategy = Literal["linupper", "quadratic", "extremes", "upper", "uniform"]

#: The strategies ``g(h)``: the paper's three, the reference trainer's ``upper`` and plain uniform weights.
STRATEGIES: tuple[str, ...] = ("linupper", "quadratic", "extremes", "upper", "uniform")

#: The floor of ``ℓ_max - ℓ_min`` in the normalization (reference ``h_func``: ``max(l_max - l_min, 1e-6)``).
SPREAD_FLOOR = 1e-6


def normalize_losses(losses: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Min-max normalize ``losses`` (one per sample) to ``[-δ, δ]``: the lowest maps to ``-δ``, the highest to ``δ``.

    ``h = δ (2ℓ - (ℓ_max + ℓ_min)) / max(ℓ_max - ℓ_min, 1e-6)``: the reference's ``h_func``
    (``2δℓ/d - δ(ℓ_max + ℓ_min)/d``) with the subtraction done before the division, so that a
    batch of equal losses maps to exactly 0 (and the weights to exactly uniform).
    """
    high, low = losses.max(), losses.min()
    spread = (high - low).clamp_min(SPREAD_FLOOR)
    return delta * (2 * losses - (high + low)) / spread


def apply_strategy(h: torch.Tensor, strategy: Strategy = "linupper", delta: float = 1.0) -> torch.Tensor:
    """The strategy ``g`` applied to normalized losses ``h ∈ [-δ, δ]`` (the paper's strategies, drawn for r = 1 in its Fig. 7; reference ``F_FUNC_DIC``).

    - ``linupper``: ``min(h + δ, δ)``. Rises from 0 at the lowest loss to δ at the midpoint of
      the range and stays there: low-loss samples are down-weighted, the rest share the
      weight evenly, so no single high-loss sample (an outlier) can dominate.
    - ``quadratic``: ``1 - h²/δ²`` (the reference code's ``mid``): favours medium losses.
    - ``extremes``: ``|h|``: favours both the lowest and the highest losses.
    - ``upper``: ``(h + δ)/2`` (the reference trainer's ``f_func_upper``): increasing, favours high losses.
    - ``uniform``: a constant, every sample weighs ``1/n`` (the paper's baseline, the plain mean).
    """
    if strategy == "linupper":
        return torch.minimum(h + delta, torch.full_like(h, delta))
    if strategy == "quadratic":
        return 1 - h**2 / delta**2
    if strategy == "extremes":
        return h.abs()
    if strategy == "upper":
        return 0.5 * h + 0.5 * delta
    if strategy == "uniform":
        return torch.zeros_like(h)
    raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")


@torch.no_grad()
def sample_weights(
    losses: torch.Tensor, strategy: Strategy = "linupper", delta: float = 1.0, r: float = 1.0
) -> torch.Tensor:
    """The batch's sample weights ``w = softmax(g(h(ℓ)) / r)``: non-negative, summing to 1, no gradient.

    ``r`` is the strength of the KL regularizer toward uniform weights (the reference's
    ``kl_reg``): ``r → ∞`` gives uniform weights, a small ``r`` concentrates the weight on the
    samples the strategy ranks highest. The softmax is ``exp((g - max g)/r) / Σ``, as in the
    reference. ``losses`` must hold every sample the weights are shared over (the global batch).
    """
    losses = losses.detach().reshape(-1)
    g = apply_strategy(normalize_losses(losses, delta), strategy, delta)
    return torch.softmax(g / r, dim=0)


def reweighted_loss(
    losses: torch.Tensor, strategy: Strategy = "linupper", delta: float = 1.0, r: float = 1.0
) -> torch.Tensor:
    """``Σ_i w_i ℓ_i`` over one batch (Algorithm 1), the weights from :func:`sample_weights` held constant.

    With ``strategy = "uniform"`` (or a very large ``r``) this is ``mean(ℓ)``, the usual loss.
    """
    return (sample_weights(losses, strategy, delta, r).to(losses.dtype) * losses.reshape(-1)).sum()


def per_sample_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], kind: str = "class") -> torch.Tensor:
    """One loss per sample ``(B,)`` for a task of ``kind``, as paperkit's built-in losses compute them before reducing.

    - ``class``: softmax cross-entropy against the soft targets ``batch["target"]`` when a
      method set them, the labels ``batch["y"]`` otherwise.
    - ``next-token``: the cross-entropy of every position, averaged over the positions of each
      sequence (the reference's ``batch_losses_from_logits``: the sum over a sequence's tokens
      divided by their number); soft targets ``(B, T, V)`` per position when present.
    - ``regression``: the squared error averaged over the outputs (paperkit's ``mse``).
    """
    target = batch.get("target")
    if kind == "class":
        return F.cross_entropy(logits, batch["y"] if target is None else target, reduction="none")
    if kind == "next-token":
        return F.cross_entropy(
            logits.transpose(1, 2), batch["y"] if target is None else target.transpose(1, 2), reduction="none"
        ).mean(-1)
    if kind == "regression":
        y = batch["y"].to(logits.dtype).reshape(logits.shape)
        return (logits - y).pow(2).reshape(len(logits), -1).mean(-1)
    raise ValueError(f"per-sample losses are defined for class, next-token and regression tasks, not {kind!r}")


__all__ = [
    "SPREAD_FLOOR",
    "STRATEGIES",
    "Strategy",
    "apply_strategy",
    "normalize_losses",
    "per_sample_loss",
    "reweighted_loss",
    "sample_weights",
]
