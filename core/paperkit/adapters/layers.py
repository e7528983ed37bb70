"""Adapter layers: a frozen ``nn.Linear`` whose weight a method re-parameterizes.

:class:`AdaptedLinear` is the general form, ``W' = f(W0, θ)``: a subclass
says what the effective weight is, either as an update added to the frozen
weight (:meth:`~AdaptedLinear.delta_weight`, ``W' = W0 + ΔW(θ)``: low-rank,
sparse, spectral, block-affine, tensor-train factors) or as the whole weight
(:meth:`~AdaptedLinear.adapted_weight`, ``W' = f(W0, θ)``: orthogonal
rotations, re-scaled norms, quantizers). The class supplies everything else
every adapter must get right: the base layer stays frozen and untouched,
``merge()`` folds ``W'`` into the base weight and ``unmerge()`` restores the
base weight bit for bit (from a copy, never by subtraction), a state dict
always holds the *unmerged* base weight whatever the merge state, and
half-precision layers keep their adapter parameters in float32 (PEFT's
``autocast_adapter_dtype``).

:class:`LowRankLinear` is the LoRA case with its cheaper factorized forward.

Why not ``torch.nn.utils.parametrize``: a parametrization renames the weight
in the state dict (``parametrizations.weight.original``), so an adapted
model's keys no longer line up one to one with the base model's, with PEFT's,
or with a checkpoint written before the adapter was added; and it recomputes
the weight even where a factorized forward is cheaper. The wrapper keeps
``base.weight`` where it was.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class AdaptedLinear(nn.Module):
    """A frozen ``nn.Linear`` whose effective weight is ``W' = f(W0, θ)``; ``θ`` are the adapter's parameters.

    Subclasses register their parameters (``θ``) on themselves and override
    :meth:`delta_weight` or :meth:`adapted_weight` (one of the two).
    Parameters shared by several layers (one tensor for a whole model) live in
    :func:`paperkit.adapters.shared_module` and are reached through
    :meth:`use_shared`.
    """

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"{type(self).__name__} wraps an nn.Linear, got {type(base).__name__}")
        self.base = base
        self.merged = False
        self._unmerged_weight: torch.Tensor | None
        self.register_buffer("_unmerged_weight", None, persistent=False)
        for p in base.parameters():
            p.requires_grad_(False)
        self.register_state_dict_post_hook(_unmerged_state_dict)
        self.register_load_state_dict_pre_hook(_unmerge_before_load)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.delta_weight is AdaptedLinear.delta_weight and cls.adapted_weight is AdaptedLinear.adapted_weight:
            raise TypeError(f"{cls.__name__} must define delta_weight() or adapted_weight()")

    # -- what a subclass says ------------------------------------------------------------
    def delta_weight(self) -> torch.Tensor:
        """``W' − W0`` in the base weight's dtype: what merging adds to the base weight."""
        return self.adapted_weight() - self.base.weight

    def adapted_weight(self) -> torch.Tensor:
        """The effective weight ``W'`` in the base weight's dtype, from the unmerged base weight."""
        return self.base.weight + self.delta_weight()

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters this layer trains, by name: all of its own but the base layer's (a shared module's
        parameters belong to the layer that owns it)."""
        return {name: p for name, p in self.named_parameters() if not name.startswith("base.")}

    def describe(self) -> dict[str, Any]:
        """What a saved adapter records about this layer (its kind and sizes), as JSON-able values."""
        return {"kind": type(self).__name__}

    # -- what every adapter shares -----------------------------------------------------
    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def use_shared(self, name: str, module: nn.Module) -> None:
        """Reach ``module`` (from :func:`paperkit.adapters.shared_module`) as ``self.<name>``.

        The first layer that uses a shared module owns it (registers it as a
        child); every later one refers to the same object without registering
        it, so its parameters appear once in the model, not once per layer.
        """
        if getattr(module, "_paperkit_owned", None) is None:
            module._paperkit_owned = True  # type: ignore[assignment]
            self.add_module(name, module)
        else:
            self.__dict__[name] = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        return F.linear(x, self.adapted_weight().to(x.dtype), self.base.bias)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ``W'`` into the base weight (the forward then costs one matmul); :meth:`unmerge` undoes it."""
        if self.merged:
            return
        weight = self.adapted_weight().to(self.base.weight.dtype)
        self._unmerged_weight = self.base.weight.detach().clone()
        self.base.weight.copy_(weight)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weight exactly as it was before :meth:`merge`."""
        if not self.merged:
            return
        assert self._unmerged_weight is not None
        self.base.weight.copy_(self._unmerged_weight)
        self._unmerged_weight = None
        self.merged = False

    def extra_repr(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.describe().items() if k != "kind")
        return f"{sizes}, merged={self.merged}" if sizes else f"merged={self.merged}"


def _unmerged_state_dict(module: AdaptedLinear, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """A merged layer saves its unmerged base weight, so every state dict has one meaning."""
    key = prefix + "base.weight"
    if module.merged and key in state_dict:
        state_dict[key] = module._unmerged_weight


def _unmerge_before_load(module: AdaptedLinear, state_dict: dict, prefix: str, *args: object) -> None:
    """Loading replaces the unmerged tensors, so a merged layer unmerges first."""
    module.unmerge()


class LowRankLinear(AdaptedLinear):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``y = base(x) + scaling · dropout(x) Aᵀ Bᵀ``.

    The factors start at zero; a method initializes them (LoRA: Kaiming-uniform
    ``A`` and zero ``B``, :func:`init_lora_`; PiSSA: the principal singular
    triplets of the base weight). Shapes follow PEFT's LoRA layer so that
    parity tests compare tensors one to one: ``A`` (``lora_A``) is
    ``(rank, in_features)``, ``B`` (``lora_B``) is ``(out_features, rank)``.
    The forward stays factorized (two thin matmuls instead of forming
    ``B A``), and dropout acts on the adapter's input as in PEFT.
    """

    def __init__(self, base: nn.Linear, rank: int, scaling: float, dropout: float = 0.0) -> None:
        super().__init__(base)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        device, dtype = base.weight.device, adapter_dtype(base.weight.dtype)
        self.lora_A = nn.Parameter(torch.zeros(rank, base.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        self.scaling = float(scaling)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        return {"lora_A": self.lora_A, "lora_B": self.lora_B}

    def describe(self) -> dict[str, Any]:
        return {"kind": "low-rank", "rank": self.rank, "scaling": self.scaling}

    def delta_weight(self) -> torch.Tensor:
        """``scaling · B A`` in the base weight's dtype."""
        return (self.scaling * (self.lora_B @ self.lora_A)).to(self.base.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        h = self.dropout(x).to(self.lora_A.dtype)
        update = F.linear(F.linear(h, self.lora_A), self.lora_B) * self.scaling
        return result + update.to(result.dtype)


def adapter_dtype(dtype: torch.dtype) -> torch.dtype:
    """Adapter parameters of half-precision layers train in float32 (PEFT's ``autocast_adapter_dtype``)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def lora_scaling(alpha: float, rank: int) -> float:
    """``alpha / rank`` (Hu et al., 2021, Sec. 4.1; PEFT's ``scaling``)."""
    return alpha / rank


@torch.no_grad()
def init_lora_(layer: LowRankLinear) -> LowRankLinear:
    """LoRA's initialization: ``A`` Kaiming-uniform (``a = √5``, ``nn.Linear``'s default), ``B = 0``.

    Hu et al. (2021, Sec. 4.1) draw ``A`` at random and set ``B`` to zero so that
    ``B A = 0`` and the adapted model starts as the base model; the Kaiming-uniform
    draw is the reference code's (microsoft/LoRA ``loralib``) and PEFT's default.
    """
    nn.init.kaiming_uniform_(layer.lora_A, a=math.sqrt(5))
    nn.init.zeros_(layer.lora_B)
    return layer
