"""PSEUDO-IID initialization (Nait-Saada, Naderi & Tanner, ICLR 2024) as plain functions.

The paper extends the Gaussian-process limit of wide deep networks (Matthews et al. 2018) from
IID Gaussian weights to a class of weight distributions it calls PSEUDO-IID: each row/column of
``W^l`` has exchangeable, uncorrelated entries of variance ``σ_w² / N_{l-1}`` with enough moment
control, which covers IID, (scaled) orthogonal, low-rank and structured sparse matrices. Its
theorem: a fully-connected or convolutional net ``y^l = W^l φ(y^{l-1}) + B^l`` with such weights
and ``B^l ~ N(0, σ_b²)`` converges, as the widths grow, to the *same* Gaussian process as the IID
net of the same per-entry variance, so its kernel obeys the same recursion

    q^l = σ_b² + σ_w² E[φ(√q^{l-1} Z)²]                (the variance map)

and the Edge-of-Chaos tuning of (σ_w, σ_b) (Poole et al. 2016; Schoenholz et al. 2017; Hayou et
al. 2019) carries over unchanged to these structured inits. This module draws the four families
at one per-entry variance ``σ_w² / fan_in`` (``fan_in`` = in·k·k for a conv, torch's); the
(σ_w, σ_b) defaults and the mean-field maps come from :mod:`paperkit_eoc_init.functional`.

* ``iid``: ``W_ij ~ N(0, σ_w² / n)``.
* ``orthogonal``: ``W = s Q`` with ``Q`` (m × n) semi-orthogonal (Haar, QR of a Gaussian with the
  sign fix of Mezzadri 2007); ``Q`` has squared Frobenius norm ``min(m, n)``, so its per-entry
  variance is ``1 / max(m, n)`` and ``s = σ_w √(max(m, n) / n)``.
* ``low-rank``: ``W = U V / √r`` with ``U`` (m × r) ~ N(0, 1) and ``V`` (r × n) ~ N(0, σ_w² / n);
  ``E[W_ij²] = r · σ_w²/n / r = σ_w² / n`` and ``rank W = r`` almost surely.
* ``sparse``: each row keeps ``k = max(1, round(density · n))`` entries at uniformly random
  positions, drawn ``N(0, σ_w² / k)`` (= ``N(0, σ_w²/n)`` rescaled by ``1/√(k/n)``, the row's
  exact kept fraction), the rest zero; ``E[W_ij²] = (k/n) · σ_w²/k = σ_w² / n``.
"""

from __future__ import annotations

import math

import attrs
import torch
from torch import nn

from paperkit import weight_layers

STRUCTURES = ("iid", "orthogonal", "low-rank", "sparse")


def _check_shape(m: int, n: int) -> None:
    if m < 1 or n < 1:
        raise ValueError(f"a weight matrix needs a positive shape, got ({m}, {n})")


def low_rank_rank(m: int, n: int, rank_fraction: float) -> int:
    """The rank ``r = max(1, round(rank_fraction · min(m, n)))`` a low-rank draw of an m × n weight gets."""
    return max(1, min(m, n, round(rank_fraction * min(m, n))))


def sparse_row_count(n: int, density: float) -> int:
    """The entries ``k = max(1, round(density · n))`` each row of a sparse draw keeps."""
    return max(1, min(n, round(density * n)))


def pseudo_iid_matrix(
    m: int,
    n: int,
    sigma_w: float,
    structure: str = "iid",
    *,
    rank_fraction: float = 0.25,
    density: float = 0.25,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """An m × n weight of one PSEUDO-IID family (module docstring), per-entry variance ``σ_w² / n``."""
    _check_shape(m, n)
    std = sigma_w / math.sqrt(n)
    if structure == "iid":
        return torch.empty(m, n, dtype=dtype).normal_(0.0, std, generator=generator)
    if structure == "orthogonal":
        a = torch.empty(max(m, n), min(m, n), dtype=torch.float64).normal_(0.0, 1.0, generator=generator)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.sign(torch.diagonal(r)) + 0.5)  # Haar: fix the signs of the QR factors
        q = q if m >= n else q.T
        return (q * (sigma_w * math.sqrt(max(m, n) / n))).to(dtype)
    if structure == "low-rank":
        r = low_rank_rank(m, n, rank_fraction)
        u = torch.empty(m, r, dtype=torch.float64).normal_(0.0, 1.0, generator=generator)
        v = torch.empty(r, n, dtype=torch.float64).normal_(0.0, std, generator=generator)
        return (u @ v / math.sqrt(r)).to(dtype)
    if structure == "sparse":
        k = sparse_row_count(n, density)
        keys = torch.rand(m, n, generator=generator)
        idx = keys.argsort(dim=1)[:, :k]  # k uniformly random columns per row
        vals = torch.empty(m, k, dtype=dtype).normal_(0.0, sigma_w / math.sqrt(k), generator=generator)
        return torch.zeros(m, n, dtype=dtype).scatter_(1, idx, vals)
    raise ValueError(f"unknown structure {structure!r} (known: {', '.join(STRUCTURES)})")


@torch.no_grad()
def pseudo_iid_(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    sigma_w: float,
    sigma_b: float,
    structure: str = "iid",
    *,
    rank_fraction: float = 0.25,
    density: float = 0.25,
    generator: torch.Generator | None = None,
) -> None:
    """Draw ``weight`` (viewed as out × fan_in) from :func:`pseudo_iid_matrix` and ``bias ~ N(0, σ_b²)`` in place.

    Drawn on the CPU from ``generator``, the weight first; ``σ_b = 0`` zeroes the bias without drawing.
    """
    if weight.ndim < 2 or weight[0].numel() == 0:
        raise ValueError(f"a weight needs at least 2 dimensions and a non-empty fan-in, got {tuple(weight.shape)}")
    m, n = weight.shape[0], weight[0].numel()
    dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    w = pseudo_iid_matrix(
        m, n, sigma_w, structure, rank_fraction=rank_fraction, density=density, generator=generator, dtype=dtype
    )
    weight.copy_(w.reshape(weight.shape))
    if bias is not None:
        if sigma_b == 0.0:
            bias.zero_()
        else:
            bias.copy_(torch.empty(bias.shape, dtype=dtype).normal_(0.0, sigma_b, generator=generator))


@attrs.frozen
class LayerRecord:
    """What one layer received: name, (out, fan_in), structure, its rank (low-rank) or kept entries per row (sparse)."""

    name: str
    shape: tuple[int, int]
    structure: str
    rank: int
    row_nonzeros: int


@torch.no_grad()
def init_model_(
    model: nn.Module,
    sigma_w: float,
    sigma_b: float,
    structure: str = "iid",
    *,
    rank_fraction: float = 0.25,
    density: float = 0.25,
    layers: tuple[str, ...] | list[str] = ("linear", "conv"),
    generator: torch.Generator | None = None,
) -> list[LayerRecord]:
    """Draw every chosen layer (``paperkit.weight_layers``, module order) with :func:`pseudo_iid_` from one generator.

    Every layer alike, the input and output layers included, as in the paper's GP-limit setting.
    A layer without a bias with ``σ_b > 0`` is an error (the asked-for kernel is not reached).
    """
    records = []
    for name, module in weight_layers(model, layers):
        bias = getattr(module, "bias", None)
        bias = bias if isinstance(bias, torch.Tensor) else None
        if bias is None and sigma_b > 0.0:
            raise ValueError(f"layer '{name}' has no bias but sigma_b = {sigma_b} > 0: use sigma_b = 0")
        pseudo_iid_(
            module.weight,
            bias,
            sigma_w,
            sigma_b,
            structure,
            rank_fraction=rank_fraction,
            density=density,
            generator=generator,
        )
        m, n = module.weight.shape[0], module.weight[0].numel()
        rank = low_rank_rank(m, n, rank_fraction) if structure == "low-rank" else min(m, n)
        nnz = sparse_row_count(n, density) if structure == "sparse" else n
        records.append(LayerRecord(name, (m, n), structure, rank, nnz))
    if not records:
        raise ValueError(f"the model has no layer of kind(s) {', '.join(layers)} to initialize")
    return records


@torch.no_grad()
def preactivation_variances(
    model: nn.Module, x: torch.Tensor, layers: tuple[str, ...] | list[str] = ("linear",)
) -> list[float]:
    """The empirical second moment ``q^l = mean_i (y^l_i)²`` of each chosen layer's output over batch and units."""
    outputs: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
        for _n, m in weight_layers(model, layers)
    ]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return [float(y.double().pow(2).mean()) for y in outputs]
