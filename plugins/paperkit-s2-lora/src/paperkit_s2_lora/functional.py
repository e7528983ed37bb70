"""S2-LoRA's update as plain functions and one adapter layer, usable on any ``nn.Linear`` without the engine.

Notation (Liu, Qin, Peng & Lee, 2024, "Sparsely Shared LoRA on Whisper for Child
Speech Recognition", Sec. "S2-LoRA"; PEFT's layout for the factors): a linear layer
computes ``y = x W'ᵀ + bias`` with ``W`` of shape ``(out, in)``. LoRA trains
``ΔW = B A`` per layer; AdaLoRA writes it in SVD form ``ΔW = P Λ Q`` with a learnable
diagonal of rank coefficients ``Λ``. S2-LoRA keeps AdaLoRA's rank coefficients but
shares the two factors across all adapted matrices ("the two low-rank decomposed
matrices are globally shared", abstract), so each matrix ``i`` keeps only its own
coefficient vector ``c_i`` (length ``r``), constrained to be sparse by an L1 penalty:

    ΔW_i = s · B diag(c_i) A                  A: (r, in), B: (out, r) shared; c_i: (r,) per matrix
    L    = L_task + λ Σ_i ‖c_i‖₁              (the sparsity constraint on the rank coefficients)

``s = alpha / r`` is LoRA's scaling (1 by default). Matrices of different shapes
cannot share one ``A`` and one ``B``: here each ``(out, in)`` shape group has its
own pair (:func:`shared_key`); on a transformer's attention projections (all
``d × d``) that is one pair for the whole model, as in the paper.

The forward stays factorized, ``y = base(x) + s · ((dropout(x) Aᵀ) ⊙ c_i) Bᵀ``, in
the order PEFT's VeRA computes ``λ_b ⊙ (((x Aᵀ) ⊙ λ_d) Bᵀ)``: S2-LoRA is VeRA's
structure with ``λ_b = 1``, ``λ_d = c_i``, but with trainable ``A`` and ``B`` (VeRA
freezes them at random values). The zero-product start (AdaLoRA's: ``c = 0``,
``A``, ``B`` small Gaussians; or LoRA's: ``B = 0``, ``c = 1``) makes the adapted
model compute what the base model computed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paperkit import AdaptedLinear, adapter_layers

#: The initializations: ``"adalora"`` (c = 0, A, B ~ N(0, std²); AdaLoRA's, whose rank coefficients S2-LoRA keeps)
#: and ``"lora"`` (A Kaiming-uniform, B = 0, c = 1; LoRA's).
INITS = ("adalora", "lora")


class SharedFactors(nn.Module):
    """The globally shared pair of one shape group: ``lora_A`` ``(r, in)`` and ``lora_B`` ``(out, r)``.

    Zeros until :func:`init_factors_` draws them; every :class:`S2LoRALinear` of the
    group multiplies its own coefficients between them.
    """

    def __init__(self, rank: int, in_features: int, out_features: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.lora_A = nn.Parameter(torch.zeros(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]


@torch.no_grad()
def init_factors_(factors: SharedFactors, init: str = "adalora", std: float = 0.02) -> SharedFactors:
    """Draw the shared factors (torch's global generator, as ``nn.init`` does).

    ``"adalora"``: ``A``, ``B`` ~ ``N(0, std²)`` (AdaLoRA's ``P``, ``Q``; PEFT
    ``AdaLoraLayer.reset_lora_parameters``, std 0.02). ``"lora"``: ``A``
    Kaiming-uniform (``a = √5``), ``B = 0`` (Hu et al., 2021; PEFT's LoRA default).
    """
    if init == "adalora":
        nn.init.normal_(factors.lora_A, mean=0.0, std=std)
        nn.init.normal_(factors.lora_B, mean=0.0, std=std)
    elif init == "lora":
        nn.init.kaiming_uniform_(factors.lora_A, a=math.sqrt(5))
        nn.init.zeros_(factors.lora_B)
    else:
        raise ValueError(f"unknown init {init!r} (known: {', '.join(INITS)})")
    return factors


def initial_coefficients(init: str, rank: int, device: Any = None, dtype: Any = None) -> torch.Tensor:
    """``c_i`` at the start: zeros for ``"adalora"`` (AdaLoRA's ``Λ = 0``), ones for ``"lora"`` (``B = 0`` instead)."""
    if init == "adalora":
        return torch.zeros(rank, device=device, dtype=dtype)
    if init == "lora":
        return torch.ones(rank, device=device, dtype=dtype)
    raise ValueError(f"unknown init {init!r} (known: {', '.join(INITS)})")


def shared_key(rank: int, in_features: int, out_features: int) -> str:
    """The shared-module key of a shape group: layers with the same ``(out, in)`` (and rank) share ``A`` and ``B``."""
    return f"s2-lora:{out_features}x{in_features}:r{rank}"


def s2_delta(lora_A: torch.Tensor, lora_B: torch.Tensor, coefficients: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
    """``ΔW = s · B diag(c) A`` (``out × in``) for one matrix's coefficient vector ``c``."""
    return scaling * ((lora_B * coefficients) @ lora_A)


def s2_update(
    x: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, coefficients: torch.Tensor, scaling: float = 1.0
) -> torch.Tensor:
    """``x ΔWᵀ`` without forming ``ΔW``: ``s · ((x Aᵀ) ⊙ c) Bᵀ`` (the order of PEFT's VeRA forward)."""
    return F.linear(coefficients * F.linear(x, lora_A), lora_B) * scaling


def l1_penalty(coefficients: Iterable[torch.Tensor], weight: float) -> torch.Tensor:
    """``λ Σ_i ‖c_i‖₁``: the sparsity constraint on every matrix's rank coefficients."""
    terms = [c.abs().sum() for c in coefficients]
    if not terms:
        return torch.zeros(())
    return weight * torch.stack(terms).sum()


class S2LoRALinear(AdaptedLinear):
    """A frozen ``nn.Linear`` plus ``s · B diag(c) A``: ``c`` (``s2_coefficients``) its own, ``A``, ``B`` shared.

    The layer is built with its coefficients; the factors come from
    :meth:`attach` (a :class:`SharedFactors` from :func:`paperkit.shared_module`,
    the same object for every layer of the shape group: the first layer owns it,
    so ``shared.lora_A`` / ``shared.lora_B`` appear once in the model).
    """

    def __init__(self, base: nn.Linear, rank: int, scaling: float = 1.0, dropout: float = 0.0, init: str = "adalora") -> None:
        super().__init__(base)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        device = base.weight.device
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        self.s2_coefficients = nn.Parameter(initial_coefficients(init, rank, device, dtype))
        self.scaling = float(scaling)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shared: SharedFactors

    def attach(self, factors: SharedFactors) -> S2LoRALinear:
        """Use ``factors`` as this layer's ``A`` and ``B`` (checked against the layer's shape and rank)."""
        want = (self.rank, self.in_features, self.out_features)
        have = (factors.rank, factors.lora_A.shape[1], factors.lora_B.shape[0])
        if want != have:
            raise ValueError(f"shared factors of (rank, in, out) = {have} do not fit a layer of {want}")
        self.use_shared("shared", factors)
        return self

    @property
    def rank(self) -> int:
        return self.s2_coefficients.shape[0]

    @property
    def owns_factors(self) -> bool:
        return "shared" in self._modules

    def describe(self) -> dict[str, Any]:
        return {"kind": "s2-lora", "rank": self.rank, "scaling": self.scaling, "owns_factors": self.owns_factors}

    def delta_weight(self) -> torch.Tensor:
        """``s · B diag(c) A`` in the base weight's dtype."""
        f = self.shared
        return s2_delta(f.lora_A, f.lora_B, self.s2_coefficients, self.scaling).to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        f = self.shared
        h = self.dropout(x.to(self.s2_coefficients.dtype))
        update = s2_update(h, f.lora_A, f.lora_B, self.s2_coefficients, self.scaling)
        return result + update.to(result.dtype)


def s2_layers(model: nn.Module) -> Iterator[tuple[str, S2LoRALinear]]:
    """Every S2-LoRA layer of ``model`` with its name."""
    for name, layer in adapter_layers(model):
        if isinstance(layer, S2LoRALinear):
            yield name, layer


def coefficients(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every adapted matrix's rank coefficients ``c_i`` by layer name."""
    return {name: layer.s2_coefficients for name, layer in s2_layers(model)}


@torch.no_grad()
def rank_allocation(model: nn.Module, threshold: float = 0.1) -> dict[str, int]:
    """The learned rank of each matrix: how many ``|c_ij|`` reach ``threshold`` × the model's largest ``|c|``.

    The paper reads the sparse coefficients as a rank distribution over the
    matrices (and compares it with AdaLoRA's allocation); a relative threshold
    makes the count independent of the coefficients' overall scale. All zero
    coefficients give rank 0 everywhere.
    """
    coeffs = coefficients(model)
    if not coeffs:
        return {}
    largest = max(float(c.abs().max()) for c in coeffs.values())
    if largest == 0.0:
        return {name: 0 for name in coeffs}
    cut = threshold * largest
    return {name: int((c.abs() >= cut).sum()) for name, c in coeffs.items()}


def trainable_values(model: nn.Module) -> int:
    """How many values S2-LoRA trains in ``model``: one ``A``, ``B`` pair per shape group plus ``r`` per matrix."""
    total = 0
    for _name, layer in s2_layers(model):
        total += layer.rank
        if layer.owns_factors:
            total += layer.shared.lora_A.numel() + layer.shared.lora_B.numel()
    return total


def lora_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters as per-layer LoRA factors, PEFT-named: ``lora_A = diag(c_i) A``, ``lora_B = B``.

    ``s · B (diag(c_i) A)`` is the same update, so PEFT's LoRA layer with
    ``lora_alpha = s · r`` computes what the S2-LoRA layer computes (up to
    float rounding: PEFT multiplies ``c`` into ``A`` before the matmul).
    """
    tensors = {}
    for name, layer in s2_layers(model):
        f = layer.shared
        tensors[f"base_model.model.{name}.lora_A.weight"] = (layer.s2_coefficients[:, None] * f.lora_A).detach().cpu()
        tensors[f"base_model.model.{name}.lora_B.weight"] = f.lora_B.detach().cpu().clone()
    return tensors
