"""paperkit plugin: Kumar's activation-dependent weight variance (On weight initialization in deep neural
networks, 2017).

This module holds only the record and its config (no torch): ``paperkit plugins`` imports it to list
the method. The math lives in :mod:`paperkit_activation_variance_init.functional`;
:mod:`paperkit_activation_variance_init.hooks` wires it to the engine.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

ACTIVATION_NAMES = ("auto", "relu", "identity", "tanh", "sigmoid", "gelu", "silu", "elu", "softplus")
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


def _check_not_both(instance: ActivationVarianceInitConfig, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and instance.activation != "auto":
        raise ValueError(f"'{attribute.name}' sets the variance directly and activation picks it too; set only one")


@attrs.define
class ActivationVarianceInitConfig:
    """Options of ``activation-variance-init``; each help text says where its default comes from."""

    activation: Literal["auto", "relu", "identity", "tanh", "sigmoid", "gelu", "silu", "elu", "softplus"] = option(
        "auto",
        help="The activation g whose g(0), g'(0) set the variance. 'auto' reads the model's activation module and "
        "differentiates it at 0 by autograd, so any pointwise activation works (the paper's general result is for "
        "any g differentiable at 0, abstract); ReLU gets the paper's separate 2/N; none -> identity. Refused: "
        "maxout (not pointwise), the square x² (g'(0) = 0), kinks at 0 other than ReLU's (leaky ReLU, SELU).",
        validator=v.in_(ACTIVATION_NAMES),
    )
    sigma_w: float | None = option(
        None,
        help="v·√N set directly, W ~ N(0, sigma_w²/fan_in), instead of the paper's formula: the baselines through "
        "the same code path (1.0 is Xavier's / LeCun's 1/N, which the paper argues is a poor choice for ReLU, "
        "abstract). Unset: the paper's value for the activation.",
        validator=v.optional(v.and_(v.instance_of(float), v.gt(0.0), _finite, _check_not_both)),
    )
    layers: list[str] = option(
        attrs.Factory(lambda: ["linear", "conv"]),
        help="Layer kinds drawn from N(0, v²): 'linear' and 'conv' (N = fan-in = in·k·k, torch's). The paper draws "
        "every weight matrix alike; the input and output layers are included.",
        validator=_check_layers,
    )
    zero_bias: bool = option(
        True,
        help="Set those layers' biases to 0, as the paper's derivation assumes. false keeps the biases the "
        "model was built with.",
    )


PAPER = Paper(
    title="On weight initialization in deep neural networks",
    year=2017,
    arxiv="1704.08863",
    authors="Siddharth Krishna Kumar",
    venue="arXiv preprint",
)

_SCALE = (
    "Scale-down: the paper's claim is analytical (we could not read its experiments); here an mlp with 20 hidden "
    "layers of width 64 (22 weight matrices, no normalization, zero biases) on the embedded digits task, plain SGD "
    "(batch 64, 10 epochs = 210 steps), test accuracy, each arm at its own learning rate tuned on other seeds."
)


def _claim(id: str, statement: str, plan: str, variant: str, baseline: str) -> Claim:
    return Claim(
        id=id,
        statement=statement + " " + _SCALE,
        plan=f"paperkit_activation_variance_init:claims/{plan}",
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
    key="activation-variance-init",
    summary="Draw every weight from N(0, v²) with v² = 1/(N·g'(0)²·(1 + g(0)²)) for the model's activation g "
    "(g(0), g'(0) by autograd at 0; N = fan-in), 2/N for ReLU, biases 0.",
    paper=PAPER,
    hooks=("init",),
    implementation="paperkit_activation_variance_init.hooks:ActivationVarianceInit",
    config=ActivationVarianceInitConfig,
    touches=("parameters",),
    exclusive=(),
    claims=(
        _claim(
            "relu-vs-xavier",
            "Kumar (2017), abstract and its ReLU derivation: Xavier's variance 1/N is a poor choice for ReLU, whose variance is "
            "2/N; a deep ReLU net drawn with 2/N trains better than the same net drawn with 1/N (higher test "
            "accuracy after the same budget).",
            "relu.toml",
            "kumar",
            "xavier",
        ),
        _claim(
            "relu-vs-pytorch-default",
            "Kumar (2017), abstract: an activation-aware variance (2/N for ReLU) trains a deep ReLU net better "
            "than a variance chosen without the activation in mind (here PyTorch's default, U(±1/√N) weights, "
            "variance 1/(3N), and U(±1/√N) biases).",
            "relu.toml",
            "kumar",
            "default",
        ),
        _claim(
            "tanh-vs-pytorch-default",
            "Kumar (2017), abstract and its general result (v² = 1/N for tanh, g(0) = 0, g'(0) = 1) trains a deep tanh "
            "net better than PyTorch's default variance 1/(3N) (higher test accuracy after the same budget).",
            "tanh.toml",
            "kumar",
            "default",
        ),
    ),
)

__all__ = ["ActivationVarianceInitConfig", "PAPER", "method"]
