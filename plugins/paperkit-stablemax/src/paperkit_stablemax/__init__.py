"""paperkit plugin: StableMax and ⊥Grad, from "Grokking at the Edge of Numerical Stability".

One distribution, two methods: ``stablemax`` (a loss that replaces softmax
cross-entropy) and ``orthograd`` (a gradient transform that composes with any
optimizer). This module holds only the records and configs (no torch); the math
is in :mod:`paperkit_stablemax.functional`, the hook shells in
:mod:`paperkit_stablemax.hooks`.
"""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class StableMaxConfig:
    """How the StableMax cross-entropy is computed."""

    dtype: Literal["float32", "float64"] = option(
        "float64",
        help="Precision of the loss computation. The reference stablemax_cross_entropy casts the logits to float64 "
        "(utils.py; later versions take a dtype, and every StableMax run in run_main_experiments.sh passes "
        "--cross_entropy_dtype float64).",
        validator=v.in_(["float32", "float64"]),
    )
    activation: Literal["stablemax", "softmax"] = option(
        "stablemax",
        help="The output activation of the cross-entropy. 'softmax' is the paper's baseline in the same precision: "
        "the reference's --loss_function cross_entropy, log_softmax in --cross_entropy_dtype (softmax in float64 "
        "in Figure 1; float16/32/64 in Figure 2), so a claim can compare StableMax with softmax at equal dtype.",
        validator=v.in_(["stablemax", "softmax"]),
    )


@attrs.define
class OrthoGradConfig:
    """How the gradient is projected."""

    rescale: bool = option(
        True,
        help="Rescale the projected gradient to the norm of the original one, as the reference orthograd.py and "
        "pytorch-optimizer's OrthoGrad do; false gives the bare projection g - (w·g / w·w) w of the paper's equation.",
    )
    eps: float = option(1e-30, help="Added to w·w and to ||g_perp|| before dividing (reference orthograd.py).", validator=v.gt(0.0))


PAPER = Paper(
    title="Grokking at the Edge of Numerical Stability",
    year=2025,
    arxiv="2501.04697",
    authors="Lucas Prieto, Melih Barsbey, Pedro A.M. Mediano, Tolga Birdal",
    venue="ICLR",
)

stablemax_method = Method(
    key="stablemax",
    summary="StableMax cross-entropy: softmax's exp replaced by a linear/reciprocal ramp, so logit scaling cannot collapse the loss.",
    paper=PAPER,
    hooks=("loss",),
    implementation="paperkit_stablemax.hooks:StableMax",
    config=StableMaxConfig,
    touches=("loss",),
    claims=(
        Claim(
            id="grokking-without-regularization",
            statement="Without weight decay or any other regularization, an MLP trained with StableMax cross-entropy "
            "generalizes on modular addition after fitting its training set (test accuracy climbs), while with "
            "softmax cross-entropy in float64 (the paper's baseline precision) it fits the training set and stays "
            "near chance on the test set.",
            plan="paperkit_stablemax:claims/stablemax-grokking.toml",
            metric="classification/accuracy",
            variant="stablemax",
            baseline="softmax",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=200",),
            quick_seeds=(0, 1, 2),
        ),
        Claim(
            id="grokking-without-regularization-float32",
            statement="The same comparison against softmax cross-entropy in float32 (the paper's Figure 2 precision "
            "comparison): StableMax generalizes, float32 softmax stays near chance.",
            plan="paperkit_stablemax:claims/stablemax-grokking.toml",
            metric="classification/accuracy",
            variant="stablemax",
            baseline="softmax-float32",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=200",),
            quick_seeds=(0, 1, 2),
        ),
    ),
)

orthograd_method = Method(
    key="orthograd",
    summary="⊥Grad: per parameter tensor, drop the gradient component along the weights (and restore its norm) before the optimizer step.",
    paper=PAPER,
    hooks=("optimize",),
    implementation="paperkit_stablemax.hooks:OrthoGrad",
    config=OrthoGradConfig,
    touches=("gradients",),
    claims=(
        Claim(
            id="fast-generalization",
            statement="Without weight decay, ⊥AdamW generalizes on modular addition within a few hundred full-batch "
            "steps, while AdamW with softmax cross-entropy only memorizes the training set.",
            plan="paperkit_stablemax:claims/orthograd-grokking.toml",
            metric="classification/accuracy",
            variant="orthograd",
            baseline="adamw",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2),
            quick=("run.epochs=150",),
            quick_seeds=(0, 1),
        ),
    ),
)

__all__ = ["OrthoGradConfig", "PAPER", "StableMaxConfig", "orthograd_method", "stablemax_method"]
