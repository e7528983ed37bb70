"""OFTv2's orthogonal adapter as plain functions and one layer, usable on any ``nn.Linear`` without the engine.

Notation (Qiu, Liu, Weller & Schölkopf, 2025, "Orthogonal Finetuning Made
Scalable"; the layout of Hugging Face PEFT's ``peft.tuners.oft``, whose OFT
layer has OFTv2's input-centric forward and Cayley–Neumann option): a linear layer computes ``y = x W0ᵀ + bias`` with the frozen
``W0`` of shape ``(out, in)``. Orthogonal finetuning (OFT) keeps ``W0`` and
learns an orthogonal ``R`` (``in × in``) acting on the *input* side, so that
the neurons' pairwise angles (the hyperspherical energy) are preserved. ``R``
is block-diagonal, ``R = diag(R_1, …, R_r)`` with ``r = in / b`` blocks of
size ``b`` (PEFT's ``oft_block_size``), each block ``R_i`` the Cayley transform
of a skew-symmetric ``Q_i`` whose ``b(b−1)/2`` strictly upper-triangular
entries are the trainable ``θ_i`` (PEFT's ``oft_R.weight``, shape
``(r, b(b−1)/2)``; one shared block with ``block_share``):

    skew-symmetric     Q_i = U(θ_i) − U(θ_i)ᵀ          (U: θ_i on the strict upper triangle, row-major)
    Cayley (Sec. 3.1)  R_i = (I + Q_i)(I − Q_i)⁻¹      (PEFT ``use_cayley_neumann=False`` computes
                                                       (I − Q_i)(I + Q_i)⁻¹, the same map of −Q_i)
    Cayley–Neumann     R_i ≈ (I + Q_i) Σ_{k=0}^{m−1} Q_iᵏ = I + 2 Σ_{k=1}^{m−1} Q_iᵏ + Q_iᵐ
                       (Sec. 3.3: the inverse (I − Q)⁻¹ replaced by its truncated Neumann series,
                        the paper's k = m − 1;
                        PEFT ``use_cayley_neumann=True``, ``num_cayley_neumann_terms`` = n gives m = n − 1,
                        except that PEFT always keeps up to Q³ once n ≥ 3, so m = max(n − 1, 3); n = 2 gives
                        I + 2Q, n = 1 gives I)

(PEFT's exact branch and its Neumann branch are thus of opposite orientation, ``(I − Q)(I + Q)⁻¹``
against ``(I + Q)(I − Q)⁻¹``; the paper writes the second for both. We follow PEFT in each, so a PEFT
adapter loads with the same meaning; both start at ``R = I`` and either is a valid parameterization.)

    weight-centric OFT (Eq. 1)   W' = W0 Rᵀ,   y = x W'ᵀ + bias       (a (out × in)·(in × in) matrix product)
    input-centric OFTv2 (Eq. 2)  y = (x R) W0ᵀ + bias                (block matrix-vector products on x)

(the paper writes ``z = W0ᵀ Rᵀ x`` for a column ``x`` and ``W0`` of shape ``(in, out)``; for a row ``x``
and ``nn.Linear``'s ``(out, in)`` weight that is ``y = x R W0ᵀ``, the same ``R``)

The two give the same ``y``; OFTv2's point is that the second never forms
``W0 Rᵀ`` (cost ``O(out · in · b)`` per step against ``O(tokens · in · b)``
for the input rotation, and no second ``out × in`` weight in memory). ``θ = 0``
gives ``R = I``: the adapted layer starts as the base layer (PEFT's
``init_weights=True``).

Not implemented: PEFT's ``coft`` (constrained OFT, a projection of ``θ`` after
each step), the multiplicative ``module_dropout``, and the quantized (QOFT)
base layers of the paper's Sec. 4.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import AdaptedLinear

#: How the adapted layer computes its output: OFTv2's input rotation or OFT's rotated weight.
Form = Literal["input", "weight"]
FORMS = ("input", "weight")


def skew_symmetric(theta: torch.Tensor, block_size: int) -> torch.Tensor:
    """``Q = U(θ) − U(θ)ᵀ`` for each row of ``θ`` (``(blocks, b(b−1)/2)``): ``(blocks, b, b)``.

    ``U(θ)`` puts ``θ`` on the strict upper triangle in ``torch.triu_indices``
    order (row-major), as PEFT's ``OFTRotationModule._pytorch_skew_symmetric``.
    """
    blocks, n = theta.shape
    if n != block_size * (block_size - 1) // 2:
        raise ValueError(f"θ has {n} entries per block; a block of size {block_size} has {block_size * (block_size - 1) // 2}")
    rows, cols = torch.triu_indices(block_size, block_size, 1, device=theta.device)
    upper = theta.new_zeros(blocks, block_size, block_size)
    upper[:, rows, cols] = theta
    return upper - upper.transpose(-2, -1)


def cayley_neumann(q: torch.Tensor, terms: int = 5) -> torch.Tensor:
    """The Cayley–Neumann parameterization (Sec. 3.3): ``R ≈ I + 2 Σ_{k=1}^{m−1} Qᵏ + Qᵐ``, ``Q`` skew ``(…, b, b)``.

    ``terms`` is PEFT's ``num_cayley_neumann_terms`` (default 5): ``1`` gives
    ``I``, ``2`` gives ``I + 2Q``, ``n ≥ 3`` gives ``m = max(n − 1, 3)`` (PEFT's
    loop keeps ``Q²`` and the last power ``Qᵐ`` whatever ``n``, so ``n = 3`` and
    ``n = 4`` coincide). It is ``(I + Q)`` times the first ``m`` terms of the
    Neumann series of ``(I − Q)⁻¹``, and exactly ``RᵀR = (I − Qᵐ)(I − (−Q)ᵐ)``:
    off orthogonal by ``2Qᵐ`` for even ``m`` (PEFT's default, 5 terms, ``m = 4``) and by only ``Q²ᵐ`` for odd
    ``m`` (3, 4 or 6 terms).
    """
    if terms < 1:
        raise ValueError(f"the Neumann series needs at least one term, got {terms}")
    eye = torch.eye(q.shape[-1], device=q.device, dtype=q.dtype).expand_as(q)
    if terms == 1:
        return eye.clone()
    r = eye + 2.0 * q
    if terms == 2:
        return r
    power = q @ q
    r = r + 2.0 * power
    for _ in range(3, terms - 1):
        power = power @ q
        r = r + 2.0 * power
    return r + power @ q


def cayley(q: torch.Tensor) -> torch.Tensor:
    """The exact Cayley transform as PEFT computes it (``use_cayley_neumann=False``): ``R = (I − Q)(I + Q)⁻¹``.

    Solved as ``X (I + Q) = I − Q`` (one linear solve per block, no explicit
    inverse); orthogonal for every skew-symmetric ``Q``.
    """
    eye = torch.eye(q.shape[-1], device=q.device, dtype=q.dtype).expand_as(q)
    return torch.linalg.solve(eye + q, eye - q, left=False)


def rotation_blocks(theta: torch.Tensor, block_size: int, neumann: bool = True, terms: int = 5) -> torch.Tensor:
    """The orthogonal blocks ``R_i`` (``(blocks, b, b)``) from the trainable ``θ`` (``(blocks, b(b−1)/2)``)."""
    q = skew_symmetric(theta, block_size)
    return cayley_neumann(q, terms) if neumann else cayley(q)


def block_diagonal(blocks: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """``diag(R_1, …, R_r)``; one block (``block_share``) is repeated ``count`` times."""
    if count is not None and blocks.shape[0] == 1:
        blocks = blocks.expand(count, -1, -1)
    return torch.block_diag(*blocks.unbind(0))


def rotate_input(x: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """OFTv2's input-centric step (Sec. 3.2, Eq. 2): ``x R`` computed block by block, ``(x R)_i = x_i R_i``.

    ``x`` is ``(…, in)``, ``blocks`` ``(r, b, b)`` with ``r · b = in`` (or one
    shared block); no ``in × in`` matrix and no ``out × in`` product is formed.
    """
    count, b, _ = blocks.shape
    chunks = x.shape[-1] // b
    if count == 1 and chunks != 1:
        blocks = blocks.expand(chunks, -1, -1)
    elif count != chunks or chunks * b != x.shape[-1]:
        raise ValueError(f"{count} blocks of size {b} do not fit an input of width {x.shape[-1]}")
    rotated = torch.einsum("...rk,rkc->...rc", x.reshape(*x.shape[:-1], chunks, b), blocks)
    return rotated.reshape(x.shape)


def rotated_weight(weight: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Weight-centric OFT (Sec. 3.2, Eq. 1): ``W' = W0 Rᵀ`` (``R`` the full ``in × in`` block-diagonal matrix), in ``R``'s dtype."""
    return (rotation @ weight.to(rotation.dtype).t()).t()


def check_block_size(block_size: int, in_features: int) -> int:
    """The number of blocks ``r = in / b``; ``ValueError`` where ``b`` does not divide ``in``.

    (PEFT silently moves ``b`` to the nearest divisor with a warning; a plan
    here says exactly what it trains, so it is an error instead.)
    """
    if block_size < 2:
        raise ValueError(f"the block size must be >= 2 (a 1×1 rotation is the identity), got {block_size}")
    if in_features % block_size:
        raise ValueError(f"the block size {block_size} must divide in_features = {in_features}")
    return in_features // block_size


def trainable_values(block_size: int, in_features: int, block_share: bool = False) -> int:
    """How many values OFT trains on one layer: ``r · b(b−1)/2 = in (b−1)/2`` (``b(b−1)/2`` when shared)."""
    count = check_block_size(block_size, in_features)
    return (1 if block_share else count) * block_size * (block_size - 1) // 2


class OFTLinear(AdaptedLinear):
    """A frozen ``nn.Linear`` rotated on its input side by a block-diagonal orthogonal ``R(θ)``; ``θ = 0`` at the start.

    ``oft_R`` is ``θ`` (PEFT's ``oft_R.weight``): ``(r, b(b−1)/2)``, or
    ``(1, b(b−1)/2)`` with ``block_share``. ``form = "input"`` is OFTv2's
    forward, ``base(x R)``; ``form = "weight"`` forms ``W0 Rᵀ`` and does one
    matmul (the original OFT), the same function at a different cost. Both
    merge to ``W0 Rᵀ``. Half-precision layers keep ``θ`` in float32 and rotate
    the input in float32, as PEFT does.
    """

    def __init__(
        self,
        base: nn.Linear,
        block_size: int = 32,
        neumann: bool = True,
        terms: int = 5,
        block_share: bool = False,
        form: Form = "input",
    ) -> None:
        super().__init__(base)
        count = check_block_size(block_size, base.in_features)
        if terms < 1:
            raise ValueError(f"the Neumann series needs at least one term, got {terms}")
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r} (known: {', '.join(FORMS)})")
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        n = block_size * (block_size - 1) // 2
        self.oft_R = nn.Parameter(torch.zeros(1 if block_share else count, n, device=base.weight.device, dtype=dtype))
        self.block_size = int(block_size)
        self.blocks = count
        self.neumann = bool(neumann)
        self.terms = int(terms)
        self.block_share = bool(block_share)
        self.form: str = form

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        return {"oft_R": self.oft_R}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "oft",
            "block_size": self.block_size,
            "neumann": self.neumann,
            "terms": self.terms,
            "block_share": self.block_share,
        }

    def rotation_blocks(self) -> torch.Tensor:
        """The blocks ``R_i`` (``(r, b, b)``, or one shared block) in ``θ``'s dtype."""
        return rotation_blocks(self.oft_R, self.block_size, self.neumann, self.terms)

    def rotation(self) -> torch.Tensor:
        """The full ``in × in`` block-diagonal ``R`` (PEFT's ``get_delta_weight``)."""
        return block_diagonal(self.rotation_blocks(), self.blocks)

    def adapted_weight(self) -> torch.Tensor:
        """``W' = W0 Rᵀ`` in the base weight's dtype (what merging writes)."""
        return rotated_weight(self.base.weight, self.rotation()).to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        if self.form == "weight":
            weight = rotated_weight(self.base.weight, self.rotation())
            bias = self.base.bias
            out = F.linear(x.to(weight.dtype), weight, None if bias is None else bias.to(weight.dtype))
            return out.to(x.dtype)
        rotated = rotate_input(x.to(self.oft_R.dtype), self.rotation_blocks())
        return self.base(rotated.to(x.dtype))


def oft_linear(
    linear: nn.Linear,
    block_size: int = 32,
    neumann: bool = True,
    terms: int = 5,
    block_share: bool = False,
    form: Form = "input",
) -> OFTLinear:
    """Wrap one ``nn.Linear`` as an OFT adapter (``θ = 0``: the layer computes what ``linear`` computed)."""
    return OFTLinear(linear, block_size, neumann, terms, block_share, form)


def orthogonality_error(blocks: torch.Tensor) -> torch.Tensor:
    """``max_i ‖R_iᵀ R_i − I‖_F``: zero for the exact Cayley; for the Neumann truncation see :func:`cayley_neumann`."""
    eye = torch.eye(blocks.shape[-1], device=blocks.device, dtype=blocks.dtype)
    return torch.linalg.matrix_norm(blocks.transpose(-2, -1) @ blocks - eye).max()
