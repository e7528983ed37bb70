"""PSOFT's principal-subspace rotation as plain functions and one adapter layer, usable without the engine.

Notation (Wu, Hu, Min & Wang, "Efficient Orthogonal Fine-Tuning with Principal Subspace Adaptation", ICLR 2026,
Sec. 3; PEFT's ``PsoftConfig`` layout): a linear layer computes ``y = x W'ᵀ + bias`` with ``W`` of shape
``(out, in)``. With the singular value decomposition ``W = U S Vᵀ`` and its top ``r`` triplets
``U_r, S_r, V_r`` (the *principal subspace*), PSOFT freezes two factors

    A = V_rᵀ                      (r × in, row-orthogonal: A Aᵀ = I_r; PEFT ``ab_svd_init="psoft_init"``)
    B = U_r S_r / s               (out × r; ``s = alpha / r`` is the scaling, undone in the update)

and trains one ``r × r`` matrix between them:

    W' = W + s · B (R − I) A = W_res + U_r S_r R V_rᵀ,      W_res = W − U_r S_r V_rᵀ

i.e. the principal part ``U_r S_r V_rᵀ`` is replaced by ``U_r S_r R V_rᵀ`` and the residual stays untouched.
``R`` is orthogonal through the Cayley transform of a skew-symmetric ``Q`` (``r(r−1)/2`` free values)

    R_orth = (I + Q)(I − Q)⁻¹                                   (exact, ``torch.linalg.solve``)
    R_orth ≈ I + 2Q + 2Q² + … + 2Q^{t−2} + Q^{t−1}              (Cayley–Neumann, ``t`` terms, OFTv2/PEFT)

and two tunable vectors (the paper's β after and α before the rotation, PEFT's ``vector_b``/``vector_a``,
initialized to 1) relax orthogonality gradually during training:

    R = diag(β) R_orth diag(α)

Because ``A`` has orthonormal rows, ``R_orth`` rotates the input's coordinates inside the principal subspace
without distorting their geometry (the paper's condition for strict semantic preservation); the symmetric
PiSSA factors ``A = S_r^½ V_rᵀ``, ``B = U_r S_r^½`` (``init = "pissa"``, PEFT ``"pissa_init"``) break it and are
the ablation. ``Q = 0`` and ``α = β = 1`` give ``R = I``: the layer starts as the base layer, exactly. The
trainable count per layer is ``r(r−1)/2 + 2r`` (versus LoRA's ``rank·(in + out)``).

``s`` cancels in ``W'`` (``B`` is divided by it); it is kept, as in PEFT, so that outputs agree bit for bit.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from paperkit import AdaptedLinear

#: The two SVD factorizations of the principal subspace (PEFT's ``ab_svd_init`` values in brackets).
INITS = ("psoft", "pissa")
Init = Literal["psoft", "pissa"]
PEFT_INIT = {"psoft": "psoft_init", "pissa": "pissa_init"}

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def trainable_values(rank: int, orthogonal: bool = True, scale_out: bool = True, scale_in: bool = True) -> int:
    """How many values PSOFT trains on one layer: ``r(r−1)/2`` (Cayley) or ``r²`` (free ``R``), plus ``r`` per vector."""
    core = rank * (rank - 1) // 2 if orthogonal else rank * rank
    return core + rank * (int(scale_out) + int(scale_in))


def principal_subspace(
    weight: torch.Tensor, rank: int, niter: int | None = None, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U_r (out×r), S_r (r), V_rᵀ (r×in)`` of ``weight`` in float32 (float64 for a float64 weight; Sec. 3).

    ``niter = None``: the exact SVD (``torch.linalg.svd``, PEFT ``psoft_svd="full"``). ``niter = N``: the
    randomized SVD (``torch.svd_lowrank`` with ``N`` subspace iterations, PEFT ``psoft_svd="lowrank"``), drawn
    from a forked generator seeded with ``seed`` so that the global one is left alone and a saved adapter
    rebuilds the same subspace (PEFT's ``random_seed``).
    """
    if weight.dtype not in _FLOATS:
        raise TypeError(f"PSOFT needs a floating-point weight, got {weight.dtype}")
    if not 1 <= rank <= min(weight.shape):
        raise ValueError(f"rank {rank} must be between 1 and min(out, in) = {min(weight.shape)}")
    w = weight.detach().to(torch.float64 if weight.dtype == torch.float64 else torch.float32)
    if niter is None:
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        return U[:, :rank], S[:rank], Vh[:rank, :]
    devices = [] if w.device.type == "cpu" else [w.device]
    kwargs = {"devices": devices} if not devices else {"devices": devices, "device_type": w.device.type}
    with torch.random.fork_rng(**kwargs):
        torch.manual_seed(seed)
        U, S, V = torch.svd_lowrank(w, q=rank, niter=niter)
    return U[:, :rank], S[:rank], V[:, :rank].t()


def psoft_factors(
    weight: torch.Tensor, rank: int, scaling: float = 1.0, init: Init = "psoft", niter: int | None = None, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen factors ``(A, B)`` (float32, or float64 for a float64 weight) with ``s · B A = U_r S_r V_rᵀ`` (Sec. 3).

    ``init = "psoft"``: ``A = V_rᵀ`` (orthonormal rows), ``B = U_r S_r / s``. ``init = "pissa"``:
    ``A = (S_r/s)^½ V_rᵀ``, ``B = U_r (S_r/s)^½`` (the ablation without the orthogonality condition).
    """
    if scaling <= 0:
        raise ValueError(f"scaling must be > 0, got {scaling}")
    U, S, Vh = principal_subspace(weight, rank, niter, seed)
    S = S / scaling
    if init == "psoft":
        A, B = Vh, U @ torch.diag(S)
    elif init == "pissa":
        root = torch.sqrt(S)
        A, B = torch.diag(root) @ Vh, U @ torch.diag(root)
    else:
        raise ValueError(f"unknown init {init!r} (known: {', '.join(INITS)})")
    return A.contiguous(), B.contiguous()


def skew_symmetric(values: torch.Tensor, size: int) -> torch.Tensor:
    """``Q = T − Tᵀ`` with ``values`` filling the strict upper triangle ``T`` row by row (``r(r−1)/2`` values)."""
    rows, cols = torch.triu_indices(size, size, 1, device=values.device)
    upper = torch.zeros(size, size, device=values.device, dtype=values.dtype).index_put((rows, cols), values)
    return upper - upper.transpose(0, 1)


def cayley(Q: torch.Tensor) -> torch.Tensor:
    """The Cayley transform ``(I + Q)(I − Q)⁻¹``: orthogonal for skew-symmetric ``Q`` (half precision → float32)."""
    eye = torch.eye(Q.shape[0], device=Q.device, dtype=Q.dtype)
    half = Q.dtype in (torch.float16, torch.bfloat16)
    R = torch.linalg.solve((eye - Q).float() if half else eye - Q, (eye + Q).float() if half else eye + Q, left=False)
    return R.to(Q.dtype) if half else R


def cayley_neumann(Q: torch.Tensor, terms: int, eps: float | None = None) -> torch.Tensor:
    """The Cayley transform with ``(I − Q)⁻¹`` replaced by its Neumann series, as OFTv2 and PEFT truncate it.

    ``I + 2Q + 2Q² + … + 2Q^{t−2} + Q^{t−1}`` for ``t = terms >= 5``; PEFT's loop gives ``I`` for ``t = 1``,
    ``I + 2Q`` for ``t = 2`` and ``I + 2Q + 2Q² + Q³`` for both ``t = 3`` and ``t = 4`` (reproduced here). With
    ``eps``, ``Q`` is first rescaled to Frobenius norm ``eps`` when it is larger (the series converges for
    ``‖Q‖ < 1``).
    """
    if terms < 1:
        raise ValueError(f"terms must be >= 1, got {terms}")
    if eps is not None:
        norm = torch.linalg.norm(Q, ord="fro")
        if torch.isfinite(norm) and norm > eps:
            Q = Q * (eps / (norm + 1e-12))
    R = torch.eye(Q.shape[0], device=Q.device, dtype=Q.dtype)
    if terms > 1:
        R = R + 2.0 * Q
    if terms > 2:
        power = Q @ Q
        R = R + 2.0 * power
        for _ in range(3, terms - 1):
            power = power @ Q
            R = R + 2.0 * power
        R = R + power @ Q
    return R


class PrincipalRotation(nn.Module):
    """The trainable ``r × r`` transformation ``R = diag(β) R_orth diag(α)`` (PEFT's ``psoft_R``, same tensors).

    ``weight`` holds the ``r(r−1)/2`` upper-triangle values of ``Q`` (``orthogonal=True``) or the free matrix
    ``R`` itself (``orthogonal=False``, initialized to ``I``); ``vector_b`` (β, after ``R``) and ``vector_a``
    (α, before it) start at one. ``neumann_terms = None`` uses the exact Cayley transform.
    """

    def __init__(
        self, size: int, orthogonal: bool = True, scale_out: bool = True, scale_in: bool = True,
        neumann_terms: int | None = None, neumann_eps: float | None = None,
        device: torch.device | None = None, dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.size = int(size)
        self.orthogonal = bool(orthogonal)
        self.neumann_terms = neumann_terms
        self.neumann_eps = neumann_eps
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        if orthogonal:
            self.weight = nn.Parameter(torch.zeros(size * (size - 1) // 2, **kw))
        else:
            self.weight = nn.Parameter(torch.eye(size, **kw))
        self.vector_b = nn.Parameter(torch.ones(size, **kw)) if scale_out else None
        self.vector_a = nn.Parameter(torch.ones(size, **kw)) if scale_in else None

    def matrix(self) -> torch.Tensor:
        """``R`` (``r × r``)."""
        if self.orthogonal:
            Q = skew_symmetric(self.weight, self.size)
            R = cayley(Q) if self.neumann_terms is None else cayley_neumann(Q, self.neumann_terms, self.neumann_eps)
        else:
            R = self.weight
        if self.vector_b is not None:
            R = self.vector_b[:, None] * R
        if self.vector_a is not None:
            R = R * self.vector_a[None, :]
        return R

    def extra_repr(self) -> str:
        return f"size={self.size}, orthogonal={self.orthogonal}, neumann_terms={self.neumann_terms}"


class PSOFTLinear(AdaptedLinear):
    """A frozen ``nn.Linear`` plus PSOFT's update ``ΔW = s · B (R − I) A`` on the top-``rank`` principal subspace.

    ``A`` and ``B`` (``psoft_A``, ``psoft_B``, float32 buffers) come from the SVD of the base weight at
    construction and never train; ``psoft_R`` (:class:`PrincipalRotation`) does. The forward stays factorized,
    in PEFT's order: ``base(x) + s · ((x̃ Aᵀ) Rᵀ − x̃ Aᵀ) Bᵀ`` with ``x̃ = dropout(x)``.
    """

    def __init__(
        self, base: nn.Linear, rank: int, alpha: float = 32.0, dropout: float = 0.0, init: Init = "psoft",
        orthogonal: bool = True, scale_out: bool = True, scale_in: bool = True,
        neumann_terms: int | None = None, neumann_eps: float | None = None, niter: int | None = None, seed: int = 0,
    ) -> None:
        super().__init__(base)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.scaling = alpha / rank
        self.init: str = init
        self.niter = niter
        self.seed = int(seed)
        A, B = psoft_factors(base.weight, rank, self.scaling, init, niter, seed)
        self.psoft_A: torch.Tensor
        self.psoft_B: torch.Tensor
        self.register_buffer("psoft_A", A)
        self.register_buffer("psoft_B", B)
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        self.psoft_R = PrincipalRotation(
            rank, orthogonal, scale_out, scale_in, neumann_terms, neumann_eps, base.weight.device, dtype,
        )
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        return {f"psoft_R.{name}": p for name, p in self.psoft_R.named_parameters()}

    def describe(self) -> dict[str, Any]:
        return {"kind": "psoft", "rank": self.rank, "scaling": self.scaling, "init": self.init}

    def delta_weight(self) -> torch.Tensor:
        """``s · B (R − I) A`` in the base weight's dtype (what merging adds to the base weight)."""
        R = self.psoft_R.matrix().to(self.psoft_A.dtype)
        eye = torch.eye(self.rank, device=R.device, dtype=R.dtype)
        delta = self.psoft_B @ (R - eye) @ self.psoft_A
        return (delta * self.scaling).to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        h = self.dropout(x.to(self.psoft_A.dtype))
        xa = h @ self.psoft_A.t()
        xr = xa @ self.psoft_R.matrix().to(xa.dtype).t()
        update = (xr - xa) @ self.psoft_B.t()
        return (result + update * self.scaling).to(result.dtype)


def psoft_linear(linear: nn.Linear, rank: int, **options: Any) -> PSOFTLinear:
    """Wrap one ``nn.Linear`` as a PSOFT adapter (``R = I`` at the start: it computes what ``linear`` computed)."""
    return PSOFTLinear(linear, rank, **options)
