"""paperkit plugin: maxout initialization (Tseran & Montúfar, "Expected Gradients of Maxout Networks and
Consequences to Parameter Initialization", ICML 2023).

This module holds only the record and its config (no torch): ``paperkit plugins``
imports it to list the method. The math lives in :mod:`paperkit_maxout_init.functional`;
:mod:`paperkit_maxout_init.hooks` wires it to the engine.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

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


@attrs.define
class MaxoutInitConfig:
    """Options of ``maxout-init``; each help text says where its default comes from."""

    c: float | None = option(
        None,
        help="The weight-variance factor of every layer that feeds a maxout unit: W ~ N(0, c/fan_in). Unset: the "
        "paper's c = 1/M_K, M_K = E[(largest of K standard normals)²], K read from each maxout module (1, 0.78391, "
        "0.64461, 0.55555 for K = 2..5; the paper's Table 4 as the authors' code cites it, and their training script). A number overrides it "
        "for every maxout layer: 2.0 is He / Kaiming normal (fan_in), the claims' baseline; 1.0 is LeCun normal.",
        validator=v.optional(v.and_(v.instance_of(float), v.gt(0.0), _finite)),
    )
    output_c: float = option(
        1.0,
        help="The factor of the layers that feed no maxout (the output layer; a residual block's second linear "
        "layer): N(0, output_c/fan_in). 1 is what the authors' code draws the last linear layer with.",
        validator=v.and_(v.instance_of(float), v.gt(0.0), _finite),
    )
    zero_bias: bool = option(
        True,
        help="Set the biases of the drawn layers to 0: the authors' code initializes every bias to zero, and the "
        "paper's moments are for zero biases. false keeps the biases the model was built with.",
    )
    layers: list[str] = option(
        attrs.Factory(lambda: ["linear", "conv"]),
        help="Layer kinds to draw: 'linear' and 'conv' (fan-in = in·k·k, as the authors' CNN initializer). The "
        "paper draws every layer, the output layer included.",
        validator=_check_layers,
    )


PAPER = Paper(
    title="Expected Gradients of Maxout Networks and Consequences to Parameter Initialization",
    year=2023,
    arxiv="2301.06956",
    authors="Hanna Tseran, Guido Montúfar",
    venue="ICML",
)

_SCALE = (
    "Scale-down: the paper trains a 20-layer fully connected maxout net (K = 5, widths 64 to 8, batch 32) and "
    "VGG-19-like maxout CNNs on MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN; here an mlp with 11 maxout layers of "
    "width 64, K = 5, no normalization, on the embedded 8x8 digits task, batch 32, 10 epochs (430 steps), test "
    "accuracy at the end; every arm drawn by maxout-init (only c of the maxout layers differs), each at its own "
    "learning rate tuned on other seeds."
)


def _claim(id: str, statement: str, plan: str, variant: str, baseline: str) -> Claim:
    return Claim(
        id=id,
        statement=statement + " " + _SCALE,
        plan=f"paperkit_maxout_init:claims/{plan}",
        metric="classification/accuracy",
        variant=variant,
        baseline=baseline,
        direction="higher",
        margin=0.0,
        seeds=(0, 1, 2, 3, 4, 5, 6, 7),
        quick=("run.epochs=2",),
        quick_seeds=(0, 1),
    )


def check_plan(plan: Any, config: Any) -> None:
    """An MLP without maxout units has nothing to initialize: refuse it at plan check, not at the first hook."""
    if plan.model.key == "mlp" and getattr(plan.model.config, "activation", None) != "maxout":
        raise ValueError('initializes maxout units: build the mlp with activation = "maxout"')


method = Method(
    check=check_plan,
    key="maxout-init",
    summary="Draw the weights feeding each rank-K maxout unit from N(0, c/fan_in) with c = 1/M_K, M_K the second "
    "moment of the largest of K standard normals, so the mean squared activation is kept layer to layer; the "
    "output layer N(0, 1/fan_in), zero biases.",
    paper=PAPER,
    hooks=("init",),
    implementation="paperkit_maxout_init.hooks:MaxoutInit",
    config=MaxoutInitConfig,
    touches=("parameters",),
    exclusive=(),
    license="Apache-2.0",
    claims=(
        _claim(
            "sgd-vs-he",
            "Tseran & Montúfar (2023), abstract and experiments: the maxout initialization improves SGD (Nesterov "
            "momentum) training of deep maxout networks over standard initialization (here: against He's "
            "N(0, 2/fan_in), forward factor c·M_K = 3.6 per layer; higher test accuracy after the same budget).",
            "deep-maxout.toml",
            "maxout-sgd",
            "he-sgd",
        ),
        _claim(
            "adam-vs-he",
            "Tseran & Montúfar (2023), abstract and experiments: the same improvement holds for Adam (here: against "
            "He's N(0, 2/fan_in); higher test accuracy after the same budget).",
            "deep-maxout.toml",
            "maxout-adam",
            "he-adam",
        ),
        _claim(
            "sgd-vs-lecun",
            "Ablation (ours, from the paper's analysis; we could not check whether the paper runs it): the "
            "constant matters beyond avoiding He's factor 2; c = 1/M_K beats LeCun's N(0, 1/fan_in), forward factor "
            "M_K = 1.8 per layer, with SGD (higher test accuracy after the same budget).",
            "deep-maxout.toml",
            "maxout-sgd",
            "lecun-sgd",
        ),
        _claim(
            "adam-vs-lecun",
            "Ablation (ours, as sgd-vs-lecun): c = 1/M_K beats LeCun's N(0, 1/fan_in) with Adam (higher test accuracy "
            "after the same budget).",
            "deep-maxout.toml",
            "maxout-adam",
            "lecun-adam",
        ),
    ),
)

__all__ = ["MaxoutInitConfig", "PAPER", "method"]
