"""PiSSA's initialization as plain functions: usable on any ``nn.Linear`` without the engine.

Notation (Meng, Wang & Zhang, 2024, Sec. 3; PEFT's layout): a linear layer
computes ``y = x Wᵀ`` with ``W`` of shape ``(out, in)``. With the singular value
decomposition ``W = U S Vᵀ`` and its top ``r`` triplets ``U_r, S_r, V_r``:

    A = sqrt(S_r / s) V_rᵀ          (r × in,  PEFT's lora_A)
    B = U_r sqrt(S_r / s)           (out × r, PEFT's lora_B)
    W_res = W − s · B A = W − U_r S_r V_rᵀ

where ``s = alpha / r`` is the adapter's scaling, so that ``s · B A`` is the
rank-``r`` principal part of ``W`` whatever ``alpha`` is (PEFT divides ``S_r``
by the scaling the same way). The paper writes the factors the other way
round (its ``A`` is ``U_r S_r^½``, its ``B`` is ``S_r^½ V_rᵀ`` for ``y = x W``);
the product is the same.
"""

from __future__ import annotations

import torch
from torch import nn

from paperkit import LowRankLinear

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def principal_triplets(weight: torch.Tensor, rank: int, niter: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U_r (out×r), S_r (r), V_rᵀ (r×in)`` of ``weight`` in float32.

    ``niter = None``: the exact SVD (``torch.linalg.svd``, PEFT's ``"pissa"``).
    ``niter = N``: Halko et al.'s randomized SVD with ``N`` subspace iterations
    (``torch.svd_lowrank``, PEFT's ``"pissa_niter_N"``, the paper's fast
    initialization, Sec. 4.5); it draws from torch's global generator.
    """
    if weight.dtype not in _FLOATS:
        raise TypeError(f"PiSSA needs a floating-point weight, got {weight.dtype}")
    if not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank {rank} must be between 1 and min(out, in) = {min(weight.shape)}")
    w = weight.detach().to(torch.float32)
    if niter is None:
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        return U[:, :rank], S[:rank], Vh[:rank]
    U, S, V = torch.svd_lowrank(w, q=rank, niter=niter)
    return U, S, V.T


def pissa_factors(
    weight: torch.Tensor, rank: int, scaling: float = 1.0, niter: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, B, W_res)`` with ``W_res + scaling · B A = W``; ``A``, ``B`` in float32, ``W_res`` in ``weight``'s dtype."""
    if scaling <= 0:
        raise ValueError(f"scaling must be > 0, got {scaling}")
    U, S, Vh = principal_triplets(weight, rank, niter)
    root = torch.sqrt(S / scaling)
    A = root[:, None] * Vh
    B = U * root[None, :]
    residual = weight.detach().to(torch.float32) - scaling * (B @ A)
    return A, B, residual.to(weight.dtype)


@torch.no_grad()
def pissa_init_(layer: LowRankLinear, niter: int | None = None) -> LowRankLinear:
    """Initialize a :class:`~paperkit.adapters.LowRankLinear` in place: principal factors, residual base weight."""
    A, B, residual = pissa_factors(layer.base.weight, layer.rank, layer.scaling, niter)
    layer.lora_A.copy_(A.to(layer.lora_A.dtype))
    layer.lora_B.copy_(B.to(layer.lora_B.dtype))
    layer.base.weight.copy_(residual)
    return layer


def pissa_linear(linear: nn.Linear, rank: int, alpha: float | None = None, dropout: float = 0.0, niter: int | None = None) -> LowRankLinear:
    """Wrap one ``nn.Linear`` as a PiSSA adapter (``alpha = None`` means ``alpha = rank``, a scaling of 1)."""
    scaling = (rank if alpha is None else alpha) / rank
    return pissa_init_(LowRankLinear(linear, rank, scaling, dropout), niter)
