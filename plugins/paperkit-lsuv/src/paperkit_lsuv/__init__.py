"""paperkit plugin: LSUV initialization (Mishkin & Matas, "All you need is a good init", ICLR 2016).

This module holds only the method record and its config (no torch import), so
``paperkit plugins`` can list it cheaply. The math is in
:mod:`paperkit_lsuv.functional`; the hook shell in :mod:`paperkit_lsuv.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class LSUVConfig:
    tol: float = option(0.1, help="Tol_var: stop rescaling a layer once |Var(output) - 1| < tol (Algorithm 1).", validator=v.gt(0.0))
    max_iters: int = option(10, help="T_max: most rescalings per layer (Algorithm 1).", validator=v.ge(0))
    orthonormal: bool = option(True, help="Pre-initialize every conv/linear weight with an orthonormal matrix (Saxe et al., 2014), step 1 of Algorithm 1.")
    zero_bias: bool = option(True, help="Set biases to 0 before the variance pass (the reference prototxts' constant bias filler).")


method = Method(
    key="lsuv",
    summary="Orthonormal init, then layer by layer rescale each conv/linear weight until its output variance on a minibatch is 1.",
    paper=Paper("All you need is a good init", 2016, "1511.06422", "Mishkin & Matas", "ICLR"),
    hooks=("init",),
    implementation="paperkit_lsuv.hooks:LSUV",
    config=LSUVConfig,
    touches=("parameters",),
    claims=(
        Claim(
            id="deep-mlp",
            statement="LSUV lets very deep nets without normalization train, reaching markedly better accuracy than "
            "standard initialization (PyTorch's default) under the same budget (here: by more than 10 points of "
            "accuracy). On this tanh net the orthonormal step alone does as well; see variance-scaling.",
            plan="paperkit_lsuv:claims/deep-mlp.toml",
            metric="classification/accuracy",
            variant="lsuv",
            baseline="default-init",
            direction="higher",
            margin=0.10,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=1",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="variance-scaling",
            statement="LSUV's variance-scaling step (step 2 of Algorithm 1) is what lets a deep un-normalized ReLU net "
            "train: full LSUV beats its own orthonormal-only ablation (step 1 alone, the paper's OrthoNorm) under the "
            "same budget, each arm at its own tuned learning rate (here: by more than 10 points of accuracy).",
            plan="paperkit_lsuv:claims/deep-relu-ablation.toml",
            metric="classification/accuracy",
            variant="lsuv",
            baseline="orthonormal",
            direction="higher",
            margin=0.10,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=3",),
            quick_seeds=(0, 1),
        ),
    ),
)
