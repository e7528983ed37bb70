"""paperkit plugin: Learning Globally Smooth Functions on Manifolds (2023).

This module holds only the record and its config (no torch): ``paperkit
plugins`` imports it to list the method. The math lives in
:mod:`paperkit_smooth_manifold.functional`; :mod:`paperkit_smooth_manifold.hooks`
wires it to the engine.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class SmoothManifoldConfig:
    """The method's options; each help text gives its source (the authors' code unless said otherwise)."""

    k: int = option(
        3,
        help="Neighbours per sample in the kNN graph over the training inputs (3: --k in the authors' "
        "smoothbench/smooth/scripts/train_no_attack.py).",
        validator=v.ge(1),
    )
    heat_kernel_t: float | None = option(
        None,
        help="t of the heat-kernel edge weights exp(-d^2 / 4t) (smoothbench/smooth/laplacian.py). The authors set it "
        "per data set (0.05 on their 2-D toy data); None (ours) takes the mean squared neighbour distance over 4.",
        validator=v.optional(v.gt(0.0)),
    )
    weight: float = option(
        1.0,
        help="Weight of the dual-weighted Laplacian term relative to the loss (1: --regularizer of the authors' "
        "toy_example_manifold.py; their CIFAR script uses 0.1). It plays 1/mu: the loss dual mu is fixed at 1 here.",
        validator=v.ge(0.0),
    )
    dual_step: float = option(
        0.1,
        help="eta_lambda, step of the projected dual ascent lambda_i <- [lambda_i + eta (||grad f(x_i)||^2 - rho)]_+ "
        "(0.1: --dual_step_lambda of toy_example_manifold.py; unverified: that script's update line uses "
        "--dual_step_mu = 0.5).",
        validator=v.ge(0.0),
    )
    rho_step: float = option(
        0.1,
        help="eta_rho, step of rho <- clip(rho - eta_rho (1 - sum_i lambda_i), 0, rho_max) (0.1: --rho_step of "
        "toy_example_manifold.py).",
        validator=v.ge(0.0),
    )
    rho_init: float = option(
        0.0,
        help="Initial rho, the squared-Lipschitz estimate (ours: the authors' script leaves it uninitialized).",
        validator=v.ge(0.0),
    )
    rho_max: float = option(
        5.0,
        help="Upper clip of rho (5: the clamp in toy_example_manifold.py's MANIFOLD_GRADIENT loop).",
        validator=v.gt(0.0),
    )


PAPER = Paper(
    title="Learning Globally Smooth Functions on Manifolds",
    year=2023,
    arxiv="2210.00301",
    authors="Juan Cervino, Luiz F. O. Chamon, Benjamin D. Haeffele, Rene Vidal, Alejandro Ribeiro",
    venue="ICML",
)

method = Method(
    key="smooth-manifold",
    summary="Lipschitz-constrained learning as dynamically weighted manifold regularization: a kNN-graph Laplacian "
    "penalty weighted by per-sample duals that projected dual ascent raises where the local slope exceeds rho.",
    paper=PAPER,
    hooks=("before_experience", "regularize", "after_step"),
    implementation="paperkit_smooth_manifold.hooks:SmoothManifold",
    config=SmoothManifoldConfig,
    touches=("loss",),
    kinds=("class",),
    exclusive=(),
    license="Apache-2.0",
    claims=(
        Claim(
            id="noisy-digits-30",
            statement="With 30% symmetric label noise on digits, cross-entropy plus the dual-weighted manifold "
            "penalty reaches a higher clean test accuracy than cross-entropy alone at the same budget (the paper's "
            "claim that the globally smooth solution generalizes and is robust, abstract).",
            plan="paperkit_smooth_manifold:claims/noisy-digits-30.toml",
            metric="classification/accuracy",
            variant="smooth-manifold",
            baseline="cross-entropy",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=10",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["SmoothManifoldConfig", "PAPER", "method"]
