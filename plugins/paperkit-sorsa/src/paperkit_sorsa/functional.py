"""SORSA as plain functions and one layer: usable on any ``nn.Linear`` without the engine.

Notation (Cao, 2024, Sec. 3; the reference code Gunale0926/SORSA ``sorsalib``): a linear
layer computes ``y = x Wᵀ + b`` with ``W`` of shape ``(out, in)``. SORSA splits the
pretrained weight by its singular value decomposition into a trainable principal part
and a frozen residual:

    W = W_p + W_r,   W_p = U_p diag(S_p) V_pᵀ   (the top ``r`` triplets)      (Sec. 3.1)

and trains ``U_p``, the vector ``S_p`` and ``V_pᵀ`` as three separate tensors; the
residual ``W_r`` stays frozen. In the reference code's names (kept here so state dicts
line up with it): ``sorsa_B = U_p`` (out × r), ``sorsa_S = S_p`` (r), ``sorsa_A = V_pᵀ``
(r × in). The layer computes

    W' = W_res + s · U_p diag(S_p) V_pᵀ,      W_res = W − s · U_p diag(S_p) V_pᵀ

with ``s = alpha / r`` (``alpha = None``: ``s = 1``, the paper's form, where
``W_res = W_r``); at initialization ``W' = W`` whatever ``s`` is (the reference
subtracts the scaled principal part, ``sorsa_init``).

The orthonormal regularizer (Sec. 3.2) keeps the singular vectors near orthonormal,

    L_reg = ‖U_pᵀ U_p − I‖_F + ‖V_pᵀ V_p − I‖_F

(plain, not squared, Frobenius norms), averaged over every factor matrix of the model
(the reference's ``calc_ortho`` divides the sum by the number of matrices, two per
layer). Its own learning rate ``γ`` enters the update as

    W_{t+1} = W_t − η_t ∇L_train − γ ∇L_reg                                  (Sec. 3.3)

which the reference trainer implements by back-propagating ``(γ / η) · L_reg`` into the
gradients before the optimizer step (``η`` the optimizer's base learning rate, not the
scheduled one): :func:`regularizer_weight`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import AdaptedLinear

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def sorsa_factors(
    weight: torch.Tensor, rank: int, scaling: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, S, B, W_res)`` of a weight ``(out, in)``: ``A = V_pᵀ`` (r × in), ``S = S_p`` (r), ``B = U_p`` (out × r).

    The SVD is taken of ``Wᵀ`` as in the reference (``torch.linalg.svd(weight.T)``,
    ``sorsa_init``), so the signs of the singular vectors are the reference's; it runs
    in float32 (the reference meant to, its ``weight.to(torch.float32)`` is a no-op).
    ``W_res = W − scaling · (B diag(S)) A`` comes back in the weight's dtype, the
    factors in float32 (or float64 for a float64 weight).
    """
    if weight.dtype not in _FLOATS:
        raise TypeError(f"SORSA needs a floating-point weight, got {weight.dtype}")
    if not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank {rank} must be between 1 and min(out, in) = {min(weight.shape)}")
    if scaling <= 0:
        raise ValueError(f"scaling must be > 0, got {scaling}")
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(dtype)
    u, s, vt = torch.linalg.svd(w.T, full_matrices=False)
    A = u[:, :rank].T.contiguous()
    S = s[:rank].clone()
    B = vt[:rank, :].T.contiguous()
    residual = w - scaling * ((B * S) @ A)
    return A, S, B, residual.to(weight.dtype)


class SORSALinear(AdaptedLinear):
    """A frozen ``nn.Linear`` holding ``W_res`` plus the trainable principal part ``s · B diag(S) A``.

    ``sorsa_A`` (``V_pᵀ``, r × in), ``sorsa_S`` (``S_p``, r) and ``sorsa_B`` (``U_p``,
    out × r) are the reference's parameter names and shapes. Built with zero factors
    (``ΔW = 0``); :func:`sorsa_init_` sets them from the SVD and the base weight to the
    residual. The forward stays factorized (``x Aᵀ``, times ``S``, times ``Bᵀ``); dropout
    acts on the adapter's input as in the reference.
    """

    def __init__(self, base: nn.Linear, rank: int, scaling: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__(base)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if scaling <= 0:
            raise ValueError(f"scaling must be > 0, got {scaling}")
        w = base.weight
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        self.sorsa_A = nn.Parameter(torch.zeros(rank, base.in_features, device=w.device, dtype=dtype))
        self.sorsa_S = nn.Parameter(torch.zeros(rank, device=w.device, dtype=dtype))
        self.sorsa_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=dtype))
        self.scaling = float(scaling)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def rank(self) -> int:
        return self.sorsa_A.shape[0]

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        return {"sorsa_A": self.sorsa_A, "sorsa_S": self.sorsa_S, "sorsa_B": self.sorsa_B}

    def describe(self) -> dict[str, Any]:
        return {"kind": "sorsa", "rank": self.rank, "scaling": self.scaling}

    def principal_weight(self) -> torch.Tensor:
        """``U_p diag(S_p) V_pᵀ`` (out × in) in the adapter's dtype."""
        return (self.sorsa_B * self.sorsa_S) @ self.sorsa_A

    def delta_weight(self) -> torch.Tensor:
        """``s · U_p diag(S_p) V_pᵀ`` in the base weight's dtype (what merging adds to ``W_res``)."""
        return (self.scaling * self.principal_weight()).to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        h = F.linear(self.dropout(x).to(self.sorsa_A.dtype), self.sorsa_A) * self.sorsa_S
        update = F.linear(h, self.sorsa_B) * self.scaling
        return result + update.to(result.dtype)


@torch.no_grad()
def sorsa_init_(layer: SORSALinear) -> SORSALinear:
    """Initialize a :class:`SORSALinear` in place (the reference's ``sorsa_init``): SVD factors, residual base weight."""
    A, S, B, residual = sorsa_factors(layer.base.weight, layer.rank, layer.scaling)
    layer.sorsa_A.copy_(A.to(layer.sorsa_A.dtype))
    layer.sorsa_S.copy_(S.to(layer.sorsa_S.dtype))
    layer.sorsa_B.copy_(B.to(layer.sorsa_B.dtype))
    layer.base.weight.copy_(residual)
    return layer


def sorsa_linear(linear: nn.Linear, rank: int, alpha: float | None = None, dropout: float = 0.0) -> SORSALinear:
    """Wrap one ``nn.Linear`` as an initialized SORSA adapter (``alpha = None``: a scaling of 1, the reference's)."""
    scaling = 1.0 if alpha is None else alpha / rank
    return sorsa_init_(SORSALinear(linear, rank, scaling, dropout))


def orthonormality(layers: Iterable[SORSALinear]) -> torch.Tensor | None:
    """``L_reg``: the mean over factor matrices of ``‖A Aᵀ − I‖_F`` and ``‖Bᵀ B − I‖_F`` (Sec. 3.2; ``calc_ortho``).

    ``A = V_pᵀ`` (rows orthonormal) and ``B = U_p`` (columns orthonormal); two matrices
    per layer enter the mean. ``None`` when there is no layer (the reference returns
    ``None`` and skips the term).
    """
    total: torch.Tensor | None = None
    count = 0
    for layer in layers:
        A, B = layer.sorsa_A, layer.sorsa_B
        eye = torch.eye(layer.rank, device=A.device, dtype=A.dtype)
        term = torch.linalg.matrix_norm(A @ A.T - eye) + torch.linalg.matrix_norm(B.T @ B - eye)
        total = term if total is None else total + term
        count += 2
    return None if total is None else total / count


def regularizer_weight(gamma: float, lr: float) -> float:
    """``γ / η``: the factor on ``L_reg`` in the loss, so that an SGD step takes ``−γ ∇L_reg`` (Sec. 3.3; the
    reference trainer's ``s_gamma = gamma / learning_rate``)."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if lr <= 0:
        raise ValueError(f"the learning rate must be > 0, got {lr}")
    return gamma / lr


def sorsa_layers(model: nn.Module) -> list[tuple[str, SORSALinear]]:
    """Every :class:`SORSALinear` of ``model`` with its name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SORSALinear)]


def sorsa_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapted layers in the reference's checkpoint layout (``sorsalib`` ``Linear``'s state dict).

    For each adapted layer ``name``: ``name.weight`` (the frozen residual ``W_res``, unmerged),
    ``name.bias`` (if any), ``name.sorsa_A``, ``name.sorsa_S``, ``name.sorsa_B`` — what
    ``sorsa.layer.Linear(...).load_state_dict`` takes, prefixed by the layer's place in the model.
    """
    out: dict[str, torch.Tensor] = {}
    for name, layer in sorsa_layers(model):
        state = layer.state_dict()  # unmerged whatever the merge state (AdaptedLinear's contract)
        out[f"{name}.weight"] = state["base.weight"].detach().cpu().contiguous()
        if layer.base.bias is not None:
            out[f"{name}.bias"] = state["base.bias"].detach().cpu().contiguous()
        for key in ("sorsa_A", "sorsa_S", "sorsa_B"):
            out[f"{name}.{key}"] = state[key].detach().cpu().contiguous()
    return out


def export_sorsa(model: nn.Module, path: str | Path) -> Path | None:
    """Write :func:`sorsa_state_dict` as safetensors at ``path``; ``None`` (nothing written) without SORSA layers."""
    from safetensors.torch import save_file

    tensors = sorsa_state_dict(model)
    if not tensors:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": "sorsa", "layout": "Gunale0926/SORSA sorsalib Linear"})
    return path
