"""paperkit plugin: memorization and generalization on corrupted modular arithmetic (Doshi, Das, He & Gromov,
"To grok or not to grok: Disentangling generalization and memorization on corrupted algorithmic datasets",
ICLR 2024).

A diagnostic: on a training set with a fraction ξ of corrupted labels (``[task] label_noise``), how much of the
corrupted part the network fits (memorization) or corrects (inversion), how periodic its hidden neurons are (the
inverse participation ratio of their weights in Fourier space), and what pruning the non-periodic ones leaves.
This module holds only the record and its config (no torch); the math lives in
:mod:`paperkit_grok_corrupted.functional`, the hook shells in :mod:`paperkit_grok_corrupted.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class GrokCorruptedConfig:
    """What to measure; every value is a measurement setting, none changes training."""

    r: float = option(
        2.0,
        help="Power r of the inverse participation ratio IPR_r = sum_k |nu_k|^(2r) / (sum_k |nu_k|^2)^r of a "
        "neuron's Fourier-space weights (paper Sec. 2; r = 2 in every notebook and script of the authors' code, "
        "d-doshi/Grokking).",
        validator=v.gt(1.0),
    )
    ipr_threshold: float = option(
        0.3,
        help="Neurons with IPR below this count as memorizing: pruned by after_run, and the complement is "
        "reported as periodic_fraction. The paper ranks neurons by IPR and prunes from the lowest without a "
        "fixed cut; 0.3 is ours, between random weights (IPR about 2/(p/2+1), 0.04 at p = 97) and a single "
        "frequency (1), where the trained networks' IPR histograms separate (see the README).",
        validator=[v.gt(0.0), v.lt(1.0)],
    )
    prune: Literal["low-ipr", "high-ipr", "random", "none"] = option(
        "low-ipr",
        help="Which neurons after_run prunes (as many as there are neurons below ipr_threshold) for its "
        "pruned/* metrics: 'low-ipr' the memorizing ones first, as the paper does (Sec. 2); 'high-ipr' the "
        "periodic ones first (the paper's reverse experiment); 'random' a random choice of as many (our "
        "control); 'none' prunes nothing, so pruned/* is the trained network itself (a baseline arm).",
        validator=v.in_(["low-ipr", "high-ipr", "random", "none"]),
    )
    curve_points: int = option(
        20,
        help="Write pruning.json into the run directory: accuracies after pruning 0, 1/K, ..., K/K of the neurons "
        "in each order (the paper's pruning figure); 0 writes nothing.",
        validator=v.ge(0),
    )
    every: int = option(
        0,
        help="Also log the training-set accuracies, the IPR statistics and the test accuracy every this many "
        "optimizer steps (the paper's training curves; the summary then has the peak corrupted-sample "
        "accuracy and its step); 0 measures only at evaluations.",
        validator=v.ge(0),
    )


PAPER = Paper(
    title="To grok or not to grok: Disentangling generalization and memorization on corrupted algorithmic datasets",
    year=2024,
    arxiv="2310.13061",
    authors="Darshil Doshi, Aritra Das, Tianyu He, Andrey Gromov",
    venue="ICLR 2024",
)

_PLAN = "paperkit_grok_corrupted:claims/corrupted-modular.toml"
_SEEDS = (10, 11, 12, 13, 14)  # seeds 0-2 were used to choose the plan's settings (see its comment)
_QUICK = ("run.epochs=150",)
_QUICK_SEEDS = (10, 11, 12)

method = Method(
    key="grok-corrupted",
    summary="Memorization vs generalization on corrupted modular arithmetic: accuracy on the corrupted and clean "
    "training labels, the inverse participation ratio of the hidden neurons' Fourier-space weights, and pruning "
    "of the low-IPR (memorizing) neurons after the run.",
    paper=PAPER,
    hooks=("evaluate", "after_step", "after_run"),
    implementation="paperkit_grok_corrupted.hooks:GrokCorrupted",
    config=GrokCorruptedConfig,
    touches=("metrics",),
    claims=(
        Claim(
            id="weight-decay-unlearns-corrupted",
            statement="Weight decay makes the network ignore the corrupted labels: without it the MLP fits them "
            "(memorization), with it the corrupted training samples are no longer fitted (abstract (iii); Sec. 3). "
            "Here: the accuracy on the corrupted training labels is lower with weight decay 6 than without, same "
            "budget (a ReLU MLP with cross-entropy on corrupted addition mod 59; see the plan).",
            plan=_PLAN,
            metric="grok-corrupted/corrupted_accuracy",
            variant="weight-decay",
            baseline="no-weight-decay",
            direction="lower",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="low-ipr-neurons-memorize",
            statement="The memorizing neurons can be identified by their low IPR and pruned, lowering the accuracy "
            "on the corrupted data (abstract (ii); Sec. 2, Hypothesis 2.1). Here: on a network in the coexistence "
            "phase, pruning the neurons below the IPR threshold lowers the corrupted-label accuracy more than "
            "pruning as many randomly chosen neurons.",
            plan=_PLAN,
            metric="grok-corrupted/pruned/corrupted_accuracy",
            variant="coexistence",
            baseline="coexistence-random-pruning",
            direction="lower",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="pruning-low-ipr-improves-generalization",
            statement="Pruning the memorizing (low-IPR) neurons improves the accuracy on uncorrupted data "
            "(abstract (ii); Sec. 2). Here: on a network in the coexistence phase, the test accuracy after "
            "pruning the neurons below the IPR threshold is higher than the trained network's.",
            plan=_PLAN,
            metric="grok-corrupted/pruned/test_accuracy",
            variant="coexistence",
            baseline="coexistence-unpruned",
            direction="higher",
            margin=0.0,
            seeds=_SEEDS,
            quick=_QUICK,
            quick_seeds=_QUICK_SEEDS,
        ),
    ),
)

__all__ = ["GrokCorruptedConfig", "PAPER", "method"]
