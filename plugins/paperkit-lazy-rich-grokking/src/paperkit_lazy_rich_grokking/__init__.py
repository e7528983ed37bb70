"""paperkit plugin: Grokking as the Transition from Lazy to Rich Training Dynamics (Kumar, Bordelon, Gershman &
Pehlevan, ICLR 2024).

The paper's knob and its diagnostics. ``adapt`` makes the network output ``f(x) = α·(h(x; θ) − h(x; θ₀))`` (or
``α·h``) and the loss is divided by α² (large α: lazy, kernel regression with the initial NTK; small α: rich, feature
learning); ``evaluate`` reports the centred alignment of the empirical NTK with the labels, the initial kernel's
alignment, the distance of the kernel from K₀ and the relative parameter change; ``after_step`` / ``after_run`` give
the steps at which the training set is fitted and the test set generalized (the grokking delay).

This module holds only the record and its config (no torch); the math is in
:mod:`paperkit_lazy_rich_grokking.functional`, the hook shells in :mod:`paperkit_lazy_rich_grokking.hooks`.
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _positive_finite(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"'{attribute.name}' must be a positive finite number, got {value!r}")


@attrs.define
class LazyRichGrokkingConfig:
    """The laziness knob (alpha, center, loss_scale) and the diagnostics' settings."""

    alpha: float = option(
        1.0,
        help="Output scale α: the model outputs α·(h − h₀) (center) or α·h. Large α is lazy, small α rich (Sec. 2, "
        "after Chizat et al. 2019). 1 is the reference point of every sweep in the paper (Fig. 2(c) modular "
        "arithmetic: α in {0.5, 1, 1.5, 2}; Fig. 3(a) polynomial regression: α = 2^-5 ... 2^5).",
        validator=_positive_finite,
    )
    center: bool = option(
        True,
        help="Subtract the output at initialization, h₀(x) = h(x; θ₀), from a frozen copy of the initial model, so "
        "f = 0 at initialization for every α (the paper's centred network, Sec. 2; CENTER_LOSS = True and "
        "`NN_func2(p, X) - NN_func2(params, X)` in the authors' Fig. 1 and Fig. 3(a) code). Without it the initial "
        "output α·h₀ grows with α.",
        validator=v.instance_of(bool),
    )
    loss_scale: Literal["inverse-square", "none"] = option(
        "inverse-square",
        help="'inverse-square': the gradients are multiplied by 1/α², the gradient of loss/α² (the authors' Fig. "
        "3(a) code divides the MSE by α² at one learning rate for every α; Chizat et al.'s L_α = ℓ(αh)/α²), so the "
        "function moves at the same speed at initialization for every α and only the parameters move less. "
        "Every loss term of the plan is scaled (the whole objective's gradient). 'none': only the output is "
        "scaled (the authors' MNIST code multiplies the output by α and keeps the loss).",
        validator=v.in_(["inverse-square", "none"]),
    )
    samples: int = option(
        64,
        help="Samples of the test set, and as many of the training set, spread evenly over each, on which the "
        "empirical NTK and its label alignment are measured at every evaluation (ours, for cost: the authors use "
        "the whole test set of 1000 points, Fig. 1); below 2 measures no kernel.",
        validator=[v.instance_of(int), v.ge(0), v.le(2048)],
    )
    centering: Literal["columns", "both"] = option(
        "columns",
        help="How the kernel is centred in the alignment tr(Y_cᵀ K_c Y_c)/(‖K_c‖_F ‖Y_c‖_F²): 'columns' is the "
        "authors' kalignment (K − K.mean(axis=0)); 'both' is H K H, the centred alignment of Cortes et al. (2012).",
        validator=v.in_(["columns", "both"]),
    )
    every: int = option(
        0,
        help="Record the training- and test-set accuracy every N optimizer steps (and at the last one), for the "
        "fit and generalization steps after_run reports (class tasks); 0 records nothing. The paper plots the "
        "curves at every epoch (Fig. 2(c)); ours trades resolution for cost.",
        validator=[v.instance_of(int), v.ge(0)],
    )
    fit_threshold: float = option(
        0.99,
        help="Training accuracy at which the training set counts as fitted (fit_step). Ours: the paper reads the "
        "fit from its curves (train accuracy 100%, Fig. 2(c)).",
        validator=[v.gt(0.0), v.le(1.0)],
    )
    test_threshold: float = option(
        0.9,
        help="Test accuracy at which the network counts as generalized (generalization_step). Ours: the paper "
        "reads the rise of its test curves (Fig. 2(c)), which go to 100%.",
        validator=[v.gt(0.0), v.le(1.0)],
    )


PAPER = Paper(
    title="Grokking as the Transition from Lazy to Rich Training Dynamics",
    year=2024,
    arxiv="2310.06110",
    authors="Tanishq Kumar, Blake Bordelon, Samuel J. Gershman, Cengiz Pehlevan",
    venue="ICLR 2024",
)

_PLAN = "paperkit_lazy_rich_grokking:claims/output-scale.toml"
_SEEDS = (0, 1, 2, 3, 4)  # the learning rate was chosen on seeds 100 and 101 (see the plan's comment)
_QUICK = ("run.epochs=600",)
_QUICK_SEEDS = (0, 1)

method = Method(
    key="lazy-rich-grokking",
    summary="The output scale α of lazy training, f = α·(h − h₀) with the loss divided by α², and the lazy/rich "
    "diagnostics: NTK–label alignment of the current and initial kernels, kernel distance from K₀, relative "
    "parameter change, and the steps at which the training set is fitted and the test set generalized.",
    paper=PAPER,
    hooks=("adapt", "optimize", "evaluate", "after_step", "after_run"),
    implementation="paperkit_lazy_rich_grokking.hooks:LazyRichGrokking",
    config=LazyRichGrokkingConfig,
    touches=("model", "gradients", "metrics"),
    exclusive=(),
    kinds=("class", "regression"),
    license="Apache-2.0",
    claims=(
        Claim(
            id="lazier-groks-later",
            statement="The rate of feature learning, set by the output scale α, controls grokking: a lazier "
            "network (larger α, the loss divided by α²) generalizes later after fitting its training set (abstract; "
            "Sec. 5, Fig. 3(a); Fig. 2(c) on modular arithmetic). Here: on addition mod 23 with a two-layer "
            "quadratic MLP and full-batch gradient descent on the MSE, the first step at which the test accuracy "
            "reaches 90% comes later with α = 2 than with α = 1.",
            plan=_PLAN,
            metric="lazy-rich-grokking/generalization_step",
            variant="alpha-2",
            baseline="alpha-1",
            direction="higher",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="lazier-moves-less",
            statement="Large α is lazy: the parameters move less from initialization (Sec. 2, after Chizat et al. "
            "2019; the authors' Fig. 3 code reports the parameter movement per α). Here: the relative parameter "
            "change ‖θ − θ₀‖/‖θ₀‖ at the end of the same budget is smaller with α = 2 than with α = 1.",
            plan=_PLAN,
            metric="lazy-rich-grokking/relative_change",
            variant="alpha-2",
            baseline="alpha-1",
            direction="lower",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
    ),
)

__all__ = ["LazyRichGrokkingConfig", "PAPER", "method"]
