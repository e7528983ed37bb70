"""paperkit plugin: the empirical neural tangent kernel of the model and two N×N approximations of it.

One evaluate method, ``ntk``, for three papers of one family: the empirical NTK of Jacot, Gabriel & Hongler
(NeurIPS 2018), ``kernel = "full"``; the "sum of logits" pseudo-NTK of Mohamadi, Bae & Sutherland (ICML 2023),
``kernel = "pseudo"``; the labelled pseudo-NTK (lpNTK) of Guo, Ren, Albrecht & Smith (ICLR 2024),
``kernel = "lp"``. On a few samples of every evaluation set it reports the kernel's spectrum, its relative change
from the kernel at initialization (kept in the method's state and checkpointed), the kernel-regression accuracy
of the kernel, and for the pseudo-NTK its distance to the full eNTK.

This module holds only the record and its config (no torch): ``paperkit plugins`` imports it to list the method.
The math lives in :mod:`paperkit_ntk.functional`; :mod:`paperkit_ntk.hooks` wires it to the engine.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class NtkConfig:
    """Which kernel, on how many samples, and the kernel-regression predictor's settings."""

    kernel: Literal["full", "pseudo", "lp"] = option(
        "full",
        help="'full': the empirical NTK Θ_ab(x,x') = Σ_p ∂f_a(x)/∂θ_p ∂f_b(x')/∂θ_p, an NO×NO matrix (Jacot et al. "
        "2018, Sec. 3-4); 'pseudo': the sum-of-logits pseudo-NTK ⟨∇θ Σ_a f_a(x), ∇θ Σ_b f_b(x')⟩/O, N×N "
        "(Mohamadi et al. 2023, their pNTK); 'lp': the labelled pseudo-NTK, each logit's gradient signed by "
        "sign(e_y − p) (+1 on the label, −1 elsewhere; Guo et al. 2024 and their exp2.1/run.py).",
        validator=v.in_(["full", "pseudo", "lp"]),
    )
    samples: int = option(
        64,
        help="Samples of each evaluation set the kernel is measured on, spread evenly over the set (ours: the eNTK "
        "costs O((N·O)² · parameters); the papers use 100s to 1000s of samples on a GPU).",
        validator=[v.instance_of(int), v.ge(2), v.le(4096)],
    )
    train_samples: int = option(
        64,
        help="Training samples (spread evenly over the experience's training set) the kernel-regression predictor is "
        "fitted on, evaluated on the `samples` test samples (kernel_accuracy); 0 skips it. Not for 'lp' (its kernel "
        "would read the test labels). Ours, for cost.",
        validator=[v.instance_of(int), v.ge(0), v.le(4096)],
    )
    ridge: float = option(
        1e-6,
        help="Ridge λ = ridge · tr(K(X,X))/dim of the kernel regression (K + λI)⁻¹: ours, only to keep the solve "
        "well-posed; Jacot et al. Sec. 5's gradient-descent limit is ridgeless.",
        validator=[v.ge(0.0), v.le(1.0)],
    )
    linearized: bool = option(
        False,
        help="true: the kernel predictor adds the network at its current parameters, f0(x*) + K(x*,X)K⁻¹(Y − f0(X)) "
        "(the t → ∞ limit of gradient descent on the least-squares cost, Jacot et al. Sec. 5); false: plain kernel "
        "regression K(x*,X)K⁻¹Y on one-hot targets (the pseudo-NTK paper's kernel-regression experiments).",
        validator=v.instance_of(bool),
    )
    compare_full: Literal["initial", "always", "never"] = option(
        "initial",
        help="kernel='pseudo' only: when to also build the full eNTK and report approximation_error = "
        "‖Θ − κ⊗I_O‖_F/‖Θ‖_F; 'initial': at the evaluation before training, where Mohamadi et al.'s theorem "
        "holds; 'always': at every evaluation; 'never'.",
        validator=v.in_(["initial", "always", "never"]),
    )


PAPER = Paper(
    title="Neural Tangent Kernel: Convergence and Generalization in Neural Networks",
    year=2018,
    arxiv="1806.07572",
    authors="Arthur Jacot, Franck Gabriel, Clément Hongler",
    venue="NeurIPS 2018",
)

PSEUDO_PAPER = Paper(
    title="A Fast, Well-Founded Approximation to the Empirical Neural Tangent Kernel",
    year=2023,
    arxiv="2206.12543",
    authors="Mohamad Amin Mohamadi, Wonho Bae, Danica J. Sutherland",
    venue="ICML 2023",
)

LP_PAPER = Paper(
    title="Sample Relationship from Learning Dynamics Matters for Generalisation",
    year=2024,
    arxiv="2401.08808",
    authors="Shangmin Guo, Yi Ren, Stefano V. Albrecht, Kenny Smith",
    venue="ICLR 2024",
)

_PLANS = "paperkit_ntk:claims/{}.toml"

CLAIMS = (
    Claim(
        id="wider-is-lazier",
        statement="Jacot et al. (abstract, Sec. 4 Theorem 2): the NTK is random at initialization and varies during "
        "training, but in the infinite-width limit it stays constant during training. Here: the relative change "
        "‖Θ_T − Θ_0‖_F/‖Θ_0‖_F of the empirical NTK on 64 digits test samples over the same gradient-descent "
        "budget is smaller for a one-hidden-layer MLP of width 1024 than for one of width 32.",
        plan=_PLANS.format("lazy"),
        metric="ntk/kernel_change",
        variant="width-1024",
        baseline="width-32",
        direction="lower",
        margin=0.0,
        seeds=(0, 1, 2, 3, 4),
        quick=("run.epochs=20",),
        quick_seeds=(0, 1),
    ),
    Claim(
        id="wider-is-lazier-direction",
        statement="Jacot et al. (abstract, Sec. 4 Theorem 2), the same claim with the scale taken out: the kernel "
        "distance 1 − ⟨Θ_T, Θ_0⟩_F/(‖Θ_T‖_F ‖Θ_0‖_F) of Fort et al. (2020) between the empirical NTK before and "
        "after the same gradient-descent budget is smaller for a one-hidden-layer MLP of width 1024 than for one of "
        "width 32 (the kernel's shape, not only its size, stays closer to initialization).",
        plan=_PLANS.format("lazy"),
        metric="ntk/kernel_distance",
        variant="width-1024",
        baseline="width-32",
        direction="lower",
        margin=0.0,
        seeds=(0, 1, 2, 3, 4),
        quick=("run.epochs=20",),
        quick_seeds=(0, 1),
    ),
    Claim(
        id="pseudo-converges-with-width",
        statement="Mohamadi et al. (abstract and their theorem): the sum-of-logits pseudo-NTK converges to the true "
        "eNTK at initialization for any network with a wide readout layer. Here: at initialization, the relative "
        "distance ‖Θ − κ⊗I_O‖_F/‖Θ‖_F on 64 digits test samples is smaller for a one-hidden-layer MLP of width 1024 "
        "than for one of width 32.",
        plan=_PLANS.format("pseudo"),
        metric="ntk/initial/approximation_error",
        variant="width-1024",
        baseline="width-32",
        direction="lower",
        margin=0.0,
        seeds=tuple(range(10)),
        quick_seeds=(0, 1),
        paper=PSEUDO_PAPER,
    ),
)

method = Method(
    key="ntk",
    summary="The empirical neural tangent kernel (or the pseudo-NTK, or the labelled pseudo-NTK) on a few samples "
    "of each evaluation set: its trace, top eigenvalue and condition number, its relative change from the "
    "kernel at initialization, the kernel-regression accuracy, and the pseudo-NTK's distance to the full eNTK.",
    paper=PAPER,
    also=(PSEUDO_PAPER, LP_PAPER),
    hooks=("evaluate", "after_run"),
    implementation="paperkit_ntk.hooks:Ntk",
    config=NtkConfig,
    touches=("metrics",),
    exclusive=(),
    license="Apache-2.0",
    claims=CLAIMS,
)

__all__ = ["LP_PAPER", "NtkConfig", "PAPER", "PSEUDO_PAPER", "method"]
