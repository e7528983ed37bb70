"""paperkit plugin: PSEUDO-IID initialization (Nait-Saada, Naderi & Tanner, ICLR 2024).

This module holds only the record and its config (no torch). The math lives in
:mod:`paperkit_pseudo_iid_init.functional`; :mod:`paperkit_pseudo_iid_init.hooks` wires it to the
engine. The Edge-of-Chaos point (σ_b, σ_w) comes from the ``eoc-init`` plugin's functional API.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

STRUCTURE_NAMES = ("iid", "orthogonal", "low-rank", "sparse")
ACTIVATION_NAMES = ("auto", "relu", "tanh", "gelu", "identity", "elu", "silu")
LAYER_KINDS = ("linear", "conv")


def _finite(instance: object, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be finite, got {value}")


def _check_layers(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    if not value or any(k not in LAYER_KINDS for k in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of {', '.join(LAYER_KINDS)}, got {value!r}")


@attrs.define
class PseudoIidInitConfig:
    """Options of ``pseudo-iid-init``; each help text says where its default comes from."""

    structure: Literal["iid", "orthogonal", "low-rank", "sparse"] = option(
        "low-rank",
        help="The PSEUDO-IID family each weight is drawn from, all at per-entry variance σ_w²/fan_in (paper Sec. 3: "
        "IID, orthogonal, low-rank and structured sparse weights all give the same GP limit). 'low-rank' (W = U V/√r) "
        "is the default because it is the case the paper adds beyond IID and orthogonal.",
        validator=v.in_(STRUCTURE_NAMES),
    )
    rank_fraction: float = option(
        0.25,
        help="low-rank: r = max(1, round(rank_fraction · min(out, fan_in))). The paper's limit needs r → ∞ with the "
        "width, i.e. a fixed fraction; 1/4 is our choice (the paper's experiments' ranks we could not read).",
        validator=v.and_(v.instance_of(float), v.gt(0.0), v.le(1.0)),
    )
    density: float = option(
        0.25,
        help="sparse: each row keeps k = max(1, round(density · fan_in)) entries at random positions, rescaled by "
        "1/√(k/fan_in) to keep the per-entry variance (structured sparsity, paper Sec. 3). 1/4 is our choice.",
        validator=v.and_(v.instance_of(float), v.gt(0.0), v.le(1.0)),
    )
    activation: Literal["auto", "relu", "tanh", "gelu", "identity", "elu", "silu"] = option(
        "auto",
        help="The activation whose Edge of Chaos sets the defaults of σ_w and σ_b ('auto' reads the model's "
        "activation modules; eoc-init's detect_activation).",
        validator=v.in_(ACTIVATION_NAMES),
    )
    sigma_b: float | None = option(
        None,
        help="σ_b, bias B ~ N(0, σ_b²). Unset: eoc-init's default for the activation (tanh 0.2; ReLU 0).",
        validator=v.optional(v.and_(v.instance_of(float), v.ge(0.0), _finite)),
    )
    sigma_w: float | None = option(
        None,
        help="σ_w, per-entry weight variance σ_w²/fan_in. Unset: the Edge-of-Chaos σ_w at σ_b (χ₁ = 1; eoc-init's "
        "eoc_point, tanh at σ_b = 0.2: 1.304). The paper's point: this EoC value is the same for every structure.",
        validator=v.optional(v.and_(v.instance_of(float), v.gt(0.0), _finite)),
    )
    layers: list[str] = option(
        attrs.Factory(lambda: ["linear", "conv"]),
        help="Layer kinds drawn (paperkit.weight_layers): 'linear' and 'conv' (fan_in = in·k·k). Every layer alike, "
        "as in the paper's networks.",
        validator=_check_layers,
    )


PAPER = Paper(
    title="Beyond IID weights: sparse and low-rank deep Neural Networks are also Gaussian Processes",
    year=2024,
    arxiv="2310.16597",
    authors="Thiziri Nait-Saada, Alireza Naderi, Jared Tanner",
    venue="ICLR",
)

method = Method(
    key="pseudo-iid-init",
    summary="Draw every weight from a PSEUDO-IID family (iid, orthogonal, low-rank U V/√r or row-sparse) at per-entry "
    "variance σ_w²/fan_in and biases N(0, σ_b²), with (σ_b, σ_w) on the Edge of Chaos: all give the same GP limit.",
    paper=PAPER,
    hooks=("init",),
    implementation="paperkit_pseudo_iid_init.hooks:PseudoIidInit",
    config=PseudoIidInitConfig,
    touches=("parameters",),
    exclusive=(),
    license="Apache-2.0",
    claims=(
        Claim(
            id="low-rank-eoc-matches-iid-eoc",
            statement="Nait-Saada et al. (2024), abstract and Sec. 4: PSEUDO-IID nets converge to the same GP as IID "
            "ones, so Edge-of-Chaos tuning carries over; a deep tanh net with low-rank weights (rank = width/4) at the "
            "EoC trains as well as the IID EoC net (non-inferiority, margin -0.02 test accuracy). Scale-down: digits, "
            "mlp 20 hidden tanh layers of width 64, SGD batch 64, 15 epochs, each arm at its own tuned learning rate.",
            plan="paperkit_pseudo_iid_init:claims/low-rank.toml",
            metric="classification/accuracy",
            variant="low-rank",
            baseline="iid",
            direction="higher",
            margin=-0.02,
            seeds=(0, 1, 2, 3, 4, 5),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["PseudoIidInitConfig", "PAPER", "method"]
