"""paperkit plugin: random orthogonal initialization.

One method, two papers: Saxe, McClelland & Ganguli, "Exact solutions to the
nonlinear dynamics of learning in deep linear neural networks" (ICLR 2014),
and Day, Kahn & Roberts, "Feature Learning and Generalization in Deep Networks
with Orthogonal Weights" (2023). Each has one claim.

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_orthogonal_init.functional`; :mod:`paperkit_orthogonal_init.hooks`
wires it to the engine.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

LAYER_KINDS = ("linear", "conv")


def _check_layers(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    if not value:
        raise ValueError(f"'{attribute.name}' must name at least one layer kind ({', '.join(LAYER_KINDS)})")
    bad = [k for k in value if k not in LAYER_KINDS]
    if bad:
        raise ValueError(f"'{attribute.name}' must hold only {', '.join(LAYER_KINDS)}: {', '.join(map(repr, bad))}")


def _check_not_both(instance: OrthogonalInitConfig, attribute: attrs.Attribute, value: str) -> None:
    if value != "auto" and instance.gain is not None:
        raise ValueError(f"'{attribute.name}' picks the critical gain and gain is set; set only one of them")


@attrs.define
class OrthogonalInitConfig:
    """Options of ``orthogonal-init``; each help text says where its default comes from."""

    distribution: Literal["orthogonal", "gaussian"] = option(
        "orthogonal",
        help="'orthogonal': W = gain·Q with Q Haar-random (semi-)orthogonal, torch.nn.init.orthogonal_'s draw (Saxe et "
        "al. 2014; Day et al. 2023). 'gaussian': IID N(0, gain²/fan_in), the baseline of both papers (Saxe's scaled "
        "Gaussian, Day et al.'s critical IID init), so that both arms come from one code path.",
        validator=v.in_(["orthogonal", "gaussian"]),
    )
    gain: float | None = option(
        None,
        help="σ_w, the factor on Q (or the Gaussian's std times sqrt(fan_in)). Unset: the critical gain for "
        "`nonlinearity` with zero biases: 1 for linear nets (Saxe et al.), 1 for tanh (C_W = 1, C_b = 0, the "
        "criticality Day et al. use; Roberts, Yaida & Hanin 2022, Ch. 5), √2 for ReLU (C_W = 2). torch's "
        "calculate_gain('tanh') = 5/3 is not critical; write gain = 1.6667 to use it.",
        validator=v.optional(v.and_(v.instance_of(float), v.gt(0.0))),
    )
    nonlinearity: Literal["auto", "linear", "tanh", "relu"] = option(
        "auto",
        help="Which nonlinearity the critical gain is for, when gain is unset. 'auto' reads the model's activation "
        "modules: nn.Tanh -> tanh, nn.ReLU -> relu, none -> linear (mixed or other activations are an error).",
        validator=[v.in_(["auto", "linear", "tanh", "relu"]), _check_not_both],
    )
    layers: list[str] = option(
        attrs.Factory(lambda: ["linear", "conv"]),
        help="Layer kinds to initialize: 'linear' (nn.Linear) and 'conv' (nn.Conv1d/2d/3d, the weight flattened to "
        "(out, in·k·k) as torch does). Both papers initialize every weight matrix of the net, the output layer included.",
        validator=_check_layers,
    )
    zero_bias: bool = option(
        True,
        help="Set those layers' biases to 0: Saxe et al.'s linear nets have no biases and criticality in Day et al. "
        "is at C_b = 0. false keeps the biases the model was built with.",
    )


SAXE = Paper(
    title="Exact solutions to the nonlinear dynamics of learning in deep linear neural networks",
    year=2014,
    arxiv="1312.6120",
    authors="Andrew M. Saxe, James L. McClelland, Surya Ganguli",
    venue="ICLR",
)

DAY = Paper(
    title="Feature Learning and Generalization in Deep Networks with Orthogonal Weights",
    year=2023,
    arxiv="2310.07765",
    authors="Hannah Day, Yonatan Kahn, Daniel A. Roberts",
    venue="Machine Learning: Science and Technology (2025)",
)

method = Method(
    key="orthogonal-init",
    summary="Draw every weight matrix as gain·Q, Q Haar-random orthogonal (torch's orthogonal_), at the critical gain; "
    "'gaussian' gives the papers' IID baseline at the same gain.",
    paper=SAXE,
    also=(DAY,),
    hooks=("init",),
    implementation="paperkit_orthogonal_init.hooks:OrthogonalInit",
    config=OrthogonalInitConfig,
    touches=("parameters",),
    claims=(
        Claim(
            id="deep-linear",
            statement="Saxe et al. (2014): a deep linear network learns faster from random orthogonal weights than "
            "from scaled random Gaussian weights of the same variance, whose learning slows with depth "
            "(here: lower test loss after a fixed small budget of SGD steps).",
            plan="paperkit_orthogonal_init:claims/deep-linear.toml",
            metric="classification/loss",
            variant="orthogonal",
            baseline="gaussian",
            direction="lower",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
            quick=("run.max_steps=10",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="deep-tanh",
            statement="Day et al. (2023): a deep tanh MLP at criticality trains to better test performance under "
            "full-batch gradient descent from Haar-orthogonal weights than from critical IID Gaussian weights "
            "(same σ_w = 1, zero biases; here: higher test accuracy after a fixed budget).",
            plan="paperkit_orthogonal_init:claims/deep-tanh.toml",
            metric="classification/accuracy",
            variant="orthogonal",
            baseline="gaussian",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
            quick=("run.epochs=20",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["DAY", "OrthogonalInitConfig", "SAXE", "method"]
