"""paperkit plugin: low-rank initial weights and the rich/lazy measures of Liu et al. (ICLR 2024).

"How connectivity structure shapes rich and lazy learning in neural circuits": initial weights of the same
Frobenius norm but lower effective rank make learning richer (larger weight, kernel and representation
changes); high rank makes it lazier; a low-rank init aligned with the task statistics is lazy again.
One method, ``low-rank-init``: its ``init`` redraws the chosen layers as a rank-r truncation of a Gaussian
draw at the Gaussian's norm (``rank`` unset: the full-rank Gaussian, the paper's baseline), and its
``evaluate`` reports the paper's measures of the regime between the start and the end of training.

This module holds only the record and its config (no torch): ``paperkit plugins`` imports it to list the
method. The math lives in :mod:`paperkit_low_rank_init.functional`; :mod:`paperkit_low_rank_init.hooks`
wires it to the engine.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


def _patterns(instance: object, attribute: attrs.Attribute, value: list[str]) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(p, str) and p for p in value):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of non-empty glob patterns: {value!r}")


@attrs.define
class LowRankInitConfig:
    """Which layers start low-rank, how, and where the regime is measured. Defaults follow the authors' code."""

    rank: int | None = option(
        1,
        help="r, the rank of every chosen layer's initial weight: its Gaussian draw's top-r singular triplets, rescaled "
        "to the draw's Frobenius norm. Unset (or ≥ min(shape)): the full-rank Gaussian itself, the paper's baseline. "
        "Default 1: the lowest rank of the authors' sweep (BioRNN_RichLazy main.py: r ∈ {1, 30, 100, N}).",
        validator=v.optional(v.and_(v.instance_of(int), v.ge(1))),
    )
    sigma: float = option(
        1.25,
        help="σ of the Gaussian draw W_G = σ·G/√fan_in before truncation (main.py's W0sig = 1.25, the default of "
        "its --W0sig; fan_in = N for its N×N recurrent weight).",
        validator=[v.instance_of(float), v.gt(0.0)],
    )
    layers: list[str] = option(
        attrs.Factory(lambda: ["blocks.*"]),
        help="Glob patterns over module names: the nn.Linear layers redrawn and measured. The paper initializes only "
        "the hidden-to-hidden (recurrent) weight and keeps input and readout weights as built (main.py's h2h); the "
        "default takes the core mlp's hidden-to-hidden layers blocks.N.linear1.",
        validator=_patterns,
    )
    aligned: bool = option(
        False,
        help="The paper's exception (abstract; Sec. 2.3, Prop. 1, Fig. 3): replace the right singular vectors of "
        "each rank-r weight by the task directions of its input on training batches — the top singular vectors of "
        "the label-input cross-covariance, then the input's principal directions beyond its rank (ours: the paper "
        "states the aligned case for a two-layer linear network). Needs rank set.",
        validator=v.instance_of(bool),
    )
    align_batches: int = option(
        8, help="Training batches the task statistics of 'aligned' are estimated on (ours).",
        validator=[v.instance_of(int), v.ge(1), v.le(1000)],
    )
    redraw: bool = option(
        True, help="false: keep the model's own initial weights and only measure the regime (ours: to measure any "
        "other init with the same measures).", validator=v.instance_of(bool),
    )
    samples: int = option(
        64,
        help="Samples of each evaluation set (evenly spaced, the same at every evaluation) the tangent kernel and "
        "representation are measured on; the kernel has samples × classes rows. main.py measures on 320 trials (the "
        "representation) and 32 trials × 8 steps × 2 outputs (the kernel); 64 × 10 digits classes is that size.",
        validator=[v.instance_of(int), v.ge(2), v.le(4096)],
    )
    kernel_params: Literal["layers", "all"] = option(
        "layers",
        help="Parameters of the tangent kernel K = J Jᵀ: 'layers', the chosen layers' weights (main.py differentiates "
        "w.r.t. the recurrent weight only), or 'all' trainable parameters (the full empirical NTK).",
        validator=v.in_(["layers", "all"]),
    )

    def __attrs_post_init__(self) -> None:
        if self.aligned and self.rank is None:
            raise ValueError("'aligned' needs 'rank' set: only a low-rank init is aligned with the task")


PAPER = Paper(
    title="How connectivity structure shapes rich and lazy learning in neural circuits",
    year=2024,
    arxiv="2310.08513",
    authors="Yuhan Helena Liu, Aristide Baratin, Jonathan Cornford, Stefan Mihalas, Eric Shea-Brown, Guillaume Lajoie",
    venue="ICLR 2024",
)

_PLAN = "paperkit_low_rank_init:claims/rank.toml"
_SCALE = ("(digits, a 2-hidden-block ReLU MLP of width 128 whose two 128×128 hidden weights are redrawn, SGD with "
          "momentum 0.9 for 20 epochs; the paper: 300-unit ReLU RNNs on neurogym tasks and sequential MNIST, 10000 "
          "iterations)")

def check_plan(plan: Any, config: Any) -> None:
    """An adapter freezes the chosen layers' weights: their tangent kernel would be empty."""
    adapters = [use.key for use in plan.methods if use.section == "adapt"]
    if adapters and getattr(config, "kernel_params", "layers") == "layers":
        raise ValueError(
            f"'{adapters[0]}' freezes the layers whose tangent kernel is measured: set kernel_params = 'all'"
        )


method = Method(
    check=check_plan,
    key="low-rank-init",
    summary="Redraws the chosen layers as a rank-r truncation of a Gaussian draw at the Gaussian's Frobenius norm "
    "(optionally aligned with the task) and reports the rich/lazy measures: weight change, tangent-kernel and "
    "representation alignment with their values before training.",
    paper=PAPER,
    hooks=("init", "evaluate"),
    implementation="paperkit_low_rank_init.hooks:LowRankInit",
    config=LowRankInitConfig,
    touches=("parameters", "metrics"),
    exclusive=(),
    license="Apache-2.0",
    claims=(
        Claim(
            id="low-rank-is-richer-kernel",
            statement="Liu et al. (abstract; its RNN experiments): at the same initial norm, a low-rank initial weight "
            "yields richer learning than a full-rank Gaussian one: a larger tangent kernel alignment change "
            "1 − ⟨K_0, K_T⟩/(‖K_0‖‖K_T‖) (the kernel of the redrawn weights on 64 test samples). Here rank 1 against "
            "full rank " + _SCALE + ". The weight change ‖W_T − W_0‖_F/‖W_0‖_F of the same runs is in the card.",
            plan=_PLAN,
            metric="low-rank-init/kernel_change",
            variant="rank-1",
            baseline="full-rank",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["LowRankInitConfig", "PAPER", "method"]
