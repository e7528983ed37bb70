"""DoTA's math as plain functions: the Matrix Product Operator (MPO) of a weight, and the tensor adapter layer.

Notation (Hu et al., 2024, "Method": MPO decomposition and weight-decomposed
initialization; the MPO itself is Gao et al., 2020 / Liu et al., 2021, MPOP). A linear
layer computes ``y = x Wᵀ`` with ``W`` of shape ``(out, in)``. Factor
``out = o_1 ⋯ o_n`` and ``in = i_1 ⋯ i_n``; reshape ``W`` into the order-``2n``
tensor ``W[o_1, i_1, o_2, i_2, …, o_n, i_n]`` and write it as a chain of ``n``
local tensors (cores) joined by bonds of dimension ``D_k``::

    W[o_1 i_1, …, o_n i_n] = Σ_{d_1..d_{n-1}} G_1[1, o_1, i_1, d_1] G_2[d_1, o_2, i_2, d_2] ⋯ G_n[d_{n-1}, o_n, i_n, 1]

:func:`mpo_decompose` computes the cores by sequential truncated SVDs (TT-SVD,
Oseledets 2011, Alg. 1): at each step the left singular vectors become the core
and ``S Vᵀ`` is carried to the right, so every core but the last is
left-orthonormal and the last holds the norm. With every ``D_k`` at its full value
the chain is exact; truncated to bond ``D``, the error is the root of the sum of
the squared discarded singular values of each step (for two cores, Eckart–Young's
optimum). :func:`mpo_contract` is the inverse map ``MPO(cores) → W``.

DoTA (Method): the cores of ``MPO_D(W0)`` initialize the adapter, the residual
``W_res = W0 − MPO_D(W0)`` is frozen, and ``W' = W_res + MPO(G)`` trains only the
cores, so the model computes what it computed before at the start.
:class:`MPOLinear` holds ``W_res`` as its (frozen) base weight and the cores as
parameters; ``delta_weight() = MPO(G)``. The random-initialization ablation
(the paper's "random initialization" tensor adapters) draws the cores at random
instead, with the same residual construction so the start is still preserved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from paperkit import AdaptedLinear

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def factorize(size: int, n: int) -> list[int]:
    """``n`` factors of ``size`` as equal as the prime factors allow (largest first), e.g. ``384, 3 → [8, 8, 6]``.

    The primes are dealt, largest first, to the factor that is currently smallest
    (the balanced split of MPO papers: ``768 = 4·4·4·3·4``-style shapes). Factors
    of 1 appear when ``size`` has fewer than ``n`` prime factors.
    """
    if size < 1 or n < 1:
        raise ValueError(f"size and n must be >= 1, got {size}, {n}")
    primes, rest, p = [], size, 2
    while p * p <= rest:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    if rest > 1:
        primes.append(rest)
    factors = [1] * n
    for q in sorted(primes, reverse=True):
        factors[factors.index(min(factors))] *= q
    return sorted(factors, reverse=True)


def _check_shape(weight: torch.Tensor, out_factors: Sequence[int], in_factors: Sequence[int]) -> None:
    if weight.dim() != 2:
        raise ValueError(f"an MPO factors a matrix, got a tensor of shape {tuple(weight.shape)}")
    if len(out_factors) != len(in_factors) or not out_factors:
        raise ValueError(f"out and in factors must have the same, nonzero length: {out_factors}, {in_factors}")
    if math.prod(out_factors) != weight.shape[0] or math.prod(in_factors) != weight.shape[1]:
        raise ValueError(f"factors {list(out_factors)} × {list(in_factors)} do not multiply to {tuple(weight.shape)}")


def mpo_decompose(
    weight: torch.Tensor, out_factors: Sequence[int], in_factors: Sequence[int], bond: int | None = None,
) -> tuple[list[torch.Tensor], float]:
    """The MPO cores of ``weight`` (``(out, in)``) by TT-SVD truncated to bond dimension ``bond``, and the error.

    Returns ``(cores, error)``: core ``k`` has shape ``(D_{k-1}, o_k, i_k, D_k)``
    with ``D_0 = D_n = 1`` and ``D_k = min(bond, rows, columns)`` of the ``k``-th
    unfolding; ``error`` is ``sqrt(Σ_k Σ_discarded σ²)``, which equals
    ``‖W − MPO(cores)‖_F`` (the discarded parts of the steps are orthogonal).
    ``bond = None`` keeps every singular value (exact). Computed in float64 when
    the weight is float64, float32 otherwise; the cores come back in that dtype.
    """
    _check_shape(weight, out_factors, in_factors)
    if weight.dtype not in _FLOATS:
        raise TypeError(f"DoTA needs a floating-point weight, got {weight.dtype}")
    if bond is not None and bond < 1:
        raise ValueError(f"bond must be >= 1, got {bond}")
    n = len(out_factors)
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(dtype).reshape(*out_factors, *in_factors)
    w = w.permute(*[axis for k in range(n) for axis in (k, n + k)])  # (o_1, i_1, o_2, i_2, …)
    cores: list[torch.Tensor] = []
    carry = w.reshape(1, -1)
    left, discarded = 1, 0.0
    for k in range(n - 1):
        site = out_factors[k] * in_factors[k]
        matrix = carry.reshape(left * site, -1)
        U, S, Vh = torch.linalg.svd(matrix, full_matrices=False)
        keep = S.numel() if bond is None else min(bond, S.numel())
        discarded += float((S[keep:].double() ** 2).sum())
        cores.append(U[:, :keep].reshape(left, out_factors[k], in_factors[k], keep))
        carry = S[:keep, None] * Vh[:keep]
        left = keep
    cores.append(carry.reshape(left, out_factors[-1], in_factors[-1], 1))
    return cores, math.sqrt(discarded)


def mpo_contract(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """``MPO(G)``: contract the chain of cores ``(D_{k-1}, o_k, i_k, D_k)`` back into the ``(∏o, ∏i)`` matrix.

    The running product is kept as ``(rows so far, columns so far, bond)``; each
    core multiplies in over the bond, so the row index is ``o_1`` major, as in
    ``W.reshape(o_1, …, o_n, i_1, …, i_n)``. Differentiable in every core.
    """
    if not cores:
        raise ValueError("an MPO needs at least one core")
    first = cores[0]
    if first.shape[0] != 1 or cores[-1].shape[-1] != 1:
        raise ValueError("the outer bonds of an MPO must be 1")
    t = first.reshape(first.shape[1], first.shape[2], first.shape[3])
    for core in cores[1:]:
        rows, cols, bond = t.shape
        d, o, i, nxt = core.shape
        if d != bond:
            raise ValueError(f"bond mismatch: {bond} against a core of shape {tuple(core.shape)}")
        t = torch.einsum("abd,doie->aobie", t, core).reshape(rows * o, cols * i, nxt)
    return t.squeeze(-1)


def bond_dims(out_factors: Sequence[int], in_factors: Sequence[int], bond: int | None) -> list[int]:
    """The bond dimensions ``D_1..D_{n-1}`` TT-SVD gives: ``min(bond, ∏_{j≤k} o_j i_j, ∏_{j>k} o_j i_j)``."""
    sites = [o * i for o, i in zip(out_factors, in_factors)]
    dims, left = [], 1
    for k in range(len(sites) - 1):
        full = min(left * sites[k], math.prod(sites[k + 1:]))
        left = full if bond is None else min(bond, full)
        dims.append(left)
    return dims


def random_cores(
    out_factors: Sequence[int], in_factors: Sequence[int], bond: int, norm: float,
    generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
) -> list[torch.Tensor]:
    """Gaussian cores with the bond dimensions of :func:`mpo_decompose`, scaled so that ``‖MPO(G)‖_F = norm``.

    The random-initialization ablation: the same adapter, the same parameter count
    and the same scale as DoTA's ``MPO_D(W0)`` — only the directions are random.
    Every core gets the same factor ``(norm / ‖MPO(G)‖)^{1/n}``.
    """
    dims = [1, *bond_dims(out_factors, in_factors, bond), 1]
    cores = [
        torch.randn(dims[k], o, i, dims[k + 1], generator=generator, dtype=torch.float64)
        for k, (o, i) in enumerate(zip(out_factors, in_factors))
    ]
    current = float(mpo_contract(cores).norm())
    factor = (norm / current) ** (1.0 / len(cores)) if current > 0 else 0.0
    return [(c * factor).to(dtype) for c in cores]


class MPOLinear(AdaptedLinear):
    """A frozen ``nn.Linear`` whose weight is ``W' = W_res + MPO(G)``; the cores ``G`` train (DoTA, Method).

    ``init = "mpo"``: ``G = MPO_D(W0)`` (TT-SVD of the pretrained weight, bond
    ``D``), ``W_res = W0 − MPO(G)`` replaces the base weight. ``init = "random"``:
    Gaussian cores of the same shapes and Frobenius norm (the ablation), with the
    same residual. Either way the output is unchanged at the start. Cores are
    parameters ``core_0 … core_{n-1}`` in float32 on half-precision layers.
    """

    def __init__(
        self, base: nn.Linear, out_factors: Sequence[int], in_factors: Sequence[int], bond: int,
        init: str = "mpo", generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(base)
        _check_shape(base.weight, out_factors, in_factors)
        if init not in ("mpo", "random"):
            raise ValueError(f"init must be 'mpo' or 'random', got {init!r}")
        self.out_factors, self.in_factors, self.bond, self.init = list(out_factors), list(in_factors), int(bond), init
        weight = base.weight.detach()
        dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        cores, _error = mpo_decompose(weight, self.out_factors, self.in_factors, self.bond)
        if init == "random":
            norm = float(mpo_contract([c.double() for c in cores]).norm())
            cores = random_cores(self.out_factors, self.in_factors, self.bond, norm, generator)
        self.num_cores = len(cores)
        for k, core in enumerate(cores):
            self.register_parameter(f"core_{k}", nn.Parameter(core.to(device=weight.device, dtype=dtype).contiguous()))
        with torch.no_grad():
            residual = weight.to(dtype) - mpo_contract(self.cores())
            base.weight.copy_(residual.to(base.weight.dtype))

    def cores(self) -> list[torch.Tensor]:
        return [getattr(self, f"core_{k}") for k in range(self.num_cores)]

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        return {f"core_{k}": getattr(self, f"core_{k}") for k in range(self.num_cores)}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "mpo", "out_factors": self.out_factors, "in_factors": self.in_factors, "bond": self.bond,
            "init": self.init,
        }

    def delta_weight(self) -> torch.Tensor:
        """``MPO(G)`` in the base weight's dtype: what the frozen residual ``W_res`` is completed with."""
        return mpo_contract(self.cores()).to(self.base.weight.dtype)


def dota_linear(
    linear: nn.Linear, bond: int, cores: int = 3, init: str = "mpo", generator: torch.Generator | None = None,
) -> MPOLinear:
    """Wrap one ``nn.Linear`` as a DoTA adapter with ``cores`` local tensors of bond ``bond`` (balanced factors)."""
    return MPOLinear(linear, factorize(linear.out_features, cores), factorize(linear.in_features, cores), bond, init, generator)


def mpo_parameter_count(out_factors: Sequence[int], in_factors: Sequence[int], bond: int) -> int:
    """How many values the cores hold: ``Σ_k D_{k-1} o_k i_k D_k``."""
    dims = [1, *bond_dims(out_factors, in_factors, bond), 1]
    return sum(dims[k] * o * i * dims[k + 1] for k, (o, i) in enumerate(zip(out_factors, in_factors)))
