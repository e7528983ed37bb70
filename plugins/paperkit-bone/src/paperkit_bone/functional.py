"""Bone's block updates as plain functions and one adapter layer, usable on any ``nn.Linear`` without the engine.

Notation (Kang, 2024, "Bone: Block Affine Transformation as Parameter Efficient
Fine-tuning Methods for Large Language Models", method section; PEFT's layout): a
linear layer computes ``y = x W'ᵀ + bias`` with ``W`` of shape ``(out, in)``.
Bone cuts ``W`` into square blocks of size ``r × r`` (``r``, the paper's block
size ``b``, PEFT's ``r``), block ``W_ij`` holding rows ``i·r … (i+1)·r`` and
columns ``j·r … (j+1)·r``, and trains one ``r × r`` matrix per block row,
``B_i`` (``out / r`` of them, ``out · r`` values in all), initialized to zero:

    Bone, "Weight Guide" (the block affine update; reference code JL-er/Bone "Bone-col"; PEFT ``init_weights="bat"``):
        ΔW_ij = W_ij B_i + B_i            W' = W + ΔW

every block of a row shares ``B_i``, and the frozen block ``W_ij`` itself
multiplies it: the original weights *guide* the trainable matrix throughout
training, and its gradient, ``Σ_j (W_ijᵀ + I) G_ij`` with ``G = ∂L/∂W'``, is
non-zero at the first step although ``B = 0``. Without the guide (the
structure the paper's later revisions, DiSHA/MiSS, call "Bone" while renaming
the guided one "Bat"; PEFT's default ``init_weights=True``; our ablation of
the guide) one ``r × out`` matrix ``B`` is shared across the column blocks:

    shared (no Weight Guide):
        ΔW[:, j·r:(j+1)·r] = Bᵀ  for every column block j    (a last partial block gets Bᵀ's first columns)

whose forward needs no ``ΔW`` at all: ``x ΔWᵀ = (Σ_j x_j) B`` with ``x_j``
the ``r``-wide chunks of ``x`` (zero-padded to a multiple of ``r``).

Both start at the base model (``B = 0`` gives ``ΔW = 0``) with no
initialization to compute, which is the paper's point against PiSSA-style
initializations.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import AdaptedLinear

#: The two update structures: ``"affine"`` is the paper's Bone (Weight Guide), ``"shared"`` its ablation.
STRUCTURES = ("affine", "shared")
Structure = Literal["affine", "shared"]

#: PEFT's ``MissConfig.init_weights`` for each structure (its "bat" is this paper's Bone).
PEFT_INIT_WEIGHTS: dict[str, Any] = {"affine": "bat", "shared": True}


def block_shape(structure: str, rank: int, in_features: int, out_features: int) -> tuple[int, ...]:
    """Shape of the trainable matrix ``B``: ``(out/r, r, r)`` (one ``B_i`` per block row) or ``(r, out)`` (shared).

    Raises ``ValueError`` where the layer cannot be cut that way: the affine
    structure needs ``r`` to divide both ``in`` and ``out``; the shared one
    needs ``r <= in`` (PEFT's checks).
    """
    if rank < 1:
        raise ValueError(f"the block size r must be >= 1, got {rank}")
    if structure == "affine":
        if in_features % rank or out_features % rank:
            raise ValueError(
                f"the affine (Weight Guide) structure cuts the weight into r×r blocks: r = {rank} must divide "
                f"in_features = {in_features} and out_features = {out_features}"
            )
        return (out_features // rank, rank, rank)
    if structure == "shared":
        if rank > in_features:
            raise ValueError(f"r = {rank} must be <= in_features = {in_features}")
        return (rank, out_features)
    raise ValueError(f"unknown structure {structure!r} (known: {', '.join(STRUCTURES)})")


def affine_delta(weight: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """``ΔW`` with blocks ``ΔW_ij = W_ij B_i + B_i`` (the paper's block affine update with its Weight Guide).

    ``weight`` is the frozen ``W`` (``out × in``), ``block`` the trainable
    ``B`` of shape ``(out/r, r, r)``; the result has ``weight``'s shape and
    ``block``'s dtype (``W`` is cast to it, as PEFT does).
    """
    groups, r, r2 = block.shape
    out_features, in_features = weight.shape
    if r != r2 or groups * r != out_features or in_features % r:
        raise ValueError(f"block of shape {tuple(block.shape)} does not fit a weight of shape {tuple(weight.shape)}")
    w = weight.to(block.dtype)
    # (out/r, r, in/r, r) -> (in/r, out/r, r, r): blocks[j, i] = W_ij; B (out/r, r, r) broadcasts over j
    blocks = w.reshape(groups, r, in_features // r, r).permute(2, 0, 1, 3)
    updated = blocks @ block + block
    return updated.permute(1, 2, 0, 3).reshape(out_features, in_features)


def shared_delta(block: torch.Tensor, in_features: int) -> torch.Tensor:
    """``ΔW`` (``out × in``) with ``Bᵀ`` repeated over the column blocks (the shared structure, no Weight Guide).

    ``block`` is ``B`` of shape ``(r, out)``; a last column block narrower than
    ``r`` (``in`` not a multiple of ``r``) receives the first columns of ``Bᵀ``.
    """
    r, _out = block.shape
    repeats = -(-in_features // r)
    return block.t().repeat(1, repeats)[:, :in_features]


def shared_update(x: torch.Tensor, block: torch.Tensor, dropout: nn.Module | None = None) -> torch.Tensor:
    """``x ΔWᵀ`` for the shared structure without forming ``ΔW``: ``(Σ_j x_j) B`` over the ``r``-wide chunks ``x_j``.

    ``x`` is zero-padded to a multiple of ``r``, cast to ``block``'s dtype, then
    passed through ``dropout`` (PEFT's order, so that seeded dropout draws the
    same mask).
    """
    r = block.shape[0]
    if x.shape[-1] % r:
        x = F.pad(x, (0, r - x.shape[-1] % r))
    x = x.to(block.dtype)
    if dropout is not None:
        x = dropout(x)
    return x.reshape(*x.shape[:-1], x.shape[-1] // r, r).sum(dim=-2) @ block


def block_delta(structure: str, weight: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """``ΔW`` of either structure, in ``block``'s dtype."""
    if structure == "affine":
        return affine_delta(weight, block)
    if structure == "shared":
        return shared_delta(block, weight.shape[1]).to(block.dtype)
    raise ValueError(f"unknown structure {structure!r} (known: {', '.join(STRUCTURES)})")


class BoneLinear(AdaptedLinear):
    """A frozen ``nn.Linear`` plus Bone's block update: ``W' = W + ΔW(B)``, ``B`` trainable, zero at the start.

    ``structure = "affine"`` is the paper's Bone (``ΔW_ij = W_ij B_i + B_i``);
    the forward forms ``W'`` and does one matmul, as PEFT's ``"bat"`` mode
    does. ``structure = "shared"`` is the ablation without the Weight Guide;
    its forward stays factorized (``base(x) + (Σ_j dropout(x)_j) B``) and
    dropout acts on the adapter's input, as in PEFT (PEFT's ``"bat"`` mode has
    no dropout, hence none here either). ``B`` is ``bone_block``, stored as
    PEFT's ``miss_block`` is: ``(out/r, r, r)`` or ``(r, out)``.
    """

    def __init__(self, base: nn.Linear, rank: int, structure: Structure = "affine", dropout: float = 0.0) -> None:
        super().__init__(base)
        shape = block_shape(structure, rank, base.in_features, base.out_features)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if dropout > 0 and structure == "affine":
            raise ValueError("dropout acts on the shared structure's input only; the affine update forms W' (PEFT's 'bat')")
        device = base.weight.device
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        self.bone_block = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
        self.rank = int(rank)
        self.structure: str = structure
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        return {"bone_block": self.bone_block}

    def describe(self) -> dict[str, Any]:
        return {"kind": "bone", "structure": self.structure, "rank": self.rank}

    def delta_weight(self) -> torch.Tensor:
        """``ΔW`` in the base weight's dtype (what merging adds to the base weight)."""
        return block_delta(self.structure, self.base.weight, self.bone_block).to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        if self.structure == "affine":
            weight = self.base.weight + affine_delta(self.base.weight, self.bone_block)
            bias = self.base.bias
            return F.linear(x.to(weight.dtype), weight, None if bias is None else bias.to(weight.dtype)).to(x.dtype)
        result = self.base(x)
        update = shared_update(x, self.bone_block, self.dropout)
        return result + update.to(result.dtype)


def bone_linear(linear: nn.Linear, rank: int, structure: Structure = "affine", dropout: float = 0.0) -> BoneLinear:
    """Wrap one ``nn.Linear`` as a Bone adapter (``B = 0``: the layer computes what ``linear`` computed)."""
    return BoneLinear(linear, rank, structure, dropout)


def trainable_values(structure: str, rank: int, in_features: int, out_features: int) -> int:
    """How many values Bone trains on one layer (``out · r`` for the affine structure, ``r · out`` shared)."""
    count = 1
    for size in block_shape(structure, rank, in_features, out_features):
        count *= size
    return count
