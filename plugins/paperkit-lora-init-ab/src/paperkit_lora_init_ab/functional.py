"""LoRA's two zero-product initializations, Init[A] and Init[B], as plain functions.

Notation (Hayou, Ghosh & Yu, 2024, Sec. 3; PEFT's layout): a LoRA layer computes

    y = W x + (alpha / r) · B A x,     A ∈ R^{r×in} (PEFT's ``lora_A``),  B ∈ R^{out×r} (``lora_B``)

and both schemes make the product ``B A`` zero, so fine-tuning starts from the
pretrained model:

    Init[A]:  B₀ = 0,  A₀ random    (Hu et al. 2021; PEFT's ``init_lora_weights=True``)
    Init[B]:  A₀ = 0,  B₀ random    (the paper's alternative; PEFT does this only for embeddings)

The random factor is drawn with a variance of order ``1 / fan-in`` (the paper's
``σ_A² = Θ(n⁻¹)`` for A, whose fan-in is the width ``n``, and ``σ_B² = Θ(r⁻¹)`` for
B, whose fan-in is the rank): ``"kaiming-uniform"`` is PEFT's and loralib's
draw, ``U(−1/√fan_in, 1/√fan_in)`` (``kaiming_uniform_`` with ``a = √5``, variance
``1 / (3 fan_in)``); ``"gaussian"`` is ``N(0, 1/fan_in)``. With either, Init[B]
draws B over the rank, so its entries are ``√(in / r)`` times larger than Init[A]'s
entries of A — the asymmetry behind the paper's result (Sec. 3): under Init[B] a
step on A moves ``B A`` by ``‖B₀‖``-sized amounts, so the largest learning rate that
keeps the output stable is smaller (in the large-width analysis ``η = Θ(n^{-1})``
for Init[B] against ``Θ(n^{-1/2})`` for Init[A]; the paper's optimal-LR-vs-width figure).

Draws come from the given ``torch.Generator`` or, when none is given, from
torch's global generator, in the same order as PEFT (one draw per layer, on
the random factor only), so Init[A] equals PEFT's default initialization
draw for draw.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from paperkit import LowRankLinear

Init = Literal["A", "B"]
Distribution = Literal["kaiming-uniform", "gaussian"]
INITS = ("A", "B")
DISTRIBUTIONS = ("kaiming-uniform", "gaussian")


@torch.no_grad()
def draw_(tensor: torch.Tensor, distribution: Distribution = "kaiming-uniform", generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill a ``(fan_out, fan_in)`` factor in place with a random draw of variance ``Θ(1 / fan_in)``.

    ``"kaiming-uniform"``: ``nn.init.kaiming_uniform_(tensor, a=√5)``, i.e.
    ``U(−1/√fan_in, 1/√fan_in)`` — PEFT's (``LoraLayer.reset_lora_parameters``) and
    microsoft/LoRA's draw of A. ``"gaussian"``: ``N(0, 1/fan_in)``, the paper's
    Gaussian with ``σ² = 1/fan_in``.
    """
    if tensor.dim() != 2:
        raise ValueError(f"a LoRA factor is a matrix, got shape {tuple(tensor.shape)}")
    if distribution == "kaiming-uniform":
        return nn.init.kaiming_uniform_(tensor, a=math.sqrt(5), generator=generator)
    if distribution == "gaussian":
        return nn.init.normal_(tensor, mean=0.0, std=1.0 / math.sqrt(tensor.shape[1]), generator=generator)
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


@torch.no_grad()
def init_a_(layer: LowRankLinear, distribution: Distribution = "kaiming-uniform", generator: torch.Generator | None = None) -> LowRankLinear:
    """Init[A] (Sec. 3): ``A`` random over its fan-in ``in_features``, ``B = 0``."""
    draw_(layer.lora_A, distribution, generator)
    nn.init.zeros_(layer.lora_B)
    return layer


@torch.no_grad()
def init_b_(layer: LowRankLinear, distribution: Distribution = "kaiming-uniform", generator: torch.Generator | None = None) -> LowRankLinear:
    """Init[B] (Sec. 3): ``A = 0``, ``B`` random over its fan-in, the rank ``r``."""
    nn.init.zeros_(layer.lora_A)
    draw_(layer.lora_B, distribution, generator)
    return layer


def init_lora_ab_(
    layer: LowRankLinear, init: Init = "A", distribution: Distribution = "kaiming-uniform", generator: torch.Generator | None = None,
) -> LowRankLinear:
    """Initialize a :class:`~paperkit.LowRankLinear` in place with Init[``init``]; ``B A = 0`` either way."""
    if init == "A":
        return init_a_(layer, distribution, generator)
    if init == "B":
        return init_b_(layer, distribution, generator)
    raise ValueError(f"init must be 'A' or 'B', got {init!r}")


def lora_ab_linear(
    linear: nn.Linear, rank: int, alpha: float | None = None, init: Init = "A", distribution: Distribution = "kaiming-uniform",
    dropout: float = 0.0, generator: torch.Generator | None = None,
) -> LowRankLinear:
    """Wrap one ``nn.Linear`` as a LoRA layer started with Init[``init``] (``alpha = None``: ``alpha = rank``)."""
    scaling = (rank if alpha is None else alpha) / rank
    return init_lora_ab_(LowRankLinear(linear, rank, scaling, dropout), init, distribution, generator)


def random_factor(layer: LowRankLinear) -> str:
    """Which factor holds the random draw (``"lora_A"`` or ``"lora_B"``); the other is zero."""
    a_zero, b_zero = not bool(layer.lora_A.detach().any()), not bool(layer.lora_B.detach().any())
    if a_zero == b_zero:
        raise ValueError("exactly one of the two factors must be zero (Init[A] or Init[B])")
    return "lora_B" if a_zero else "lora_A"
