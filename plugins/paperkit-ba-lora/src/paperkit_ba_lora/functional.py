"""BA-LoRA's three output regularizers (Chang, Chang & Wu, 2024, arXiv 2408.04556, Sec. 3), as plain functions.

BA-LoRA fine-tunes with LoRA (PiSSA-initialized in the authors' script) and adds, for natural language
understanding, three terms computed on the batch's logits ``F`` (``B`` samples × ``C`` outputs):

- **consistency** ``L_CR = MSE(F / ||F||, F0 / ||F0||)``: the mean squared difference between the rows of the
  adapted model's logits and the frozen pretrained model's logits ``F0``, each row L2-normalized (the mean runs over
  all ``B·C`` entries, ``torch.nn.functional.mse_loss``'s default);
- **diversity** ``L_DR = Σ_{i≠j} Cov(F)_{ij}² / C`` with ``Cov(F) = (F − mean_B F)ᵀ (F − mean_B F) / (B − 1)``:
  decorrelates the output dimensions over the batch;
- **SVD** ``L_SVDR = −Σ_{i≤k} σ_i / Σ_i σ_i`` over the singular values of ``F``: rewards logits whose energy sits
  in their top ``k`` singular directions.

The total is ``L = L_task + λ1·L_CR + λ2·L_DR + λ3·L_SVDR`` (reference code ``train.py``,
``CustomTrainer.compute_loss``; defaults ``k = 3``, ``λ1 = 1e-4``, ``λ2 = 3e-4``, ``λ3 = 1e-4``).

Everything here is usable in any training loop: ``ba_lora_terms(logits, frozen_logits)`` returns the three weighted
terms to add to a loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Added to the sum of singular values before dividing, as in the reference code (``sum_all = s.sum() + 1e-10``).
SVD_EPS = 1e-10


def _matrix(logits: torch.Tensor) -> torch.Tensor:
    """Logits as a ``(B, C)`` matrix, half precision raised to float32 (extra dimensions are flattened per sample, as
    the reference does)."""
    if logits.dim() == 1:
        logits = logits.unsqueeze(0)
    if logits.dim() > 2:
        logits = logits.reshape(logits.shape[0], -1)
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def consistency_loss(logits: torch.Tensor, frozen_logits: torch.Tensor) -> torch.Tensor:
    """Consistency regularizer ``L_CR``: MSE between the L2-normalized logits of the adapted and pretrained models.

    ``frozen_logits`` are the frozen pretrained model's logits on the same batch (no gradient flows into them).
    Each row is divided by its L2 norm (``F.normalize``, eps 1e-12), then the squared differences are averaged over
    every entry.
    """
    fine = F.normalize(_matrix(logits), p=2.0, dim=-1)
    pre = F.normalize(_matrix(frozen_logits).detach(), p=2.0, dim=-1)
    return F.mse_loss(fine, pre)


def diversity_loss(logits: torch.Tensor) -> torch.Tensor:
    """Diversity regularizer ``L_DR``: the squared off-diagonal entries of the batch covariance of the logits, over C.

    ``Cov = Fcᵀ Fc / (B − 1)`` with ``Fc`` the logits centred over the batch; returns
    ``Σ_{i≠j} Cov_ij² / C``. A batch of one sample has no covariance: the term is zero (connected to the graph).
    """
    matrix = _matrix(logits)
    batch, dim = matrix.shape
    if batch < 2:
        return matrix.sum() * 0.0
    centred = matrix - matrix.mean(dim=0)
    cov = centred.T @ centred / (batch - 1)
    off_diagonal = cov - torch.diag(torch.diag(cov))
    return off_diagonal.pow(2).sum() / dim


def svd_loss(logits: torch.Tensor, k: int = 3, gradient: bool = True) -> torch.Tensor:
    """SVD regularizer ``L_SVDR = −Σ_{i≤k} σ_i / (Σ_i σ_i + 1e-10)`` over the singular values of the logit matrix.

    ``k`` is capped at the number of singular values, ``min(B, C)``. ``gradient=False`` computes the term under
    ``torch.no_grad()``: it is then a constant that is logged but does not train (the reference code's commit
    54c44cb did this; its later commits and the paper's objective let the gradient flow).
    """
    matrix = _matrix(logits)
    with torch.set_grad_enabled(gradient and torch.is_grad_enabled()):
        s = torch.linalg.svdvals(matrix)
        top = s[: min(k, s.numel())].sum()
        return -(top / (s.sum() + SVD_EPS))


def ba_lora_terms(
    logits: torch.Tensor,
    frozen_logits: torch.Tensor | None,
    k: int = 3,
    lambda1: float = 1e-4,
    lambda2: float = 3e-4,
    lambda3: float = 1e-4,
    svd_gradient: bool = True,
) -> dict[str, torch.Tensor]:
    """The weighted BA-LoRA terms ``{"consistency": λ1·L_CR, "diversity": λ2·L_DR, "svd": λ3·L_SVDR}``.

    Their sum is what BA-LoRA adds to the task loss. ``frozen_logits`` may be ``None`` to leave the consistency
    term out (no pretrained model at hand). A term whose weight is zero is left out.
    """
    terms: dict[str, torch.Tensor] = {}
    if lambda1 and frozen_logits is not None:
        terms["consistency"] = lambda1 * consistency_loss(logits, frozen_logits)
    if lambda2:
        terms["diversity"] = lambda2 * diversity_loss(logits)
    if lambda3:
        terms["svd"] = lambda3 * svd_loss(logits, k, svd_gradient)
    return terms
