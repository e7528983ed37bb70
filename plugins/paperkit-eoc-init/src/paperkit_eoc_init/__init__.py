"""paperkit plugin: Edge-of-Chaos initialization (Hayou, Doucet & Rousseau, ICML 2019).

This module holds only the record and its config (no torch): ``paperkit plugins``
imports it to list the method. The math lives in :mod:`paperkit_eoc_init.functional`;
:mod:`paperkit_eoc_init.hooks` wires it to the engine.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

ACTIVATION_NAMES = ("auto", "relu", "tanh", "gelu", "identity", "elu", "silu")
LAYER_KINDS = ("linear", "conv")


def _finite(instance: object, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be finite, got {value}")


def _check_layers(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    if not value:
        raise ValueError(f"'{attribute.name}' must name at least one layer kind ({', '.join(LAYER_KINDS)})")
    bad = [k for k in value if k not in LAYER_KINDS]
    if bad:
        raise ValueError(f"'{attribute.name}' must hold only {', '.join(LAYER_KINDS)}: {', '.join(map(repr, bad))}")


def _check_not_both(instance: EocInitConfig, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and instance.chi != 1.0:
        raise ValueError(
            f"'{attribute.name}' sets the point directly and chi = {instance.chi} picks it too; set only one"
        )


@attrs.define
class EocInitConfig:
    """Options of ``eoc-init``; each help text says where its default comes from."""

    activation: Literal["auto", "relu", "tanh", "gelu", "identity", "elu", "silu"] = option(
        "auto",
        help="The activation φ the mean-field maps are computed for. 'auto' reads the model's activation modules "
        "(nn.ReLU, nn.Tanh, nn.GELU, nn.ELU(alpha=1), nn.SiLU; none -> identity; mixed ones are an error). The paper "
        "compares ReLU, ELU, tanh and Swish (= SiLU) (Secs. 3-5); the mlp model offers relu, tanh, gelu, identity.",
        validator=v.in_(ACTIVATION_NAMES),
    )
    sigma_b: float | None = option(
        None,
        help="σ_b, the standard deviation of every bias, B ~ N(0, σ_b²) (paper Sec. 2); σ_w is then solved on the EoC "
        "(χ₁ = 1). Unset: 0 for ReLU and the identity (their EoC is the single point σ_b = 0, paper Sec. 3); 0.2 for "
        "tanh and ELU (the σ_b of the EoC values that initializers citing this work ship; not checked against the "
        "paper's text); 0.5 for GELU and 1.0 for SiLU, the smallest round σ_b >= 0.2 where their EoC point has an "
        "attracting variance fixed point (our computation; below it the variance of a deep net runs away).",
        validator=v.optional(v.and_(v.instance_of(float), v.ge(0.0), _finite)),
    )
    chi: float = option(
        1.0,
        help="The target χ₁ = σ_w² E[φ'(√q* Z)²], the slope of the correlation map at c = 1 and the per-layer factor "
        "of the squared gradient norm. 1 is the Edge of Chaos, the method (paper Sec. 2, after Schoenholz et al. 2017). "
        "< 1 gives a point in the ordered phase and > 1 one in the chaotic phase at the same σ_b: the paper's baselines.",
        validator=v.and_(v.instance_of(float), v.gt(0.0), _finite),
    )
    sigma_w: float | None = option(
        None,
        help="σ_w, set directly (W ~ N(0, σ_w²/fan_in)); the run then records the χ₁ and phase it gives. Unset: solved "
        "from chi and σ_b. Setting it with chi != 1 is an error.",
        validator=v.optional(v.and_(v.instance_of(float), v.gt(0.0), _finite, _check_not_both)),
    )
    layers: list[str] = option(
        attrs.Factory(lambda: ["linear", "conv"]),
        help="Layer kinds drawn from N(0, σ_w²/fan_in) with N(0, σ_b²) biases: 'linear' and 'conv' (fan-in = in·k·k, "
        "torch's). The paper draws every layer of the net alike, the input and output layers included.",
        validator=_check_layers,
    )


PAPER = Paper(
    title="On the Impact of the Activation Function on Deep Neural Networks Training",
    year=2019,
    arxiv="1902.06853",
    authors="Soufiane Hayou, Arnaud Doucet, Judith Rousseau",
    venue="ICML",
)

_SCALE = (
    "Scale-down: the paper trains depth-200, width-300 feed-forward nets on MNIST and CIFAR-10; here an mlp with "
    "24 hidden layers of width 64 (26 weight matrices, no normalization) on the embedded digits task, plain SGD "
    "(batch 64, 10 epochs = 210 steps), test accuracy, each arm at its own learning rate tuned on other seeds."
)


def _claim(id: str, statement: str, plan: str, variant: str, baseline: str) -> Claim:
    return Claim(
        id=id,
        statement=statement + " " + _SCALE,
        plan=f"paperkit_eoc_init:claims/{plan}",
        metric="classification/accuracy",
        variant=variant,
        baseline=baseline,
        direction="higher",
        margin=0.0,
        seeds=(0, 1, 2, 3, 4, 5, 6, 7),
        quick=("run.epochs=2",),
        quick_seeds=(0, 1),
    )


method = Method(
    key="eoc-init",
    summary="Draw W ~ N(0, σ_w²/fan_in), B ~ N(0, σ_b²) at a point (σ_b, σ_w) on the Edge of Chaos of the net's "
    "activation (χ₁ = 1 at the variance fixed point, solved numerically); χ ≠ 1 gives the ordered / chaotic baselines.",
    paper=PAPER,
    hooks=("init",),
    implementation="paperkit_eoc_init.hooks:EocInit",
    config=EocInitConfig,
    touches=("parameters",),
    exclusive=(),
    claims=(
        _claim(
            "tanh-eoc-vs-ordered",
            "Hayou et al. (2019), Secs. 2 and 5: a deep net initialized on the Edge of Chaos trains faster and to better "
            "performance than one initialized in the ordered phase (here: tanh, σ_b = 0.2; EoC σ_w = 1.304 against "
            "σ_w = 1.022 where χ₁ = 0.8, correlation depth scale 4.5 layers; higher test accuracy after the same budget).",
            "tanh-ordered.toml",
            "eoc",
            "ordered",
        ),
        _claim(
            "tanh-eoc-vs-chaotic",
            "Hayou et al. (2019), Secs. 2 and 5 (after Schoenholz et al. 2017): the Edge of Chaos also beats an "
            "initialization in the chaotic phase (here: tanh, σ_b = 0.2; EoC σ_w = 1.304 against σ_w = 2.308 where "
            "χ₁ = 1.5, depth scale 5.9 layers; higher test accuracy after the same budget).",
            "tanh-chaotic.toml",
            "eoc",
            "chaotic",
        ),
        _claim(
            "tanh-eoc-vs-relu-eoc",
            "Hayou et al. (2019), Secs. 3-5: on the Edge of Chaos a smooth activation propagates information deeper "
            "(1 − c^l ~ β_q/l against ReLU's 9π²/(2l²)) and trains faster than ReLU (here: tanh at (0.2, 1.304) against "
            "ReLU at its only EoC point (0, √2); higher test accuracy after the same budget).",
            "activations.toml",
            "tanh-eoc",
            "relu-eoc",
        ),
        _claim(
            "gelu-eoc-vs-relu-eoc",
            "Hayou et al. (2019), Secs. 4-5: the Swish-like smooth activations on the Edge of Chaos train faster than "
            "ReLU on its EoC (here GELU, the mlp's Swish-like activation, at (0.5, 1.400) against ReLU at (0, √2); "
            "higher test accuracy after the same budget).",
            "activations.toml",
            "gelu-eoc",
            "relu-eoc",
        ),
    ),
)

__all__ = ["EocInitConfig", "PAPER", "method"]
