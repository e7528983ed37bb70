"""qGOFT's (quasi-)Givens adapter as plain functions and one layer, usable on any ``nn.Linear`` without the engine.

Notation (Ma, Chu, Yang, Lin, Gao & Zhao, ICML 2024, "Parameter Efficient
Quasi-Orthogonal Fine-Tuning via Givens Rotation"). Orthogonal fine-tuning
(OFT) keeps the frozen weight ``W0`` and learns an orthogonal ``R`` (``d × d``)
that rotates it, ``W' = R W0`` with ``W0`` of shape ``(d, n)`` and ``z = W'ᵀ x``
(OFT's and the paper's convention: ``d`` is the layer's *input* width). For
``nn.Linear``'s ``(out, in)`` weight and a row ``x`` that is

    y = (x R) W0ᵀ + bias,        W'_linear = W0 Rᵀ                      (``side = "input"``, the default)

qGOFT builds ``R`` from Givens rotations instead of a dense Cayley matrix.
A Givens rotation ``G(i, j; θ)`` is the identity but for the ``2 × 2`` block on
rows/columns ``(i, j)``:

    [G_ii G_ij]   [cos θ  −sin θ]
    [G_ji G_jj] = [sin θ   cos θ]

Rotations on disjoint planes commute and form one *parallel layer*. The
paper's construction (Sec. 3.2: ``d − 1`` rotations, O(d) parameters, enough to
turn any direction into any other, hence its "arbitrary transformation in
SO(d)") arranges them as a binary reduction tree of ``⌈log₂ d⌉`` parallel
layers: layer ``l`` (stride ``s = 2^l``) rotates the planes ``(i, i + s)`` for
``i ≡ 0 (mod 2s)``, ``i + s < d`` (:func:`tree_pairs`; ``d/2 + d/4 + … = d − 1``
rotations). ``layout = "butterfly"`` uses every plane ``(i, i ⊕ s)`` in each
layer instead (``(d/2)·⌈log₂ d⌉`` rotations, the FFT/BOFT pattern; an extension,
not the paper's count). With the layers ``G_1 … G_L``:

    R = G_1 G_2 ⋯ G_L,           x R = ((x G_1) G_2) ⋯ G_L               (:func:`apply_givens`)

quasi-Givens (qGOFT, Sec. 3.3): each ``2 × 2`` block becomes four free entries
``B = [[a, b], [c, e]]`` (started at the identity), so every rotation may also
change the norms of its two coordinates and their relative angle; the blocks
are kept close to orthogonal by the soft regularizer

    L_orth = λ Σ_layers Σ_blocks ‖BᵀB − I‖_F²                             (:func:`orthogonality_penalty`)

added to the task loss (the ``regularize`` hook). ``quasi = False`` is the
paper's GOFT: one angle ``θ`` per rotation, ``R`` exactly orthogonal, no
regularizer needed.

``side = "output"`` rotates the output instead (``y = (x W0ᵀ) R + bias``,
``W'_linear = Rᵀ W0``), for the reading ``W' = R W0`` with ``W0`` as
``(out, in)``. Both start at ``R = I``: the adapted layer computes the base
layer's output (all angles 0, all blocks the identity).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

from paperkit import AdaptedLinear

Layout = Literal["tree", "butterfly"]
LAYOUTS = ("tree", "butterfly")
SIDES = ("input", "output")


def tree_pairs(d: int) -> list[tuple[list[int], list[int]]]:
    """The paper's ``d − 1`` Givens planes as ``⌈log₂ d⌉`` parallel layers: ``[(I_l, J_l), …]``, plane ``(I_l[k], J_l[k])``.

    Layer ``l`` (stride ``s = 2^l``) pairs ``i`` with ``i + s`` for every
    ``i ≡ 0 (mod 2s)`` with ``i + s < d``; coordinate 0 is the root, so a vector
    is reduced to a multiple of ``e_0`` by a suitable choice of angles.
    """
    if d < 2:
        raise ValueError(f"a Givens rotation needs a width of at least 2, got {d}")
    layers, s = [], 1
    while s < d:
        i = list(range(0, d - s, 2 * s))
        layers.append((i, [k + s for k in i]))
        s *= 2
    return layers


def butterfly_pairs(d: int) -> list[tuple[list[int], list[int]]]:
    """Every plane ``(i, i ⊕ s)`` with ``i < i ⊕ s < d`` in layer ``l`` (``s = 2^l``): the butterfly (FFT) pattern."""
    if d < 2:
        raise ValueError(f"a Givens rotation needs a width of at least 2, got {d}")
    layers, s = [], 1
    while s < d:
        i = [k for k in range(d) if not k & s and (k | s) < d]
        layers.append((i, [k | s for k in i]))
        s *= 2
    return layers


def givens_pairs(d: int, layout: Layout = "tree") -> list[tuple[list[int], list[int]]]:
    """The parallel layers of planes for a width ``d`` (see :func:`tree_pairs`, :func:`butterfly_pairs`)."""
    if layout == "tree":
        return tree_pairs(d)
    if layout == "butterfly":
        return butterfly_pairs(d)
    raise ValueError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")


def rotation_count(d: int, layout: Layout = "tree") -> int:
    """How many Givens rotations the layout uses: ``d − 1`` for the tree."""
    return sum(len(i) for i, _j in givens_pairs(d, layout))


def givens_blocks(theta: torch.Tensor) -> torch.Tensor:
    """Exact Givens blocks ``[[cos θ, −sin θ], [sin θ, cos θ]]`` (``(P, 2, 2)``) from angles ``θ`` (``(P,)``)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def identity_blocks(count: int, dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """``count`` identity ``2 × 2`` blocks: the quasi-Givens start, ``R = I``."""
    return torch.eye(2, dtype=dtype, device=device).repeat(count, 1, 1)


def apply_givens(x: torch.Tensor, blocks: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``x R`` for ``R = G_1 ⋯ G_L`` (rows of ``x``, last dimension ``d``), layer by layer, never forming ``R``.

    ``blocks`` holds every rotation's ``[[G_ii, G_ij], [G_ji, G_jj]]`` in layer
    order (``(P, 2, 2)``); for the plane ``(i, j)``: ``x_i ← a x_i + c x_j``,
    ``x_j ← b x_i + e x_j`` (``x G`` with ``B = [[a, b], [c, e]]``).
    """
    start = 0
    for i, j in pairs:
        b = blocks[start : start + i.numel()]
        start += i.numel()
        xi, xj = x.index_select(-1, i), x.index_select(-1, j)
        new_i = xi * b[:, 0, 0] + xj * b[:, 1, 0]
        new_j = xi * b[:, 0, 1] + xj * b[:, 1, 1]
        x = x.index_copy(-1, i, new_i).index_copy(-1, j, new_j)
    if start != blocks.shape[0]:
        raise ValueError(f"{blocks.shape[0]} blocks for {start} rotations")
    return x


def givens_matrix(d: int, i: int, j: int, block: torch.Tensor) -> torch.Tensor:
    """The explicit ``d × d`` matrix of one (quasi-)Givens rotation on the plane ``(i, j)``."""
    g = torch.eye(d, dtype=block.dtype, device=block.device)
    g[i, i], g[i, j], g[j, i], g[j, j] = block[0, 0], block[0, 1], block[1, 0], block[1, 1]
    return g


def orthogonality_penalty(blocks: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """``Σ ‖BᵀB − I‖_F²`` over every ``2 × 2`` block of every tensor (Sec. 3.3's soft orthogonality), ``None`` if none."""
    total = None
    for b in blocks:
        eye = torch.eye(2, dtype=b.dtype, device=b.device)
        term = (b.transpose(-2, -1) @ b - eye).square().sum()
        total = term if total is None else total + term
    return total


class GivensLinear(AdaptedLinear):
    """A frozen ``nn.Linear`` rotated by ``R = G_1 ⋯ G_L``, a product of parallel layers of (quasi-)Givens rotations.

    ``quasi = True`` (qGOFT): ``qgoft_blocks`` (``(P, 2, 2)``, the identity at
    the start) holds each rotation's four free entries. ``quasi = False``
    (GOFT): ``qgoft_theta`` (``(P,)``, zero at the start) holds one angle per
    rotation. ``side = "input"`` computes ``base(x R)`` (input-centric: ``O(d)``
    work per token per layer, ``R`` never formed); ``side = "output"``
    computes ``base(x)`` minus its bias, rotated, plus the bias. Both merge to
    the explicit weight (:meth:`adapted_weight`).
    """

    def __init__(
        self, base: nn.Linear, quasi: bool = True, layout: Layout = "tree", side: str = "input"
    ) -> None:
        super().__init__(base)
        if side not in SIDES:
            raise ValueError(f"unknown side {side!r} (known: {', '.join(SIDES)})")
        d = base.in_features if side == "input" else base.out_features
        planes = givens_pairs(d, layout)
        count = sum(len(i) for i, _j in planes)
        device = base.weight.device
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        for k, (i, j) in enumerate(planes):
            self.register_buffer(f"_pairs_{k}_i", torch.tensor(i, dtype=torch.long, device=device), persistent=False)
            self.register_buffer(f"_pairs_{k}_j", torch.tensor(j, dtype=torch.long, device=device), persistent=False)
        self._layers = len(planes)
        self.width = d
        self.quasi = bool(quasi)
        self.layout: str = layout
        self.side = side
        self.rotations = count
        if self.quasi:
            self.qgoft_blocks = nn.Parameter(identity_blocks(count, dtype, device))
        else:
            self.qgoft_theta = nn.Parameter(torch.zeros(count, dtype=dtype, device=device))

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        return {"qgoft_blocks": self.qgoft_blocks} if self.quasi else {"qgoft_theta": self.qgoft_theta}

    def describe(self) -> dict[str, Any]:
        return {"kind": "qgoft", "quasi": self.quasi, "layout": self.layout, "side": self.side, "rotations": self.rotations}

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The planes of each parallel layer, as index tensors on the layer's device."""
        return [(getattr(self, f"_pairs_{k}_i"), getattr(self, f"_pairs_{k}_j")) for k in range(self._layers)]

    def blocks(self) -> torch.Tensor:
        """Every rotation's ``2 × 2`` block (``(P, 2, 2)``): the free entries, or the Givens blocks of the angles."""
        return self.qgoft_blocks if self.quasi else givens_blocks(self.qgoft_theta)

    def rotation(self) -> torch.Tensor:
        """The explicit ``d × d`` matrix ``R = G_1 ⋯ G_L`` (``I R``, layer by layer)."""
        b = self.blocks()
        return apply_givens(torch.eye(self.width, dtype=b.dtype, device=b.device), b, self.pairs())

    def adapted_weight(self) -> torch.Tensor:
        """``W0 Rᵀ`` (input side) or ``Rᵀ W0`` (output side), in the base weight's dtype (what merging writes)."""
        r = self.rotation()
        w = self.base.weight.to(r.dtype)
        out = w @ r.t() if self.side == "input" else r.t() @ w
        return out.to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        b = self.blocks()
        if self.side == "input":
            return self.base(apply_givens(x.to(b.dtype), b, self.pairs()).to(x.dtype))
        bias = self.base.bias
        y = nn.functional.linear(x, self.base.weight)
        y = apply_givens(y.to(b.dtype), b, self.pairs()).to(x.dtype)
        return y if bias is None else y + bias


def givens_linear(linear: nn.Linear, quasi: bool = True, layout: Layout = "tree", side: str = "input") -> GivensLinear:
    """Wrap one ``nn.Linear`` as a (q)GOFT adapter (``R = I``: the layer computes what ``linear`` computed)."""
    return GivensLinear(linear, quasi, layout, side)


def givens_layers(model: nn.Module) -> Iterable[tuple[str, GivensLinear]]:
    """Every :class:`GivensLinear` of ``model`` with its name."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, GivensLinear))


def model_penalty(model: nn.Module) -> torch.Tensor | None:
    """``Σ ‖BᵀB − I‖_F²`` over the quasi-Givens blocks of every adapted layer of ``model`` (``None`` if none)."""
    return orthogonality_penalty(m.qgoft_blocks for _n, m in givens_layers(model) if m.quasi)
