"""paperkit plugin: G-ACIL (Zhuang et al., "G-ACIL: Analytic Learning for Exemplar-Free
Generalized Class Incremental Learning", arXiv 2403.15706, 2024).

This module holds only the method record and its config (no torch import). The
math is in :mod:`paperkit_g_acil.functional`; the hook shell in
:mod:`paperkit_g_acil.hooks`.
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from paperkit import Claim, Method, Paper, option


@attrs.define
class GACILConfig:
    expansion: int = option(
        8192,
        help="Width of the random buffer layer (the 'buffer size' / expansion size). The reference code's default and "
        "its CIFAR-100 setting is 8192 (ImageNet: 16384). The float64 RLS state is expansion^2 x 8 bytes (512 MiB at 8192); "
        "small tasks run well with 1024-2048.",
        validator=v.ge(1),
    )
    gamma: float = option(
        0.1,
        help="Ridge regularization gamma of the analytic classifier: R starts at I / gamma. 0.1 on CIFAR-100 and ImageNet-1k "
        "(reference code README, hyper-parameters section).",
        validator=v.gt(0.0),
    )
    fit_batch: int = option(
        4096,
        help="Samples per recursive update (the reference's IL batch size, 4096). Any value gives the same classifier; "
        "it sets the size of the matrix inverted per update.",
        validator=v.ge(1),
    )


method = Method(
    key="g-acil",
    summary="Train the backbone by backpropagation on the first experience, freeze it, then learn every experience in "
    "closed form: a fixed random ReLU expansion feeds a ridge classifier updated by recursive least squares, with no stored samples.",
    paper=Paper(
        "G-ACIL: Analytic Learning for Exemplar-Free Generalized Class Incremental Learning",
        2024,
        "2403.15706",
        "Zhuang, Chen, Fang, He, Tong, Wei, Zeng & Chen",
    ),
    hooks=("adapt", "before_experience", "after_experience"),
    implementation="paperkit_g_acil.hooks:GACIL",
    config=GACILConfig,
    touches=("model", "parameters"),
    claims=(
        Claim(
            id="split-digits",
            statement="Exemplar-free analytic learning keeps old classes: its final average accuracy over a class-incremental "
            "stream is far above naive fine-tuning's.",
            plan="paperkit_g_acil:claims/split-digits.toml",
            metric="average_accuracy",
            variant="g-acil",
            baseline="naive",
            direction="higher",
            margin=0.3,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="si-blurry-vs-naive",
            statement="In generalized class-incremental learning (classes reappear across experiences of random size; "
            "Si-Blurry), exemplar-free G-ACIL's accuracy on all classes after the stream is far above naive fine-tuning's.",
            plan="paperkit_g_acil:claims/si-blurry-digits.toml",
            metric="ood:all/classification/accuracy",
            variant="g-acil",
            baseline="naive",
            direction="higher",
            margin=0.3,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
        Claim(
            id="si-blurry-vs-replay",
            statement="In generalized class-incremental learning (Si-Blurry), exemplar-free G-ACIL's accuracy on all classes "
            "after the stream is above experience replay's, which stores samples (a 200-sample reservoir).",
            plan="paperkit_g_acil:claims/si-blurry-digits.toml",
            metric="ood:all/classification/accuracy",
            variant="g-acil",
            baseline="replay",
            direction="higher",
            margin=0.0,
            seeds=(0, 1, 2, 3, 4),
            quick=("run.epochs=2",),
            quick_seeds=(0, 1),
        ),
    ),
)
