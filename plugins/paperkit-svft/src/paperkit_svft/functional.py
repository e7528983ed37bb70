"""SVFT's update as plain functions and one adapter layer, usable on any ``nn.Linear`` without the engine.

Notation (Lingam et al., 2024, "SVFT: Parameter-Efficient Fine-Tuning with
Singular Vectors", Sec. 3; reference code VijayLingam95/SVFT
``svft/svft_layers.py``): a linear layer computes ``y = x W'ᵀ + bias`` with the
frozen weight ``W`` of shape ``(out, in)`` and its thin singular value
decomposition ``W = U Σ Vᵀ`` (``U``: ``out × n``, ``Vᵀ``: ``n × in``,
``n = min(out, in)``, or the top ``rank`` triplets). ``U`` and ``V`` stay
frozen; SVFT trains a sparse ``n × n`` matrix ``M`` of coefficients:

    ΔW = U M Vᵀ = Σ_(i,j) ∈ Ω  m_ij · u_i v_jᵀ         W' = W + ΔW

only the entries of ``M`` at the positions ``Ω`` (the *pattern*) train. The
patterns (Sec. 3; reference ``SVFTLayer``), with ``d`` the number of
off-diagonals (``off_diag``):

    plain    Ω = {(i, i)}: the singular values only (the reference runs it as "banded" with d = 0)
    banded   Ω = {(i, j): |i − j| ≤ d}                       k = n(2d + 1) − d(d + 1) coefficients
    random   k positions (i, j) drawn uniformly with replacement (repeats add up)
    top-k    the k largest entries of an alignment score between the singular vectors (reference rule,
             :func:`top_k_indices`)

``random`` and ``top-k`` train as many coefficients as ``banded`` with the same
``d``. The reference code additionally multiplies ``M`` by a trainable scalar
gate, ``M = sigmoid(g) · S`` with ``g = 0`` at the start, and draws the
coefficients ``S`` Kaiming-normal (``nn.init.kaiming_normal_`` on the ``1 × k``
row: standard deviation ``√(2/k)``), so the reference's adapted model does *not*
start exactly at the base model; ``init = "zeros"`` (``S = 0``) does.

Where the reference and this layer differ, on purpose: the reference forms
``W' = U (Σ + M) Vᵀ`` (the base weight rebuilt from its factors, and with
``rank < n`` the discarded tail of the spectrum is lost); this layer keeps the
frozen ``W`` and adds ``ΔW = U M Vᵀ``, so that the start is exact (at ``M = 0``)
and merging is exact whatever ``rank`` is. At full rank the two agree to
rounding (``U Σ Vᵀ = W``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

from paperkit import AdaptedLinear

#: The sparsity patterns of ``M``; ``"plain"`` is ``"banded"`` with no off-diagonal.
PATTERNS = ("plain", "banded", "random", "top-k")
Pattern = Literal["plain", "banded", "random", "top-k"]
#: How the trainable coefficients start: the reference code's Kaiming-normal draw, or zero (the base model).
INITS = ("kaiming", "zeros")


def coefficient_count(n: int, off_diag: int) -> int:
    """``k = n(2d + 1) − d(d + 1)``: the entries of an ``n × n`` band with ``d`` off-diagonals on each side.

    The random and top-k patterns train this many coefficients too (reference ``SVFTLayer``).
    """
    if n < 1:
        raise ValueError(f"the number of singular vectors must be >= 1, got {n}")
    if not 0 <= off_diag < n:
        raise ValueError(f"off_diag = {off_diag} must be in [0, n − 1] = [0, {n - 1}] for n = {n} singular vectors")
    return n * (2 * off_diag + 1) - off_diag * (off_diag + 1)


def banded_indices(n: int, off_diag: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of the band ``|i − j| ≤ d`` of an ``n × n`` matrix, in row-major order (int64).

    Row-major is the order of the reference's coalesced ``torch.sparse.spdiags`` indices, so the ``k``-th
    coefficient is the same matrix entry in both.
    """
    coefficient_count(n, off_diag)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = (i - j).abs() <= off_diag
    return i[keep].contiguous(), j[keep].contiguous()


def random_indices(n: int, off_diag: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` positions drawn uniformly over the ``n × n`` matrix, rows first, then columns (the reference's order).

    Draws are with replacement, as in the reference: a position drawn twice has two coefficients that add up.
    """
    k = coefficient_count(n, off_diag)
    rows = torch.randint(0, n, (k,), generator=generator)
    cols = torch.randint(0, n, (k,), generator=generator)
    return rows, cols


def alignment_scores(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The ``n × n`` score the reference's top-k pattern ranks: ``U Vᵀᵀ`` when ``U`` and ``Vᵀ`` have one shape, else
    whichever of ``U`` (``out × n``) and ``Vᵀ`` (``n × in``) is square.

    ``u`` is ``U`` (``out × n``), ``v`` is ``Vᵀ`` (``n × in``, rows = right singular vectors). Transcribed from the
    reference (``coeffs = u @ v.T`` or ``u``/``v``); the paper describes the score as the alignment between left and
    right singular vectors. A truncated rank on a non-square layer leaves no square candidate, which the reference
    does not handle either: a ``ValueError`` here.
    """
    if u.shape == v.shape:
        return u @ v.T
    if u.shape[0] == u.shape[1]:
        return u
    if v.shape[0] == v.shape[1]:
        return v
    raise ValueError(
        f"the top-k pattern needs a square score (U {tuple(u.shape)}, Vᵀ {tuple(v.shape)}): use the full rank "
        "or another pattern"
    )


def top_k_indices(u: torch.Tensor, v: torch.Tensor, off_diag: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` positions with the largest (signed) :func:`alignment_scores`, in ``torch.topk``'s order."""
    scores = alignment_scores(u, v)
    k = coefficient_count(scores.shape[0], off_diag)
    flat = torch.topk(scores.contiguous().view(-1), k).indices
    return flat // scores.shape[1], flat % scores.shape[1]


def pattern_indices(
    pattern: str, u: torch.Tensor, v: torch.Tensor, off_diag: int, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of ``M``'s trainable entries (``Ω``) for ``pattern``; ``u``, ``v`` are ``U`` and ``Vᵀ``."""
    n = u.shape[1]
    if pattern == "plain":
        if off_diag:
            raise ValueError(f"the plain pattern is the diagonal (off_diag = 0), got off_diag = {off_diag}")
        return banded_indices(n, 0)
    if pattern == "banded":
        return banded_indices(n, off_diag)
    if pattern == "random":
        return random_indices(n, off_diag, generator)
    if pattern == "top-k":
        return top_k_indices(u, v, off_diag)
    raise ValueError(f"unknown pattern {pattern!r} (known: {', '.join(PATTERNS)})")


def singular_vectors(weight: torch.Tensor, rank: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``U`` (``out × n``), ``Σ`` (``n``), ``Vᵀ`` (``n × in``) of ``weight``: the thin SVD, the top ``rank`` triplets
    when ``rank`` is given (``n = min(rank, out, in)``; the reference's ``rank``). Half-precision weights are
    decomposed in float32, others in their own dtype."""
    if not weight.is_floating_point():
        raise TypeError(f"SVFT needs a floating-point weight, got {weight.dtype}")
    if rank is not None and rank < 1:
        raise ValueError(f"rank must be >= 1 or None, got {rank}")
    dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
    U, S, Vh = torch.linalg.svd(weight.detach().to(dtype), full_matrices=False)
    n = S.shape[0] if rank is None else min(S.shape[0], rank)
    return U[:, :n].contiguous(), S[:n].contiguous(), Vh[:n].contiguous()


def coefficient_matrix(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """The dense ``n × n`` ``M`` with ``values`` at ``(rows, cols)``; repeated positions add up."""
    flat = rows * n + cols
    return torch.zeros(n * n, dtype=values.dtype, device=values.device).index_add(0, flat, values).view(n, n)


def svft_delta(u: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``ΔW = U M Vᵀ = Σ_k values_k · u_(rows_k) v_(cols_k)ᵀ`` (Sec. 3), in ``values``' dtype.

    With at most ``n`` coefficients (the plain pattern) this gathers the columns of ``U`` and rows of ``Vᵀ`` the
    pattern touches, ``(U[:, rows] · values) Vᵀ[cols]``, one ``out × k × in`` product; with more it forms the
    sparse ``M`` densely first, ``U (M Vᵀ)``, which costs ``(n + out) · n · in`` whatever ``k`` is.
    """
    n = u.shape[1]
    if values.shape[0] <= n:
        return (u[:, rows] * values) @ v[cols]
    return u @ (coefficient_matrix(rows, cols, values, n) @ v)


def svft_update(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                values: torch.Tensor) -> torch.Tensor:
    """``x ΔWᵀ = ((x V) Mᵀ) Uᵀ`` without forming ``ΔW``: project on the right singular vectors, mix the ``n``
    coordinates by the sparse ``M`` (``z'_i = Σ_(k: rows_k = i) values_k z_(cols_k)``), map back with ``U``."""
    z = x.to(values.dtype) @ v.T
    mixed = torch.zeros(*z.shape[:-1], u.shape[1], dtype=z.dtype, device=z.device)
    mixed = mixed.index_add(-1, rows, z[..., cols] * values)
    return mixed @ u.T


def kaiming_coefficients_(values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The reference's draw, in place: ``nn.init.kaiming_normal_`` on the ``1 × k`` row (fan-in ``k``, gain
    ``√2``), i.e. ``N(0, 2/k)``."""
    with torch.no_grad():
        nn.init.kaiming_normal_(values[None, :], generator=generator)
    return values


class SvftLinear(AdaptedLinear):
    """A frozen ``nn.Linear`` plus SVFT's update: ``W' = W + U M Vᵀ``, ``M = sigmoid(g) · S`` sparse on ``Ω``.

    Buffers (all saved with the model, as the reference saves ``u`` and ``v`` as frozen parameters): ``svft_u``
    (``U``, ``out × n``) and ``svft_v`` (``Vᵀ``, ``n × in``), since an SVD recomputed elsewhere may flip the
    signs of singular pairs, which changes what an off-diagonal coefficient means; ``svft_rows``, ``svft_cols``
    (``Ω``: a random pattern must survive a reload). Parameters: ``svft_s`` (``S``, ``k``) and, with ``gate = True`` (the reference),
    ``svft_gate`` (``g``, one value, 0 at the start). The forward stays factorized (:func:`svft_update`); a
    merge forms ``ΔW`` (:func:`svft_delta`).
    """

    def __init__(
        self, base: nn.Linear, pattern: Pattern = "banded", off_diag: int = 0, rank: int | None = None,
        init: str = "kaiming", gate: bool = True, generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(base)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r} (known: {', '.join(INITS)})")
        device = base.weight.device
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        u, _s, v = singular_vectors(base.weight, rank)
        rows, cols = pattern_indices(pattern, u, v, off_diag, generator)
        self.register_buffer("svft_u", u.to(device=device, dtype=dtype))
        self.register_buffer("svft_v", v.to(device=device, dtype=dtype))
        self.register_buffer("svft_rows", rows.to(device))
        self.register_buffer("svft_cols", cols.to(device))
        values = torch.zeros(rows.shape[0], dtype=dtype)
        if init == "kaiming":
            kaiming_coefficients_(values, generator)
        self.svft_s = nn.Parameter(values.to(device))
        self.svft_gate = nn.Parameter(torch.zeros(1, device=device, dtype=dtype)) if gate else None
        self.pattern, self.off_diag, self.init = str(pattern), int(off_diag), init

    @property
    def n(self) -> int:
        """How many singular triplets the layer uses."""
        return self.svft_u.shape[1]

    def coefficients(self) -> torch.Tensor:
        """The trainable entries of ``M``: ``sigmoid(g) · S`` (the reference's gate), or ``S`` without a gate."""
        if self.svft_gate is None:
            return self.svft_s
        return self.svft_s * torch.sigmoid(self.svft_gate)

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        params = {"svft_s": self.svft_s}
        if self.svft_gate is not None:
            params["svft_gate"] = self.svft_gate
        return params

    def describe(self) -> dict[str, Any]:
        return {"kind": "svft", "pattern": self.pattern, "off_diag": self.off_diag, "n": self.n,
                "coefficients": int(self.svft_s.shape[0]), "gate": self.svft_gate is not None}

    def delta_weight(self) -> torch.Tensor:
        """``ΔW = U M Vᵀ`` in the base weight's dtype."""
        delta = svft_delta(self.svft_u, self.svft_v, self.svft_rows, self.svft_cols, self.coefficients())
        return delta.to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        update = svft_update(x, self.svft_u, self.svft_v, self.svft_rows, self.svft_cols, self.coefficients())
        return result + update.to(result.dtype)


def svft_linear(
    linear: nn.Linear, pattern: Pattern = "banded", off_diag: int = 0, rank: int | None = None,
    init: str = "kaiming", gate: bool = True, generator: torch.Generator | None = None,
) -> SvftLinear:
    """Wrap one ``nn.Linear`` as an SVFT adapter (``init = "zeros"``: the layer computes what ``linear`` computed)."""
    return SvftLinear(linear, pattern, off_diag, rank, init, gate, generator)


def trainable_values(n: int, off_diag: int, gate: bool = True) -> int:
    """How many values SVFT trains on one layer: ``k`` coefficients plus the gate."""
    return coefficient_count(n, off_diag) + int(gate)


def kaiming_std(k: int) -> float:
    """The standard deviation of the reference's draw of ``k`` coefficients, ``√(2/k)``."""
    return math.sqrt(2.0 / k)
