"""paperkit plugin: Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data (Dang et al., ICML 2023).

Two methods. ``neural-collapse`` (evaluate, after_run) measures neural collapse, NC1-NC3 in the forms of Papyan,
Han & Donoho (2020) and of this paper, including the paper's imbalanced bias-free geometry (orthogonal class means
and classifier rows whose lengths depend on the class sizes). ``neural-collapse-mse`` (loss, regularize) is the
objective the paper's theorems are about for class tasks: the squared error against one-hot targets plus the
feature decay ``λ_H/2 ‖H‖²``. This module holds only the records and their configs (no torch); the math lives in
:mod:`paperkit_neural_collapse.functional`, the hook shells in :mod:`paperkit_neural_collapse.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

_SETS = ("train", "test")


def _sets(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    if not value or any(s not in _SETS for s in value) or len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' must list distinct sets from {', '.join(_SETS)}")


@attrs.define
class NeuralCollapseConfig:
    """Where to measure."""

    sets: list[str] = option(
        attrs.Factory(lambda: ["train", "test"]),
        help="Sets the features are measured on: 'train' (the experience's training set, train/<metric>: the sets "
        "the paper's theorems and experiments are about, the authors' validate_NC*.py) and 'test' (the "
        "evaluation set the engine hands over, test/<metric>; out-of-distribution sets are measured too).",
        validator=_sets,
    )


@attrs.define
class NeuralCollapseMSEConfig:
    """How the squared error is scaled."""

    reduction: Literal["sum", "mean"] = option(
        "sum",
        help="'sum': ½ Σ_k (z_k − y_k)² per sample, the paper's 1/(2N)‖W H − Y‖²_F (its training problem; the authors' "
        "synthetic_experiment_*.py); 'mean': ½ mean_k (z_k − y_k)², the authors' CIFAR/MNIST training scripts "
        "(nn.MSELoss() / 2, train_1st_order*.py), K times smaller.",
        validator=v.in_(["sum", "mean"]),
    )


@attrs.define
class FeatureDecayConfig:
    """The feature decay's strength."""

    feature_decay: float = option(
        1e-5,
        help="λ_H of λ_H/2 ‖H‖²_F over the N training features of the experience (N λ_H/2 ‖h_i‖² per sample, averaged "
        "over the batch: an unbiased estimate of the full-data term for any batch size; the authors' "
        "--feature_decay_rate default 1e-5 with --sep_decay, args_unbalance.py and the README's imbalanced command, "
        "applied there to a full batch). The theorems' weight decay λ_W is the optimizer's (SGD's weight_decay adds "
        "exactly λ_W/2 ‖W‖²).",
        validator=v.gt(0.0),
    )


PAPER = Paper(
    title="Neural Collapse in Deep Linear Networks: From Balanced to Imbalanced Data",
    year=2023,
    arxiv="2301.00437",
    authors="Hien Dang, Tho Tran, Stanley Osher, Hung Tran-The, Nhat Ho, Tan Nguyen",
    venue="ICML 2023",
)

_PLANS = "paperkit_neural_collapse:claims/{}.toml"
_TRAIN = "neural-collapse/train/{}"
_SEEDS = (0, 1, 2, 3, 4)  # seeds 100-102 were used to choose the learning rates (see the plans' comments)
_QUICK = ("run.epochs=150",)
_QUICK_IMBALANCED = (*_QUICK, "variants.initial.run.epochs=150")  # the untrained arm has a [run] of its own
_QUICK_SEEDS = (0, 1)

CLAIMS = (
    Claim(
        id="minority-means-longer",
        statement="Imbalanced data, bias-free MSE (the paper's imbalanced theorem; abstract: 'orthogonal vectors, whose lengths depend on the amount of data in their corresponding classes'): the class means are orthogonal vectors whose "
        "lengths depend on the class sizes; with ‖w_k‖²/‖h̄_k‖² = n_k λ_H/λ_W, the classifier row grows and the "
        "feature mean shrinks with n_k. Here: after training on long-tail-digits, the rank correlation between the "
        "training-class sizes and the uncentred class-mean norms is at least 0.5 lower than the untrained network's "
        "(the theory predicts -1).",
        plan=_PLANS.format("imbalanced"),
        metric=_TRAIN.format("size_norm_corr_h"),
        variant="mse",
        baseline="initial",
        direction="lower",
        margin=0.5,
        seeds=_SEEDS,
        quick=_QUICK_IMBALANCED,
        quick_seeds=_QUICK_SEEDS,
    ),
    Claim(
        id="orthogonal-classifier",
        statement="Imbalanced data, bias-free MSE (the paper's imbalanced theorem): the classifier rows converge to orthogonal "
        "vectors (a general orthogonal frame: W Wᵀ diagonal), not to a simplex ETF. Here: on long-tail-digits the "
        "root-mean-square cosine between the head's rows after MSE training is lower than after cross-entropy "
        "training with the same feature and weight decay (an ETF has 1/(K-1) = 0.11, an orthogonal frame 0).",
        plan=_PLANS.format("imbalanced"),
        metric=_TRAIN.format("orthogonality_w"),
        variant="mse",
        baseline="cross-entropy",
        direction="lower",
        margin=0.0,
        seeds=_SEEDS,
        quick=_QUICK_IMBALANCED,
        quick_seeds=_QUICK_SEEDS,
    ),
    Claim(
        id="nc1-falls",
        statement="NC1, within-class variability collapse: the global minimizers have every feature at its class "
        "mean (every theorem of the paper; its experiments track tr(Σ_W Σ_B^†)/K over training, the authors' validate_NC*.py). Here: "
        "on long-tail-digits, NC1 of the training features after bias-free MSE training is lower than before.",
        plan=_PLANS.format("imbalanced"),
        metric=_TRAIN.format("nc1"),
        variant="mse",
        baseline="initial",
        direction="lower",
        margin=0.0,
        seeds=_SEEDS,
        quick=_QUICK_IMBALANCED,
        quick_seeds=_QUICK_SEEDS,
    ),
    Claim(
        id="bias-free-orthogonal-frame",
        statement="Balanced data, MSE (the paper's balanced theorems, bias-free and with a last-layer bias): without a bias the classifier forms an orthogonal frame "
        "(W Wᵀ ∝ I), with a last-layer bias a simplex ETF (W Wᵀ ∝ I − 11ᵀ/K). Here: on digits, the distance of the "
        "head's normalized Gram matrix to the identity after MSE training is lower for the bias-free MLP than for the "
        "same MLP with biases.",
        plan=_PLANS.format("balanced"),
        metric=_TRAIN.format("nc2_orthogonal_w"),
        variant="bias-free",
        baseline="bias",
        direction="lower",
        margin=0.0,
        seeds=_SEEDS,
        quick=_QUICK,
        quick_seeds=_QUICK_SEEDS,
    ),
)

method = Method(
    key="neural-collapse",
    summary="Neural collapse of the penultimate features and the classifier head, on the training and test sets: "
    "NC1 tr(Σ_W Σ_B^†)/K, NC2 distances to a simplex ETF and to an orthogonal frame, NC3 self-duality, and the "
    "paper's imbalanced bias-free MSE prediction (orthogonal class means and classifier rows, the classifier "
    "longer and the class mean shorter the larger the class).",
    paper=PAPER,
    hooks=("evaluate", "after_run"),
    implementation="paperkit_neural_collapse.hooks:NeuralCollapse",
    config=NeuralCollapseConfig,
    touches=("metrics",),
    claims=CLAIMS,
)

mse_method = Method(
    key="neural-collapse-mse",
    summary="Squared error against one-hot (or soft) targets, ½‖z − y‖² per sample: the MSE loss of the objectives "
    "whose global minimizers the paper characterizes, for class tasks.",
    paper=PAPER,
    hooks=("loss",),
    implementation="paperkit_neural_collapse.hooks:NeuralCollapseMSE",
    config=NeuralCollapseMSEConfig,
    touches=("loss",),
    honours=("target", "weight"),
    kinds=("class",),
)

feature_decay_method = Method(
    key="neural-collapse-feature-decay",
    summary="Feature decay λ_H/2 ‖H‖²_F on the penultimate features, the regularization of the unconstrained "
    "features in the paper's objectives (with MSE or cross-entropy).",
    paper=PAPER,
    hooks=("regularize",),
    implementation="paperkit_neural_collapse.hooks:FeatureDecay",
    config=FeatureDecayConfig,
    touches=("loss",),
)

__all__ = ["NeuralCollapseConfig", "FeatureDecayConfig", "NeuralCollapseMSEConfig", "PAPER", "feature_decay_method", "method", "mse_method"]
