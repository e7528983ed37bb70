"""paperkit plugin: Initial Guessing Bias (Francazi, Lucchi & Baity-Jesi, ICML 2024).

A diagnostic: how an untrained (or any) classifier splits each test set among the classes, and the
theory's order parameter behind it. This module holds only the record and its config (no torch);
the math lives in :mod:`paperkit_initial_guessing_bias.functional`, the hook shells in
:mod:`paperkit_initial_guessing_bias.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class InitialGuessingBiasConfig:
    """When to measure and what to report."""

    phases: Literal["initial", "all"] = option(
        "all",
        help="'all': measure at every evaluation (row 'initial' before training, then every experience's end), "
        "as the authors' IGB-and-Normalization code logs max_f through training; 'initial': only before training, "
        "the paper's measurement (IGB-Algorithms' ExecutionMode = 'Init'). The initial values always land in the "
        "run summary as initial/<name>.",
        validator=v.in_(["initial", "all"]),
    )
    sorted_fractions: bool = option(
        False,
        help="Also report every class's fraction of the predictions, largest first (sorted_fraction/0 is the "
        "majority fraction), as the authors' initialization runs write OrderedClassesGI.txt.",
    )


PAPER = Paper(
    title="Initial Guessing Bias: How Untrained Networks Favor Some Classes",
    year=2024,
    arxiv="2306.00809",
    authors="Emanuele Francazi, Aurelien Lucchi, Marco Baity-Jesi",
    venue="ICML 2024",
)

_PLANS = "paperkit_initial_guessing_bias:claims/{}.toml"
_METRIC = "initial-guessing-bias/initial/majority_fraction"
_SEEDS = tuple(range(100, 120))  # 20 initializations; seeds 0-19 were used to design the plan (see its comment)
_QUICK_SEEDS = tuple(range(100, 106))

method = Method(
    key="initial-guessing-bias",
    summary="Initial Guessing Bias: the share of each test set the network gives to its most-predicted class, "
    "the entropy of its predicted-class histogram and the theory's drift ratio gamma (spread of the output "
    "nodes' centres over their within-dataset variance), measured before training and after each experience.",
    paper=PAPER,
    hooks=("evaluate", "after_run"),
    implementation="paperkit_initial_guessing_bias.hooks:InitialGuessingBias",
    config=InitialGuessingBiasConfig,
    touches=("metrics",),
    claims=(
        Claim(
            id="relu-vs-tanh",
            statement="The activation function decides whether an untrained network shows IGB: with ReLU, whose "
            "outputs are not centred, the network at initialization assigns most inputs to one class, while a "
            "centred activation (tanh) splits them evenly (abstract; the paper's analysis of activation functions). "
            "Here: a 16-block ReLU MLP without biases at PyTorch's default initialization gives its majority class a "
            "share of the test set at least 0.2 larger than the same tanh MLP does.",
            plan=_PLANS.format("relu-vs-tanh"),
            metric=_METRIC,
            variant="relu-16",
            baseline="tanh-16",
            direction="higher",
            margin=0.2,
            seeds=_SEEDS,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="depth-amplifies-relu",
            statement="Depth amplifies IGB where the architecture already has it (abstract: 'the non-trivial effects "
            "that depth has on IGB'; the paper's depth analysis): the majority fraction at initialization of a ReLU "
            "MLP without biases is larger with 16 hidden blocks than with 2.",
            plan=_PLANS.format("depth-relu"),
            metric=_METRIC,
            variant="relu-16",
            baseline="relu-2",
            direction="higher",
            margin=0.0,
            seeds=_SEEDS,
            quick_seeds=_QUICK_SEEDS,
        ),
        Claim(
            id="depth-neutral-tanh",
            statement="Depth alone does not create IGB (the paper's depth analysis): for a tanh MLP without biases the "
            "majority fraction at initialization with 16 hidden blocks exceeds that with 2 by less than 0.05 (a "
            "non-inferiority claim: 'lower' with margin -0.05).",
            plan=_PLANS.format("depth-tanh"),
            metric=_METRIC,
            variant="tanh-16",
            baseline="tanh-2",
            direction="lower",
            margin=-0.05,
            seeds=_SEEDS,
            quick_seeds=_QUICK_SEEDS,
        ),
    ),
)

__all__ = ["InitialGuessingBiasConfig", "PAPER", "method"]
