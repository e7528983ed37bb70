"""The Shampoo family for paperkit — KL-Shampoo (Lin et al. 2025), 4-bit Shampoo (Wang et al. 2024) and the
power-iteration view of Shampoo (Morwani et al. 2024) as options of one method, ``shampoo``, so they compose.

The record and its config only (no torch): the math is in :mod:`paperkit_shampoo.functional`, the hooks in
:mod:`paperkit_shampoo.hooks`.
"""

from __future__ import annotations

from typing import Literal

from attrs import define
from attrs import validators as v

from paperkit import Claim, Method, Paper, option

__all__ = ["FOUR_BIT", "POWER", "PAPER", "SHAMPOO", "ShampooConfig", "method"]


@define
class ShampooConfig:
    """Defaults: pytorch-optimizer's ``Shampoo`` (a port of Gupta et al. 2018, Alg. 1-2) unless a help text says
    otherwise; the variants are switched on by ``preconditioner``, ``state_bits``, ``exponent``, ``diagnostic``."""

    lr: float = option(1e-3, help="Learning rate eta (pytorch-optimizer Shampoo default 1e-3).", validator=v.gt(0.0))
    momentum: float = option(
        0.0, help="Momentum mu of pytorch-optimizer's Shampoo: g <- (1-mu) g + mu * (last preconditioned step), "
        "before the statistics (its default 0).", validator=[v.ge(0.0), v.lt(1.0)],
    )
    weight_decay: float = option(0.0, help="Weight decay (pytorch-optimizer default 0).", validator=v.ge(0.0))
    weight_decouple: bool = option(
        False, help="false: coupled, g <- g + wd * theta before the statistics (pytorch-optimizer default); "
        "true: decoupled, theta <- theta (1 - wd * lr).",
    )
    fixed_decay: bool = option(False, help="Decoupled decay without the lr factor: theta <- theta (1 - wd) (pytorch-optimizer).")
    preconditioner: Literal["shampoo", "kl"] = option(
        "shampoo", help="shampoo: factor statistics L <- L + G G^T (Gupta et al. 2018, Alg. 1); kl: KL-Shampoo's "
        "L <- beta L + (1-beta)/n G R^-1 G^T, R <- beta R + (1-beta)/m G^T L^-1 G (Lin et al. 2025; NeMo "
        "Emerging-Optimizers update_kronecker_factors_kl_shampoo).", validator=v.in_(["shampoo", "kl"]),
    )
    exponent: Literal["default", "quarter", "half"] = option(
        "default", help="Root exponent per factor. default: -1/(2k) for an order-k tensor with shampoo (Gupta et al. "
        "2018, Alg. 2: -1/4 for matrices, -1/2 for vectors), -1/2 with kl (Lin et al. 2025: step L^-1/2 G R^-1/2); "
        "quarter: -1/4; half: -1/2 (Morwani et al. 2024: L (x) R, not L^1/2 (x) R^1/2, approximates the Adagrad "
        "matrix, whose inverse square root is then L^-1/2 (x) R^-1/2).",
        validator=v.in_(["default", "quarter", "half"]),
    )
    beta2: float = option(
        1.0, help="Factor statistics decay: 1 sums them (Gupta et al. 2018, Alg. 1; pytorch-optimizer); beta < 1 is "
        "the EMA L <- beta L + (1-beta) G G^T (4-bit Shampoo Alg. 3-4, KL-Shampoo).", validator=[v.gt(0.0), v.le(1.0)],
    )
    update_interval: int = option(
        1, help="Steps between root (inverse 4th root) recomputations, T2 of 4-bit Shampoo Alg. 3-4 "
        "(pytorch-optimizer preconditioning_compute_steps, default 1).", validator=v.ge(1),
    )
    statistics_interval: int = option(
        1, help="Steps between factor statistics updates, T1 of 4-bit Shampoo Alg. 3-4 (1: every step, as "
        "pytorch-optimizer).", validator=v.ge(1),
    )
    epsilon: float = option(
        1e-6, help="L_0 = epsilon I (pytorch-optimizer matrix_eps 1e-6; 4-bit Shampoo Alg. 3, epsilon = 1e-6 in its "
        "main runs, App. D.2); with kl also the floor of the eigenvalues it inverts (NeMo clamps at eps).",
        validator=v.ge(0.0),
    )
    damping: float = option(
        0.0, help="Relative damping delta of the roots: (L + delta lambda_max I)^e (4-bit Shampoo Alg. 2 and 4, its "
        "epsilon); 0 as pytorch-optimizer.", validator=v.ge(0.0),
    )
    grafting: Literal["none", "sgd"] = option(
        "none", help="none: the preconditioned step as is (pytorch-optimizer Shampoo; KL-Shampoo needs none); sgd: "
        "rescale it to the gradient's Frobenius norm, G~ = G^ ||G||_F/||G^||_F (4-bit Shampoo eq. 1, the grafting "
        "of Agarwal et al. 2020 with SGD).", validator=v.in_(["none", "sgd"]),
    )
    bias_correction: bool = option(
        False, help="EMA factors (beta2 < 1): decay 1 - (1-beta)/(1-beta^t) at the t-th statistics update, so early "
        "factors are not shrunk by (1-beta) (NeMo Emerging-Optimizers correct_shampoo_beta_bias); false as the "
        "4-bit Shampoo algorithms.",
    )
    state_bits: Literal[32, 4] = option(
        32, help="32: factors and roots as float32 matrices; 4: each factor as its eigenvalues and a 4-bit "
        "linear-square quantized eigenvector matrix, each root as its diagonal and a 4-bit off-diagonal (4-bit "
        "Shampoo, Sec. 3, Alg. 1-3).", validator=v.in_([32, 4]),
    )
    block_size: int = option(
        64, help="Quantization block: this many entries of one column share a scale (4-bit Shampoo, Table 1: 64).",
        validator=v.ge(1),
    )
    rectify_steps: int = option(
        1, help="Bjorck iterations t1 on the dequantized eigenvectors before a factor update (4-bit Shampoo Sec. 3.2: "
        "one is enough).", validator=v.ge(0),
    )
    root_rectify_steps: int = option(
        4, help="Bjorck iterations t2 before a root computation (4-bit Shampoo Sec. 3.2, Fig. 3: t2 = 4).",
        validator=v.ge(0),
    )
    diagnostic: Literal["off", "square", "sqrt", "optimal"] = option(
        "off", help="Morwani et al. (2024): track H = sum vec(G) vec(G)^T of small matrices and report after the run "
        "the relative error min_c ||H - c A (x) B||/||H|| of L (x) R (square, one power-iteration step), "
        "L^1/2 (x) R^1/2 (sqrt) and the optimal Kronecker product; kron_error is the one named here.",
        validator=v.in_(["off", "square", "sqrt", "optimal"]),
    )
    diagnostic_max_numel: int = option(
        1024, help="The diagnostic tracks 2-D parameters with at most this many entries (H has its square).",
        validator=v.ge(1),
    )


PAPER = Paper(
    title="Understanding and Improving the Shampoo Optimizer via Kullback-Leibler Minimization",
    year=2025,
    arxiv="2509.03378",
    authors="Lin et al.",
)
FOUR_BIT = Paper(
    title="4-bit Shampoo for Memory-Efficient Network Training",
    year=2024,
    arxiv="2405.18144",
    authors="Sike Wang, Pan Zhou, Jia Li, Hua Huang",
    venue="NeurIPS",
)
POWER = Paper(
    title="A New Perspective on Shampoo's Preconditioner",
    year=2024,
    arxiv="2406.17748",
    authors="Morwani et al.",
)
SHAMPOO = Paper(
    title="Shampoo: Preconditioned Stochastic Tensor Optimization",
    year=2018,
    arxiv="1802.09568",
    authors="Vineet Gupta, Tomer Koren, Yoram Singer",
    venue="ICML",
)

_SEEDS = (0, 1, 2, 3, 4, 5)

method = Method(
    key="shampoo",
    summary="Kronecker-factored preconditioning, G -> L^e G R^e from per-mode factor statistics; options select "
    "KL-Shampoo's covariance-fitting factor update (no Adam grafting), 4-bit quantized eigenvector storage with "
    "Bjorck rectification, and the -1/2 exponent with a diagnostic of how close L (x) R is to the optimal "
    "Kronecker approximation of the Adagrad matrix.",
    paper=PAPER,
    also=(FOUR_BIT, POWER, SHAMPOO),
    hooks=("optimize", "after_run"),
    implementation="paperkit_shampoo.hooks:ShampooMethod",
    config=ShampooConfig,
    touches=("parameters", "optimizer", "metrics"),
    exclusive=("optimizer",),
    license="Apache-2.0",
    claims=(
        Claim(
            id="kl-improves-shampoo",
            statement="KL-Shampoo 'improves Shampoo's performance, enabling it to stabilize without Adam' (abstract): "
            "at the same budget, each at its tuned learning rate and without grafting, KL-Shampoo reaches a lower "
            "test cross-entropy than Shampoo with the same EMA factors.",
            plan="paperkit_shampoo:claims/kl-vs-shampoo.toml",
            metric="classification/loss", variant="kl", baseline="shampoo", direction="lower", margin=0.0,
            seeds=_SEEDS, quick=("run.max_steps=40",), quick_seeds=(0, 1),
        ),
        Claim(
            id="four-bit-comparable",
            statement="4-bit Shampoo 'achieves comparable test accuracy to its 32-bit counterpart while being more "
            "memory-efficient' (abstract; Table 2: -0.7 to +0.5 points): its test accuracy is at most 1 point below "
            "32-bit Shampoo's (the state memory of both arms is in the summary, shampoo/state_bytes).",
            plan="paperkit_shampoo:claims/four-bit.toml",
            metric="classification/accuracy", variant="4-bit", baseline="32-bit", direction="higher", margin=-0.01,
            seeds=_SEEDS, quick=("run.max_steps=40",), quick_seeds=(0, 1), paper=FOUR_BIT,
        ),
        Claim(
            id="square-is-power-step",
            statement="'The square of the approximation used by the Shampoo optimizer is equivalent to a single step "
            "of the power iteration algorithm for computing the optimal Kronecker product approximation' of the "
            "Adagrad matrix (abstract): L (x) R approximates H = sum vec(G) vec(G)^T with a smaller relative error "
            "than L^1/2 (x) R^1/2, the approximation Shampoo is commonly read as making.",
            plan="paperkit_shampoo:claims/power.toml",
            metric="shampoo/kron_error", variant="square", baseline="sqrt", direction="lower", margin=0.0,
            seeds=(0, 1, 2, 3, 4), quick=("run.max_steps=30",), quick_seeds=(0, 1), paper=POWER,
        ),
        Claim(
            id="square-near-optimal",
            statement="The one-step approximation L (x) R is 'close to the optimal Kronecker product approximation' "
            "(abstract): its relative error to H is at most 0.05 above the optimal Kronecker product's.",
            plan="paperkit_shampoo:claims/power.toml",
            metric="shampoo/kron_error", variant="square", baseline="optimal", direction="lower", margin=-0.05,
            seeds=(0, 1, 2, 3, 4), quick=("run.max_steps=30",), quick_seeds=(0, 1), paper=POWER,
        ),
    ),
)
