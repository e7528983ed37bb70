"""LDR-KL and ALDR-KL (Zhu, Ying & Yang, ICML 2023) as plain functions, usable without the engine.

The label-distributionally robust (LDR) loss of a score vector ``f`` (one score
per class) and a label ``y`` takes the worst case over weights ``p`` on the
classes of the margin-augmented score differences, regularized towards the
uniform distribution::

    ψ_λ(f, y) = max_{p ∈ Δ_K}  Σ_k p_k (f_k − f_y + c·1[k ≠ y])  −  λ · KL(p ‖ 1/K)

With the KL regularizer the maximum has a closed form, the LDR-KL loss::

    ψ_λ(f, y) = λ · log( (1/K) Σ_k exp((f_k − f_y + c·1[k ≠ y]) / λ) )

whose maximizer is ``p* = softmax((f − f_y + c·1[k ≠ y]) / λ)``. ``λ → 0`` gives
the Crammer-Singer SVM loss ``max_k (f_k − f_y + c·1[k ≠ y])``; ``λ → ∞`` gives the
average ``mean_k (f_k − f_y + c·1[k ≠ y])`` (a symmetric, Weston-Watkins-like
linear loss); ``c = 0, λ = 1`` is the cross-entropy minus ``log K``.

The adaptive loss ALDR-KL gives every training sample its own ``λ_i`` and
maximizes over it too, with a quadratic penalty that keeps it near ``λ_0``::

    max_{λ_i} max_p  Σ_k p_k (f_k − f_y + c·1[k ≠ y]) − λ_i KL(p ‖ 1/K) − (α log K / (2 λ_0)) (λ_i − λ_0)²

For a fixed ``p`` the best ``λ_i`` is ``λ_0 (1 − KL(p ‖ 1/K) / (α log K))``, which
lies in ``[λ_0 (1 − 1/α), λ_0]`` because ``KL(p ‖ 1/K) ≤ log K``: a confident
(peaked) prediction gets a small λ (towards the SVM end), an uncertain one keeps
``λ_0`` (towards the robust average). The reference code alternates: ``p`` from the
sample's previous ``λ_i``, then the new ``λ_i``, then the LDR-KL loss at that ``λ_i``.

The formulas, the defaults and the score normalization follow the authors'
reference code, github.com/Optimization-AI/ICML2023_LDR (Apache-2.0), ``loss.py``:
``LDRLoss_V1`` and ``ALDRLoss_V1``. Where that code does something the formulas
above do not say (the score normalization, the ``+1e-5`` in ALDR's ``p``, ``p``
computed without the margin), the docstring below says so.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Normalize = Literal["softplus", "l1", "none"]

#: Added to ALDR's ``p`` before it is renormalized (reference ``ALDRLoss_V1``: "prevent invalid value for log").
P_FLOOR = 1e-5


def _working_dtype(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits are promoted to float32; float32 and float64 are kept as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _class_counts(mask: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """K per sample, shape (B, 1): the number of classes taking part (all of them without a mask)."""
    if mask is None:
        return logits.new_full((len(logits), 1), float(logits.shape[-1]))
    return mask.sum(-1, keepdim=True).to(logits.dtype)


def normalize_scores(logits: torch.Tensor, how: Normalize = "softplus", mask: torch.Tensor | None = None) -> torch.Tensor:
    """The scores ``f`` the loss sees, from the model's logits (reference code; the formulas take ``f`` as given).

    - ``"softplus"``: ``f = softplus(z) / mean_k softplus(z)`` — positive scores averaging one, so
      ``f_k − f_y ∈ [−K, K]`` (``LDRLoss_V1``, the LDR-KL runs).
    - ``"l1"``: ``f = z / mean_k |z_k|`` (``ALDRLoss_V1`` with its default ``softplus=False``; the authors switch
      softplus on only for CIFAR-100).
    - ``"none"``: ``f = z``.

    ``mask`` (bool, (B, K)) restricts the mean to the classes taking part; the other entries come out as 0.
    The denominator is clamped at the dtype's smallest normal number, so an all-zero row gives zeros, not NaN
    (the reference divides unguarded).
    """
    if how == "none":
        return logits
    if how == "softplus":
        values = F.softplus(logits)
    elif how == "l1":
        values = logits
    else:
        raise ValueError(f"normalize must be 'softplus', 'l1' or 'none', not {how!r}")
    if mask is not None:
        values = values.masked_fill(~mask, 0.0)
    scale = values.abs().sum(-1, keepdim=True) / _class_counts(mask, logits)
    return values / scale.clamp_min(torch.finfo(values.dtype).tiny)


def margin_differences(scores: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """``δ_k = f_k − f_y + c·1[k ≠ y]``, shape (B, K): what the worst-case weights ``p`` are put on."""
    true = scores.gather(-1, labels.view(-1, 1))
    off = torch.ones_like(scores).scatter_(-1, labels.view(-1, 1), 0.0)
    return scores - true + margin * off


def ldr_kl(
    scores: torch.Tensor,
    labels: torch.Tensor,
    lam: float | torch.Tensor = 10.0,
    margin: float = 0.1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The LDR-KL loss of (already normalized) scores, one value per sample: ``λ log mean_k exp(δ_k / λ)``.

    ``lam`` is a number or one ``λ_i`` per sample (shape (B,) or (B, 1)). ``mask`` (bool, (B, K)) leaves classes
    out of the maximum over ``p`` (task-incremental streams); the mean is then over the classes taking part.
    Computed as ``λ (logsumexp(δ / λ) − log K)``, which is the reference's max-shifted form without the shift.
    """
    lam_col = lam.reshape(-1, 1).to(scores.dtype) if isinstance(lam, torch.Tensor) else lam
    z = margin_differences(scores, labels, margin) / lam_col
    if mask is not None:
        z = z.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(z, dim=-1, keepdim=True) - _class_counts(mask, scores).log()
    return (lam_col * lse).squeeze(-1)


def ldr_kl_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lam: float = 10.0,
    margin: float = 0.1,
    normalize: Normalize = "softplus",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """LDR-KL of the model's logits, per sample: the scores normalized as the reference does, then `ldr_kl`.

    The defaults are the reference experiments' (``experiment.py``: ``--margin 0.1``, ``λ = 10``, softplus
    normalization); take ``.mean()`` (or `paperkit.weighted_mean`) for the batch loss.
    """
    logits = _working_dtype(logits)
    return ldr_kl(normalize_scores(logits, normalize, mask), labels, lam, margin, mask)


def kl_to_uniform(p: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``KL(p ‖ 1/K) = Σ_k p_k log(K p_k)`` per sample, shape (B,); entries outside ``mask`` count as 0."""
    terms = p * torch.log(_class_counts(mask, p) * p)
    if mask is not None:
        terms = terms.masked_fill(~mask, 0.0)
    return terms.sum(-1)


def aldr_lambda(
    scores: torch.Tensor,
    lam_prev: torch.Tensor,
    lam0: float = 10.0,
    alpha: float = 2.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The new per-sample temperature ``λ_i = λ_0 (1 − KL(p_i ‖ 1/K) / (α log K))``, shape (B,), detached.

    ``p_i`` is taken, as in the reference ``ALDRLoss_V1``, as ``softmax(f / λ_prev)`` plus ``1e-5`` and
    renormalized to sum one; note that this ``p`` is the softmax of the normalized scores *without* the margin
    (the exact maximizer of the LDR-KL objective would include ``c·1[k ≠ y]``; with ``c = 0.1`` the two differ
    little). ``λ`` carries no gradient, as in the reference (``.detach()``).
    """
    scores = scores.detach()
    z = scores / lam_prev.reshape(-1, 1).to(scores.dtype)
    if mask is not None:
        z = z.masked_fill(~mask, float("-inf"))
    p = torch.softmax(z, dim=-1) + P_FLOOR
    if mask is not None:
        p = p.masked_fill(~mask, 0.0)
    p = p / p.sum(-1, keepdim=True)
    log_k = _class_counts(mask, scores).squeeze(-1).log()
    return lam0 - lam0 * kl_to_uniform(p, mask) / (alpha * log_k)


def aldr_penalty(lam: torch.Tensor, lam0: float, alpha: float, classes: torch.Tensor | int) -> torch.Tensor:
    """``−(α log K / (2 λ_0)) (λ_i − λ_0)²`` per sample: the λ-penalty's value in the ALDR-KL objective.

    It holds no gradient (``λ`` is detached), so it changes the loss's value, not the training.
    """
    log_k = torch.as_tensor(classes, dtype=lam.dtype, device=lam.device).log()
    return -0.5 * alpha * log_k / lam0 * (lam - lam0) ** 2


def aldr_kl_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lam_prev: torch.Tensor,
    lam0: float = 10.0,
    alpha: float = 2.0,
    margin: float = 0.1,
    normalize: Normalize = "l1",
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ALDR-KL per sample and the samples' new ``λ_i``: ``(λ_i · LDR-KL at λ_i + penalty, λ_i)``.

    One step of the reference's alternation: ``λ_i`` from `aldr_lambda` with the sample's previous value
    ``lam_prev`` (``λ_0`` at its first visit), then `ldr_kl` at ``λ_i`` plus `aldr_penalty`. The caller keeps
    the returned ``λ_i`` for the sample's next visit. Defaults: ``λ_0 = 10``, ``α = 2``, ``c = 0.1``, L1
    normalization (reference ``experiment.py``, ``run_demo_ALDR.sh`` and ``ALDRLoss_V1``'s defaults).
    """
    logits = _working_dtype(logits)
    scores = normalize_scores(logits, normalize, mask)
    lam = aldr_lambda(scores, lam_prev, lam0, alpha, mask)
    classes = _class_counts(mask, scores).squeeze(-1)
    return ldr_kl(scores, labels, lam, margin, mask) + aldr_penalty(lam, lam0, alpha, classes), lam


def lambda_bounds(lam0: float, alpha: float) -> tuple[float, float]:
    """``[λ_0 (1 − 1/α), λ_0]``: where ALDR's ``λ_i`` always lies (``0 ≤ KL(p ‖ 1/K) ≤ log K``)."""
    return lam0 * (1.0 - 1.0 / alpha), lam0


__all__ = [
    "P_FLOOR",
    "aldr_kl_loss",
    "aldr_lambda",
    "aldr_penalty",
    "kl_to_uniform",
    "lambda_bounds",
    "ldr_kl",
    "ldr_kl_loss",
    "margin_differences",
    "normalize_scores",
]
